/* kdseg: composing file paths without silent truncation, folders, atomic writes, and
 * output folders with one writer each.
 *
 * Paths. Every path kdseg composes (FOLDER/CASE.nii.gz, OUT/last.kds, a temporary
 * name) goes through kd_path_printf, which refuses with "path too long: ..." what a
 * fixed buffer or the file system (KD_PATH_MAX) could not hold, instead of cutting it
 * (a cut path is another file: outputs overwrite each other).
 *
 * Output folders. kd_outdir_open takes an exclusive advisory lock (flock) on
 * OUT/.kdseg.lock, which holds the writer's process id. A second process that opens
 * the same folder gets KD_ERR_BUSY naming the folder and that id. The operating
 * system drops the lock when the holder ends, however it ends (kill -9 included), so
 * a killed run never blocks the next. The file itself stays (removing it would let
 * two processes lock two different files of one name).
 *
 * Atomic writes. Every kdseg writer writes FINAL under the temporary name kd_tmp_name
 * gives (FINAL.tmp-<PID>-<N>, in FINAL's folder), then renames it to FINAL, so a reader
 * never sees half a file. A writer killed between the two leaves the temporary file
 * behind; kd_tmp_sweep removes such files once they are stale. */
#ifndef KDSEG_FS_H
#define KDSEG_FS_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest path the file system takes, in bytes with the NUL (Linux's PATH_MAX). */
#define KD_PATH_MAX 4096
/* The most a writer appends to a final name for its temporary file (".tmp-PID-N"). */
#define KD_TMP_SUFFIX_MAX 32

/* snprintf into out[n] for a path. When the result does not fit in n bytes (nor in
 * KD_PATH_MAX), out is left empty and the error is KD_ERR_INVALID_ARG "path too long:
 * PATH (L characters; at most M)", the path shortened in its middle. */
kd_status kd_path_printf(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* dir/name in out[n], as kd_path_printf. */
kd_status kd_path_join(char *out, size_t n, const char *dir, const char *name);

/* Checks that dir/name, and the temporary name a writer uses for it, fit in
 * KD_PATH_MAX: for a command to refuse an output folder before it does any work. */
kd_status kd_path_check_output(const char *dir, const char *name);

/* mkdir -p: dir and its missing parents (0755). Existing folders are fine; a file in
 * the way or a path too long is an error naming it. */
kd_status kd_mkdirs(const char *dir);

/* Writes into out[n] the temporary name for a file to be renamed to final_path:
 * "FINAL.tmp-<PID>-<N>", N counting up within the process (unique across threads); as
 * kd_path_printf, "path too long" when it does not fit. */
kd_status kd_tmp_name(const char *final_path, char *out, size_t n);

/* A temporary file older than this (seconds since its last change) whose writer is
 * gone may be removed (see kd_tmp_sweep). */
#define KD_TMP_STALE_SECONDS 600

/* 1 when `name` (a file name, no folder) is a temporary name with a non-empty FINAL,
 * and then *pid is the writer's process id; else 0. Accepted: FINAL.tmp-<PID>-<N>
 * (kd_tmp_name) and the names of versions before it, FINAL.tmp<PID> and
 * FINAL.tmp.<PID>, so that their leftovers are swept too. */
int kd_tmp_name_parse(const char *name, pid_t *pid);

/* Removes the stale temporary files directly in `dir` (not below): regular files whose
 * name kd_tmp_name_parse accepts, whose writer's process no longer exists on this host,
 * and which nobody has changed for `min_age` seconds (KD_TMP_STALE_SECONDS outside
 * tests). Everything else stays: other names, links, folders, files of a live process
 * (ours included), recent files (a writer on another host sharing the folder, whose
 * process id means nothing here, is still writing). Returns how many it removed, -1
 * when dir cannot be read (not an error for callers: there is nothing to sweep). */
int kd_tmp_sweep(const char *dir, double min_age);

/* The file a writer opens to write `path` (its temporary file): path itself, except
 * under KDSEG_FAULT=full:N (tests), where the N-th output file of the process goes to
 * /dev/full instead, so that its writes fail with ENOSPC as on a full disk, through the
 * writer's real error path. Every output writer of the library and the command opens
 * its file through this (the program, conv and case caches do not: their failures are
 * warnings, and their writes depend on what is cached). */
const char *kd_output_target(const char *path);

/* A file written under its temporary name and renamed onto its final path once complete:
 *     kd_atomic_file a;
 *     kd_status s = kd_atomic_open(&a, path, "w");
 *     if (!s) { fprintf(a.f, ...); s = kd_atomic_close(&a, s); }
 * kd_atomic_open: the temporary name (kd_tmp_name) opened through kd_output_target; an
 * error names path and the reason. kd_atomic_close(a, s), s the writer's own status: when
 * s is KD_OK and every write reached the file (fflush, ferror, fclose), renames it onto
 * path; otherwise removes it, leaves path as it was and returns s or KD_ERR_IO naming path
 * and the reason. */
typedef struct kd_atomic_file {
    FILE *f;
    char path[KD_PATH_MAX];
    char tmp[KD_PATH_MAX];
} kd_atomic_file;
kd_status kd_atomic_open(kd_atomic_file *a, const char *path, const char *mode);
kd_status kd_atomic_close(kd_atomic_file *a, kd_status s);

/* An output folder held by this process. */
typedef struct kd_outdir kd_outdir;

/* Opens dir for writing: checks that dir/longest (the longest file name, relative to
 * dir, the caller will write; NULL: none) fits, creates dir, takes its lock, and
 * removes the temporary files killed writers left in it. KD_ERR_BUSY when another
 * process (or this one, through another kd_outdir) holds the folder; KD_ERR_IO when
 * the folder or its lock file cannot be created. On a file system without locks the
 * folder opens with a warning. */
kd_status kd_outdir_open(const char *dir, const char *longest, kd_outdir **out);

/* The folder's path as given (borrowed). */
const char *kd_outdir_path(const kd_outdir *o);

/* Releases the lock. Accepts NULL. */
void kd_outdir_close(kd_outdir *o);

/* 1 when kd_outdir_open created the folder (it did not exist). */
int kd_outdir_created(const kd_outdir *o);

/* For a run that failed before writing anything: releases the folder and, when
 * kd_outdir_open created it, removes it with its lock file (and the parent folders that
 * open created), so a failed start leaves nothing behind. A folder that existed before,
 * or that holds anything else by now, stays. Accepts NULL. */
void kd_outdir_discard(kd_outdir *o);

#ifdef __cplusplus
}
#endif
#endif
