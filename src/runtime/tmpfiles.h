/* Temporary files left by interrupted writes. Every kdseg writer writes FINAL under a
 * temporary name that carries its process id, then renames it to FINAL:
 *   FINAL.tmp<PID>        (checkpoints, tensor files, the program and conv caches,
 *                          agreement.csv)
 *   FINAL.tmp-<PID>-<N>   (the data layer: NIfTI, PNG, the case cache, phantoms)
 *   FINAL.tmp.<PID>       (evaluation CSVs)
 * A writer killed between the two leaves the temporary file behind. */
#ifndef KD_TMPFILES_H
#define KD_TMPFILES_H

#include <sys/types.h>

/* A temporary file older than this (seconds since its last change) whose writer is
 * gone may be removed (see kd_tmp_sweep). */
#define KD_TMP_STALE_SECONDS 600

/* 1 when `name` (a file name, no folder) is one of the temporary names above with a
 * non-empty FINAL, and then *pid is the writer's process id; else 0. */
int kd_tmp_name_parse(const char *name, pid_t *pid);

/* Removes the stale temporary files directly in `dir` (not below): regular files whose
 * name kd_tmp_name_parse accepts, whose writer's process no longer exists on this host,
 * and which nobody has changed for `min_age` seconds (KD_TMP_STALE_SECONDS outside
 * tests). Everything else stays: other names, links, folders, files of a live process
 * (ours included), recent files (a writer on another host sharing the folder, whose
 * process id means nothing here, is still writing). Returns how many it removed, -1
 * when dir cannot be read (not an error for callers: there is nothing to sweep). */
int kd_tmp_sweep(const char *dir, double min_age);

#endif
