/* Files and folders (kdseg/fs.h): checked path composition, mkdir -p, the one
 * temporary-name scheme and the sweep of stale temporary files (recognised by their exact
 * name pattern, removed only when their writer is gone and they are old), the injected
 * full disk, and output folders with one writer. */
#include "kdseg/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The message names the whole path (kd_fail shortens it in the middle if need be). */
static kd_status too_long(const char *path, size_t len, size_t limit) {
    return kd_fail(KD_ERR_INVALID_ARG, "path too long: %s (%zu characters; at most %zu)", path, len,
                   limit);
}

kd_status kd_path_printf(char *out, size_t n, const char *fmt, ...) {
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int len = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    size_t limit = (n < KD_PATH_MAX ? n : KD_PATH_MAX) - 1;
    kd_status s = KD_OK;
    if (len < 0) {
        s = kd_fail(KD_ERR_INVALID_ARG, "cannot format a path from '%s'", fmt);
    } else if ((size_t)len > limit) {
        char *full = malloc((size_t)len + 1);
        if (full) {
            vsnprintf(full, (size_t)len + 1, fmt, aq);
            s = too_long(full, (size_t)len, limit);
            free(full);
        } else {
            s = too_long(out, (size_t)len, limit);
        }
    }
    va_end(aq);
    if (s && n) out[0] = 0;
    return s;
}

kd_status kd_path_join(char *out, size_t n, const char *dir, const char *name) {
    return kd_path_printf(out, n, "%s/%s", dir, name);
}

kd_status kd_path_check_output(const char *dir, const char *name) {
    size_t len = strlen(dir) + 1 + strlen(name), limit = KD_PATH_MAX - 1 - KD_TMP_SUFFIX_MAX;
    if (len <= limit) return KD_OK;
    char *full = malloc(len + 1);
    if (!full) return kd_fail(KD_ERR_INVALID_ARG, "path too long: %s/... (%zu characters)", dir, len);
    snprintf(full, len + 1, "%s/%s", dir, name);
    kd_status s = kd_fail(KD_ERR_INVALID_ARG,
                          "path too long: %s (%zu characters; at most %zu, which leaves room for "
                          "the temporary name it is written under)", full, len, limit);
    free(full);
    return s;
}

/* mkdir -p; 0 or the errno of the step that failed. */
/* mkdir -p; *created (may be NULL): the length of the first prefix of dir this call
 * created (the top of the new folders), 0 when it created none. */
static int mkdirs_created(const char *dir, size_t *created) {
    size_t n = strlen(dir);
    char buf[KD_PATH_MAX];
    memcpy(buf, dir, n + 1);
    if (created) *created = 0;
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        int made = mkdir(buf, 0755) == 0, bad = !made && errno != EEXIST;
        buf[i] = c;
        if (bad) return errno;
        if (made && created && !*created) *created = i;
    }
    struct stat st;
    if (stat(dir, &st) != 0) return errno;
    return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

static int mkdirs(const char *dir) { return mkdirs_created(dir, NULL); }

kd_status kd_mkdirs(const char *dir) {
    size_t n = dir ? strlen(dir) : 0;
    if (n == 0) return kd_fail(KD_ERR_INVALID_ARG, "empty folder name");
    if (n >= KD_PATH_MAX) return too_long(dir, n, KD_PATH_MAX - 1);
    int e = mkdirs(dir);
    return e ? kd_fail(KD_ERR_IO, "%s: cannot create folder: %s", dir, strerror(e)) : KD_OK;
}

/* ------------------------------------------------------- temporary files -- */

kd_status kd_tmp_name(const char *final_path, char *out, size_t n) {
    static atomic_uint counter;
    unsigned c = atomic_fetch_add(&counter, 1);
    return kd_path_printf(out, n, "%s.tmp-%ld-%u", final_path, (long)getpid(), c);
}

kd_status kd_atomic_open(kd_atomic_file *a, const char *path, const char *mode) {
    a->f = NULL;
    kd_status s = kd_path_printf(a->path, sizeof a->path, "%s", path);
    if (!s) s = kd_tmp_name(path, a->tmp, sizeof a->tmp);
    if (s) return s;
    if (!(a->f = fopen(kd_output_target(a->tmp), mode)))
        return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return KD_OK;
}

kd_status kd_atomic_close(kd_atomic_file *a, kd_status s) {
    if (!a->f) return s;
    int bad = fflush(a->f) != 0 || ferror(a->f), e = bad ? errno : 0;
    if (fclose(a->f) != 0 && !bad) bad = 1, e = errno;
    a->f = NULL;
    if (!s && !bad && rename(a->tmp, a->path) != 0) bad = 1, e = errno;
    if (s || bad) {
        remove(a->tmp);
        if (!s)
            s = kd_fail(KD_ERR_IO, "%s: write failed: %s", a->path, e ? strerror(e) : "error writing the stream");
    }
    return s;
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

/* ------------------------------------------------------- injected full disk -- */

static pthread_once_t g_full_once = PTHREAD_ONCE_INIT;
static long g_full_at;
static atomic_long g_full_count;

static void full_parse(void) {
    const char *e = getenv("KDSEG_FAULT");
    long n = 0;
    char rest = 0;
    if (e && sscanf(e, "full:%ld%c", &n, &rest) == 1 && n > 0) g_full_at = n;
}

const char *kd_output_target(const char *path) {
    pthread_once(&g_full_once, full_parse);
    if (!g_full_at || atomic_fetch_add(&g_full_count, 1) + 1 != g_full_at) return path;
    kd_log(KD_LOG_WARN, "KDSEG_FAULT: output file %ld (%s) goes to /dev/full", g_full_at, path);
    return "/dev/full";
}

/* ------------------------------------------------------------ output folders -- */

#define LOCK_NAME ".kdseg.lock"
/* The holder's id is written at offset 0 in a field of fixed width, and blanked (never
 * truncated) on release: the file keeps its block, so a full disk cannot keep the next
 * run from recording itself. */
#define PID_FIELD 24

struct kd_outdir {
    char *dir;
    int fd;
    size_t created; /* length of the top folder this open created (dir or a parent); 0: none */
};

static void write_field(int fd, long pid) {
    char f[PID_FIELD + 1];
    if (pid) snprintf(f, sizeof f, "%-*ld\n", PID_FIELD - 1, pid);
    else snprintf(f, sizeof f, "%*s\n", PID_FIELD - 1, "");
    if (pwrite(fd, f, PID_FIELD, 0) != PID_FIELD)
        kd_log(KD_LOG_INFO, "cannot record the process id in the lock file: %s", strerror(errno));
}

/* The id the holder recorded; it may not have written it yet: wait a little. */
static long holder_pid(int fd) {
    for (int tries = 0; tries < 50; tries++) {
        char b[PID_FIELD + 1] = "";
        ssize_t got = pread(fd, b, PID_FIELD, 0);
        long pid = got > 0 ? strtol(b, NULL, 10) : 0;
        if (pid > 0) return pid;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

kd_status kd_outdir_open(const char *dir, const char *longest, kd_outdir **out) {
    *out = NULL;
    if (!dir || !*dir) return kd_fail(KD_ERR_INVALID_ARG, "no output folder given");
    char lock[KD_PATH_MAX];
    kd_status s = kd_path_check_output(dir, LOCK_NAME);
    if (!s && longest) s = kd_path_check_output(dir, longest);
    if (!s) s = kd_path_join(lock, sizeof lock, dir, LOCK_NAME);
    if (s) return s;
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        return kd_fail(KD_ERR_IO, "%s: is a file, not a folder; --out names the folder the outputs go "
                       "into", dir);
    size_t created = 0;
    int e = mkdirs_created(dir, &created);
    if (e) return kd_fail(KD_ERR_IO, "%s: cannot create the output folder: %s", dir, strerror(e));
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && (errno == EROFS || errno == EACCES || errno == EPERM))
        fd = open(lock, O_RDONLY | O_CLOEXEC); /* flock works on it; the id is not written */
    if (fd < 0)
        return kd_fail(KD_ERR_IO, "%s: cannot open the folder's lock file %s: %s", dir, lock,
                       strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        e = errno;
        if (e == EWOULDBLOCK) {
            long pid = holder_pid(fd);
            close(fd);
            if (pid == (long)getpid())
                return kd_fail(KD_ERR_BUSY, "%s: this process is already writing into this folder "
                               "(the same output folder given twice?)", dir);
            if (pid > 0)
                return kd_fail(KD_ERR_BUSY, "%s: another kdseg process (pid %ld) is writing into this "
                               "folder; wait for it to finish or choose another output folder (lock: %s)",
                               dir, pid, lock);
            return kd_fail(KD_ERR_BUSY, "%s: another kdseg process (pid not recorded) is writing "
                           "into this folder; wait for it to finish or choose another output folder "
                           "(lock: %s)", dir, lock);
        }
        /* ENOLCK (some network file systems): no lock to be had; say so once */
        kd_log(KD_LOG_WARN, "%s: cannot lock %s (%s): a second run writing into this folder at the "
               "same time would not be detected", dir, lock, strerror(e));
    }
    kd_outdir *o = calloc(1, sizeof *o);
    if (o) o->dir = strdup(dir);
    if (!o || !o->dir) {
        free(o);
        close(fd);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: output folder", dir);
    }
    o->fd = fd;
    o->created = created;
    write_field(fd, (long)getpid());
    kd_tmp_sweep(dir, KD_TMP_STALE_SECONDS); /* left by killed runs */
    *out = o;
    return KD_OK;
}

const char *kd_outdir_path(const kd_outdir *o) { return o ? o->dir : NULL; }

int kd_outdir_created(const kd_outdir *o) { return o && o->created; }

void kd_outdir_discard(kd_outdir *o) {
    if (!o) return;
    if (!o->created) {
        kd_outdir_close(o);
        return;
    }
    /* the lock file goes while the lock is held, so that no other process locks it in
     * between; a folder some other writer put anything into stays (rmdir fails) */
    char lock[KD_PATH_MAX];
    if (!kd_path_join(lock, sizeof lock, o->dir, LOCK_NAME)) unlink(lock);
    close(o->fd);
    char buf[KD_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", o->dir);
    for (size_t len = strlen(buf); len >= o->created && len > 0;) {
        while (len > 1 && buf[len - 1] == '/') buf[--len] = 0;
        if (rmdir(buf) != 0) break;
        char *slash = strrchr(buf, '/');
        if (!slash) break;
        *slash = 0;
        len = strlen(buf);
    }
    free(o->dir);
    free(o);
}

void kd_outdir_close(kd_outdir *o) {
    if (!o) return;
    write_field(o->fd, 0);
    close(o->fd); /* releases the lock */
    free(o->dir);
    free(o);
}
