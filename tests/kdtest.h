/* A small test harness: each test program holds named cases; meson registers
 * one test per case (the case name as argument). Exit 0 pass, 77 skip, 1 fail. */
#ifndef KDTEST_H
#define KDTEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kdseg/kdseg.h"

typedef int (*kd_test_fn)(void);
typedef struct kd_test_case {
    const char *name;
    kd_test_fn fn;
} kd_test_case;

#define KD_TEST_SKIP 77

/* Runs the case named in argv[1], or every case. */
int kd_test_main(int argc, char **argv, const kd_test_case *cases, int n);

/* The device for this test process (opened once; freed at exit). NULL and a
 * message on failure. */
kd_device *kd_test_device(void);

/* Path of ../shared relative to the project root, or NULL when absent. */
const char *kd_test_shared_dir(void);
/* A fresh temporary folder for this test (removed at exit). */
const char *kd_test_tmpdir(void);
/* Runs the kdseg command ($KDSEG_EXE) with printf-formatted arguments, its output appended
 * to the temp dir's log.txt; returns its exit status (128 when it did not exit). */
int kd_test_kdseg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Helpers of the command-line tests (tests/kd, tests/dist, tests/e2e, tests/faults, tests/tune):
 * kd_test_path: NAME inside the temporary folder; the 256 buffers rotate, more than any case
 * uses, so a case may keep the pointers it gets. The log is the kdseg runs' log.txt there:
 * kd_test_show_log prints its last lines to stderr, kd_test_log_has says whether it holds
 * text (since kd_test_log_clear). kd_test_save_model writes an untrained model of spec
 * (dev NULL: the test's device); kd_test_copy_file copies a file (0 when done);
 * kd_test_now is a monotonic clock in seconds. */
const char *kd_test_path(const char *name);
void kd_test_show_log(int lines);
int kd_test_log_has(const char *text);
void kd_test_log_clear(void);
int kd_test_save_model(kd_device *dev, const char *spec, uint64_t seed, const char *path);
int kd_test_copy_file(const char *from, const char *to);
double kd_test_now(void);

/* Largest |a - b| divided by max(largest |ref|, floor). */
double kd_test_rel_err(const float *got, const float *ref, size_t n, double floor);
double kd_test_max_abs(const float *a, size_t n);
/* Deterministic pseudo-random floats in [lo, hi). */
void kd_test_randu(float *x, size_t n, unsigned seed, float lo, float hi);

#define KD_CHECK(cond, ...)                                              \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            return 1;                                                    \
        }                                                                \
    } while (0)

#define KD_CHECK_OK(expr)                                                \
    do {                                                                 \
        kd_status st_ = (expr);                                          \
        if (st_ != KD_OK) {                                              \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr, \
                    kd_status_string(st_), kd_last_error());             \
            return 1;                                                    \
        }                                                                \
    } while (0)

#define KD_DEVICE_OR_FAIL(dev)                                           \
    kd_device *dev = kd_test_device();                                   \
    if (!dev) return 1

#endif
