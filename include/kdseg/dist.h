/* kdseg: scale-out over MPI. A kd_dist is this process's place in a job of `size` ranks
 * started by mpirun (or srun, mpiexec): data-parallel training, where every rank runs the
 * same model on its own device and its own share of each step's batch and the gradients
 * are averaged over the ranks before every update, and sharded annotation and
 * segmentation, where each rank does its own share of the cases.
 *
 * Without MPI (a build with -Dmpi=disabled or no MPI found, or a process not started by
 * an MPI launcher) a kd_dist is a job of one rank and every call below is what one
 * process does alone; NULL is accepted everywhere as that job too.
 *
 * Every collective call waits at most the job's timeout (kd_dist_set_timeout; default
 * $KDSEG_DIST_TIMEOUT seconds, else 600) and then fails with KD_ERR_PEER naming what it
 * waited for: a rank that died, hangs or fell far behind never leaves the others hanging.
 * A rank that fails must end the job (kd_dist_abort, as the kdseg command does), since
 * the others would otherwise wait for it until the timeout. */
#ifndef KDSEG_DIST_H
#define KDSEG_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "kdseg/model.h"
#include "kdseg/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_dist kd_dist;

/* 1 when this build has MPI. */
int kd_dist_available(void);
/* The MPI library ("Open MPI v4.1.4, ..."), or "none (built without MPI)". Static. */
const char *kd_dist_library(void);
/* 1 when the environment says an MPI launcher started this process with more than one
 * rank ($OMPI_COMM_WORLD_SIZE, $PMI_SIZE, $PMIX_SIZE or $SLURM_NTASKS above 1). */
int kd_dist_launched(void);

typedef enum kd_dist_mode {
    KD_DIST_AUTO = 0, /* MPI when kd_dist_launched(), else one rank */
    KD_DIST_MPI,      /* MPI always (KD_ERR_UNSUPPORTED in a build without it) */
    KD_DIST_NONE      /* one rank, MPI untouched */
} kd_dist_mode;

/* Joins the job (MPI_Init, with errors returned rather than fatal); owned by the caller.
 * Once per process. */
kd_status kd_dist_open(kd_dist_mode mode, kd_dist **out);
/* Leaves the job (MPI_Finalize after a barrier bounded by the timeout) and frees. Only
 * when every rank succeeded: a rank that failed calls kd_dist_abort instead. NULL ok. */
void kd_dist_free(kd_dist *d);
/* Collective, at the end of a program's work: waits at most `seconds` (<= 0: the job's
 * timeout) until every rank arrived, on a communicator of its own (so a rank that failed
 * can call it while the others still wait in another collective). KD_OK: every rank is
 * done and may kd_dist_free, whatever its own outcome; else KD_ERR_PEER, and the caller
 * should kd_dist_abort. */
kd_status kd_dist_end(kd_dist *d, double seconds);
/* Ends every rank of the job with exit code `code` (MPI_Abort); returns only for a job
 * of one rank (after freeing d). For a program's error path: the library never calls it. */
void kd_dist_abort(kd_dist *d, int code);

int kd_dist_rank(const kd_dist *d);       /* 0..size-1 (0 for NULL) */
int kd_dist_size(const kd_dist *d);       /* ranks in the job (1 for NULL) */
int kd_dist_local_rank(const kd_dist *d); /* rank among those on this machine */
int kd_dist_local_size(const kd_dist *d); /* ranks on this machine */

/* Seconds a collective call waits before KD_ERR_PEER (> 0). */
void kd_dist_set_timeout(kd_dist *d, double seconds);
double kd_dist_timeout(const kd_dist *d);

/* Collective: every rank gives its status; all get KD_OK when all succeeded, else
 * KD_ERR_PEER naming the first failed rank (a failed rank keeps its own status and
 * message). Where every rank must agree before going on (e.g. after opening data). */
kd_status kd_dist_agree(kd_dist *d, kd_status mine);
/* Collective: waits until every rank arrived. what names the place for a timeout. */
kd_status kd_dist_barrier(kd_dist *d, const char *what);
/* Collective: buf[0..n) summed over the ranks, the sum on every rank. */
kd_status kd_dist_allreduce_sum(kd_dist *d, float *buf, size_t n, const char *what);
/* Collective: root's bytes into every rank's buf. */
kd_status kd_dist_broadcast(kd_dist *d, void *buf, size_t bytes, int root, const char *what);
/* Collective: every rank's value; all[0..size) on every rank. */
kd_status kd_dist_allgather_u64(kd_dist *d, uint64_t mine, uint64_t *all, const char *what);

/* 64-bit FNV-1a hash of the model's parameters and non-trained state, as stored on the
 * device (bit for bit: equal hashes mean identical parameters). A sync point. */
kd_status kd_model_hash(kd_model *m, uint64_t *hash);
/* Collective: KD_OK when the model's hash is the same on every rank, else KD_ERR_PEER
 * listing each rank's hash (at `step`). */
kd_status kd_dist_check_model(kd_dist *d, kd_model *m, long step);

/* ---- data-parallel training ------------------------------------------------------------ */

/* Collective: rank 0's parameters, non-trained state and optimizer state and step count
 * (o may be NULL) copied to every rank, so all start from the same point. */
kd_status kd_dist_broadcast_model(kd_dist *d, kd_model *m, kd_optim *o);
/* Makes o's steps data-parallel: before each update (kd_optim_set_grad_hook) the
 * gradients, the step's loss and the model's non-trained state are averaged over the
 * ranks in one allreduce (so all ranks skip a non-finite step together), a stop request
 * (*stop set on any rank) is shared, and every check_every steps (0: never; the first
 * step always) the parameters' hashes are compared: a mismatch fails the step with
 * KD_ERR_PEER on every rank. d, m, o and stop are borrowed for o's life. Nothing happens
 * in a job of one rank. */
kd_status kd_dist_attach(kd_dist *d, kd_model *m, kd_optim *o, const volatile int *stop,
                         long check_every);
/* The stop flag every rank agrees on (set by the step after any rank's *stop was set):
 * the training loop's stop flag in a data-parallel run. */
const volatile int *kd_dist_stop_flag(kd_dist *d);
/* Seconds spent in the gradient exchanges after the first (which also waits for every
 * rank's start-up), device reads and writes and the hash checks included; *count gets
 * their number, *allreduce_s the part spent in MPI_Allreduce and *wait_s the part spent
 * waiting for the slowest rank to reach the exchange. The wait is measured apart (by a
 * barrier before each allreduce) only with $KDSEG_DIST_PROFILE=1; otherwise it is 0 and
 * the allreduce's time includes it. Pointers may be NULL. */
double kd_dist_exchange_seconds(const kd_dist *d, long *count, double *allreduce_s, double *wait_s);

/* ---- sharding ------------------------------------------------------------------------ */

/* 1 when item i of a list is this rank's (i mod size == rank). */
int kd_dist_mine(const kd_dist *d, long i);

#ifdef __cplusplus
}
#endif
#endif
