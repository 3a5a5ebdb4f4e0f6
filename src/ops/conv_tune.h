/* The per-device tuning table of the direct conv kernels' launch parameters (conv_tune.c).
 *
 * A launch of a direct conv pass looks its parameters up by device and shape class:
 * entries for the device's exact name first, then entries for its vendor and type, then
 * the built-in default, which is exactly the behaviour before the table existed. Within
 * a level the most specific scope wins (the pass's shape key, then the pass, then "*"),
 * and among equal scopes an entry of the user file (kd_cache_dir()/conv-tuning.txt,
 * written by `kdseg tune`) beats a built-in one. kd_conv_tune_force and the environment
 * (KDSEG_CONV_LX, KDSEG_CONV_LY, KDSEG_CONV_VMAX, experiments) come on top. */
#ifndef KD_CONV_TUNE_H
#define KD_CONV_TUNE_H

#include <stdio.h>

#include "conv_internal.h"

/* Launch parameters of the direct conv kernels (cl/conv3d.cl). None of them changes the
 * order of any sum except chunks (the weight-gradient partials), so forward and input
 * gradient are bit-identical under every setting. */
typedef struct kd_conv_tune {
    int local;   /* local sizes: KD_TUNE_LOCAL_SET (lx, ly, 1), _DRIVER (NULL) or _AUTO */
    int lx, ly;  /* local size along dim 0 (W blocks x channel vectors) and dim 1 (rows) */
    int vmax;    /* widest channel vector the kernels may use: 16, 8 or 1 */
    int coouter; /* forward: channel-block-outer order when the weights exceed this many
                  * KiB (and there is more than one channel block); -1 never */
    int chunks;  /* weight gradient: at most this many chunks of output planes (partials) */
    int wlx;     /* weight-gradient partials: local size along dim 0 when local sizes are set */
} kd_conv_tune;

enum { KD_TUNE_LOCAL_DRIVER = 0, KD_TUNE_LOCAL_SET = 1, KD_TUNE_LOCAL_AUTO = -1 };

/* The built-in default: local sizes (1, 1, 1) on CPU devices, NULL elsewhere; vectors up to
 * 16; channel blocks outermost above 256 KiB of weights; 64 weight-gradient chunks. */
extern const kd_conv_tune kd_conv_tune_default;

enum { KD_TUNE_LEVEL_NAME = 0, KD_TUNE_LEVEL_VENDOR = 1, KD_TUNE_LEVEL_DEFAULT = 2 };

typedef struct kd_tune_entry {
    int level;       /* KD_TUNE_LEVEL_NAME or KD_TUNE_LEVEL_VENDOR */
    char match[256]; /* NAME: the device name, exactly. VENDOR: a case-insensitive substring
                      * of the device's or the platform's vendor string */
    int rank;        /* VENDOR: the device type as a kd_dev_desc rank (0 GPU, 1 accelerator,
                      * 2 CPU, 3 other), -1 any type */
    char scope[192]; /* a kd_conv_key ("conv|fwd|vox2^18 ci16 ..."), a pass name (fwd,
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

/* "local=set lx=32 ly=4 vmax=8 coouter=never chunks=256 wlx=32". */
void kd_conv_tune_format(const kd_conv_tune *p, char *out, size_t n);
/* Parse the format above; keys may come in any order, missing ones keep the built-in
 * default's value. 0 on success, else -1 and why[] names the problem. */
int kd_conv_tune_parse(const char *s, kd_conv_tune *out, char *why, size_t nwhy);
/* Whether the parameters are usable (ranges, lx*ly <= 1024). */
int kd_conv_tune_valid(const kd_conv_tune *p, char *why, size_t nwhy);
int kd_conv_tune_equal(const kd_conv_tune *a, const kd_conv_tune *b);
/* "user file, device name", "built-in, vendor 'pocl' + CPU (...)", "built-in default". */
void kd_conv_tune_source(const kd_tune_entry *e, char *out, size_t n);

/* ---- the table file ------------------------------------------------------------------------
 * Text, tab-separated, written through a temporary file and a rename:
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

/* ---- launch side ---------------------------------------------------------------------- */

/* Parameters for a direct conv pass: kd_conv_tune_force's if set, else the table's, with
 * KDSEG_CONV_LX / _LY / _VMAX on top. src (may be NULL) receives kd_conv_tune_source's
 * description. */
void kd_conv_tune_get(kd_device *dev, const kd_conv_geom *g, kd_conv_pass pass,
                      kd_conv_tune *out, char *src, size_t nsrc);
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
void kd_conv_tune_trace_add(const char *kernel, int dim, const size_t *gws, const size_t *lws);
/* Print, for each pass, which entry an untuned shape gets on device id, and the state of
 * the user file (kdseg devices). */
void kd_conv_tune_describe(FILE *f, const kd_dev_ident *id);

#endif
