/* Scale-out (kdseg/dist.h): a job of one rank, the sampler's rank shards, and, under
 * `mpirun --oversubscribe -np 2` on this machine's device, data-parallel training,
 * sharded annotation, ranks that disagree and a killed rank. The mpirun cases skip, saying
 * why, where this build has no MPI or mpirun is absent. */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kdtest.h"

/* the shared helpers of tests/kdtest.c */
#define tmp kd_test_path
#define show_log() kd_test_show_log(30)
#define log_has kd_test_log_has
#define now_s kd_test_now

#define kdseg kd_test_kdseg /* (tests/kdtest.c) */

/* The mpirun cases run only with an MPI build and mpirun on the PATH. */
static int mpi_ready(void) {
    if (!kd_dist_available()) {
        printf("skipped: this build has no MPI (meson -Dmpi=disabled, or libopenmpi-dev absent)\n");
        return 0;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("skipped: mpirun not found (apt-get install openmpi-bin)\n");
        return 0;
    }
    return 1;
}

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe"

/* mpirun -np 2 kdseg ARGS, its output appended to the log; the exit status. */
static int kdseg2(const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 '%s' %s >>'%s/log.txt' 2>&1", getenv("KDSEG_EXE"), args,
             kd_test_tmpdir());
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : 128;
}

/* The parameters of a checkpoint (caller frees), and their count. */
static float *ckpt_params(kd_device *dev, const char *path, size_t *n) {
    kd_model *m = NULL;
    if (kd_checkpoint_load(path, dev, &m, NULL, NULL, NULL)) {
        fprintf(stderr, "%s: %s\n", path, kd_last_error());
        return NULL;
    }
    *n = kd_tensor_numel(kd_model_params(m));
    float *v = malloc(*n * sizeof *v);
    if (v && kd_tensor_download_ndhwc(kd_model_params(m), v)) {
        free(v);
        v = NULL;
    }
    kd_model_free(m);
    return v;
}

/* Largest difference of two checkpoints' parameters over their largest magnitude; -1 when
 * one cannot be read or they differ in size. */
static double ckpt_diff(kd_device *dev, const char *a, const char *b) {
    size_t na = 0, nb = 0;
    float *pa = ckpt_params(dev, a, &na), *pb = ckpt_params(dev, b, &nb);
    double e = pa && pb && na == nb ? kd_test_rel_err(pa, pb, na, 1e-6) : -1;
    free(pa);
    free(pb);
    return e;
}

/* ---- a job of one rank ---------------------------------------------------------------- */

/* Catches: a process not started by mpirun (or a build without MPI) not being exactly one
 * process: collectives that change data, a rank or size other than 0 and 1, a status
 * that agree loses, items skipped by the shard rule. */
static int one_rank(void) {
    kd_dist *d = NULL;
    KD_CHECK_OK(kd_dist_open(KD_DIST_NONE, &d));
    const kd_dist *jobs[2] = {d, NULL};
    for (int j = 0; j < 2; j++) {
        const kd_dist *x = jobs[j];
        KD_CHECK(kd_dist_rank(x) == 0 && kd_dist_size(x) == 1 && kd_dist_local_size(x) == 1,
                 "job %d: rank %d of %d", j, kd_dist_rank(x), kd_dist_size(x));
        for (long i = 0; i < 5; i++) KD_CHECK(kd_dist_mine(x, i), "item %ld not mine", i);
    }
    float v[3] = {1.5f, -2.0f, 3.25f};
    KD_CHECK_OK(kd_dist_allreduce_sum(d, v, 3, "test"));
    KD_CHECK(v[0] == 1.5f && v[1] == -2.0f && v[2] == 3.25f, "allreduce of one rank changed the data");
    uint64_t all[1] = {0};
    KD_CHECK_OK(kd_dist_allgather_u64(d, 42, all, "test"));
    KD_CHECK(all[0] == 42, "allgather");
    KD_CHECK_OK(kd_dist_agree(d, KD_OK));
    kd_fail(KD_ERR_IO, "the rank's own message");
    KD_CHECK(kd_dist_agree(d, KD_ERR_IO) == KD_ERR_IO && strstr(kd_last_error(), "own message"),
             "agree lost the status or message: %s", kd_last_error());
    kd_dist_set_timeout(d, 12.5);
    KD_CHECK(kd_dist_timeout(d) == 12.5, "timeout %g", kd_dist_timeout(d));
    kd_dist_free(d);
    if (!kd_dist_available()) {
        d = NULL;
        KD_CHECK(kd_dist_open(KD_DIST_MPI, &d) == KD_ERR_UNSUPPORTED && !d &&
                     strstr(kd_last_error(), "without MPI"),
                 "asking a build without MPI for MPI: %s", kd_last_error());
    }
    return 0;
}

/* Catches: ranks drawing overlapping or different patches from the batch one process
 * would draw (then N ranks of batch B are not one process of batch N*B), or every rank
 * drawing the same patches. */
static int sampler_shards(void) {
    kd_phantom_opts po = {4, {32, 32, 32}, 3, 0, KD_LAYOUT_BRATS2018, 0};
    KD_CHECK_OK(kd_phantom_write_cohort(tmp("ph"), &po));
    kd_dataset *ds = NULL;
    KD_CHECK_OK(kd_dataset_open(tmp("ph"), NULL, &ds));
    kd_sampler_opts so;
    kd_sampler_opts_default(&so);
    so.patch[0] = so.patch[1] = so.patch[2] = 16;
    so.margin = 4;
    so.seed = 11;
    kd_sampler *whole = NULL, *part[3] = {NULL, NULL, NULL};
    so.batch = 3;
    KD_CHECK_OK(kd_sampler_create(&so, &whole));
    KD_CHECK_OK(kd_sampler_add(whole, ds, NULL, 0));
    so.batch = 1;
    so.ranks = 3;
    for (int r = 0; r < 3; r++) {
        so.rank = r;
        KD_CHECK_OK(kd_sampler_create(&so, &part[r]));
        KD_CHECK_OK(kd_sampler_add(part[r], ds, NULL, 0));
    }
    so.rank = 3;
    kd_sampler *bad = NULL;
    KD_CHECK(kd_sampler_create(&so, &bad) == KD_ERR_INVALID_ARG && !bad, "rank 3 of 3 accepted");
    size_t ni = kd_sampler_image_floats(part[0]), nt = kd_sampler_target_floats(part[0]);
    float *wi = malloc(3 * ni * sizeof(float)), *wt = malloc(3 * nt * sizeof(float));
    float *pi = malloc(ni * sizeof(float)), *pt = malloc(nt * sizeof(float));
    KD_CHECK(wi && wt && pi && pt, "memory");
    int failed = 0, differ = 0;
    for (int64_t step = 0; step < 6 && !failed; step++) { /* past an epoch of 4 cases */
        if (kd_sampler_batch(whole, step, wi, wt, NULL)) failed = 1;
        for (int r = 0; r < 3 && !failed; r++) {
            if (kd_sampler_batch(part[r], step, pi, pt, NULL)) failed = 1;
            else if (memcmp(pi, wi + (size_t)r * ni, ni * sizeof(float)) ||
                     memcmp(pt, wt + (size_t)r * nt, nt * sizeof(float))) {
                fprintf(stderr, "step %lld: rank %d's patch is not sample %d of the whole batch\n",
                        (long long)step, r, r);
                failed = 1;
            }
        }
        differ += memcmp(wi, wi + ni, ni * sizeof(float)) != 0;
    }
    free(wi), free(wt), free(pi), free(pt);
    for (int r = 0; r < 3; r++) kd_sampler_free(part[r]);
    kd_sampler_free(whole);
    kd_dataset_free(ds);
    KD_CHECK(!failed, "%s", kd_last_error());
    KD_CHECK(differ == 6, "ranks 0 and 1 drew the same patch at %d of 6 steps", 6 - differ);
    return 0;
}

/* ---- under mpirun ---------------------------------------------------------------------- */

#define TRAIN_OPTS "--recipe phantom --dataset %s --arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --margin 4 " \
                   "--loss bce --optim sgd --val-cases 1 --val-every 0 --threads 0 "
#define TRAIN_ARGS "train " TRAIN_OPTS
#define TRAIN TRAIN_ARGS "--lr 0.05 --quiet "

static int cohort(void) {
    KD_CHECK(kdseg("phantom --out %s --cases 4 --size 32 --seed 5", tmp("ph")) == 0, "phantom");
    return 0;
}

/* Catches: gradients summed instead of averaged, not exchanged at all, or exchanged but
 * not applied alike (ranks' parameters differ); ranks sampling other patches than one
 * process of twice the batch, in training and in online distillation (the scheduler's
 * step); a 2-rank run that cannot resume on one rank. The control (one process of batch 1)
 * shows the comparison can fail. */
static int train_equiv(void) {
    if (!mpi_ready()) return KD_TEST_SKIP;
    KD_DEVICE_OR_FAIL(dev);
    if (cohort()) return 1;
    char ph[1024];
    snprintf(ph, sizeof ph, "%s", tmp("ph"));
    /* (validation of 2 held-out cases every 2 steps: shared over the ranks, one case each) */
#define VAL "--val-cases 2 --val-every 2 "
    int r2 = kdseg2(TRAIN_ARGS VAL "--lr 0.05 --batch 1 --steps 4 --ckpt-every 2 --out %s", ph, tmp("two"));
    if (r2) show_log();
    KD_CHECK(r2 == 0, "mpirun -np 2 kdseg train exited %d", r2);
    KD_CHECK(log_has("parameters identical on all 2 ranks"), "no parameter check on the ranks");
    KD_CHECK(kdseg(TRAIN VAL "--batch 2 --steps 4 --out %s", ph, tmp("one")) == 0, "batch 2 on one rank");
    KD_CHECK(kdseg(TRAIN VAL "--batch 1 --steps 4 --out %s", ph, tmp("half")) == 0, "batch 1 on one rank");
    double same = ckpt_diff(dev, tmp("two/last.kds"), tmp("one/last.kds"));
    double control = ckpt_diff(dev, tmp("two/last.kds"), tmp("half/last.kds"));
    printf("2 ranks x batch 1 against 1 rank x batch 2: max relative difference %.3g; against "
           "1 rank x batch 1 (control): %.3g\n", same, control);
    KD_CHECK(same >= 0 && same < 1e-5, "2 ranks x batch 1 differ from batch 2 by %g", same);
    KD_CHECK(control > 1e-3, "the control differs by only %g: the check cannot tell", control);
    /* the losses and validation Dice logged by rank 0 are the global batch's and all the
     * held-out cases' */
    FILE *fa = fopen(tmp("two/train.csv"), "r"), *fb = fopen(tmp("one/train.csv"), "r");
    KD_CHECK(fa && fb, "train.csv missing");
    int validated = 0;
    for (int row = 0; row < 5; row++) {
        char la[512] = "", lb[512] = "";
        if (!fgets(la, sizeof la, fa) || !fgets(lb, sizeof lb, fb)) break;
        float xa = 0, xb = 0;
        if (row > 0) {
            KD_CHECK(sscanf(strchr(strchr(la, ',') + 1, ',') + 1, "%f", &xa) == 1 &&
                         sscanf(strchr(strchr(lb, ',') + 1, ',') + 1, "%f", &xb) == 1,
                     "rows '%s' '%s'", la, lb);
            KD_CHECK(fabsf(xa - xb) < 1e-5f, "step %d: loss %g on 2 ranks, %g on one", row - 1, (double)xa,
                     (double)xb);
            const char *va = la, *vb = lb; /* the columns after the time: val_wt, val_tc, val_et */
            for (int k = 0; k < 6; k++) va = strchr(va, ',') + 1, vb = strchr(vb, ',') + 1;
            KD_CHECK(!strcmp(va, vb), "step %d: validation %s on 2 ranks, %s on one", row - 1, va, vb);
            validated += va[0] != ',';
        }
    }
    fclose(fa), fclose(fb);
    KD_CHECK(validated == 2, "%d validated rows, expected 2", validated);
    /* online distillation (teachers through the scheduler on each rank's share) alike */
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 7 --unlabeled --first 100", tmp("unl")) == 0,
             "phantom");
    char teachers[2100], unl[1024];
    snprintf(teachers, sizeof teachers, "--teacher %s --teacher %s", tmp("one/last.kds"), tmp("half/last.kds"));
    snprintf(unl, sizeof unl, "%s", tmp("unl"));
    r2 = kdseg2("distill --online %s --unlabeled %s " TRAIN_OPTS "--lr 0.05 --quiet --batch 1 --steps 4 --out %s",
                teachers, unl, ph, tmp("on2"));
    if (r2) show_log();
    KD_CHECK(r2 == 0, "mpirun -np 2 kdseg distill --online exited %d", r2);
    KD_CHECK(kdseg("distill --online %s --unlabeled %s " TRAIN_OPTS "--lr 0.05 --quiet --batch 2 --steps 4 --out %s",
                   teachers, unl, ph,
                   tmp("on1")) == 0,
             "online distillation, batch 2 on one rank");
    double online = ckpt_diff(dev, tmp("on2/last.kds"), tmp("on1/last.kds"));
    printf("online distillation, 2 ranks x batch 1 against 1 rank x batch 2: %.3g\n", online);
    KD_CHECK(online >= 0 && online < 1e-5, "online: 2 ranks x batch 1 differ from batch 2 by %g", online);
    /* a run of 2 ranks resumes on 1 */
    KD_CHECK(kdseg(TRAIN "--batch 2 --steps 6 --resume --out %s", ph, tmp("two")) == 0,
             "resuming the 2-rank run on one rank");
    kd_ckpt_meta meta;
    KD_CHECK_OK(kd_checkpoint_read_meta(tmp("two/last.kds"), &meta));
    KD_CHECK(meta.step == 6, "resumed to step %ld", meta.step);
    return 0;
}

/* Catches: ranks annotating the same cases or missing some, agreement rows lost, doubled
 * or out of order, rank files left behind: the sharded output must equal one process's
 * byte for byte. Also a resumed sharded run (a case removed) redoing only that case. */
static int annotate_shard(void) {
    if (!mpi_ready()) return KD_TEST_SKIP;
    KD_DEVICE_OR_FAIL(dev);
    KD_CHECK(kdseg("phantom --out %s --cases 5 --size 32 --seed 7 --unlabeled --first 100", tmp("unl")) == 0,
             "phantom");
    const char *specs[2] = {"resunet:widths=8,16:enc=1,1:dec=1", "unet3d:widths=8,16"};
    for (int i = 0; i < 2; i++) {
        kd_model *m = NULL;
        KD_CHECK_OK(kd_model_create(dev, specs[i], 1 + i, &m));
        kd_ckpt_meta meta;
        kd_ckpt_meta_init(&meta);
        meta.patch[0] = meta.patch[1] = meta.patch[2] = 16;
        KD_CHECK_OK(kd_checkpoint_save(tmp(i ? "t2.kds" : "t1.kds"), m, NULL, &meta));
        kd_model_free(m);
    }
    char t1[1024], t2[1024], unl[1024];
    snprintf(t1, sizeof t1, "%s", tmp("t1.kds"));
    snprintf(t2, sizeof t2, "%s", tmp("t2.kds"));
    snprintf(unl, sizeof unl, "%s", tmp("unl"));
    KD_CHECK(kdseg("annotate --teacher %s --teacher %s --dataset %s --out %s", t1, t2, unl, tmp("a1")) == 0,
             "annotate on one rank");
    int r = kdseg2("annotate --teacher %s --teacher %s --dataset %s --out %s", t1, t2, unl, tmp("a2"));
    if (r) show_log();
    KD_CHECK(r == 0, "mpirun -np 2 kdseg annotate exited %d", r);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && for f in a1/*.nii.gz a1/agreement.csv; do cmp \"$f\" a2/${f#a1/} || exit 1; done && "
             "[ $(ls a2 | wc -l) -eq 6 ] && [ $(wc -l < a2/agreement.csv) -eq 6 ]", kd_test_tmpdir());
    KD_CHECK(system(cmd) == 0, "sharded annotation differs from one process's (or has other files)");
    /* resumed: one case removed and redone by its rank, the rest skipped */
    snprintf(cmd, sizeof cmd, "rm '%s/a2/KDPhantom_103.nii.gz'", kd_test_tmpdir());
    KD_CHECK(system(cmd) == 0, "rm");
    r = kdseg2("annotate --teacher %s --teacher %s --dataset %s --out %s", t1, t2, unl, tmp("a2"));
    KD_CHECK(r == 0, "resumed sharded annotate exited %d", r);
    KD_CHECK(log_has("KDPhantom_100: already annotated, skipped"), "no skip on resume");
    snprintf(cmd, sizeof cmd, "cd '%s' && for f in a1/*.nii.gz a1/agreement.csv; do cmp \"$f\" a2/${f#a1/} || exit 1; done && "
             "[ $(ls a2 | wc -l) -eq 6 ]", kd_test_tmpdir());
    KD_CHECK(system(cmd) == 0, "resumed sharded annotation differs from one process's");
    return 0;
}

/* Catches: ranks whose parameters drift apart (here: a rank started with another learning
 * rate, as a misconfigured job or two kinds of device computing differently would) training
 * on silently; the hash check must stop every rank. */
static int ranks_disagree(void) {
    if (!mpi_ready()) return KD_TEST_SKIP;
    if (cohort()) return 1;
    char cmd[8192], ph[1024];
    snprintf(ph, sizeof ph, "%s", tmp("ph"));
    const char *exe = getenv("KDSEG_EXE");
    snprintf(cmd, sizeof cmd,
             MPIRUN " -np 1 '%s' " TRAIN_ARGS "--lr 0.05 --steps 4 --ckpt-every 2 --out %s : -np 1 '%s' " TRAIN_ARGS
             "--lr 0.04 --steps 4 --ckpt-every 2 --out %s >>'%s/log.txt' 2>&1",
             exe, ph, tmp("dis"), exe, ph, tmp("dis"), kd_test_tmpdir());
    int r = system(cmd);
    KD_CHECK(!(WIFEXITED(r) && WEXITSTATUS(r) == 0), "ranks computing differently trained on");
    if (!log_has("parameters differ at step 2")) show_log();
    KD_CHECK(log_has("parameters differ at step 2"), "no hash mismatch message");
    return 0;
}

/* Rank 1 of a training job gets sig once a few steps are logged: the job must end within
 * seconds with a non-zero status, its last checkpoint whole, and a resumed run (one rank)
 * must go on from it with no temporary file left. */
static int fault_run(int sig, const char *name) {
    if (!mpi_ready()) return KD_TEST_SKIP;
    if (cohort()) return 1;
    char args[4096], out[1024], logp[1024];
    snprintf(out, sizeof out, "%s", tmp(name));
    snprintf(logp, sizeof logp, "%s/log.txt", kd_test_tmpdir());
    /* a stopped rank is found by the others' timeout */
    snprintf(args, sizeof args, "KDSEG_DIST_TIMEOUT=5 " MPIRUN " -np 2 -x KDSEG_DIST_TIMEOUT '%s' -v " TRAIN_ARGS "--lr 0.05 "
             "--batch 1 --steps 100000 --ckpt-every 3 --out %s", getenv("KDSEG_EXE"), tmp("ph"), out);
    pid_t job = fork();
    if (job == 0) {
        FILE *f = freopen(logp, "a", stdout);
        if (!f || dup2(fileno(stdout), 2) < 0) _exit(127);
        execl("/bin/sh", "sh", "-c", args, (char *)NULL);
        _exit(127);
    }
    KD_CHECK(job > 0, "fork");
    /* wait for a few steps and rank 1's pid */
    long victim = 0;
    char csv[1100];
    snprintf(csv, sizeof csv, "%s/train.csv", out);
    for (int t = 0; t < 1200 && !victim; t++) { /* 120 s */
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(csv, "r");
        int rows = 0;
        char line[512];
        while (f && fgets(line, sizeof line, f)) rows++;
        if (f) fclose(f);
        if (rows < 8) continue;
        FILE *l = fopen(logp, "r");
        while (l && fgets(line, sizeof line, l)) {
            const char *p = strstr(line, "[rank 1/2] pid ");
            if (p) victim = atol(p + 15);
        }
        if (l) fclose(l);
    }
    if (!victim) {
        kill(job, SIGKILL);
        waitpid(job, NULL, 0);
        show_log();
    }
    KD_CHECK(victim > 0, "no steps or no pid of rank 1 within 120 s");
    KD_CHECK(kill((pid_t)victim, sig) == 0, "kill %ld", victim);
    double t0 = now_s();
    int status = 0, done = 0;
    while (!done && now_s() - t0 < 60) {
        done = waitpid(job, &status, WNOHANG) == job;
        struct timespec ts = {0, 50000000};
        if (!done) nanosleep(&ts, NULL);
    }
    double waited = now_s() - t0;
    if (!done) {
        kill(job, SIGKILL);
        waitpid(job, NULL, 0);
    }
    printf("the job ended %.1f s after rank 1 got signal %d (status %d)\n", waited, sig,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (sig == SIGSTOP) kill((pid_t)victim, SIGKILL); /* (a stopped rank the job left) */
    KD_CHECK(done, "the job still runs 60 s after rank 1 got signal %d (hang)", sig);
    KD_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the job exited 0 with rank 1 gone");
    if (sig == SIGSTOP && !log_has("no answer from the other ranks within 5 s")) show_log();
    KD_CHECK(sig != SIGSTOP || log_has("no answer from the other ranks within 5 s"),
             "rank 0 did not name the timeout");
    /* the last checkpoint whole; a resumed run (one rank) continues from it */
    kd_ckpt_meta meta;
    char ckpt[1100];
    snprintf(ckpt, sizeof ckpt, "%s/last.kds", out);
    KD_CHECK_OK(kd_checkpoint_read_meta(ckpt, &meta));
    KD_CHECK(meta.step > 0 && meta.step % 3 == 0, "checkpoint at step %ld", meta.step);
    KD_CHECK(kdseg(TRAIN "--batch 2 --steps %ld --resume --out %s", tmp("ph"), meta.step + 2, out) == 0,
             "resuming after the killed job");
    DIR *dir = opendir(out);
    struct dirent *e;
    int stray = 0;
    while (dir && (e = readdir(dir)))
        if (strstr(e->d_name, ".tmp-")) stray++, fprintf(stderr, "left: %s\n", e->d_name);
    if (dir) closedir(dir);
    KD_CHECK(stray == 0, "%d temporary files left after the resumed run", stray);
    return 0;
}

/* Catches: a rank killed (-9) leaving the others hanging in the allreduce. */
static int killed_rank(void) { return fault_run(SIGKILL, "killed"); }

/* Catches: a rank that hangs (stopped) leaving the others waiting forever: the timeout
 * must end the job with a message. */
static int stopped_rank(void) { return fault_run(SIGSTOP, "stopped"); }

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"one_rank", one_rank},         {"sampler_shards", sampler_shards}, {"train_equiv", train_equiv},
        {"annotate_shard", annotate_shard}, {"ranks_disagree", ranks_disagree}, {"killed_rank", killed_rank},
        {"stopped_rank", stopped_rank},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof *cases));
}
