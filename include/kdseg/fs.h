/* kdseg: folders and atomic file writes. Every kdseg writer writes FINAL under the
 * temporary name kd_tmp_name gives (FINAL.tmp-<PID>-<N>, in FINAL's folder), then
 * renames it to FINAL, so a reader never sees half a file. A writer killed between the
 * two leaves the temporary file behind; kd_tmp_sweep removes such files once they are
 * stale. */
#ifndef KDSEG_FS_H
#define KDSEG_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates the folder `path` and its missing parents (mkdir -p); existing folders are
 * fine. KD_ERR_IO naming the folder that could not be created (errno as mkdir left
 * it), or `path` when it exists but is not a folder (errno ENOTDIR). */
kd_status kd_mkdirs(const char *path);

/* Writes into out (n bytes) the temporary name for a file to be renamed to
 * final_path: "FINAL.tmp-<PID>-<N>", N counting up within the process (unique across
 * threads). KD_ERR_INVALID_ARG when it does not fit in n. */
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

#ifdef __cplusplus
}
#endif
#endif
