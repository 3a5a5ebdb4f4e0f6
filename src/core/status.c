/* Status names, the per-thread error message, and the one logging function. */
#include "kdseg/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static _Thread_local char g_msg[2048];

const char *kd_status_string(kd_status s) {
    switch (s) {
    case KD_OK: return "ok";
    case KD_ERR_INVALID_ARG: return "invalid argument";
    case KD_ERR_NO_DEVICE: return "no device";
    case KD_ERR_DEVICE: return "device error";
    case KD_ERR_OUT_OF_MEMORY: return "out of memory";
    case KD_ERR_BUILD: return "kernel build failed";
    case KD_ERR_IO: return "i/o error";
    case KD_ERR_FORMAT: return "bad file format";
    case KD_ERR_SHAPE: return "shape mismatch";
    case KD_ERR_NUMERIC: return "non-finite value";
    case KD_ERR_INTERRUPTED: return "interrupted";
    case KD_ERR_UNSUPPORTED: return "unsupported";
    case KD_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *kd_last_error(void) { return g_msg; }

void kd_clear_error(void) { g_msg[0] = 0; }

kd_status kd_fail(kd_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    kd_log(KD_LOG_DEBUG, "error (%s): %s", kd_status_string(s), g_msg);
    return s;
}

kd_status kd_fail_context(kd_status s, const char *fmt, ...) {
    char prefix[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    size_t n = strlen(prefix);
    memcpy(g_msg, prefix, n + 1);
    if (old[0] && n + 2 < sizeof g_msg) {
        memcpy(g_msg + n, ": ", 3);
        size_t room = sizeof g_msg - n - 3;
        strncat(g_msg + n + 2, old, room);
    }
    return s;
}

static int g_level = -1;

static int level_from_env(void) {
    const char *e = getenv("KDSEG_LOG");
    if (!e || !*e) return KD_LOG_WARN;
    if (!strcasecmp(e, "error")) return KD_LOG_ERROR;
    if (!strcasecmp(e, "warn")) return KD_LOG_WARN;
    if (!strcasecmp(e, "info")) return KD_LOG_INFO;
    if (!strcasecmp(e, "debug")) return KD_LOG_DEBUG;
    return KD_LOG_WARN;
}

void kd_log_set_level(kd_log_level level) { g_level = (int)level; }

kd_log_level kd_log_get_level(void) {
    if (g_level < 0) g_level = level_from_env();
    return (kd_log_level)g_level;
}

int kd_log_is_tty(void) { return isatty(2); }

void kd_log(kd_log_level level, const char *fmt, ...) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    if ((int)level > (int)kd_log_get_level()) return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kdseg %s: %s\n", names[level], buf);
}
