/* Shared by the files of src/kd (not installed). */
#ifndef KD_KD_INTERNAL_H
#define KD_KD_INTERNAL_H

#include "kdseg/fs.h"
#include "kdseg/kd.h"

/* Monotonic seconds. */
double kd_now_s(void);

/* A printf-formatted progress line to fn (nothing when fn is NULL). */
void kd_progressf(kd_progress_fn fn, void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The online scheduler's report as progress lines. */
void kd_sched_report_lines(const kd_sched_report *r, int nteachers, double seconds,
                           kd_progress_fn fn, void *ctx);

/* OUT/results.md, results.csv, dice_boxplot.png, example.png of an experiment. */
kd_status kd_experiment_write(const kd_experiment_result *r, const char *out);

/* 1 when path names an existing file or folder. */
int kd_exists(const char *path);

#endif
