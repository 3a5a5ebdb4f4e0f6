/* kdseg: the conv kernels' implementation choice and tuning table, the conv layer shapes of
 * `kdseg bench ops` and `kdseg tune` as runnable cases, and the device's measured peak.
 *
 * The direct conv kernels take their launch parameters from a per-device tuning table: a
 * launch looks its parameters up by device and shape class, entries for the device's exact
 * name first, then entries for its vendor and type, then the built-in default. Within a
 * level the most specific scope wins (the pass's shape key, then the pass, then "*"), and
 * among equal scopes an entry of the user file (kd_cache_dir()/conv-tuning.txt, written by
 * `kdseg tune`) beats a built-in one. kd_conv_tune_force and the environment (KDSEG_CONV_LX,
 * _LY, _VMAX, _WB, _CB, _WCI, _WCB, _CHUNKS, _WKB, _SMALL, _ROWS, _WT3, _PW: experiments) come
 * on top. */
#ifndef KDSEG_TUNE_H
#define KDSEG_TUNE_H

#include <stddef.h>
#include <stdio.h>

#include "kdseg/device.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- implementation choice ------------------------------------------------------------- */

/* Which conv implementation: chosen by timing once per (device, shape, pass) and cached on
 * disk, or forced by KDSEG_CONV=direct|gemm. */
typedef enum kd_conv_impl { KD_CONV_AUTO = 0, KD_CONV_DIRECT, KD_CONV_GEMM } kd_conv_impl;
/* Force an implementation for this process (KD_CONV_AUTO restores the chooser). */
void kd_conv_force(kd_conv_impl impl);
/* The forced implementation (kd_conv_force, else KDSEG_CONV), KD_CONV_AUTO if none. */
kd_conv_impl kd_conv_forced(void);
/* The stored choice for (device, shape key), KD_CONV_AUTO when none; times in ms (may be
 * NULL). Keys come from kd_conv_case_key. */
kd_conv_impl kd_conv_choice_lookup(kd_device *dev, const char *key, double *ms_direct,
                                   double *ms_gemm);
/* How many (device, key) pairs this process has timed so far: the chooser's timings are
 * only as good as the device is quiet while they run (models trained at once settle their
 * choices one at a time first: src/kd/jobs.c). */
int kd_conv_timings_done(void);

/* The three passes of a conv. */
typedef enum kd_conv_pass { KD_PASS_FWD = 0, KD_PASS_BWD_DATA, KD_PASS_BWD_WEIGHT } kd_conv_pass;

/* ---- tuning parameters -------------------------------------------------------------------
 * None of them changes the order of a sum except chunks and wkb (the weight-gradient
 * partials) and small (the few-output-channel kernels reduce vector lanes), so forward and
 * input gradient are bit-identical under every setting of the others. */
typedef struct kd_conv_tune {
    int local;   /* local sizes: KD_TUNE_LOCAL_SET (lx, ly, 1), _DRIVER (NULL) or _AUTO */
    int lx, ly;  /* local size along dim 0 (W blocks x channel vectors) and dim 1 (rows) */
    int vmax;    /* widest channel vector the kernels may use: 16, 8 or 1 */
    int coouter; /* forward: channel-block-outer order when the weights exceed this many
                  * KiB (and there is more than one channel block); -1 never */
    int chunks;  /* weight gradient: at most this many chunks of output planes (partials) */
    int wlx;     /* weight-gradient partials: local size along dim 0 when local sizes are set */
    int wb;      /* forward-like kernels: output positions along W per work-item: 4 or 8 */
    int cb;      /* forward-like kernels: channel vectors per work-item, at most 1, 2 or 4 */
    int wci;     /* weight gradient: input channels per work-item, 4 or 8 */
    int wcb;     /* weight gradient: output-channel vectors per work-item, at most 1, 2, 4 */
    int wkb;     /* weight gradient: at most one chunk per this many KiB of x and dy; 0 off */
    int small;   /* 1: the few-output-channel kernels for 3 or 4 output channels (forward
                  * also 5; 1x1 forward to 3 or 4 with float16: kd_conv3d_pwo_*, with pw) */
    int rows;    /* forward-like kernels with one vector of 16 or 8 channels, stride 1: output
                  * rows per work-item, 1 or 2 (2: 8 positions x 2 rows) */
    int wt3;     /* weight gradient with one vector of 16 or 8 channels, KW 3, stride 1: 1 = the
                  * three taps along W in one work-item (4 input channels x 3 taps) */
    int pw;      /* 1x1x1 stride-1 forward-like passes: blocks of 8 positions per work-item of
                  * the pointwise kernel, 1..64; 0 = the kernel of the other convs */
} kd_conv_tune;

enum { KD_TUNE_LOCAL_DRIVER = 0, KD_TUNE_LOCAL_SET = 1, KD_TUNE_LOCAL_AUTO = -1 };

/* The built-in default (no entry applies): local sizes (1, 1, 1) on CPU devices, NULL
 * elsewhere; vectors up to 16; channel blocks outermost above 256 KiB of weights; blocks of
 * 4 positions x 1 vector, 4 input channels x 1 vector; 64 weight-gradient chunks; the
 * few-output-channel kernels on. */
extern const kd_conv_tune kd_conv_tune_default;

/* "local=set lx=32 ly=4 vmax=8 coouter=never chunks=256 wlx=32 wb=8 cb=2 ...". */
void kd_conv_tune_format(const kd_conv_tune *p, char *out, size_t n);
/* Parse the format above; keys may come in any order, missing ones keep the built-in
 * default's value. 0 on success, else -1 and why[] names the problem. */
int kd_conv_tune_parse(const char *s, kd_conv_tune *out, char *why, size_t nwhy);
/* Whether the parameters are usable (ranges, lx*ly <= 1024). */
int kd_conv_tune_valid(const kd_conv_tune *p, char *why, size_t nwhy);
int kd_conv_tune_equal(const kd_conv_tune *a, const kd_conv_tune *b);

/* ---- the table ----------------------------------------------------------------------- */

enum { KD_TUNE_LEVEL_NAME = 0, KD_TUNE_LEVEL_VENDOR = 1, KD_TUNE_LEVEL_DEFAULT = 2 };

typedef struct kd_tune_entry {
    int level;       /* KD_TUNE_LEVEL_NAME or KD_TUNE_LEVEL_VENDOR */
    char match[256]; /* NAME: the device name, exactly. VENDOR: a case-insensitive substring
                      * of the device's or the platform's vendor string */
    int rank;        /* VENDOR: the device type as a kd_dev_ident rank (0 GPU, 1 accelerator,
                      * 2 CPU, 3 other), -1 any type */
    char scope[192]; /* a shape key ("conv|fwd|vox2^18 ci16 ..."), a pass name (fwd,
                      * bwd_data, bwd_weight) or "*" */
    kd_conv_tune p;
    double ms_default, ms_best; /* as measured by `kdseg tune`; -1 when unknown */
    int user;                   /* 1: from the user file, 0: built in */
    const char *note;           /* built-in entries: what they are */
} kd_tune_entry;

/* The entry of e[0..n) that applies to a pass with shape key `key` on device `id`, in the
 * order given at the top; NULL when none (the built-in default applies). *out receives
 * the parameters either way. key may be just "conv|fwd|" to ask what an untuned shape of
 * the pass gets. */
const kd_tune_entry *kd_conv_tune_resolve(const kd_tune_entry *e, int n, const kd_dev_ident *id,
                                          const char *key, kd_conv_tune *out);
/* The built-in entries (vendor + type). */
const kd_tune_entry *kd_conv_tune_builtin(int *n);
/* "user file, device name", "built-in, vendor 'pocl' + CPU (...)", "built-in default". */
void kd_conv_tune_source(const kd_tune_entry *e, char *out, size_t n);

/* The table file: text, tab-separated, written through a temporary file and a rename:
 *   # kdseg conv tuning table 1                    (first line, required)
 *   # ...                                          (comments)
 *   name<TAB>DEVICE NAME<TAB>*<TAB>SCOPE<TAB>PARAMS<TAB>DEFAULT_MS<TAB>BEST_MS
 *   vendor<TAB>VENDOR TEXT<TAB>cpu|gpu|accelerator|other|*<TAB>SCOPE<TAB>PARAMS<TAB>-<TAB>-
 *   end<TAB>N                                      (last line: N entries)
 * A file that breaks any of these rules (unreadable line, missing end line or wrong
 * count, bad parameter) is ignored as a whole, with a warning. */

/* kd_cache_dir()/conv-tuning.txt, or $KDSEG_TUNE_FILE when set (tests, shipped tables). */
void kd_conv_tune_path(char *out, size_t n);
/* Read a table file: 0 and *e (malloc'd, user = 1), *n; 1 when the file does not exist
 * (*n = 0); -1 when it is corrupt (why[] says where and what; *n = 0). */
int kd_conv_tune_file_read(const char *path, kd_tune_entry **e, int *n, char *why, size_t nwhy);
/* Write e[0..n) to path (temporary file + rename; creates the folder). */
kd_status kd_conv_tune_file_write(const char *path, const kd_tune_entry *e, int n);
/* Forget the loaded user table so the next launch rereads the file (tests, kdseg tune). */
void kd_conv_tune_reload(void);
/* State of the user table as loaded: 1 absent, 0 loaded (*n entries), -1 ignored (why). */
int kd_conv_tune_user_state(int *n, char *why, size_t nwhy);
/* Print, for each pass, which entry an untuned shape gets on device id, and the state of
 * the user file (kdseg devices). */
void kd_conv_tune_describe(FILE *f, const kd_dev_ident *id);

/* ---- launches ------------------------------------------------------------------------- */

/* Force parameters for every direct conv launch of this process (kdseg tune, tests);
 * NULL returns to the table. */
void kd_conv_tune_force(const kd_conv_tune *p);
/* The parameters the last direct conv pass of this process launched with, and where they
 * came from (tests check that a table entry reaches the launch). */
void kd_conv_tune_last(kd_conv_tune *out, char *src, size_t nsrc);
/* Trace of the conv kernel launches (kernel, range, local sizes) between begin and end, so
 * that kdseg tune can tell candidates that launch exactly what another launches. */
void kd_conv_tune_trace_begin(void);
void kd_conv_tune_trace_end(char *out, size_t n);

/* ---- conv layer cases (the shapes of kdseg bench ops and kdseg tune) ------------------ */

/* A conv layer at a patch of edge P: spatial size P >> level. */
typedef struct kd_conv_layer {
    const char *name;
    int level, ci, co, k, s, p, bias;
} kd_conv_layer;

/* The student ResUNet's conv layers (widths 16..128), then the teachers' other plain conv
 * shapes, whose names start "T ". Borrowed. */
const kd_conv_layer *kd_conv_layers(int *n);
int kd_conv_layer_is_teacher(const kd_conv_layer *l);

/* The tensors of one layer at input edge `edge`, batch 1: x, w, b, y, and dy, dx, dw.
 * seed 0: constant small values (x 0.5, w 0.01, b 0.1, dy 0.25: benchmarks); else
 * pseudo-random values in [-1, 1) from the seed (checks that compare outputs). */
typedef struct kd_conv_case kd_conv_case;
kd_status kd_conv_case_create(kd_device *dev, const kd_conv_layer *l, int edge, unsigned seed,
                              kd_conv_case **out);
void kd_conv_case_free(kd_conv_case *c);
/* One pass through the public conv ops (the chooser or a forced implementation decides);
 * the forward with the bias, the weight gradient without (dw is accumulated). */
kd_status kd_conv_case_run(kd_conv_case *c, kd_conv_pass pass);
/* The chooser's and the tuning table's shape key of a pass ("conv|fwd|vox2^18 ci16 ..."). */
void kd_conv_case_key(const kd_conv_case *c, kd_conv_pass pass, char *out, size_t n);
/* Floating-point operations of one pass (2 per multiply-add). */
double kd_conv_case_flops(const kd_conv_case *c);
/* Output edge of the layer. */
int kd_conv_case_out_edge(const kd_conv_case *c);
/* The tensor a pass writes (y, dx or dw): its element count, zeroing it (dw accumulates),
 * and downloading it in (N, C, D, H, W) order. */
size_t kd_conv_case_out_numel(const kd_conv_case *c, kd_conv_pass pass);
kd_status kd_conv_case_out_zero(kd_conv_case *c, kd_conv_pass pass);
kd_status kd_conv_case_out_read(kd_conv_case *c, kd_conv_pass pass, float *host);

/* ---- the device's measured peak --------------------------------------------------------- */

/* FMA throughput and memory bandwidth of a device, measured by kernels (clpeak-like): the
 * best of several runs of each, a few seconds in all. bytes: the size of the bandwidth
 * buffers (0: 256 MiB, far beyond any cache; at most half the largest allocation). */
typedef struct kd_peak {
    double gflops;     /* float32 FMA throughput, GFLOP/s (2 per FMA), the best width */
    double gflops_v1;  /* scalar float per work-item (GPUs' natural width) */
    double gflops_v16; /* float16 per work-item (CPUs' SIMD width) */
    double read_gbs;   /* bandwidth of a streaming read, GB/s (1e9 bytes) */
    double copy_gbs;   /* bandwidth of a copy (bytes read + bytes written), GB/s */
    double seconds;    /* time the measurement took */
    double cpu_gflops; /* FMA throughput per CPU-second of this process (CPU devices: one
                        * core's peak whatever share of the machine we got); 0 elsewhere */
} kd_peak;
kd_status kd_device_peak(kd_device *dev, size_t bytes, kd_peak *out);

#ifdef __cplusplus
}
#endif
#endif
