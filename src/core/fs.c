/* Folders and atomic writes (kdseg/fs.h): mkdir -p, the one temporary-name scheme,
 * and the sweep of stale temporary files, recognised by their exact name pattern and
 * removed only when their writer is gone and they are old. */
#include "kdseg/fs.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

kd_status kd_mkdirs(const char *path) {
    size_t n = strlen(path);
    if (n == 0) return kd_fail(KD_ERR_INVALID_ARG, "empty folder name");
    char *buf = malloc(n + 1);
    if (!buf) return kd_fail(KD_ERR_OUT_OF_MEMORY, "folder name %s", path);
    memcpy(buf, path, n + 1);
    kd_status s = KD_OK;
    int err = 0;
    for (size_t i = 1; i <= n && !s; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            err = errno;
            s = kd_fail(KD_ERR_IO, "%s: cannot create folder: %s", buf, strerror(err));
        }
        buf[i] = c;
    }
    free(buf);
    if (!s && !is_dir(path)) {
        err = ENOTDIR;
        s = kd_fail(KD_ERR_IO, "%s: not a folder", path);
    }
    if (err) errno = err;
    return s;
}

kd_status kd_tmp_name(const char *final_path, char *out, size_t n) {
    static atomic_uint counter;
    unsigned c = atomic_fetch_add(&counter, 1);
    int len = snprintf(out, n, "%s.tmp-%ld-%u", final_path, (long)getpid(), c);
    if (len < 0 || (size_t)len >= n)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: path too long for a temporary name (%zu bytes)",
                       final_path, n);
    return KD_OK;
}

/* The decimal number at s (at most 9 digits): its value, 0 when there are no digits or
 * a leading zero; *end is set after the digits. */
static long digits(const char *s, const char **end) {
    long v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9' && p - s < 9) v = v * 10 + (*p++ - '0');
    *end = p;
    if (p == s || (*s == '0' && p - s > 1)) return 0;
    return v;
}

int kd_tmp_name_parse(const char *name, pid_t *pid) {
    /* the last ".tmp" of the name, after a non-empty final name */
    const char *t = NULL;
    for (const char *p = strstr(name, ".tmp"); p; p = strstr(p + 1, ".tmp")) t = p;
    if (!t || t == name) return 0;
    const char *p = t + 4, *end;
    long v;
    if (*p == '-') { /* .tmp-PID-N */
        v = digits(p + 1, &end);
        if (!v || *end != '-') return 0;
        const char *q = end + 1;
        digits(q, &end);
        if (end == q || *end) return 0;
    } else if (*p == '.') { /* .tmp.PID */
        v = digits(p + 1, &end);
        if (!v || *end) return 0;
    } else { /* .tmpPID */
        v = digits(p, &end);
        if (!v || *end) return 0;
    }
    *pid = (pid_t)v;
    return 1;
}

/* Whether a process with this id exists on this host (EPERM: it does, not ours). */
static int alive(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

int kd_tmp_sweep(const char *dir, double min_age) {
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    int removed = 0;
    time_t now = time(NULL);
    char path[4096];
    for (struct dirent *e; (e = readdir(dp));) {
        pid_t pid;
        struct stat st;
        if (!kd_tmp_name_parse(e->d_name, &pid) || pid == getpid()) continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (lstat(path, &st) || !S_ISREG(st.st_mode)) continue;
        if (difftime(now, st.st_mtime) < min_age || alive(pid)) continue;
        if (unlink(path) == 0) {
            removed++;
            kd_log(KD_LOG_INFO, "removed %s, left by an interrupted write (process %ld is gone)",
                   path, (long)pid);
        } else
            kd_log(KD_LOG_WARN, "cannot remove the stale temporary file %s: %s", path,
                   strerror(errno));
    }
    closedir(dp);
    return removed;
}
