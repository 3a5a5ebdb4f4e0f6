/* Scale-out over MPI: the job (ranks, the node's ranks), collectives bounded by a timeout,
 * the data-parallel gradient exchange behind the optimizer's gradient hook, and the
 * parameter hash every rank compares. Without MPI (KD_HAVE_MPI unset, or a process not
 * started by an MPI launcher) a job is one rank and every collective is the identity. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef KD_HAVE_MPI
#include <mpi.h>
#endif

#include "kd_internal.h"
#include "kdseg/dist.h"

#define DEFAULT_TIMEOUT_S 600.0

struct kd_dist {
    int rank, size, local_rank, local_size;
    int mpi;        /* 1: MPI_Init was called by kd_dist_open */
    double timeout; /* seconds a collective waits */
    /* data-parallel training (kd_dist_attach) */
    kd_model *m;
    const volatile int *user_stop;
    volatile int stop;
    long check_every;
    float *buf;     /* gradients, state, loss, stop: one allreduce */
    size_t nbuf;
    double exchange_s, allreduce_s, wait_s; /* since the first exchange (which waits for start-up) */
    int profile;    /* $KDSEG_DIST_PROFILE: a timed barrier before each allreduce */
    long exchanges;
#ifdef KD_HAVE_MPI
    MPI_Comm comm;
    MPI_Comm end; /* kd_dist_end's barrier alone: it never meets another collective */
#endif
};

/* The job of one rank that NULL stands for. */
static const kd_dist solo = {0, 1, 0, 1, 0, DEFAULT_TIMEOUT_S, NULL, NULL, 0, 0, NULL, 0, 0, 0, 0, 0, 0
#ifdef KD_HAVE_MPI
                             , MPI_COMM_NULL, MPI_COMM_NULL
#endif
};

static const kd_dist *job(const kd_dist *d) { return d ? d : &solo; }

int kd_dist_rank(const kd_dist *d) { return job(d)->rank; }
int kd_dist_size(const kd_dist *d) { return job(d)->size; }
int kd_dist_local_rank(const kd_dist *d) { return job(d)->local_rank; }
int kd_dist_local_size(const kd_dist *d) { return job(d)->local_size; }
double kd_dist_timeout(const kd_dist *d) { return job(d)->timeout; }
int kd_dist_mine(const kd_dist *d, long i) { return i % job(d)->size == job(d)->rank; }

void kd_dist_set_timeout(kd_dist *d, double seconds) {
    if (d && seconds > 0) d->timeout = seconds;
}

double kd_dist_exchange_seconds(const kd_dist *d, long *count, double *allreduce_s, double *wait_s) {
    long n = job(d)->exchanges;
    if (count) *count = n > 1 ? n - 1 : 0;
    if (allreduce_s) *allreduce_s = job(d)->allreduce_s;
    if (wait_s) *wait_s = job(d)->wait_s;
    return job(d)->exchange_s;
}

const volatile int *kd_dist_stop_flag(kd_dist *d) { return d ? &d->stop : NULL; }

int kd_dist_launched(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return 1;
    }
    return 0;
}

static double env_timeout(void) {
    const char *e = getenv("KDSEG_DIST_TIMEOUT");
    char *end;
    double t = e ? strtod(e, &end) : 0;
    return e && *e && !*end && t > 0 ? t : DEFAULT_TIMEOUT_S;
}

/* ---- 64-bit FNV-1a over the parameter and state slabs --------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static kd_status hash_tensor(const kd_tensor *t, uint64_t *h) {
    if (!t) return KD_OK;
    size_t n = kd_tensor_numel(t);
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "model hash: %zu values", n);
    kd_status st = kd_tensor_download_ndhwc(t, v);
    if (!st) *h = fnv1a(*h, v, n * sizeof *v);
    free(v);
    return st;
}

kd_status kd_model_hash(kd_model *m, uint64_t *hash) {
    uint64_t h = 0xcbf29ce484222325ULL;
    kd_status st = hash_tensor(kd_model_params(m), &h);
    if (!st) st = hash_tensor(kd_model_state(m), &h);
    if (st) return kd_fail_context(st, "hashing the parameters of %s", kd_model_spec(m));
    *hash = h;
    return KD_OK;
}

#ifdef KD_HAVE_MPI

int kd_dist_available(void) { return 1; }

const char *kd_dist_library(void) {
    static char v[MPI_MAX_LIBRARY_VERSION_STRING + 1];
    if (!v[0]) {
        int n = 0;
        MPI_Get_library_version(v, &n);
        v[strcspn(v, "\n,")] = 0; /* its first line, up to the first comma */
    }
    return v;
}

static kd_status mpi_fail(int err, const char *what) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int n = 0;
    if (MPI_Error_string(err, msg, &n) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", err);
    return kd_fail(KD_ERR_PEER, "%s: %s (another rank may have died)", what, msg);
}

/* Waits for a nonblocking collective, at most the job's timeout. */
static kd_status wait_for(kd_dist *d, MPI_Request *req, const char *what) {
    double t0 = kd_now_s();
    long nap_ns = 1000;
    for (;;) {
        int done = 0, err = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (err != MPI_SUCCESS) return mpi_fail(err, what);
        if (done) return KD_OK;
        if (kd_now_s() - t0 > d->timeout)
            return kd_fail(KD_ERR_PEER,
                           "%s: no answer from the other ranks within %.0f s (a rank died, hangs or "
                           "is far behind; KDSEG_DIST_TIMEOUT sets the limit)",
                           what, d->timeout);
        struct timespec ts = {0, nap_ns};
        nanosleep(&ts, NULL);
        if (nap_ns < 1000000) nap_ns *= 2; /* at most 1 ms between looks */
    }
}

kd_status kd_dist_open(kd_dist_mode mode, kd_dist **out) {
    *out = NULL;
    kd_dist *d = calloc(1, sizeof *d);
    if (!d) return kd_fail(KD_ERR_OUT_OF_MEMORY, "distributed job");
    *d = solo;
    d->timeout = env_timeout();
    if (mode == KD_DIST_NONE || (mode == KD_DIST_AUTO && !kd_dist_launched())) {
        *out = d;
        return KD_OK;
    }
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (inited) {
        free(d);
        return kd_fail(KD_ERR_INVALID_ARG, "distributed job: MPI is already initialised in this process");
    }
    /* only the thread that called kd_dist_open calls MPI */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        free(d);
        return kd_fail(KD_ERR_PEER, "distributed job: MPI_Init failed");
    }
    d->mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm local;
    int err = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    if (err == MPI_SUCCESS) err = MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    if (err == MPI_SUCCESS) err = MPI_Comm_dup(MPI_COMM_WORLD, &d->end);
    if (err == MPI_SUCCESS) err = MPI_Comm_set_errhandler(d->end, MPI_ERRORS_RETURN);
    if (err == MPI_SUCCESS) err = MPI_Comm_rank(d->comm, &d->rank);
    if (err == MPI_SUCCESS) err = MPI_Comm_size(d->comm, &d->size);
    if (err == MPI_SUCCESS)
        err = MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
    if (err == MPI_SUCCESS) {
        MPI_Comm_rank(local, &d->local_rank);
        MPI_Comm_size(local, &d->local_size);
        MPI_Comm_free(&local);
    }
    *out = d;
    return err == MPI_SUCCESS ? KD_OK : mpi_fail(err, "distributed job: setting up the communicator");
}

void kd_dist_free(kd_dist *d) {
    if (!d) return;
    if (d->mpi) {
        if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
        if (d->end != MPI_COMM_NULL) MPI_Comm_free(&d->end);
        MPI_Finalize();
    }
    free(d->buf);
    free(d);
}

void kd_dist_abort(kd_dist *d, int code) {
    if (d && d->mpi && d->size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    }
    kd_dist_free(d);
}

kd_status kd_dist_end(kd_dist *d, double seconds) {
    if (!d || d->size == 1) return KD_OK;
    MPI_Request r;
    double keep = d->timeout;
    int err = MPI_Ibarrier(d->end, &r);
    if (seconds > 0) d->timeout = seconds;
    kd_status st = err != MPI_SUCCESS ? mpi_fail(err, "ending the job") : wait_for(d, &r, "ending the job");
    d->timeout = keep;
    return st;
}

kd_status kd_dist_barrier(kd_dist *d, const char *what) {
    if (!d || d->size == 1) return KD_OK;
    MPI_Request r;
    int err = MPI_Ibarrier(d->comm, &r);
    return err != MPI_SUCCESS ? mpi_fail(err, what) : wait_for(d, &r, what);
}

kd_status kd_dist_allreduce_sum(kd_dist *d, float *buf, size_t n, const char *what) {
    if (!d || d->size == 1) return KD_OK;
    if (n > (size_t)0x7fffffff) return kd_fail(KD_ERR_INVALID_ARG, "%s: %zu values in one allreduce", what, n);
    MPI_Request r;
    int err = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, d->comm, &r);
    return err != MPI_SUCCESS ? mpi_fail(err, what) : wait_for(d, &r, what);
}

kd_status kd_dist_broadcast(kd_dist *d, void *buf, size_t bytes, int root, const char *what) {
    if (!d || d->size == 1) return KD_OK;
    if (bytes > (size_t)0x7fffffff) return kd_fail(KD_ERR_INVALID_ARG, "%s: %zu bytes in one broadcast", what, bytes);
    MPI_Request r;
    int err = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, d->comm, &r);
    return err != MPI_SUCCESS ? mpi_fail(err, what) : wait_for(d, &r, what);
}

kd_status kd_dist_allgather_u64(kd_dist *d, uint64_t mine, uint64_t *all, const char *what) {
    if (!d || d->size == 1) {
        all[0] = mine;
        return KD_OK;
    }
    MPI_Request r;
    int err = MPI_Iallgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, d->comm, &r);
    return err != MPI_SUCCESS ? mpi_fail(err, what) : wait_for(d, &r, what);
}

#else /* no MPI: a job of one rank */

int kd_dist_available(void) { return 0; }
const char *kd_dist_library(void) { return "none (built without MPI)"; }

kd_status kd_dist_open(kd_dist_mode mode, kd_dist **out) {
    *out = NULL;
    if (mode == KD_DIST_MPI)
        return kd_fail(KD_ERR_UNSUPPORTED, "distributed job: this kdseg was built without MPI "
                       "(install libopenmpi-dev and rebuild with meson -Dmpi=enabled)");
    kd_dist *d = calloc(1, sizeof *d);
    if (!d) return kd_fail(KD_ERR_OUT_OF_MEMORY, "distributed job");
    *d = solo;
    d->timeout = env_timeout();
    if (mode == KD_DIST_AUTO && kd_dist_launched())
        kd_log(KD_LOG_WARN, "started by an MPI launcher, but this kdseg was built without MPI: "
                            "every rank runs alone");
    *out = d;
    return KD_OK;
}

void kd_dist_free(kd_dist *d) {
    if (!d) return;
    free(d->buf);
    free(d);
}

void kd_dist_abort(kd_dist *d, int code) {
    (void)code;
    kd_dist_free(d);
}

kd_status kd_dist_barrier(kd_dist *d, const char *what) {
    (void)d, (void)what;
    return KD_OK;
}

kd_status kd_dist_end(kd_dist *d, double seconds) {
    (void)d, (void)seconds;
    return KD_OK;
}

kd_status kd_dist_allreduce_sum(kd_dist *d, float *buf, size_t n, const char *what) {
    (void)d, (void)buf, (void)n, (void)what;
    return KD_OK;
}

kd_status kd_dist_broadcast(kd_dist *d, void *buf, size_t bytes, int root, const char *what) {
    (void)d, (void)buf, (void)bytes, (void)root, (void)what;
    return KD_OK;
}

kd_status kd_dist_allgather_u64(kd_dist *d, uint64_t mine, uint64_t *all, const char *what) {
    (void)d, (void)what;
    all[0] = mine;
    return KD_OK;
}

#endif

/* ---- built on the collectives ---------------------------------------------------------- */

kd_status kd_dist_agree(kd_dist *d, kd_status mine) {
    int n = kd_dist_size(d);
    if (n == 1) return mine;
    uint64_t *all = malloc((size_t)n * sizeof *all);
    if (!all) return kd_fail(KD_ERR_OUT_OF_MEMORY, "agreeing with %d ranks", n);
    /* a failed rank's own message must survive the exchange's */
    char msg[KD_MESSAGE_MAX];
    snprintf(msg, sizeof msg, "%s", kd_last_error());
    kd_status st = kd_dist_allgather_u64(d, (uint64_t)mine, all, "agreeing on the ranks' status");
    if (!st && !mine) {
        for (int r = 0; r < n; r++)
            if (all[r]) {
                st = kd_fail(KD_ERR_PEER, "rank %d of %d failed (%s; its message says why)", r, n,
                             kd_status_string((kd_status)all[r]));
                break;
            }
    } else if (mine) {
        kd_fail(mine, "%s", msg);
        st = mine;
    }
    free(all);
    return st;
}

kd_status kd_dist_check_model(kd_dist *d, kd_model *m, long step) {
    int n = kd_dist_size(d);
    uint64_t h = 0;
    kd_status st = kd_model_hash(m, &h);
    if (st || n == 1) return st;
    uint64_t *all = malloc((size_t)n * sizeof *all);
    if (!all) return kd_fail(KD_ERR_OUT_OF_MEMORY, "comparing %d ranks' parameters", n);
    st = kd_dist_allgather_u64(d, h, all, "comparing the ranks' parameters");
    int same = 1;
    for (int r = 1; r < n && !st; r++) same &= all[r] == all[0];
    if (!st && !same) {
        char list[1024] = "";
        size_t used = 0;
        for (int r = 0; r < n && used < sizeof list - 40; r++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s rank %d %016llx", r ? "," : "", r,
                                     (unsigned long long)all[r]);
        st = kd_fail(KD_ERR_PEER,
                     "the ranks' parameters differ at step %ld (hashes:%s): the ranks' devices do not "
                     "compute alike or a rank was given other data; stopping every rank",
                     step, list);
    }
    free(all);
    return st;
}

/* Tensor t into buf (raw device order), or buf into t. */
static kd_status move(kd_tensor *t, float *buf, int to_device) {
    if (!t) return KD_OK;
    return to_device ? kd_tensor_upload_ndhwc(t, buf) : kd_tensor_download_ndhwc(t, buf);
}

kd_status kd_dist_broadcast_model(kd_dist *d, kd_model *m, kd_optim *o) {
    if (kd_dist_size(d) == 1) return KD_OK;
    kd_tensor *ts[6] = {kd_model_params(m), kd_model_state(m)};
    int nt = 2;
    for (int i = 0; o && i < kd_optim_state_count(o) && nt < 6; i++) ts[nt++] = kd_optim_state_tensor(o, i);
    kd_status st = KD_OK;
    for (int i = 0; i < nt && !st; i++) {
        if (!ts[i]) continue;
        size_t n = kd_tensor_numel(ts[i]);
        float *v = malloc((n ? n : 1) * sizeof *v);
        if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "broadcasting %zu values", n);
        st = move(ts[i], v, 0);
        if (!st) st = kd_dist_broadcast(d, v, n * sizeof *v, 0, "broadcasting rank 0's parameters");
        if (!st) st = move(ts[i], v, 1);
        free(v);
    }
    long steps = o ? kd_optim_steps(o) : 0;
    if (!st && o) st = kd_dist_broadcast(d, &steps, sizeof steps, 0, "broadcasting the optimizer's step");
    if (!st && o) kd_optim_set_steps(o, steps);
    return st;
}

/* The optimizer's gradient hook: one allreduce of [gradients, state, loss, stop]. */
static kd_status exchange(void *ctx, kd_optim *o, kd_tensor *grads, kd_tensor *loss_total) {
    kd_dist *d = ctx;
    /* the step's backward first (the gradients' read would wait for it anyway): the
     * exchange's time is then the exchange's alone */
    kd_status st = kd_device_finish(kd_model_device(d->m));
    if (st) return st;
    double t0 = kd_now_s();
    long step = kd_optim_steps(o); /* updates before this one */
    kd_tensor *state = kd_model_state(d->m);
    size_t ng = kd_tensor_numel(grads), ns = state ? kd_tensor_numel(state) : 0;
    float *b = d->buf;
    char what[96];
    snprintf(what, sizeof what, "averaging the gradients of update %ld", step + 1);
    st = move(grads, b, 0);
    if (!st) st = move(state, b + ng, 0);
    b[ng + ns] = 0.0f;
    if (!st && loss_total) st = move(loss_total, b + ng + ns, 0);
    b[ng + ns + 1] = d->user_stop && *d->user_stop ? 1.0f : 0.0f;
    double t1 = kd_now_s();
    /* profiling: the wait for the slowest rank apart from the reduction itself */
    if (!st && d->profile) st = kd_dist_barrier(d, what);
    double tb = kd_now_s();
    if (!st) st = kd_dist_allreduce_sum(d, b, ng + ns + 2, what);
    if (st) return st;
    double t2 = kd_now_s();
    float inv = 1.0f / (float)d->size;
    for (size_t i = 0; i < ng + ns + 1; i++) b[i] *= inv;
    if (b[ng + ns + 1] > 0) d->stop = 1;
    st = move(grads, b, 1);
    if (!st) st = move(state, b + ng, 1);
    if (!st && loss_total) st = move(loss_total, b + ng + ns, 1);
    /* the parameters before this update: identical on every rank, or a step went astray */
    if (!st && (step == 0 || (d->check_every > 0 && step % d->check_every == 0)))
        st = kd_dist_check_model(d, d->m, step);
    if (d->exchanges++ > 0) { /* the first also waits for every rank's start-up */
        d->exchange_s += kd_now_s() - t0;
        d->allreduce_s += t2 - tb;
        d->wait_s += tb - t1;
    }
    return st;
}

kd_status kd_dist_attach(kd_dist *d, kd_model *m, kd_optim *o, const volatile int *stop, long check_every) {
    if (kd_dist_size(d) == 1) return KD_OK;
    kd_tensor *state = kd_model_state(m);
    size_t n = kd_tensor_numel(kd_model_grads(m)) + (state ? kd_tensor_numel(state) : 0) + 2;
    float *b = realloc(d->buf, n * sizeof *b);
    if (!b) return kd_fail(KD_ERR_OUT_OF_MEMORY, "gradient exchange buffer of %zu values", n);
    d->buf = b;
    d->nbuf = n;
    d->m = m;
    d->user_stop = stop;
    d->stop = 0;
    d->check_every = check_every;
    d->exchange_s = d->allreduce_s = d->wait_s = 0;
    const char *prof = getenv("KDSEG_DIST_PROFILE");
    d->profile = prof && *prof && strcmp(prof, "0");
    d->exchanges = 0;
    kd_optim_set_grad_hook(o, exchange, d);
    return KD_OK;
}
