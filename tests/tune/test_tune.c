/* The conv tuning table (src/ops/conv_tune.c) and `kdseg tune`: lookup order, the file
 * format and its corrupt forms, that a table entry reaches the kernel launch, that tuned
 * parameters give the default's numbers, and the command end to end. Every case points
 * KDSEG_TUNE_FILE at its own temporary file, so the tests never read or write the suite's
 * shared cache folder (where other tests run in parallel). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../kdtest.h"
#include "ops/conv_tune.h"
#include "kdseg/model.h"

/* the shared helpers of tests/kdtest.c */
#define tmp kd_test_path
#define log_has kd_test_log_has

/* Point the table at path and make the next launch reread it. */
static void use_table(const char *path) {
    setenv("KDSEG_TUNE_FILE", path, 1);
    kd_conv_tune_reload();
}

static int write_text(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(text, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static kd_conv_tune tp(int local, int lx, int ly, int vmax, int coouter, int chunks, int wlx) {
    return (kd_conv_tune){local, lx, ly, vmax, coouter, chunks, wlx, 4, 1, 4, 1, 0, 1, 1, 0, 0};
}

static kd_tune_entry ent(int level, const char *match, int rank, const char *scope, kd_conv_tune p,
                         int user) {
    kd_tune_entry e;
    memset(&e, 0, sizeof e);
    e.level = level;
    snprintf(e.match, sizeof e.match, "%s", match);
    e.rank = rank;
    snprintf(e.scope, sizeof e.scope, "%s", scope);
    e.p = p;
    e.ms_default = e.ms_best = -1;
    e.user = user;
    return e;
}

/* Lookup order with a fake table and fake devices, no OpenCL: the exact device name beats
 * vendor + type, which beats the default; within a level the shape key beats the pass,
 * which beats "*"; a user entry beats a built-in one at the same level and scope; the name
 * must match exactly, the vendor as a case-insensitive substring of the device's or the
 * platform's vendor, the type exactly. Catches a lookup that takes the first match, lets
 * a vendor entry beat a name entry, or matches names loosely. */
static int lookup_order(void) {
    const char *key = "conv|fwd|vox2^12 ci16 co16 k3x3x3 s1 p1 g1 b1";
    const char *key2 = "conv|bwd_data|vox2^12 ci16 co16 k3x3x3 s1 p1 g1 b0";
    kd_tune_entry e[8];
    e[0] = ent(KD_TUNE_LEVEL_VENDOR, "acme", 0, "*", tp(1, 2, 1, 16, 256, 64, 1), 0);
    e[1] = ent(KD_TUNE_LEVEL_VENDOR, "ACME", -1, "fwd", tp(1, 3, 1, 16, 256, 64, 1), 1);
    e[2] = ent(KD_TUNE_LEVEL_NAME, "Acme X1", -1, "*", tp(1, 4, 1, 16, 256, 64, 1), 1);
    e[3] = ent(KD_TUNE_LEVEL_NAME, "Acme X1", -1, key, tp(1, 5, 1, 16, 256, 64, 1), 1);
    e[4] = ent(KD_TUNE_LEVEL_NAME, "Other", -1, "*", tp(1, 6, 1, 16, 256, 64, 1), 1);
    e[5] = ent(KD_TUNE_LEVEL_VENDOR, "acme", 2, "*", tp(1, 7, 1, 16, 256, 64, 1), 1);
    e[6] = ent(KD_TUNE_LEVEL_VENDOR, "acme", 0, "*", tp(1, 8, 1, 16, 256, 64, 1), 1);
    kd_dev_ident gpu = {"Acme X1", "Acme Corp", "Acme platform", 0};
    kd_conv_tune p;
    const kd_tune_entry *h;
    /* the whole table: name + shape key, then name + "*" for another pass */
    h = kd_conv_tune_resolve(e, 7, &gpu, key, &p);
    KD_CHECK(h == &e[3] && p.lx == 5, "exact name + shape key expected, got lx %d", p.lx);
    h = kd_conv_tune_resolve(e, 7, &gpu, key2, &p);
    KD_CHECK(h == &e[2] && p.lx == 4, "name + * expected for another pass, got lx %d", p.lx);
    /* without name entries: vendor + pass scope beats vendor + "*" */
    kd_tune_entry v[3] = {e[0], e[1], e[5]};
    h = kd_conv_tune_resolve(v, 3, &gpu, key, &p);
    KD_CHECK(h == &v[1] && p.lx == 3, "vendor + pass expected, got lx %d", p.lx);
    h = kd_conv_tune_resolve(v, 3, &gpu, key2, &p);
    KD_CHECK(h == &v[0] && p.lx == 2, "built-in vendor + * expected, got lx %d", p.lx);
    /* a user entry beats a built-in one at the same level and scope, wherever it stands */
    kd_tune_entry u[2] = {e[6], e[0]};
    h = kd_conv_tune_resolve(u, 2, &gpu, key2, &p);
    KD_CHECK(h == &u[0] && p.lx == 8, "user vendor entry expected, got lx %d", p.lx);
    /* the type must match: a CPU of the same vendor gets the cpu entry */
    kd_dev_ident cpu = {"Acme C9", "Acme Corp", "Acme platform", 2};
    h = kd_conv_tune_resolve(v, 3, &cpu, key2, &p);
    KD_CHECK(h == &v[2] && p.lx == 7, "vendor + cpu expected, got lx %d", p.lx);
    /* the name must match exactly; the vendor may match the platform's vendor */
    kd_dev_ident pro = {"Acme X1 Pro", "Someone", "ACME platform", 0};
    h = kd_conv_tune_resolve(e, 7, &pro, key2, &p);
    KD_CHECK(h == &e[6] && p.lx == 8, "'Acme X1 Pro' must not match 'Acme X1', got lx %d", p.lx);
    /* nothing matches: the built-in default */
    kd_dev_ident zeta = {"Zeta", "Zeta Inc", "Zeta", 0};
    h = kd_conv_tune_resolve(e, 7, &zeta, key, &p);
    KD_CHECK(h == NULL && kd_conv_tune_equal(&p, &kd_conv_tune_default), "default expected");
    /* the built-in entries: PoCL's CPU device (the vendor is the CPU maker, the platform
     * vendor is pocl) and NVIDIA GPUs; an NVIDIA CPU would get the default */
    int nb;
    const kd_tune_entry *b = kd_conv_tune_builtin(&nb);
    kd_dev_ident pocl = {"pthread-haswell-AMD EPYC", "AuthenticAMD", "The pocl project", 2};
    h = kd_conv_tune_resolve(b, nb, &pocl, key, &p);
    KD_CHECK(h && !strcmp(h->match, "pocl") && p.local == KD_TUNE_LOCAL_SET && p.lx == 1 &&
                 p.ly == 1 && p.vmax == 16 && p.coouter == 256 && p.chunks == 64 && p.wlx == 1,
             "PoCL CPU must get today's values");
    kd_dev_ident nv = {"NVIDIA H200", "NVIDIA Corporation", "NVIDIA Corporation", 0};
    h = kd_conv_tune_resolve(b, nb, &nv, key, &p);
    KD_CHECK(h && !strcmp(h->match, "nvidia") && h->note && strstr(h->note, "H200") &&
                 p.local == KD_TUNE_LOCAL_DRIVER && p.vmax == 1,
             "NVIDIA GPU forward entry (measured on an H200) expected");
    h = kd_conv_tune_resolve(b, nb, &nv, "conv|bwd_weight|vox2^12 ci16 co16 k3x3x3 s1 p1 g1 b0", &p);
    KD_CHECK(h && !strcmp(h->scope, "bwd_weight") && p.vmax == 8, "NVIDIA weight-gradient entry");
    nv.rank = 2;
    KD_CHECK(kd_conv_tune_resolve(b, nb, &nv, key, &p) == NULL, "NVIDIA CPU must get the default");
    return 0;
}

/* Write and read back: every field survives, parameters format and parse as a pair, and
 * missing keys take the default. Catches a writer and reader that disagree on the format. */
static int file_roundtrip(void) {
    kd_tune_entry e[3];
    e[0] = ent(KD_TUNE_LEVEL_NAME, "Dev With Spaces (R) 9", -1,
               "conv|fwd|vox2^18 ci16 co16 k3x3x3 s1 p1 g1 b1", tp(0, 32, 4, 8, -1, 256, 32), 1);
    e[0].ms_default = 12.5, e[0].ms_best = 7.25;
    e[1] = ent(KD_TUNE_LEVEL_VENDOR, "nvidia", 0, "bwd_weight", tp(1, 1, 1, 1, 0, 1, 1024), 1);
    e[2] = ent(KD_TUNE_LEVEL_VENDOR, "x", -1, "*", kd_conv_tune_default, 1);
    const char *path = tmp("sub/dir/rt.txt"); /* the folder is created */
    KD_CHECK_OK(kd_conv_tune_file_write(path, e, 3));
    kd_tune_entry *r = NULL;
    int n = 0;
    char why[600];
    KD_CHECK(kd_conv_tune_file_read(path, &r, &n, why, sizeof why) == 0, "read: %s", why);
    KD_CHECK(n == 3, "%d entries", n);
    for (int i = 0; i < 3; i++) {
        KD_CHECK(r[i].level == e[i].level && !strcmp(r[i].match, e[i].match) &&
                     r[i].rank == e[i].rank && !strcmp(r[i].scope, e[i].scope) &&
                     kd_conv_tune_equal(&r[i].p, &e[i].p) && r[i].user == 1,
                 "entry %d differs after the round trip", i);
        KD_CHECK(r[i].ms_default == e[i].ms_default && r[i].ms_best == e[i].ms_best,
                 "entry %d times %g %g", i, r[i].ms_default, r[i].ms_best);
    }
    free(r);
    kd_conv_tune p;
    KD_CHECK(kd_conv_tune_parse("vmax=8 lx=4", &p, why, sizeof why) == 0, "%s", why);
    KD_CHECK(p.vmax == 8 && p.lx == 4 && p.ly == 1 && p.chunks == 64 &&
                 p.local == KD_TUNE_LOCAL_AUTO,
             "missing keys must keep the default");
    KD_CHECK(kd_conv_tune_file_read(tmp("none.txt"), &r, &n, why, sizeof why) == 1 && n == 0,
             "an absent file is not an error");
    return 0;
}

/* Corrupt and truncated files are ignored as a whole with a reason naming the file and the
 * line, never a crash; a device run with such a file uses the built-in entries and warns
 * (kd_log, on stderr). Catches a parser that takes a partial table, reads past a buffer, or
 * trusts an unterminated file. */
static int corrupt_table(void) {
    static const char *good =
        "# kdseg conv tuning table 1\n"
        "name\tDev\t*\tfwd\tlocal=set lx=2 ly=1 vmax=16 coouter=256 chunks=64 wlx=1\t-\t-\n"
        "name\tDev\t*\tbwd_data\tlocal=set lx=2 ly=1 vmax=16 coouter=256 chunks=64 "
        "wlx=1\t1.0\t0.5\n"
        "end\t2\n";
    char longline[3000];
    memset(longline, 'a', sizeof longline);
    memcpy(longline, "# kdseg conv tuning table 1\nname\t", 33);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = 0;
    unsigned char junk[512];
    uint64_t st = 7;
    for (size_t i = 0; i < sizeof junk; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        junk[i] = (unsigned char)(st >> 56);
    }
    struct {
        const char *what, *text;
        size_t n;
    } cases[] = {
        {"empty", "", 0},
        {"no magic line", good + 28, strlen(good + 28)},
        {"truncated before the end line", good, strlen(good) - 6},
        {"cut inside a line", good, 120},
        {"bad vmax", "# kdseg conv tuning table 1\nname\tDev\t*\tfwd\tvmax=7\t-\t-\nend\t1\n", 0},
        {"unknown key", "# kdseg conv tuning table 1\nname\tDev\t*\tfwd\ttile=3\t-\t-\nend\t1\n",
         0},
        {"six fields", "# kdseg conv tuning table 1\nname\tDev\t*\tfwd\tvmax=8\t-\nend\t1\n", 0},
        {"count mismatch", "# kdseg conv tuning table 1\nname\tDev\t*\tfwd\tvmax=8\t-\t-\nend\t2\n",
         0},
        {"group too large",
         "# kdseg conv tuning table 1\nname\tDev\t*\tfwd\tlx=64 ly=64\t-\t-\nend\t1\n", 0},
        {"bad type", "# kdseg conv tuning table 1\nvendor\tx\tdsp\tfwd\tvmax=8\t-\t-\nend\t1\n", 0},
        {"bad time", "# kdseg conv tuning table 1\nname\tDev\t*\tfwd\tvmax=8\tfast\t-\nend\t1\n",
         0},
        {"text after end", "# kdseg conv tuning table 1\nend\t0\nname\tDev\t*\tfwd\tvmax=8\t-\t-\n",
         0},
        {"long line", longline, strlen(longline)},
        {"binary junk", (const char *)junk, sizeof junk},
    };
    const char *path = tmp("corrupt.txt");
    char why[600];
    KD_CHECK(write_text(path, good, strlen(good)) == 0, "write");
    kd_tune_entry *r = NULL;
    int n = 0;
    KD_CHECK(kd_conv_tune_file_read(path, &r, &n, why, sizeof why) == 0 && n == 2,
             "the intact file must read: %s", why);
    free(r);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t len = cases[c].n ? cases[c].n : strlen(cases[c].text);
        KD_CHECK(write_text(path, cases[c].text, len) == 0, "write");
        why[0] = 0;
        int st2 = kd_conv_tune_file_read(path, &r, &n, why, sizeof why);
        KD_CHECK(st2 == -1 && n == 0 && r == NULL, "%s: read as %d with %d entries", cases[c].what,
                 st2, n);
        KD_CHECK(strstr(why, path) != NULL, "%s: the reason must name the file: %s", cases[c].what,
                 why);
    }
    /* 3000 random mutations of the intact file (bytes changed, cut short, lines dropped):
     * none may crash (run under ASan by tools/test.sh), and whatever is accepted must hold
     * only valid entries */
    size_t gl = strlen(good);
    char mut[512];
    for (int it = 0; it < 3000; it++) {
        memcpy(mut, good, gl);
        size_t len = gl;
        int edits = 1 + it % 4;
        for (int k = 0; k < edits; k++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(st >> 33) % len;
            switch ((st >> 20) % 3) {
            case 0: mut[pos] = (char)(st >> 40); break;               /* any byte */
            case 1: len = pos + 1; break;                              /* cut short */
            default: mut[pos] = "\t\n=0-#x "[(st >> 44) % 8]; break; /* a format byte */
            }
        }
        KD_CHECK(write_text(path, mut, len) == 0, "write");
        int st3 = kd_conv_tune_file_read(path, &r, &n, why, sizeof why);
        KD_CHECK(st3 == 0 || st3 == -1, "mutation %d: state %d", it, st3);
        for (int i = 0; i < n; i++)
            KD_CHECK(kd_conv_tune_valid(&r[i].p, why, sizeof why) && r[i].match[0] &&
                         r[i].scope[0],
                     "mutation %d: an invalid entry %d was accepted", it, i);
        free(r);
        r = NULL;
    }
    /* on the device: a truncated file is ignored, the launch uses the built-in entry */
    KD_DEVICE_OR_FAIL(dev);
    KD_CHECK(write_text(path, good, strlen(good) - 6) == 0, "write");
    use_table(path);
    int nu = -1;
    KD_CHECK(kd_conv_tune_user_state(&nu, why, sizeof why) == -1 && nu == 0 &&
                 strstr(why, "end line"),
             "state of a truncated table: %s", why);
    kd_conv_params cp = {{3, 3, 3}, 1, 1, 1};
    kd_tensor *x, *w, *y;
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 8, 5, 5, 5), &x));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, 27 * 8 * 8), &w));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 8, 5, 5, 5), &y));
    kd_conv_force(KD_CONV_DIRECT);
    kd_status s = kd_conv3d_forward(&cp, x, w, NULL, y);
    kd_conv_force(KD_CONV_AUTO);
    kd_tensor_free(x);
    kd_tensor_free(w);
    kd_tensor_free(y);
    KD_CHECK_OK(s);
    kd_conv_tune last;
    char src[400];
    kd_conv_tune_last(&last, src, sizeof src);
    KD_CHECK(strstr(src, "user file") == NULL && last.lx == 1,
             "a corrupt table must not be used: %s", src);
    return 0;
}

/* ---- device cases -------------------------------------------------------------------- */

typedef struct shape {
    const char *name;
    int ci, co, d, h, w, k, s, p, groups, transposed;
} shape;

/* Shapes that exercise every launch: 3x3x3 stride 1 (forward kernel for both data passes)
 * with sizes that no local size divides, stride 2 (the input-gradient kernel), 2x2x2 down,
 * a 1x1x1 conv to 3 padded channels (on the PoCL entry, and any set with float16 vectors
 * and the few-output kernels, the forward runs on kd_conv3d_pwo_o3: the same bits as the
 * padded kernels) and to 4 (kd_conv3d_pwo_o4; 105 positions, the last block of 16 partial),
 * large weights (channel-block-outer forward by default), the scalar kernels (5 channels),
 * the transposed conv, a depthwise conv. */
static const shape shapes[] = {
    {"16->16 k3 9x10x11", 16, 16, 9, 10, 11, 3, 1, 1, 1, 0},
    {"5->12 k3 s2", 5, 12, 7, 9, 6, 3, 2, 1, 1, 0},
    {"16->32 k2 s2", 16, 32, 8, 6, 10, 2, 2, 0, 1, 0},
    {"16->3 k1", 16, 3, 6, 7, 5, 1, 1, 0, 1, 0},
    {"8->4 k1", 8, 4, 3, 5, 7, 1, 1, 0, 1, 0},
    {"32->16 k1", 32, 16, 5, 3, 7, 1, 1, 0, 1, 0},
    {"64->64 k3 (large weights)", 64, 64, 5, 6, 7, 3, 1, 1, 1, 0},
    {"convT 16->8", 16, 8, 3, 4, 5, 2, 2, 0, 1, 1},
    {"depthwise 16", 16, 16, 6, 5, 7, 3, 1, 1, 16, 0},
};

typedef struct outs {
    float *y, *dx, *dw;
    size_t ny, nx, nw;
} outs;

static void outs_free(outs *o) {
    free(o->y);
    free(o->dx);
    free(o->dw);
    memset(o, 0, sizeof *o);
}

static int upload_rand(kd_tensor *t, unsigned seed) {
    size_t n = kd_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    if (!h) return 1;
    kd_test_randu(h, n, seed, -1.0f, 1.0f);
    kd_status s = kd_tensor_upload_ndhwc(t, h);
    free(h);
    KD_CHECK_OK(s);
    return 0;
}

/* All three passes of shape sh with the direct kernels under parameters p (NULL: the
 * table, i.e. the default here). */
static int run_shape(kd_device *dev, const shape *sh, const kd_conv_tune *p, outs *o) {
    memset(o, 0, sizeof *o);
    int od, oh, ow;
    if (sh->transposed)
        od = 2 * sh->d, oh = 2 * sh->h, ow = 2 * sh->w;
    else {
        od = kd_conv_out_size(sh->d, sh->k, sh->s, sh->p);
        oh = kd_conv_out_size(sh->h, sh->k, sh->s, sh->p);
        ow = kd_conv_out_size(sh->w, sh->k, sh->s, sh->p);
    }
    kd_shape xs = kd_shape5(1, sh->ci, sh->d, sh->h, sh->w), ys = kd_shape5(1, sh->co, od, oh, ow);
    size_t wn = (size_t)sh->k * sh->k * sh->k * (sh->ci / sh->groups) * sh->co;
    kd_tensor *x, *w, *b, *y, *dy, *dx, *dw;
    KD_CHECK_OK(kd_tensor_create(dev, xs, &x));
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, 1, 1, 1, (int)wn), &w));
    KD_CHECK_OK(kd_tensor_create(dev, kd_shape5(1, sh->co, 1, 1, 1), &b));
    KD_CHECK_OK(kd_tensor_create(dev, ys, &y));
    KD_CHECK_OK(kd_tensor_create(dev, ys, &dy));
    KD_CHECK_OK(kd_tensor_create(dev, xs, &dx));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, (int)wn), &dw));
    if (upload_rand(x, 1) || upload_rand(w, 2) || upload_rand(b, 3) || upload_rand(dy, 4)) return 1;
    kd_conv_force(KD_CONV_DIRECT);
    kd_conv_tune_force(p);
    kd_conv_params cp = {{sh->k, sh->k, sh->k}, sh->s, sh->p, sh->groups};
    kd_status s;
    if (sh->transposed) {
        s = kd_convT3d_forward(x, w, b, y);
        if (!s) s = kd_convT3d_backward_input(dy, w, dx);
        if (!s) s = kd_convT3d_backward_weight(x, dy, dw, NULL);
    } else {
        s = kd_conv3d_forward(&cp, x, w, b, y);
        if (!s) s = kd_conv3d_backward_input(&cp, dy, w, dx);
        if (!s) s = kd_conv3d_backward_weight(&cp, x, dy, dw, NULL);
    }
    kd_conv_tune_force(NULL);
    kd_conv_force(KD_CONV_AUTO);
    KD_CHECK_OK(s);
    o->ny = kd_tensor_numel(y), o->nx = kd_tensor_numel(dx), o->nw = wn;
    o->y = malloc(o->ny * 4), o->dx = malloc(o->nx * 4), o->dw = malloc(o->nw * 4);
    KD_CHECK(o->y && o->dx && o->dw, "out of memory");
    KD_CHECK_OK(kd_tensor_download_ndhwc(y, o->y));
    KD_CHECK_OK(kd_tensor_download_ndhwc(dx, o->dx));
    KD_CHECK_OK(kd_tensor_download_ndhwc(dw, o->dw));
    kd_tensor *all[] = {x, w, b, y, dy, dx, dw};
    for (int i = 0; i < 7; i++)
        kd_tensor_free(all[i]);
    return 0;
}

/* Tuned parameters give the default's numbers: forward and input gradient bit for bit
 * (no parameter changes the order of their sums), the weight gradient within 1e-5 of its
 * largest value (chunks regroup the partial sums). Parameter sets: odd local sizes that
 * divide nothing, NULL local sizes, scalar kernels with channel blocks always outermost,
 * float8 with no outer order and 7 chunks, one chunk, register blocks of 8 x 2, 4 x 2
 * and 4 x 4 (positions x vectors; 4 or 8 input channels x 1, 2 or 4 vectors for the
 * weight gradient). The few-output-channel kernels stay on in every set: they sum in another
 * order. Catches launch geometry bugs: a
 * range rounded up past a kernel's guard, a vector width the host and kernel disagree on,
 * positions or channel blocks dropped or done twice. */
static int same_results(void) {
    KD_DEVICE_OR_FAIL(dev);
    use_table(tmp("none.txt"));
    const kd_conv_tune sets[] = {
        tp(KD_TUNE_LOCAL_SET, 3, 2, 16, 256, 64, 3), tp(KD_TUNE_LOCAL_DRIVER, 1, 1, 16, 256, 64, 1),
        tp(KD_TUNE_LOCAL_SET, 5, 3, 1, 0, 64, 7),    tp(KD_TUNE_LOCAL_SET, 2, 1, 8, -1, 7, 2),
        tp(KD_TUNE_LOCAL_AUTO, 1, 1, 16, 256, 1, 1),
        /* register blocks: 8 positions x 2 vectors and 2 rows where one vector (the PoCL
         * entry's), 4 x 2 (run as 8 x 2 and 8 x 2, or 4 x 1 for the weight gradient of 5
         * input channels) with float8, 2 rows and 1 KiB chunks, 4 x 4 with channel blocks
         * always outermost */
        (kd_conv_tune){KD_TUNE_LOCAL_SET, 1, 1, 16, 256, 64, 1, 8, 2, 8, 2, 1024, 1, 2, 1, 32},
        (kd_conv_tune){KD_TUNE_LOCAL_SET, 2, 1, 8, -1, 5, 1, 4, 2, 4, 2, 1, 1, 2, 1, 3},
        (kd_conv_tune){KD_TUNE_LOCAL_AUTO, 1, 1, 16, 0, 64, 1, 4, 4, 4, 4, 0, 1, 1, 0, 0},
        /* the pointwise kernel (1x1x1 convs) with one block per work-item, and the dense
         * kernel with the PoCL entry's other parameters */
        (kd_conv_tune){KD_TUNE_LOCAL_SET, 1, 1, 16, 256, 64, 1, 8, 2, 8, 2, 1024, 1, 2, 1, 1},
        (kd_conv_tune){KD_TUNE_LOCAL_SET, 1, 1, 16, 256, 64, 1, 8, 2, 8, 2, 1024, 1, 2, 1, 0},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        outs ref, got;
        if (run_shape(dev, &shapes[i], NULL, &ref)) return 1;
        for (size_t j = 0; j < sizeof sets / sizeof sets[0]; j++) {
            char ps[200];
            kd_conv_tune_format(&sets[j], ps, sizeof ps);
            if (run_shape(dev, &shapes[i], &sets[j], &got)) return 1;
            int fwd_same = !memcmp(ref.y, got.y, ref.ny * 4);
            int dx_same = !memcmp(ref.dx, got.dx, ref.nx * 4);
            double ew = kd_test_rel_err(got.dw, ref.dw, ref.nw, 1e-6);
            double ey = kd_test_rel_err(got.y, ref.y, ref.ny, 1e-6);
            double ex = kd_test_rel_err(got.dx, ref.dx, ref.nx, 1e-6);
            outs_free(&got);
            KD_CHECK(fwd_same && dx_same && ew <= 1e-5,
                     "%s with %s: forward %s (%.2g), input grad %s (%.2g), weight grad %.2g",
                     shapes[i].name, ps, fwd_same ? "same" : "differs", ey,
                     dx_same ? "same" : "differs", ex, ew);
        }
        outs_free(&ref);
    }
    return 0;
}

/* A table entry reaches the launch: with no table the launch is the built-in entry's (PoCL
 * local sizes 1x1x1, float16); a user entry for this device's name and the pass changes
 * the kernel width and the local sizes the kernel is launched with; an entry for the exact
 * shape key beats the pass entry; kd_conv_tune_force beats both. Catches a table that is
 * loaded but not consulted, or consulted with another key than the chooser's. */
static int entry_reaches_launch(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (!kd_device_is_cpu(dev)) return KD_TEST_SKIP; /* the default trace is the CPU's */
    use_table(tmp("none.txt"));
    kd_tensor *x, *w, *b, *y, *x2, *y2;
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 8, 8, 8), &x));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, 27 * 16 * 16), &w));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 1, 1, 1), &b));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 8, 8, 8), &y));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 4, 4, 4), &x2));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 4, 4, 4), &y2));
    kd_conv_params cp = {{3, 3, 3}, 1, 1, 1};
    char trace[2048], src[400];
    kd_conv_tune last;
    kd_conv_force(KD_CONV_DIRECT);
#define FWD(X, Y)                                                                                  \
    do {                                                                                           \
        kd_conv_tune_trace_begin();                                                                \
        kd_status s_ = kd_conv3d_forward(&cp, X, w, b, Y);                                         \
        kd_conv_tune_trace_end(trace, sizeof trace);                                               \
        KD_CHECK_OK(s_);                                                                           \
        kd_conv_tune_last(&last, src, sizeof src);                                                 \
    } while (0)
    FWD(x, y);
    /* the PoCL entry: 8 wide, 1 block of 8 positions x 1 vector of 16 channels, 4 pairs of
     * rows, 8 planes */
    KD_CHECK(!strcmp(trace, "kd_conv3d_fwd2_v16_p8 1x4x8 / 1x1x1"), "default launch: %s", trace);
    KD_CHECK(strstr(src, "built-in") != NULL, "source: %s", src);
    kd_conv_geom g = {1, 16, 4, 4, 4, 16, 4, 4, 4, {3, 3, 3}, 1, 1, 1, 0, 1};
    char key[192];
    kd_conv_key(&g, KD_PASS_FWD, key, sizeof key);
    kd_tune_entry e[2];
    e[0] = ent(KD_TUNE_LEVEL_NAME, kd_device_name(dev), -1, "fwd", tp(1, 2, 4, 8, 256, 64, 1), 1);
    e[1] = ent(KD_TUNE_LEVEL_NAME, kd_device_name(dev), -1, key, tp(0, 1, 1, 1, 256, 64, 1), 1);
    const char *path = tmp("table.txt");
    KD_CHECK_OK(kd_conv_tune_file_write(path, e, 2));
    use_table(path);
    FWD(x, y);
    KD_CHECK(!strcmp(trace, "kd_conv3d_fwd_v8_p4m1 4x8x8 / 2x4x1"), "pass entry launch: %s", trace);
    KD_CHECK(strstr(src, "user file, device name") && last.vmax == 8, "source: %s", src);
    FWD(x2, y2);
    KD_CHECK(!strcmp(trace, "kd_conv3d_fwd_v1_p4m1 16x4x4"), "shape entry launch: %s", trace);
    KD_CHECK(strstr(src, "shape conv|fwd|") && last.vmax == 1, "source: %s", src);
    kd_conv_tune f = tp(1, 1, 2, 16, 256, 64, 1);
    kd_conv_tune_force(&f);
    FWD(x2, y2);
    kd_conv_tune_force(NULL);
    KD_CHECK(!strcmp(trace, "kd_conv3d_fwd_v16_p4m1 1x4x4 / 1x2x1") && !strcmp(src, "forced"),
             "forced launch: %s (%s)", trace, src);
#undef FWD
    kd_conv_force(KD_CONV_AUTO);
    kd_tensor *all[] = {x, w, b, y, x2, y2};
    for (int i = 0; i < 6; i++)
        kd_tensor_free(all[i]);
    return 0;
}

#define kdseg kd_test_kdseg /* (tests/kdtest.c) */

/* `kdseg tune --patch 16 --only ...` end to end: it writes this device's entries (one per
 * pass for the shape, one per pass for untuned shapes), a second process (this test, then
 * `kdseg devices`) picks them up and launches with them, a second tune merges instead of
 * replacing, --dry-run writes nothing, and bad options fail cleanly. Catches a tune that
 * does not store, stores under another name or key than the launch looks up, or loses
 * earlier entries. */
static int tune_e2e(void) {
    KD_DEVICE_OR_FAIL(dev);
    const char *path = tmp("tuned.txt");
    use_table(path); /* the children inherit KDSEG_TUNE_FILE */
    KD_CHECK(kdseg("tune --patch 16 --only 'conv 16 k3' --reps 1") == 0, "kdseg tune failed");
    kd_tune_entry *e = NULL;
    int n = 0;
    char why[600];
    KD_CHECK(kd_conv_tune_file_read(path, &e, &n, why, sizeof why) == 0, "%s", why);
    int named = 0, pass_level = 0;
    for (int i = 0; i < n; i++) {
        named += e[i].level == KD_TUNE_LEVEL_NAME && !strcmp(e[i].match, kd_device_name(dev));
        pass_level += !strchr(e[i].scope, '|');
        KD_CHECK(e[i].ms_default > 0 && e[i].ms_best > 0 && e[i].ms_best <= e[i].ms_default,
                 "entry %d: times %g -> %g", i, e[i].ms_default, e[i].ms_best);
    }
    free(e);
    KD_CHECK(n == 6 && named == 6 && pass_level == 3, "%d entries, %d named, %d per pass", n, named,
             pass_level);
    /* this process reads what the other wrote and launches with it */
    kd_conv_tune_reload();
    kd_tensor *x, *w, *b, *y;
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 16, 16, 16), &x));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, 27 * 16 * 16), &w));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 1, 1, 1), &b));
    KD_CHECK_OK(kd_tensor_zeros(dev, kd_shape5(1, 16, 16, 16, 16), &y));
    kd_conv_params cp = {{3, 3, 3}, 1, 1, 1};
    kd_conv_force(KD_CONV_DIRECT);
    kd_status s = kd_conv3d_forward(&cp, x, w, b, y);
    kd_conv_force(KD_CONV_AUTO);
    kd_tensor_free(x);
    kd_tensor_free(w);
    kd_tensor_free(b);
    kd_tensor_free(y);
    KD_CHECK_OK(s);
    kd_conv_tune last;
    char src[400];
    kd_conv_tune_last(&last, src, sizeof src);
    KD_CHECK(strstr(src, "user file, device name, shape conv|fwd|vox2^12 ci16 co16") != NULL,
             "the launch did not use the tuned entry: %s", src);
    KD_CHECK(kdseg("devices") == 0 && log_has("6 entries, 6 for this device by name"),
             "kdseg devices does not show the user table");
    /* a second tune adds its shape and replaces only the per-pass entries */
    KD_CHECK(kdseg("tune --patch 16 --only 'conv 32 k3' --reps 1") == 0, "second tune failed");
    KD_CHECK(kd_conv_tune_file_read(path, &e, &n, why, sizeof why) == 0, "%s", why);
    free(e);
    KD_CHECK(n == 9, "after the second tune: %d entries, 9 expected", n);
    /* --dry-run measures but writes nothing */
    setenv("KDSEG_TUNE_FILE", tmp("dry.txt"), 1);
    KD_CHECK(kdseg("tune --patch 16 --only 'conv 16 k3' --reps 1 --dry-run") == 0, "dry run");
    struct stat stt;
    KD_CHECK(stat(tmp("dry.txt"), &stt) != 0, "--dry-run wrote the table");
    KD_CHECK(kdseg("tune --patch 0") == 2, "--patch 0 must be refused");
    KD_CHECK(kdseg("tune --patch 16 --only 'no such layer'") == 2, "no matching shape");
    KD_CHECK(kdseg("tune --bogus") == 2, "unknown option");
    use_table(path);
    return 0;
}

/* kd_device_peak on small buffers: every figure positive and finite, the peak the better of
 * the two widths, the per-CPU-second figure exactly on CPU devices; NULLs refused. And
 * `kdseg bench peak --json` writes the same kind of figures. Catches a peak kernel that
 * does no work (infinite or zero rates), a width that is never measured, a broken CLI. */
static int device_peak(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_peak p;
    KD_CHECK_OK(kd_device_peak(dev, (size_t)1 << 20, &p));
    const double f[] = {p.gflops, p.gflops_v1, p.gflops_v16, p.read_gbs, p.copy_gbs, p.seconds};
    for (int i = 0; i < 6; i++)
        KD_CHECK(f[i] > 0 && f[i] < 1e8, "figure %d out of range: %g", i, f[i]);
    KD_CHECK(p.gflops == (p.gflops_v1 > p.gflops_v16 ? p.gflops_v1 : p.gflops_v16),
             "peak %g is not the better of %g and %g", p.gflops, p.gflops_v1, p.gflops_v16);
    KD_CHECK(kd_device_is_cpu(dev) ? p.cpu_gflops > 0 : p.cpu_gflops == 0,
             "per-CPU-second figure %g on a %s device", p.cpu_gflops,
             kd_device_is_cpu(dev) ? "CPU" : "non-CPU");
    KD_CHECK(kd_device_peak(NULL, 0, &p) == KD_ERR_INVALID_ARG, "NULL device accepted");
    kd_clear_error();
    const char *small = getenv("KDSEG_TEST_SMALL");
    if (small && *small && strcmp(small, "0")) return 0; /* the CLI's 256 MiB: too slow under
                                                          * Oclgrind */
    const char *js = tmp("peak.json");
    KD_CHECK(kd_test_kdseg("bench peak --json %s", js) == 0, "kdseg bench peak failed");
    FILE *jf = fopen(js, "r");
    KD_CHECK(jf != NULL, "no JSON written");
    char buf[1024] = "";
    size_t nr = fread(buf, 1, sizeof buf - 1, jf);
    fclose(jf);
    buf[nr] = 0;
    const char *g = strstr(buf, "\"gflops\": ");
    KD_CHECK(g && strtod(g + 10, NULL) > 0, "JSON without a positive gflops: %s", buf);
    KD_CHECK(kd_test_kdseg("bench peak --bogus") == 2, "unknown option accepted");
    return 0;
}

/* kd_model_conv_flops of the paper's student (widths 16..128, enc 1,2,2,4, dec 1,1,1) at
 * 128^3: the forward as counted by hand, 296084307968 FLOP (2 x the multiply-adds of the
 * input conv, 2 convs per residual block, the 2x2x2 down convs, the decoder's two 1x1
 * convs per level, the output conv), and training exactly three forwards minus the input
 * conv's input gradient (the image needs none). Catches a conv counted twice or missed,
 * the training factor, the input gradient of the first conv. */
static int model_flops(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_model *m;
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=16,32,64,128", 1, &m));
    kd_shape s = kd_shape5(1, 4, 128, 128, 128);
    double inf = 0, tr = 0;
    KD_CHECK_OK(kd_model_conv_flops(m, s, 0, &inf));
    KD_CHECK_OK(kd_model_conv_flops(m, s, 1, &tr));
    kd_model_free(m);
    double first = 2.0 * 128 * 128 * 128 * 27 * 4 * 16;
    printf("student at 128^3: forward %.2f GFLOP, training %.2f GFLOP\n", inf * 1e-9, tr * 1e-9);
    KD_CHECK(fabs(inf - 296084307968.0) < 1.0, "forward %.12g FLOP", inf);
    KD_CHECK(fabs(tr - (3 * inf - first)) < 1e-9 * tr, "training %.6g vs 3 x %.6g - %.6g", tr,
             inf, first);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"device_peak", device_peak},
        {"model_flops", model_flops},
        {"lookup_order", lookup_order},
        {"file_roundtrip", file_roundtrip},
        {"corrupt_table", corrupt_table},
        {"same_results", same_results},
        {"entry_reaches_launch", entry_reaches_launch},
        {"tune_e2e", tune_e2e},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
