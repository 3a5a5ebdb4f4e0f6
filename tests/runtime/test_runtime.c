/* Runtime tests: device choice, program builds and the cache, tensors, memory. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kdtest.h"
#include "rt.h"

/* Catches: a wrong preference order or selector parsing. */
static int choose_rules(void) {
    kd_dev_desc d[] = {
        {0, 0, 2, "pthread-haswell-AMD EPYC", "Portable Computing Language"},
        {1, 0, 1, "Some FPGA", "Vendor X"},
        {1, 1, 0, "NVIDIA H100", "NVIDIA CUDA"},
    };
    KD_CHECK(kd_rt_choose(d, 3, NULL) == 2, "GPU first");
    KD_CHECK(kd_rt_choose(d, 2, NULL) == 1, "accelerator before CPU");
    KD_CHECK(kd_rt_choose(d, 1, "") == 0, "CPU when alone");
    KD_CHECK(kd_rt_choose(d, 3, "0:0") == 0, "P:D");
    KD_CHECK(kd_rt_choose(d, 3, "1:1") == 2, "P:D");
    KD_CHECK(kd_rt_choose(d, 3, "2:0") == -1, "P:D out of range");
    KD_CHECK(kd_rt_choose(d, 3, "epyc") == 0, "name substring, any case");
    KD_CHECK(kd_rt_choose(d, 3, "cuda") == 2, "platform substring");
    KD_CHECK(kd_rt_choose(d, 3, "radeon") == -1, "no match");
    return 0;
}

/* Catches: a bad selector silently falling back to some device. */
static int bad_selector(void) {
    kd_device *d = NULL;
    kd_status s = kd_device_open("no-such-device-xyz", &d);
    KD_CHECK(s == KD_ERR_NO_DEVICE && d == NULL, "status %s", kd_status_string(s));
    KD_CHECK(strstr(kd_last_error(), "no-such-device-xyz") != NULL, "message: %s", kd_last_error());
    KD_CHECK(strstr(kd_last_error(), "0:0") != NULL, "lists devices: %s", kd_last_error());
    s = kd_device_open("9:9", &d);
    KD_CHECK(s == KD_ERR_NO_DEVICE, "9:9 gave %s", kd_status_string(s));
    return 0;
}

static int open_by_index(void) {
    kd_device *d = NULL;
    KD_CHECK_OK(kd_device_open("0:0", &d));
    KD_CHECK(kd_device_name(d)[0] != 0, "named");
    kd_device_free(d);
    return 0;
}

static int fill_check(kd_device *d) {
    kd_tensor *t;
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 3, 2, 3, 5), &t));
    KD_CHECK_OK(kd_tensor_fill(t, 2.5f));
    float h[90];
    KD_CHECK_OK(kd_tensor_download(t, h));
    for (int i = 0; i < 90; i++) KD_CHECK(h[i] == 2.5f, "fill at %d: %g", i, h[i]);
    kd_tensor_free(t);
    return 0;
}

/* Catches: programs not built from the embedded sources, a missing kernel. */
static int build_embedded(void) {
    setenv("KDSEG_CACHE", "0", 1);
    kd_device *d = NULL;
    KD_CHECK_OK(kd_device_open(NULL, &d));
    KD_CHECK(kd_device_program_count(d) == kd_cl_source_count, "%d programs of %d",
             kd_device_program_count(d), kd_cl_source_count);
    KD_CHECK(kd_device_cache_hits(d) == 0, "cache disabled");
    int r = fill_check(d);
    kd_device_free(d);
    unsetenv("KDSEG_CACHE");
    return r;
}

static void fresh_cache_dir(const char *sub) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", kd_test_tmpdir(), sub);
    mkdir(dir, 0755);
    setenv("XDG_CACHE_HOME", dir, 1);
    unsetenv("KDSEG_CACHE");
}

static int open_count_hits(int *hits) {
    kd_device *d = NULL;
    KD_CHECK_OK(kd_device_open(NULL, &d));
    *hits = kd_device_cache_hits(d);
    int r = fill_check(d);
    kd_device_free(d);
    return r;
}

/* Catches: a cache that is never written or never read. */
static int cache_hit(void) {
    fresh_cache_dir("c1");
    int h1 = -1, h2 = -1;
    if (open_count_hits(&h1) || open_count_hits(&h2)) return 1;
    KD_CHECK(h1 == 0, "first open from source, got %d hits", h1);
    KD_CHECK(h2 == kd_cl_source_count, "second open from cache: %d of %d", h2,
             kd_cl_source_count);
    return 0;
}

/* Catches: trusting a corrupt cache entry. */
static int cache_corrupt(void) {
    fresh_cache_dir("c2");
    int h = -1;
    if (open_count_hits(&h)) return 1;
    char cmd[1024];
    /* flip bytes in the middle of every entry */
    snprintf(cmd, sizeof cmd,
             "for f in '%s'/kdseg/*.bin; do printf 'garbage!' | dd of=\"$f\" bs=1 seek=40 "
             "conv=notrunc status=none; done",
             getenv("XDG_CACHE_HOME"));
    KD_CHECK(system(cmd) == 0, "corrupting");
    if (open_count_hits(&h)) return 1;
    KD_CHECK(h == 0, "corrupt entries must be rebuilt, got %d hits", h);
    if (open_count_hits(&h)) return 1;
    KD_CHECK(h == kd_cl_source_count, "rebuilt entries are cached again: %d", h);
    /* truncated entry */
    snprintf(cmd, sizeof cmd, "for f in '%s'/kdseg/*.bin; do truncate -s 30 \"$f\"; done",
             getenv("XDG_CACHE_HOME"));
    KD_CHECK(system(cmd) == 0, "truncating");
    if (open_count_hits(&h)) return 1;
    KD_CHECK(h == 0, "truncated entries rebuilt, got %d hits", h);
    return 0;
}

/* Catches: a build error without the file and line, or a crash. */
static int cl_dir_syntax_error(void) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/cl", kd_test_tmpdir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/common.h", dir);
    FILE *f = fopen(path, "w");
    fputs(kd_cl_common_text, f);
    fclose(f);
    for (int i = 0; i < kd_cl_source_count; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, kd_cl_sources[i].name);
        f = fopen(path, "w");
        fputs(kd_cl_sources[i].text, f);
        if (!strcmp(kd_cl_sources[i].name, "eltwise.cl"))
            fputs("\n__kernel void broken(__global float *x) { x[0] = undefined_thing + ; }\n", f);
        fclose(f);
    }
    setenv("KDSEG_CL_DIR", dir, 1);
    setenv("KDSEG_CACHE", "0", 1);
    kd_device *d = NULL;
    kd_status s = kd_device_open(NULL, &d);
    unsetenv("KDSEG_CL_DIR");
    unsetenv("KDSEG_CACHE");
    KD_CHECK(s == KD_ERR_BUILD && !d, "status %s", kd_status_string(s));
    KD_CHECK(strstr(kd_last_error(), "eltwise.cl") != NULL, "names the file: %s", kd_last_error());
    KD_CHECK(strstr(kd_last_error(), "eltwise.cl:") != NULL, "has a line: %s", kd_last_error());
    return 0;
}

static int roundtrip_shape(kd_device *d, kd_shape s) {
    size_t n = kd_shape_numel(s);
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4), *e = malloc(n * 4);
    kd_test_randu(a, n, 7, -3, 3);
    kd_tensor *t;
    KD_CHECK_OK(kd_tensor_create(d, s, &t));
    KD_CHECK_OK(kd_tensor_upload(t, a));
    KD_CHECK_OK(kd_tensor_download(t, b));
    KD_CHECK(!memcmp(a, b, n * 4), "NCDHW round trip");
    KD_CHECK_OK(kd_tensor_download_ndhwc(t, c));
    kd_ncdhw_to_ndhwc(a, e, s);
    KD_CHECK(!memcmp(c, e, n * 4), "stored channels-last");
    /* element (n=last, c=last, d=1, h=0, w=last) spot check of the layout */
    if (s.d > 1) {
        size_t src = ((((size_t)(s.n - 1) * s.c + (s.c - 1)) * s.d + 1) * s.h + 0) * s.w + (s.w - 1);
        size_t dst = ((((size_t)(s.n - 1) * s.d + 1) * s.h + 0) * s.w + (s.w - 1)) * s.c + (s.c - 1);
        KD_CHECK(c[dst] == a[src], "layout index");
    }
    kd_tensor_free(t);
    free(a);
    free(b);
    free(c);
    free(e);
    return 0;
}

/* Catches: a wrong NCDHW <-> NDHWC transposition on odd sizes. */
static int tensor_roundtrip(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape shapes[] = {{1, 3, 7, 9, 11}, {2, 5, 5, 6, 7}, {1, 1, 1, 1, 1}, {2, 12, 3, 4, 5},
                         {1, 4, 16, 16, 16}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (roundtrip_shape(d, shapes[i])) return 1;
    return 0;
}

/* Catches: views at the wrong offset, copies of the wrong length. */
static int tensor_views(void) {
    KD_DEVICE_OR_FAIL(d);
    kd_shape s = {3, 5, 3, 4, 5};
    size_t n = kd_shape_numel(s), per = n / 3;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    kd_test_randu(a, n, 3, 0, 1);
    kd_tensor *t, *v, *u;
    KD_CHECK_OK(kd_tensor_create(d, s, &t));
    KD_CHECK_OK(kd_tensor_upload(t, a));
    KD_CHECK_OK(kd_tensor_view_batch(t, 1, 2, &v));
    KD_CHECK_OK(kd_tensor_download(v, b));
    KD_CHECK(!memcmp(b, a + per, 2 * per * 4), "batch view 1..3");
    KD_CHECK(kd_tensor_view_batch(t, 2, 2, &u) == KD_ERR_SHAPE, "view past the end refused");
    kd_shape s1 = s;
    s1.n = 1;
    KD_CHECK_OK(kd_tensor_create(d, s1, &u));
    KD_CHECK_OK(kd_tensor_fill(u, 0));
    kd_tensor *v2;
    KD_CHECK_OK(kd_tensor_view_batch(t, 2, 1, &v2));
    KD_CHECK_OK(kd_tensor_copy(u, v2));
    KD_CHECK_OK(kd_tensor_download(u, b));
    KD_CHECK(!memcmp(b, a + 2 * per, per * 4), "copy from a view");
    KD_CHECK(kd_tensor_copy(u, t) == KD_ERR_SHAPE, "copy of another size refused");
    kd_tensor_free(v2);
    kd_tensor_free(u);
    kd_tensor_free(v);
    kd_tensor_free(t);
    free(a);
    free(b);
    return 0;
}

/* Catches: huge allocations crashing instead of a clear error. The device's largest
 * allocation varies (PoCL derives it from the host's free memory): the shape is chosen
 * just past it, in batch items of 5 x 256^3. */
static int alloc_too_large(void) {
    KD_DEVICE_OR_FAIL(d);
    size_t max = kd_device_max_alloc(d), per = (size_t)5 * 256 * 256 * 256;
    size_t n = max / (per * 4) + 1;
    kd_tensor *t = NULL;
    kd_status s = kd_tensor_create(d, kd_shape5((int)n, 5, 256, 256, 256), &t);
    KD_CHECK(s == KD_ERR_OUT_OF_MEMORY && !t, "status %s", kd_status_string(s));
    if (n * per <= (size_t)1 << 31)
        KD_CHECK(strstr(kd_last_error(), "largest allocation") != NULL, "%s", kd_last_error());
    else /* a device that allows over 8 GiB in one buffer: the element limit speaks */
        KD_CHECK(strstr(kd_last_error(), "2^31") != NULL, "%s", kd_last_error());
    KD_CHECK(strstr(kd_last_error(), "C=5") != NULL, "names the shape: %s", kd_last_error());
    return 0;
}

/* Catches: a memory limit that is not enforced. */
static int mem_limit(void) {
    setenv("KDSEG_MEM_LIMIT", "1M", 1);
    kd_device *d = NULL;
    KD_CHECK_OK(kd_device_open(NULL, &d));
    unsetenv("KDSEG_MEM_LIMIT");
    kd_tensor *a = NULL, *b = NULL;
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 1, 64, 64, 32), &a)); /* 512 KiB */
    kd_status s = kd_tensor_create(d, kd_shape5(1, 1, 64, 64, 48), &b); /* 768 KiB */
    KD_CHECK(s == KD_ERR_OUT_OF_MEMORY && !b, "second allocation must fail: %s",
             kd_status_string(s));
    KD_CHECK(strstr(kd_last_error(), "exhausted") != NULL, "%s", kd_last_error());
    kd_tensor_free(a);
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 1, 64, 64, 48), &b));
    kd_tensor_free(b);
    kd_device_free(d);
    return 0;
}

/* Catches: pool leaks or wrong accounting. */
static int pool_reuse(void) {
    KD_DEVICE_OR_FAIL(d);
    size_t base = kd_device_mem_current(d);
    kd_tensor *a, *b;
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 8, 16, 16, 16), &a));
    KD_CHECK(kd_device_mem_current(d) == base + 131072, "current %zu", kd_device_mem_current(d));
    KD_CHECK(kd_device_mem_peak(d) >= base + 131072, "peak");
    kd_tensor_free(a);
    KD_CHECK(kd_device_mem_current(d) == base, "released");
    KD_CHECK_OK(kd_tensor_create(d, kd_shape5(1, 8, 16, 16, 16), &b));
    KD_CHECK(kd_device_mem_current(d) == base + 131072, "reused");
    kd_tensor_free(b);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"choose_rules", choose_rules},     {"bad_selector", bad_selector},
        {"open_by_index", open_by_index},   {"build_embedded", build_embedded},
        {"cache_hit", cache_hit},           {"cache_corrupt", cache_corrupt},
        {"cl_dir_syntax_error", cl_dir_syntax_error},
        {"tensor_roundtrip", tensor_roundtrip}, {"tensor_views", tensor_views},
        {"alloc_too_large", alloc_too_large}, {"mem_limit", mem_limit},
        {"pool_reuse", pool_reuse},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
