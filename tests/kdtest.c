/* Test harness implementation. */
#include "kdtest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static kd_device *g_dev;
static char g_tmp[256];

static void cleanup(void) {
    kd_device_free(g_dev);
    g_dev = NULL;
    if (g_tmp[0] && !getenv("KDTEST_KEEP")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    }
}

kd_device *kd_test_device(void) {
    if (g_dev) return g_dev;
    kd_status s = kd_device_open(NULL, &g_dev);
    if (s) {
        fprintf(stderr, "cannot open a device: %s: %s\n", kd_status_string(s), kd_last_error());
        return NULL;
    }
    return g_dev;
}

const char *kd_test_shared_dir(void) {
    static char dir[1024];
    const char *root = getenv("KDSEG_SOURCE_ROOT");
    snprintf(dir, sizeof dir, "%s/../shared", root && *root ? root : ".");
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? dir : NULL;
}

const char *kd_test_tmpdir(void) {
    if (!g_tmp[0]) {
        snprintf(g_tmp, sizeof g_tmp, "/tmp/kdtest-XXXXXX");
        if (!mkdtemp(g_tmp)) return "/tmp";
    }
    return g_tmp;
}

double kd_test_max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}

double kd_test_rel_err(const float *got, const float *ref, size_t n, double floor) {
    double scale = kd_test_max_abs(ref, n);
    if (scale < floor) scale = floor;
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
    }
    return e / scale;
}

void kd_test_randu(float *x, size_t n, unsigned seed, float lo, float hi) {
    unsigned long long s = 0x9E3779B97F4A7C15ULL * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        double u = (double)((s * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
        x[i] = lo + (hi - lo) * (float)u;
    }
}

int kd_test_main(int argc, char **argv, const kd_test_case *cases, int n) {
    atexit(cleanup);
    int failed = 0, ran = 0, skipped = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name)) continue;
        ran++;
        kd_clear_error();
        int r = cases[i].fn();
        /* finish queued work before the next case or exit: PoCL aborts when kernels are
         * still compiling while the process tears down */
        if (g_dev && kd_device_finish(g_dev) != KD_OK && !r) {
            fprintf(stderr, "device error after the case: %s\n", kd_last_error());
            r = 1;
        }
        if (r == KD_TEST_SKIP) {
            skipped++;
            printf("SKIP %s\n", cases[i].name);
        } else if (r) {
            failed++;
            printf("FAIL %s\n", cases[i].name);
        } else {
            printf("PASS %s\n", cases[i].name);
        }
        fflush(stdout);
    }
    /* free the device now, not in the atexit handler: exit() runs the thread-local
     * destructors first, and Oclgrind's runtime keeps a thread_local stack of the API
     * calls in progress, so OpenCL calls from an atexit handler write into freed memory
     * (Oclgrind 21.10 then aborts with "corrupted double-linked list"; valgrind shows it) */
    kd_device_free(g_dev);
    g_dev = NULL;
    if (argc > 1 && ran == 0) {
        fprintf(stderr, "no test case named '%s'\n", argv[1]);
        return 1;
    }
    if (failed) return 1;
    return (skipped == ran && ran > 0) ? KD_TEST_SKIP : 0;
}

int kd_test_kdseg(const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s >>'%s/log.txt' 2>&1", getenv("KDSEG_EXE"), args,
             kd_test_tmpdir());
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : 128;
}

const char *kd_test_path(const char *name) {
    static char buf[256][1024];
    static int k;
    k = (k + 1) % 256;
    snprintf(buf[k], sizeof buf[k], "%s/%s", kd_test_tmpdir(), name);
    return buf[k];
}

void kd_test_show_log(int lines) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "tail -n %d '%s/log.txt' >&2", lines, kd_test_tmpdir());
    if (system(cmd)) fprintf(stderr, "(no log)\n");
}

int kd_test_log_has(const char *text) {
    char line[4096];
    FILE *f = fopen(kd_test_path("log.txt"), "r");
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, text) != NULL;
    if (f) fclose(f);
    return found;
}

void kd_test_log_clear(void) { remove(kd_test_path("log.txt")); }

int kd_test_save_model(kd_device *dev, const char *spec, uint64_t seed, const char *path) {
    if (!dev && !(dev = kd_test_device())) return 1;
    kd_model *m;
    KD_CHECK_OK(kd_model_create(dev, spec, seed, &m));
    kd_status s = kd_checkpoint_save(path, m, NULL, NULL);
    kd_model_free(m);
    KD_CHECK_OK(s);
    return 0;
}

int kd_test_copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    int ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (ok && ferror(a)) ok = 0;
    if (a) fclose(a);
    if (b) ok = fclose(b) == 0 && ok;
    if (!ok) fprintf(stderr, "could not copy %s to %s\n", from, to);
    return ok ? 0 : 1;
}

double kd_test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
