/* Status names, the per-thread error message, and the one logging function. */
#include "kdseg/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Room for a message with a few long paths; longer ones are shortened in the middle
 * (fit_message), never at the tail, where the reason is. */
static _Thread_local char g_msg[KD_MESSAGE_MAX];

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
    case KD_ERR_BUSY: return "folder in use";
    }
    return "unknown status";
}

const char *kd_last_error(void) { return g_msg; }

void kd_clear_error(void) { g_msg[0] = 0; }

/* A word (a run without spaces: usually a path) longer than this keeps its first
 * WORD_HEAD and last WORD_TAIL characters around a note of how many were left out. */
#define WORD_MAX 600
#define WORD_HEAD 160
#define WORD_TAIL 320

/* Copies src (len characters) into dst (n > 128 bytes) so that what matters survives:
 * overlong words lose their middle, and a message still too long loses its middle
 * (its start says what was being done, its end why it failed). */
static void fit_message(char *dst, size_t n, const char *src, size_t len) {
    char note[64];
    char *tmp = malloc(len + 1);
    const char *text = src;
    size_t tlen = len;
    if (tmp) { /* overlong words first */
        size_t t = 0;
        for (size_t i = 0; i < len;) {
            size_t j = i;
            while (j < len && src[j] != ' ' && src[j] != '\n') j++;
            size_t w = j - i;
            if (w > WORD_MAX) {
                int k = snprintf(note, sizeof note, "[...%zu characters...]", w - WORD_HEAD - WORD_TAIL);
                memcpy(tmp + t, src + i, WORD_HEAD);
                memcpy(tmp + t + WORD_HEAD, note, (size_t)k);
                memcpy(tmp + t + WORD_HEAD + (size_t)k, src + j - WORD_TAIL, WORD_TAIL);
                t += WORD_HEAD + (size_t)k + WORD_TAIL; /* < w: never longer than src */
            } else {
                memcpy(tmp + t, src + i, w);
                t += w;
            }
            if (j < len) tmp[t++] = src[j++];
            i = j;
        }
        tmp[t] = 0;
        text = tmp;
        tlen = t;
    }
    if (tlen < n) {
        memcpy(dst, text, tlen + 1);
    } else { /* then the middle of the whole: a third of the room for the head */
        size_t room = n - 1 - sizeof note, head = room / 3, tail = room - head;
        int k = snprintf(note, sizeof note, " [...%zu characters...] ", tlen - head - tail);
        memcpy(dst, text, head);
        memcpy(dst + head, note, (size_t)k);
        memcpy(dst + head + (size_t)k, text + tlen - tail, tail);
        dst[head + (size_t)k + tail] = 0;
    }
    free(tmp);
}

/* vsnprintf into a fitted copy in dst: formats on the heap first, so nothing is lost
 * before fit_message chooses what to drop. */
static void format_fit(char *dst, size_t n, const char *fmt, va_list ap) {
    va_list aq;
    va_copy(aq, ap);
    int len = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (!buf) { /* out of memory: the head of the message is all there is room for */
        vsnprintf(dst, n, fmt, ap);
        return;
    }
    vsnprintf(buf, (size_t)len + 1, fmt, ap);
    fit_message(dst, n, buf, (size_t)len);
    free(buf);
}

kd_status kd_fail(kd_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    format_fit(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    kd_log(KD_LOG_DEBUG, "error (%s): %s", kd_status_string(s), g_msg);
    return s;
}

kd_status kd_fail_context(kd_status s, const char *fmt, ...) {
    char prefix[KD_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    format_fit(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t a = strlen(prefix), b = strlen(g_msg);
    char *all = malloc(a + b + 3);
    if (!all) return s; /* keep the message there is */
    memcpy(all, prefix, a);
    size_t u = a;
    if (b) {
        memcpy(all + u, ": ", 2);
        memcpy(all + u + 2, g_msg, b);
        u += 2 + b;
    }
    all[u] = 0;
    fit_message(g_msg, sizeof g_msg, all, u);
    free(all);
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
    char buf[KD_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    format_fit(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fflush(stdout); /* what the command printed before this line comes first */
    fprintf(stderr, "kdseg %s: %s\n", names[level], buf);
}

void kd_log_progress(const char *fmt, ...) {
    if ((int)kd_log_get_level() < (int)KD_LOG_WARN) return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "kdseg info: %s\n", buf);
}

void kd_format_duration(double t, char *buf, size_t n) {
    if (!(t >= 0) || !isfinite(t)) {
        snprintf(buf, n, "?");
        return;
    }
    long s = lround(t);
    if (s < 60)
        snprintf(buf, n, "%lds", s);
    else if (s < 3600)
        snprintf(buf, n, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, n, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
}
