/* kdseg: status codes, error messages and logging. */
#ifndef KDSEG_STATUS_H
#define KDSEG_STATUS_H

#include <stddef.h>

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every call that can fail returns a kd_status; kd_last_error() has the message. */
typedef enum kd_status {
    KD_OK = 0,
    KD_ERR_INVALID_ARG,   /* a caller's argument or option is out of range */
    KD_ERR_NO_DEVICE,     /* no OpenCL platform/device, or the selector matched none */
    KD_ERR_DEVICE,        /* an OpenCL call failed (code in the message) */
    KD_ERR_OUT_OF_MEMORY, /* host or device allocation failed or would exceed a limit */
    KD_ERR_BUILD,         /* an OpenCL program failed to compile */
    KD_ERR_IO,            /* a file could not be opened, read or written */
    KD_ERR_FORMAT,        /* a file's content is not what it claims (bad magic, CRC, header) */
    KD_ERR_SHAPE,         /* tensor shapes disagree */
    KD_ERR_NUMERIC,       /* NaN or Inf where finite numbers are required */
    KD_ERR_INTERRUPTED,   /* stopped by a signal or a request to stop */
    KD_ERR_UNSUPPORTED,   /* the device or build lacks a capability the call needs */
    KD_ERR_INTERNAL,      /* an internal invariant failed: a bug */
    KD_ERR_BUSY           /* an output folder is in use by another process (kdseg/fs.h) */
} kd_status;

/* Short fixed name of a status ("out of memory"). */
const char *kd_status_string(kd_status s);

/* Longest error or log message, in bytes with the NUL. Longer ones keep their start
 * and their end (the reason): words over 600 characters (long paths) and then the
 * whole message lose their middle, marked "[...N characters...]". */
#define KD_MESSAGE_MAX 4096

/* The last error message of the calling thread, with context; "" if none. */
const char *kd_last_error(void);

/* Record an error message for this thread and return s (for `return kd_fail(...)`). */
kd_status kd_fail(kd_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefix the current error message with more context ("reading case X: ..."). */
kd_status kd_fail_context(kd_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void kd_clear_error(void); /* this thread's message becomes "" */

typedef enum kd_log_level {
    KD_LOG_ERROR = 0,
    KD_LOG_WARN = 1,
    KD_LOG_INFO = 2,
    KD_LOG_DEBUG = 3
} kd_log_level;

/* Messages at or below the level are printed to stderr. Default: KD_LOG_WARN,
 * or the value of KDSEG_LOG (error|warn|info|debug). */
void kd_log_set_level(kd_log_level level);
kd_log_level kd_log_get_level(void);
/* One line to stderr when level is at or below the current level. */
void kd_log(kd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Nonzero when stderr is a terminal (progress bars are drawn only then). */
int kd_log_is_tty(void);

/* A progress line ("kdseg info: step 50/200 ... ETA 1m20s"): information, printed at
 * the default level (only -q / KDSEG_LOG=error hides it). Every log line first flushes
 * stdout, so that output redirected to one file keeps its order. */
void kd_log_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A duration for people: "45s", "4m38s", "2h05m"; "?" when not finite or negative. */
void kd_format_duration(double seconds, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
