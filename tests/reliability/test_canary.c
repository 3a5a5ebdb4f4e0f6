/* Canaries: deliberate defects that the reliability checks must report.
 *
 * oob_write, race, uninit: launch a broken kernel of bad_kernels.cl (loaded through
 *   KDSEG_CL_DIR); tools/check_kernels.sh runs them under Oclgrind and fails unless
 *   Oclgrind reports the defect. On their own they pass: PoCL does not check.
 * lsan_leak (sanitizer builds only): re-runs itself as a child that leaks a tensor
 *   made by the library, and requires LeakSanitizer to report it, naming
 *   kd_tensor_create. Catches: the driver's leak suppressions (lsan.supp) hiding
 *   leaks of our own code, or leak detection switched off. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kdtest.h"
#include "rt.h"

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* A KDSEG_CL_DIR with every embedded source and bad_kernels.cl appended to the first. */
static int write_bad_cl_dir(void) {
    const char *root = getenv("KDSEG_SOURCE_ROOT");
    char dir[512], path[700];
    snprintf(path, sizeof path, "%s/tests/reliability/bad_kernels.cl", root ? root : ".");
    char *bad = read_file(path);
    KD_CHECK(bad != NULL, "cannot read %s (KDSEG_SOURCE_ROOT)", path);
    snprintf(dir, sizeof dir, "%s/cl", kd_test_tmpdir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/common.h", dir);
    FILE *f = fopen(path, "w");
    KD_CHECK(f != NULL, "cannot write %s", path);
    fputs(kd_cl_common_text, f);
    fclose(f);
    for (int i = 0; i < kd_cl_source_count; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, kd_cl_sources[i].name);
        f = fopen(path, "w");
        KD_CHECK(f != NULL, "cannot write %s", path);
        fputs(kd_cl_sources[i].text, f);
        if (i == 0) {
            fputs("\n", f);
            fputs(bad, f);
        }
        fclose(f);
    }
    free(bad);
    setenv("KDSEG_CL_DIR", dir, 1);
    setenv("KDSEG_CACHE", "0", 1);
    return 0;
}

/* Runs `kernel` over n = 32 work-items (work-groups of 16) on a buffer of exactly
 * n floats (KDSEG_POOL_EXACT: no rounding slack to hide an overrun), and reads the
 * result back. */
static int launch_bad(const char *kernel) {
    if (write_bad_cl_dir()) return 1;
    KD_DEVICE_OR_FAIL(d);
    const int n = 32;
    setenv("KDSEG_POOL_EXACT", "1", 1);
    cl_mem m = NULL;
    KD_CHECK_OK(kd_rt_alloc(d, n * sizeof(float), &m));
    float h[32] = {0};
    KD_CHECK_OK(kd_rt_write(d, m, 0, sizeof h, h));
    size_t gws = (size_t)n, lws = 16;
    KD_CHECK_OK(kd_rt_launch(d, kernel, 1, &gws, &lws, KD_ARGS(KD_MEM(m), KD_INT(0), KD_INT(n))));
    KD_CHECK_OK(kd_rt_read(d, m, 0, sizeof h, h));
    kd_rt_release(d, m, n * sizeof(float));
    return 0;
}

static int oob_write(void) { return launch_bad("kd_bad_oob_write"); }
static int race(void) { return launch_bad("kd_bad_race"); }
static int uninit(void) { return launch_bad("kd_bad_uninit"); }

static int lsan_leak(void) {
    if (getenv("KD_LEAK_CHILD")) {
        KD_DEVICE_OR_FAIL(d);
        kd_tensor *t = NULL;
        KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 2, 3, 4, 5), &t));
        t = NULL; /* the leak */
        return 0;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "KD_LEAK_CHILD=1 ASAN_OPTIONS=detect_leaks=1 /proc/%d/exe lsan_leak 2>&1",
             (int)getpid());
    static char out[1 << 16];
    int rc = 0;
    /* LeakSanitizer's tracer can crash on the driver's threads: retry that, only that */
    for (int attempt = 0; attempt < 3; attempt++) {
        FILE *p = popen(cmd, "r");
        KD_CHECK(p != NULL, "popen");
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        rc = pclose(p);
        if (!strstr(out, "LeakSanitizer has encountered a fatal error")) break;
    }
    KD_CHECK(rc != 0, "the leaking child must fail under LeakSanitizer; output:\n%s", out);
    KD_CHECK(strstr(out, "detected memory leaks") != NULL, "no leak report:\n%s", out);
    KD_CHECK(strstr(out, "kd_tensor_create") != NULL, "the report must name kd_tensor_create:\n%s",
             out);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"oob_write", oob_write}, {"race", race}, {"uninit", uninit}, {"lsan_leak", lsan_leak}};
    return kd_test_main(argc, argv, cases, 4);
}
