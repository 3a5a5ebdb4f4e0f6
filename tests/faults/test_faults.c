/* Fault tests through the `kdseg` command (its path in $KDSEG_EXE): hostile inputs with
 * their expected message and exit code, SIGKILL at random moments during train and
 * annotate, SIGINT during training, full and read-only output file systems, device
 * faults injected into kernel launches and transfers (KDSEG_FAULT), stale temporary files
 * of killed writes, bit-for-bit determinism of two training runs, and issue 22's second
 * round: overlong paths and messages, one writer per output folder, write errors of every
 * output kind (KDSEG_FAULT=full:N and a full tmpfs), datasets with link loops, phantom
 * cohorts killed while written, and the smaller items. Every model is tiny (resunet 8,16,
 * patch 16) and every cohort 32^3, so each case stays well under a minute. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kdtest.h"
#include "kdseg/fs.h"
#include "kdseg/data.h"
#include "kdseg/tensorfile.h"
#include "kdseg/train.h"

/* the shared helpers of tests/kdtest.c */
#define tmp kd_test_path
#define now_s kd_test_now
#define copy_file kd_test_copy_file
#define save_model(spec, seed, path) kd_test_save_model(NULL, spec, seed, path)

#define TINY "resunet:widths=8,16:enc=1,1:dec=1"
/* the phantom recipe: these tests were written against its batch of 1 and its sampling */
#define TRAIN_OPTS "--recipe phantom --arch " TINY " --patch 16 --margin 4 --quiet"

/* ------------------------------------------------------------ helpers -- */

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* Starts kdseg in the background (the pid is kdseg's own: sh execs it); its output is
 * appended to log. The command line is allocated: paths of 4000 characters fit. */
static pid_t spawn(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static pid_t spawn(const char *log, const char *fmt, ...) {
    char *args = NULL, *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&args, fmt, ap);
    va_end(ap);
    if (n < 0 || asprintf(&cmd, "exec '%s' %s >>'%s' 2>&1", getenv("KDSEG_EXE"), args, log) < 0) {
        free(args);
        return -1;
    }
    free(args);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    free(cmd);
    return pid;
}

/* Exit status of pid; 128 + signal when killed by one. */
static int wait_for(pid_t pid) {
    int st = 0;
    if (pid <= 0) return -1;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs kdseg, output to log (truncated first); returns its exit status. */
static int kdseg_log(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kdseg_log(const char *log, const char *fmt, ...) {
    char *args = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&args, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    FILE *f = fopen(log, "w");
    if (f) fclose(f);
    int code = wait_for(spawn(log, "%s", args));
    free(args);
    return code;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = b ? fread(b, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    fclose(f);
    if (!b) return NULL;
    b[got] = 0;
    if (len) *len = got;
    return b;
}

static int file_has(const char *path, const char *frag) {
    char *b = slurp(path, NULL);
    int r = b && strstr(b, frag) != NULL;
    free(b);
    return r;
}

static void show(const char *path) {
    char *b = slurp(path, NULL);
    fprintf(stderr, "---- %s ----\n%s\n----\n", path, b ? b : "(none)");
    free(b);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

static int same_bytes(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int r = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return r;
}

/* Names of the temporary files (kdseg's exact patterns, kdseg/fs.h) directly in dir,
 * space-separated into out (empty: none); returns how many. */
static int temp_files(const char *dir, char *out, size_t n) {
    DIR *dp = opendir(dir);
    int k = 0;
    pid_t pid;
    if (out && n) out[0] = 0;
    for (struct dirent *e; dp && (e = readdir(dp));)
        if (kd_tmp_name_parse(e->d_name, &pid)) {
            k++;
            if (out && strlen(out) + strlen(e->d_name) + 2 < n) strcat(strcat(out, " "), e->d_name);
        }
    if (dp) closedir(dp);
    return k;
}

/* Sets the modification time of dir/name `secs` seconds into the past. */
static int backdate(const char *dir, const char *name, double secs) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= (time_t)secs;
    ts[1] = ts[0];
    return utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
}

/* Ages every temporary file in dir past KD_TMP_STALE_SECONDS: what a rerun finds when
 * the killed run lies more than that in the past. Returns how many. */
static int age_temps(const char *dir) {
    DIR *dp = opendir(dir);
    int k = 0;
    pid_t pid;
    for (struct dirent *e; dp && (e = readdir(dp));)
        if (kd_tmp_name_parse(e->d_name, &pid) && backdate(dir, e->d_name, KD_TMP_STALE_SECONDS + 60) == 0) k++;
    if (dp) closedir(dp);
    return k;
}

/* The id of a process that has ended (a reaped child). */
static pid_t dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    return pid;
}

/* mkdir -p (any length) */
static int mkdirs(const char *dir) {
    char *b = strdup(dir);
    if (!b) return -1;
    for (char *p = b + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(b, 0755);
            *p = '/';
        }
    int r = mkdir(b, 0755) == 0 || errno == EEXIST ? 0 : -1;
    free(b);
    return r;
}

/* Creates dir/name with some bytes. */
static int touch(const char *dir, const char *name) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    return f && fputs("partial\n", f) >= 0 && fclose(f) == 0 ? 0 : -1;
}

static int phantom(const char *dir, int cases, int unlabeled, int seed) {
    kd_phantom_opts o;
    memset(&o, 0, sizeof o);
    o.cases = cases;
    o.size[0] = o.size[1] = o.size[2] = 32;
    o.seed = (uint64_t)seed;
    o.unlabeled = unlabeled;
    o.layout = KD_LAYOUT_BRATS2018;
    KD_CHECK_OK(kd_phantom_write_cohort(dir, &o));
    return 0;
}

/* Loads a checkpoint fully (CRC, tensors); returns its step, or -1 with a message. */
static long ckpt_step(const char *path) {
    kd_device *dev = kd_test_device();
    if (!dev) return -1;
    kd_model *m = NULL;
    kd_optim *o = NULL;
    kd_ckpt_meta meta;
    if (kd_checkpoint_load(path, dev, &m, NULL, &o, &meta)) {
        fprintf(stderr, "%s does not load: %s\n", path, kd_last_error());
        return -1;
    }
    kd_optim_free(o);
    kd_model_free(m);
    return meta.step;
}

/* Reads train.csv: the header and every row must be complete lines; fills steps[] with
 * each row's step and losses[] with its "kind,loss" text. Returns the row count or -1. */
static int csv_rows(const char *path, long *steps, char (*losses)[64], int max) {
    size_t n;
    char *b = slurp(path, &n);
    if (!b) return -1;
    if (strncmp(b, "step,kind,loss,", 15) || (n && b[n - 1] != '\n')) {
        fprintf(stderr, "%s: bad header or a partial last line\n", path);
        free(b);
        return -1;
    }
    int rows = 0;
    char *save = NULL;
    for (char *l = strtok_r(strchr(b, '\n') + 1, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *end, *c2 = strchr(l, ','), *c3 = c2 ? strchr(c2 + 1, ',') : NULL;
        long s = strtol(l, &end, 10);
        if (end == l || *end != ',' || !c3 || rows == max) {
            fprintf(stderr, "%s: malformed row '%s'\n", path, l);
            free(b);
            return -1;
        }
        steps[rows] = s;
        if (losses) {
            char *c4 = strchr(c3 + 1, ',');
            snprintf(losses[rows], 64, "%.*s", (int)((c4 ? c4 : c3) - (c2 + 1)), c2 + 1);
        }
        rows++;
    }
    free(b);
    return rows;
}

/* Rows must be exactly steps 0..n-1 in order. */
static int csv_steps_are(const char *path, int n) {
    long steps[4096];
    int rows = csv_rows(path, steps, NULL, 4096);
    KD_CHECK(rows == n, "%s: %d rows, expected %d", path, rows, n);
    for (int i = 0; i < rows; i++)
        KD_CHECK(steps[i] == i, "%s: row %d is step %ld (duplicated or missing steps)", path, i, steps[i]);
    return 0;
}

/* ------------------------------------------------------ 1. bad inputs -- */

/* Rewrites the case file dir/KDPhantom_000/KDPhantom_000_<mod>.nii.gz through fn. */
static kd_status edit_volume(const char *dir, const char *mod, int (*fn)(kd_volume *v, const char *path)) {
    char p[2048];
    snprintf(p, sizeof p, "%s/KDPhantom_000/KDPhantom_000_%s.nii.gz", dir, mod);
    kd_volume *v;
    kd_status s = kd_nifti_read(p, &v);
    if (s) return s;
    int r = fn(v, p);
    kd_volume_free(v);
    return r ? kd_fail(KD_ERR_INTERNAL, "editing %s", p) : KD_OK;
}

static int put_f32(kd_volume *v, const char *path) {
    return kd_nifti_write(path, v, v->nt, KD_DT_FLOAT32, v->data, NULL) != KD_OK;
}
static int set_nan(kd_volume *v, const char *path) {
    v->data[1000] = NAN;
    return put_f32(v, path);
}
static int set_inf(kd_volume *v, const char *path) {
    v->data[17] = INFINITY;
    return put_f32(v, path);
}
static int set_label3(kd_volume *v, const char *path) {
    v->data[(16 * 32 + 16) * 32 + 16] = 3; /* not a BraTS 2018 label */
    return put_f32(v, path);
}
static int set_label_half(kd_volume *v, const char *path) {
    v->data[(16 * 32 + 16) * 32 + 16] = 1.5f;
    return put_f32(v, path);
}
static int set_zero(kd_volume *v, const char *path) {
    memset(v->data, 0, (size_t)v->nx * v->ny * v->nz * v->nt * sizeof(float));
    return put_f32(v, path);
}
/* 30 slices instead of 32, same affine */
static int shrink(kd_volume *v, const char *path) {
    kd_volume *g;
    double sp[3] = {v->info.pixdim[0], v->info.pixdim[1], v->info.pixdim[2]};
    if (kd_volume_create_geometry(v->nx, v->ny, v->nz - 2, sp, v->info.affine, &g)) return 1;
    int r = kd_nifti_write(path, g, 1, KD_DT_FLOAT32, v->data, NULL) != KD_OK;
    kd_volume_free(g);
    return r;
}
/* same grid, shifted 5 mm along x */
static int shift(kd_volume *v, const char *path) {
    kd_volume *g;
    double sp[3] = {v->info.pixdim[0], v->info.pixdim[1], v->info.pixdim[2]}, a[4][4];
    memcpy(a, v->info.affine, sizeof a);
    a[0][3] += 5;
    if (kd_volume_create_geometry(v->nx, v->ny, v->nz, sp, a, &g)) return 1;
    int r = kd_nifti_write(path, g, 1, KD_DT_FLOAT32, v->data, NULL) != KD_OK;
    kd_volume_free(g);
    return r;
}
/* two volumes in a modality file (BraTS wants 3-D) */
static int two_volumes(kd_volume *v, const char *path) {
    size_t n = (size_t)v->nx * v->ny * v->nz;
    float *d = malloc(2 * n * sizeof(float));
    if (!d) return 1;
    memcpy(d, v->data, n * sizeof(float));
    memcpy(d + n, v->data, n * sizeof(float));
    int r = kd_nifti_write(path, v, 2, KD_DT_FLOAT32, d, NULL) != KD_OK;
    free(d);
    return r;
}
/* Uncompressed NIfTI-1 .nii in place of the .nii.gz, with header dim[] edited. */
static int write_dims(kd_volume *v, const char *path, int ndim, int dim5) {
    char p[2048];
    snprintf(p, sizeof p, "%.*s", (int)(strlen(path) - 3), path); /* strip .gz */
    kd_nifti_write_opts o = {1, 0, 0};
    if (kd_nifti_write(p, v, 1, KD_DT_FLOAT32, v->data, &o)) return 1;
    if (remove(path)) return 1;
    FILE *f = fopen(p, "r+b");
    if (!f) return 1;
    int16_t d0 = (int16_t)ndim, d5 = (int16_t)dim5;
    int ok = fseek(f, 40, SEEK_SET) == 0 && fwrite(&d0, 2, 1, f) == 1; /* dim[0] */
    ok = ok && fseek(f, 50, SEEK_SET) == 0 && fwrite(&d5, 2, 1, f) == 1; /* dim[5] */
    return !(fclose(f) == 0 && ok);
}
static int make_2d(kd_volume *v, const char *path) { return write_dims(v, path, 2, 1); }
static int make_5d(kd_volume *v, const char *path) { return write_dims(v, path, 5, 2); }

static int truncate_half(const char *p) {
    long n = file_size(p);
    return n <= 0 || truncate(p, n / 2);
}

/* Byte edits of checkpoint files. */
static int edit_bytes(const char *p, long off, uint32_t val) {
    FILE *f = fopen(p, "r+b");
    if (!f) return 1;
    if (off < 0) {
        fseek(f, 0, SEEK_END);
        off += ftell(f);
    }
    int ok = fseek(f, off, SEEK_SET) == 0 && fwrite(&val, 4, 1, f) == 1;
    return !(fclose(f) == 0 && ok);
}

typedef struct bad_row {
    const char *name;
    /* what the row does to a fresh 3-case labeled phantom cohort D (and model M) */
    int what;
    /* the command: {D} cohort, {C} its first case folder, {O} a fresh output folder,
     * {M} a tiny model checkpoint, {F} a regular file */
    const char *cmd;
    int code;          /* expected exit status */
    const char *frag;  /* expected in the output (the problem) */
    const char *frag2; /* expected too (the file or option it names), or NULL */
} bad_row;

enum {
    W_NONE, W_RM_T2, W_DIMS, W_AFFINE, W_TRUNC_GZ, W_ZERO_BYTES, W_NAN, W_INF, W_LABEL3,
    W_LABEL_HALF, W_EMPTY_BRAIN, W_2D, W_5D, W_4D, W_CK_VERSION, W_CK_CRC, W_CK_TRUNC,
    W_CK_NOT, W_LAST_CRC, W_TWO_FILES, W_DUP_NAME
};

#define TRAIN1 "train --dataset {D} --out {O} --steps 1 --val-every 0 " TRAIN_OPTS
/* Catches, row by row: a crash (status >= 128), a silent success, the wrong exit status
 * (2: the command line is wrong, 1: the data or files are), or a message that does not
 * say what is wrong and where. */
static const bad_row bad_rows[] = {
    {"missing_modality", W_RM_T2, TRAIN1, 1, "missing t2 image", "KDPhantom_000_t2"},
    {"dims_mismatch", W_DIMS, TRAIN1, 1, "(32 x 32 x 30) disagree", "KDPhantom_000_t2.nii.gz"},
    {"affine_mismatch", W_AFFINE, TRAIN1, 1, "affine of", "largest difference 5 mm"},
    {"truncated_gzip", W_TRUNC_GZ, TRAIN1, 1, "truncated", "KDPhantom_000_t1.nii.gz"},
    {"zero_byte_file", W_ZERO_BYTES, TRAIN1, 1, "not a NIfTI file (only 0 bytes)", "KDPhantom_000_flair.nii.gz"},
    {"nan_voxels", W_NAN, TRAIN1, 1, "1 NaN/Inf voxels", "KDPhantom_000_t1ce.nii.gz"},
    {"inf_voxels", W_INF, "segment --checkpoint {M} --dataset {D} --out {O}", 1, "1 NaN/Inf voxels",
     "KDPhantom_000_flair.nii.gz"},
    {"label_value_3", W_LABEL3, TRAIN1, 1, "label 3 at i=16 j=16 k=16 is not one of",
     "KDPhantom_000_seg.nii.gz"},
    {"label_fraction", W_LABEL_HALF, TRAIN1, 1, "label 1.5 at", "KDPhantom_000_seg.nii.gz"},
    /* all-zero images: refused when the case is loaded (a zero-size crop box would
     * give a NaN z-score and a NaN model input) */
    {"empty_brain_train", W_EMPTY_BRAIN, TRAIN1, 1, "every voxel of every modality is zero",
     "KDPhantom_000"},
    {"empty_brain_segment", W_EMPTY_BRAIN, "segment --checkpoint {M} --case {C} --out {O}", 1,
     "every voxel of every modality is zero", "KDPhantom_000"},
    {"volume_2d", W_2D, TRAIN1, 1, "a 2-D image; kdseg reads 3-D and 4-D", "KDPhantom_000_t1.nii"},
    {"volume_5d", W_5D, TRAIN1, 1, "5-D volumes are not supported", "KDPhantom_000_t1.nii"},
    {"volume_4d_modality", W_4D, TRAIN1, 1, "expected a 3-D volume, found 2", "KDPhantom_000_t2"},
    {"ckpt_other_version", W_CK_VERSION, "segment --checkpoint {M} --dataset {D} --out {O}", 1,
     "format version 7, this kdseg reads version", "m.kds"},
    {"ckpt_bad_crc", W_CK_CRC, "segment --checkpoint {M} --dataset {D} --out {O}", 1, "CRC mismatch", "m.kds"},
    {"ckpt_truncated", W_CK_TRUNC, "segment --checkpoint {M} --dataset {D} --out {O}", 1,
     "file corrupt or truncated", "m.kds"},
    {"ckpt_not_a_checkpoint", W_CK_NOT, "segment --checkpoint {M} --dataset {D} --out {O}", 1,
     "not a kdseg checkpoint", "m.kds"},
    {"resume_corrupt_last", W_LAST_CRC, "train --dataset {D} --out {O} --steps 4 --resume " TRAIN_OPTS, 1,
     "CRC mismatch", "last.kds"},
    {"spec_unknown_arch", W_NONE, "train --dataset {D} --out {O} --steps 1 --arch vnet:widths=8,16", 2,
     "unknown architecture 'vnet'", "known: resunet"},
    {"spec_bad_widths", W_NONE, "train --dataset {D} --out {O} --steps 1 --arch resunet:widths=0,8", 2,
     "bad value '0' for widths", NULL},
    {"spec_one_level", W_NONE, "train --dataset {D} --out {O} --steps 1 --arch resunet:widths=8", 2,
     "widths needs at least 2 levels", NULL},
    {"spec_unknown_key", W_NONE, "train --dataset {D} --out {O} --steps 1 --arch unet3d:widths=8,16:enc=1,1", 2,
     "unknown key 'enc' for unet3d", NULL},
    {"spec_enc_count", W_NONE, "train --dataset {D} --out {O} --steps 1 --arch resunet:widths=8,16:enc=1", 2,
     "enc needs 2 entries", NULL},
    {"patch_not_multiple", W_NONE, "train --dataset {D} --out {O} --steps 1 --arch " TINY " --patch 17", 2,
     "must be multiples of 2", "--patch 17x17x17"},
    {"opt_patch_too_small", W_NONE, TRAIN1 " --patch 4", 2, "--patch expects an integer in [8, 512]", "'4'"},
    {"opt_lr_zero", W_NONE, TRAIN1 " --lr 0", 2, "--lr expects a number in", "'0'"},
    {"opt_batch_zero", W_NONE, TRAIN1 " --batch 0", 2, "--batch expects an integer in [1, 64]", NULL},
    {"opt_threads_many", W_NONE, TRAIN1 " --threads 99", 2, "--threads expects an integer in [0, 16]", NULL},
    {"opt_steps_junk", W_NONE, "train --dataset {D} --out {O} --steps 10x", 2, "--steps expects an integer", "'10x'"},
    {"opt_val_cases_all", W_NONE, TRAIN1 " --val-cases 3", 2, "3 labeled cases; need more than --val-cases 3", NULL},
    {"opt_overlap", W_NONE, "segment --checkpoint {M} --dataset {D} --out {O} --overlap 0.95", 2,
     "--overlap expects a number in [0, 0.9]", NULL},
    {"opt_tta", W_NONE, "segment --checkpoint {M} --dataset {D} --out {O} --tta 3", 2,
     "--tta expects none, 4 or 8", "'3'"},
    {"opt_tile", W_NONE, "segment --checkpoint {M} --dataset {D} --out {O} --tile 16,16", 2,
     "--tile expects D,H,W or one number", NULL},
    {"modalities_vs_model", W_NONE, "segment --checkpoint {M} --dataset {D} --out {O} --modalities t1,t2", 1,
     "takes 4 channels but the data has 2", "m.kds"},
    {"out_under_a_file", W_NONE, "train --dataset {D} --out {F}/sub --steps 1 " TRAIN_OPTS, 1,
     "cannot create the output folder", "Not a directory"},
    {"out_in_proc", W_NONE, "segment --checkpoint {M} --dataset {D} --out /proc/kdseg-faults/x", 1,
     "/proc/kdseg-faults/x: cannot create the output folder", NULL},
    /* issue 22, item 6: --resume before the first checkpoint says there is none */
    {"resume_no_checkpoint", W_NONE, "train --dataset {D} --out {O} --steps 1 --resume " TRAIN_OPTS, 1,
     "nothing to resume: no checkpoint yet", "last.kds does not exist"},
    /* item 6: CASE_t1.nii.gz and CASE_t1.nii both: which is meant cannot be guessed */
    {"two_files_one_modality", W_TWO_FILES, TRAIN1, 1, "two files for one image", "KDPhantom_000_t1.nii; remove"},
    /* item 5: two different case folders of one name (HGG/X, LGG/X): outputs would collide */
    {"two_cases_one_name", W_DUP_NAME, "segment --checkpoint {M} --dataset {D} --out {O}", 1,
     "two cases named KDPhantom_000", "LGG/KDPhantom_000/KDPhantom_000_t1.nii.gz"},
};

static void expand(const char *fmt, char *out, size_t n) {
    size_t u = 0;
    for (const char *p = fmt; *p && u + 1 < n;) {
        const char *rep = NULL;
        if (p[0] == '{' && p[1] && p[2] == '}') {
            switch (p[1]) {
            case 'D': rep = tmp("d"); break;
            case 'C': rep = tmp("d/KDPhantom_000"); break;
            case 'O': rep = tmp("out"); break;
            case 'M': rep = tmp("m.kds"); break;
            case 'F': rep = tmp("afile"); break;
            }
        }
        if (rep) {
            u += (size_t)snprintf(out + u, n - u, "%s", rep);
            p += 3;
        } else
            out[u++] = *p++;
    }
    out[u < n ? u : n - 1] = 0;
}

static int run_bad_row(const bad_row *r) {
    const char *d = tmp("d");
    if (phantom(d, 3, 0, 11)) return 1;
    if (save_model(TINY, 1, tmp("m.kds"))) return 1;
    FILE *f = fopen(tmp("afile"), "w");
    KD_CHECK(f && fputs("x\n", f) >= 0 && fclose(f) == 0, "afile");
    char p[2048];
    kd_status s = KD_OK;
    switch (r->what) {
    case W_RM_T2:
        snprintf(p, sizeof p, "%s/KDPhantom_000/KDPhantom_000_t2.nii.gz", d);
        KD_CHECK(remove(p) == 0, "remove");
        break;
    case W_DIMS: s = edit_volume(d, "t2", shrink); break;
    case W_AFFINE: s = edit_volume(d, "t2", shift); break;
    case W_TRUNC_GZ:
        snprintf(p, sizeof p, "%s/KDPhantom_000/KDPhantom_000_t1.nii.gz", d);
        KD_CHECK(truncate_half(p) == 0, "truncate");
        break;
    case W_ZERO_BYTES:
        snprintf(p, sizeof p, "%s/KDPhantom_000/KDPhantom_000_flair.nii.gz", d);
        KD_CHECK(truncate(p, 0) == 0, "truncate");
        break;
    case W_NAN: s = edit_volume(d, "t1ce", set_nan); break;
    case W_INF: s = edit_volume(d, "flair", set_inf); break;
    case W_LABEL3: s = edit_volume(d, "seg", set_label3); break;
    case W_LABEL_HALF: s = edit_volume(d, "seg", set_label_half); break;
    case W_EMPTY_BRAIN:
        s = edit_volume(d, "t1", set_zero);
        if (!s) s = edit_volume(d, "t1ce", set_zero);
        if (!s) s = edit_volume(d, "t2", set_zero);
        if (!s) s = edit_volume(d, "flair", set_zero);
        break;
    case W_2D: s = edit_volume(d, "t1", make_2d); break;
    case W_5D: s = edit_volume(d, "t1", make_5d); break;
    case W_4D: s = edit_volume(d, "t2", two_volumes); break;
    case W_CK_VERSION: KD_CHECK(edit_bytes(tmp("m.kds"), 8, 7) == 0, "edit"); break;
    case W_CK_CRC: KD_CHECK(edit_bytes(tmp("m.kds"), file_size(tmp("m.kds")) / 2, 0x3f800000u) == 0, "edit"); break;
    case W_CK_TRUNC: KD_CHECK(truncate_half(tmp("m.kds")) == 0, "truncate"); break;
    case W_CK_NOT:
        snprintf(p, sizeof p, "%s/KDPhantom_000/KDPhantom_000_t1.nii.gz", d);
        KD_CHECK(copy_file(p, tmp("m.kds")) == 0, "copy");
        break;
    case W_TWO_FILES: { /* the same volume once more, uncompressed, beside the .nii.gz */
        snprintf(p, sizeof p, "%s/KDPhantom_000/KDPhantom_000_t1.nii.gz", d);
        kd_volume *v;
        KD_CHECK_OK(kd_nifti_read(p, &v));
        p[strlen(p) - 3] = 0;
        kd_nifti_write_opts o = {1, 0, 0};
        s = kd_nifti_write(p, v, 1, KD_DT_FLOAT32, v->data, &o);
        kd_volume_free(v);
        break;
    }
    case W_DUP_NAME: /* another cohort's case 0 under LGG/ */
        KD_CHECK(phantom(tmp("other"), 1, 0, 99) == 0, "other cohort");
        snprintf(p, sizeof p, "%s/LGG", d);
        KD_CHECK(mkdir(p, 0755) == 0 && rename(tmp("other/KDPhantom_000"), tmp("d/LGG/KDPhantom_000")) == 0,
                 "move");
        break;
    case W_LAST_CRC:
        KD_CHECK(kdseg_log(tmp("log0.txt"), "train --dataset %s --out %s --steps 2 " TRAIN_OPTS, d,
                           tmp("out")) == 0, "first run");
        KD_CHECK(edit_bytes(tmp("out/last.kds"), -4, 0) == 0, "edit CRC");
        break;
    }
    KD_CHECK_OK(s);
    char cmd[4096];
    expand(r->cmd, cmd, sizeof cmd);
    int code = kdseg_log(tmp("log.txt"), "%s", cmd);
    int ok = code == r->code && file_has(tmp("log.txt"), r->frag) &&
             (!r->frag2 || file_has(tmp("log.txt"), r->frag2));
    if (!ok) show(tmp("log.txt"));
    KD_CHECK(code < 128, "'kdseg %s' crashed (status %d)", cmd, code);
    KD_CHECK(code == r->code, "'kdseg %s' exited %d, expected %d", cmd, code, r->code);
    KD_CHECK(file_has(tmp("log.txt"), r->frag), "the message lacks '%s'", r->frag);
    KD_CHECK(!r->frag2 || file_has(tmp("log.txt"), r->frag2), "the message lacks '%s'", r->frag2);
    /* a refused training run leaves no checkpoint behind */
    if (!strncmp(r->cmd, "train", 5) && r->what != W_LAST_CRC)
        KD_CHECK(!exists(tmp("out/last.kds")), "a failed run wrote last.kds");
    return 0;
}

/* Decision: a patch larger than the (cropped, padded) volume is legitimate. The sampler
 * reads zeros outside the case (background after z-scoring), as it does for any patch at
 * a border, so training on a 48^3 patch of a 32^3 phantom works and the loss is finite.
 * Catches: a sampler that reads out of bounds or refuses the patch, a NaN loss from an
 * all-padding patch; and segment --tile larger than the volume works too. */
static int patch_larger_than_volume(void) {
    if (phantom(tmp("d"), 3, 0, 12)) return 1;
    int code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --steps 3 --val-every 3 --arch " TINY
                         " --patch 48 --quiet", tmp("d"), tmp("out"));
    if (code) show(tmp("log.txt"));
    KD_CHECK(code == 0, "train with a 48^3 patch on 32^3 cases exited %d", code);
    long steps[8];
    char loss[8][64];
    KD_CHECK(csv_rows(tmp("out/train.csv"), steps, loss, 8) == 3, "3 rows");
    for (int i = 0; i < 3; i++) {
        double l = atof(strchr(loss[i], ',') + 1);
        KD_CHECK(isfinite(l) && l > 0, "step %d: loss %s", i, loss[i]);
    }
    KD_CHECK(ckpt_step(tmp("out/last.kds")) == 3, "last.kds at step 3");
    code = kdseg_log(tmp("log2.txt"), "segment --checkpoint %s --dataset %s --out %s --tile 64",
                     tmp("out/last.kds"), tmp("d"), tmp("seg"));
    if (code) show(tmp("log2.txt"));
    KD_CHECK(code == 0, "segment --tile 64 on 32^3 cases exited %d", code);
    kd_volume *v;
    KD_CHECK_OK(kd_nifti_read(tmp("seg/KDPhantom_000.nii.gz"), &v));
    KD_CHECK(v->nx == 32 && v->ny == 32 && v->nz == 32, "grid");
    kd_volume_free(v);
    return 0;
}

/* ------------------------------------------------------ 2. kill tests -- */

#define KILL_STEPS 400
#define KILL_OPTS "--steps 400 --ckpt-every 3 --val-every 100 --threads 1 " TRAIN_OPTS

/* Number of complete data rows of a CSV (0 if absent). */
static int csv_lines(const char *p) {
    size_t n;
    char *b = slurp(p, &n);
    int k = 0;
    for (size_t i = 0; b && i < n; i++) k += b[i] == '\n';
    free(b);
    return k > 0 ? k - 1 : 0;
}

/* Waits until the CSV has more than `rows` rows or the process ended; 0 on timeout. */
static int wait_rows(const char *csv, int rows, pid_t pid, double timeout) {
    double t0 = now_s();
    while (now_s() - t0 < timeout) {
        if (csv_lines(csv) > rows) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
        sleep_s(0.01);
    }
    return 0;
}

/* SIGKILL of `kdseg train` at 6 seeded random moments (each after the run has logged a
 * new row, then 0-0.4 s later: during steps, CSV appends and checkpoint writes), then
 * resume. After every kill last.kds loads (CRC and all tensors: never a truncated file
 * under the final name) and train.csv has only complete rows. The finished CSV has every
 * step exactly once with the losses of an uninterrupted run, and the final last.kds is
 * bit for bit the uninterrupted run's.
 * Temporary files a kill leaves are aged past KD_TMP_STALE_SECONDS before the next run,
 * which must remove them: none is left at the end.
 * Catches: non-atomic checkpoint writes, steps logged twice after a resume (rows written
 * after the last checkpoint of a killed run), partial CSV rows, resume not exact, stale
 * temporary checkpoints piling up in OUT. */
static int kill_train(void) {
    const char *d = tmp("d");
    if (phantom(d, 3, 0, 13)) return 1;
    int code = kdseg_log(tmp("ref.txt"), "train --dataset %s --out %s " KILL_OPTS, d, tmp("ref"));
    if (code) show(tmp("ref.txt"));
    KD_CHECK(code == 0, "uninterrupted run");
    kd_rng rng = kd_rng_make(20240917, 0, 0, 0);
    const char *out = tmp("run"), *csv = tmp("run/train.csv"), *last = tmp("run/last.kds");
    int kills = 0, mid = 0;
    long prev = -1;
    for (int k = 0; k < 6; k++) {
        int resume = exists(last);
        int before = csv_lines(csv);
        pid_t pid = spawn(tmp("log.txt"), "train --dataset %s --out %s %s " KILL_OPTS, d, out,
                          resume ? "--resume" : "");
        int w = wait_rows(csv, resume ? before : 0, pid, 40);
        KD_CHECK(w != 0, "no progress within 40 s");
        if (w < 0) break; /* finished (or failed) by itself */
        sleep_s(0.4 * kd_rng_uniform(&rng));
        kill(pid, SIGKILL);
        code = wait_for(pid);
        if (code != 128 + SIGKILL) {
            show(tmp("log.txt"));
            KD_CHECK(code == 0, "run %d exited %d", k, code);
            break;
        }
        kills++;
        long st = exists(last) ? ckpt_step(last) : 0;
        KD_CHECK(st >= 0, "after kill %d last.kds does not load", k);
        KD_CHECK(st >= prev, "last.kds went back from step %ld to %ld", prev, st);
        mid += st > prev && st < KILL_STEPS;
        prev = st;
        long steps[KILL_STEPS + 8];
        int rows = csv_rows(csv, steps, NULL, KILL_STEPS + 8);
        KD_CHECK(rows >= 0, "after kill %d train.csv is malformed", k);
        /* rows logged after the checkpoint may exist now; they must go on resume */
        int aged = age_temps(out); /* as if the resume came much later: now stale */
        printf("kill %d: last.kds at step %ld, %d rows logged, %d temporary files\n", k, st, rows, aged);
    }
    code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --resume " KILL_OPTS, d, out);
    if (code) show(tmp("log.txt"));
    KD_CHECK(code == 0, "final resume exited %d", code);
    printf("%d kills, %d of them after progress\n", kills, mid);
    KD_CHECK(kills >= 3 && mid >= 2, "the kills did not land during training (%d, %d)", kills, mid);
    if (csv_steps_are(csv, KILL_STEPS)) return 1;
    static long sa[KILL_STEPS], sb[KILL_STEPS];
    static char la[KILL_STEPS][64], lb[KILL_STEPS][64];
    KD_CHECK(csv_rows(tmp("ref/train.csv"), sa, la, KILL_STEPS) == KILL_STEPS, "reference rows");
    KD_CHECK(csv_rows(csv, sb, lb, KILL_STEPS) == KILL_STEPS, "rows");
    for (int i = 0; i < KILL_STEPS; i++)
        KD_CHECK(!strcmp(la[i], lb[i]), "step %d: %s after kills, %s uninterrupted", i, lb[i], la[i]);
    KD_CHECK(same_bytes(last, tmp("ref/last.kds")), "final last.kds differs from the uninterrupted run's");
    char left[1024];
    KD_CHECK(temp_files(out, left, sizeof left) == 0, "stale temporary files left after the resume:%s", left);
    return 0;
}

#define ANN_CASES 6

/* Every final-named annotation loads fully and is on the case grid; returns how many. */
static int check_annotations(const char *dir) {
    int done = 0;
    for (int c = 0; c < ANN_CASES; c++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/KDPhantom_%03d.nii.gz", dir, c);
        if (!exists(p)) continue;
        kd_volume *v;
        if (kd_nifti_read(p, &v)) {
            fprintf(stderr, "%s: %s\n", p, kd_last_error());
            return -1;
        }
        int ok = v->nx == 32 && v->ny == 32 && v->nz == 32;
        kd_volume_free(v);
        if (!ok) return -1;
        done++;
    }
    return done;
}

/* How many cases have a file under their final name in dir (not read). */
static int cases_written(const char *dir) {
    int n = 0;
    for (int c = 0; c < ANN_CASES; c++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/KDPhantom_%03d.nii.gz", dir, c);
        n += exists(p);
    }
    return n;
}

/* agreement.csv: header once, complete rows; counts[c] rows of case c. */
static int agreement_rows(const char *p, int counts[ANN_CASES]) {
    size_t n;
    char *b = slurp(p, &n);
    memset(counts, 0, ANN_CASES * sizeof(int));
    if (!b) return 0;
    int rows = 0;
    if (strncmp(b, "case,dice_wt,", 13) || (n && b[n - 1] != '\n')) rows = -1;
    char *save = NULL;
    for (char *l = strtok_r(b, "\n", &save); l && rows >= 0; l = strtok_r(NULL, "\n", &save)) {
        int c, commas = 0;
        for (char *q = l; *q; q++) commas += *q == ',';
        if (!strncmp(l, "case,", 5)) continue;
        if (sscanf(l, "KDPhantom_%3d,", &c) != 1 || c < 0 || c >= ANN_CASES || commas != 4) {
            fprintf(stderr, "%s: malformed row '%s'\n", p, l);
            rows = -1;
            break;
        }
        counts[c]++;
        rows++;
    }
    free(b);
    return rows;
}

/* The row of case c in an agreement CSV ("" if none). */
static void agreement_row(const char *p, int c, char *row, size_t n) {
    char *b = slurp(p, NULL), key[32];
    snprintf(key, sizeof key, "KDPhantom_%03d,", c);
    char *r = b ? strstr(b, key) : NULL;
    row[0] = 0;
    if (r) snprintf(row, n, "%.*s", (int)strcspn(r, "\n"), r);
    free(b);
}

/* SIGKILL of `kdseg annotate` (two teachers, 6 cases, 4 flips) at seeded random moments
 * during annotation (each run killed within about one case's time, as an uninterrupted run
 * measured it, after it has written a case of its own, so the kills land during annotation
 * on a fast or a slow or a loaded machine), rerun until a run finishes. After every kill each file under a
 * final name loads fully (gzip CRC, dims) and agreement.csv has only complete rows, each
 * case at most once. At the end every case is annotated exactly once: its output is bit
 * for bit the uninterrupted run's and agreement.csv has exactly one row per case, equal
 * to the uninterrupted run's.
 * Temporary files of the killed runs, aged past KD_TMP_STALE_SECONDS, are gone at the end.
 * Catches: outputs written in place (truncated under the final name), agreement rows
 * written twice or for cases whose output was never finished, partial rows, temporary
 * files mistaken for results or left behind. */
static int kill_annotate(void) {
    if (phantom(tmp("unl"), ANN_CASES, 1, 14)) return 1;
    if (save_model(TINY, 1, tmp("t1.kds")) || save_model("unet3d:widths=8,16", 2, tmp("t2.kds"))) return 1;
    const char *common = "--tta 4 --teacher %s --teacher %s --dataset %s --out %s";
    char args[4096];
    /* a warm-up run first: the timed run must see the warm program and conv-choice caches
     * the killed runs see, else its time (and the kill moments) can exceed a whole run */
    snprintf(args, sizeof args, common, tmp("t1.kds"), tmp("t2.kds"), tmp("unl"), tmp("warm"));
    KD_CHECK(kdseg_log(tmp("warm.txt"), "annotate %s", args) == 0, "warm-up annotate");
    snprintf(args, sizeof args, common, tmp("t1.kds"), tmp("t2.kds"), tmp("unl"), tmp("ref"));
    double t_ref = now_s();
    int code = kdseg_log(tmp("ref.txt"), "annotate %s", args);
    t_ref = now_s() - t_ref;
    if (code) show(tmp("ref.txt"));
    KD_CHECK(code == 0, "uninterrupted annotate");
    snprintf(args, sizeof args, common, tmp("t1.kds"), tmp("t2.kds"), tmp("unl"), tmp("ann"));
    kd_rng rng = kd_rng_make(777, 0, 0, 0);
    int kills = 0, partial = 0, finished = 0, counts[ANN_CASES], done_before = 0;
    for (int k = 0; k < 15 && !finished; k++) {
        pid_t pid = spawn(tmp("log.txt"), "annotate %s", args);
        /* a moment inside this run's annotation, however loaded the machine: once it has
         * written a case of its own (start-up can take longer than the timed run did), at
         * a random point within about one case's time after */
        int exited = 0;
        double t0 = now_s();
        while (cases_written(tmp("ann")) <= done_before && now_s() - t0 < 300 &&
               !(exited = waitpid(pid, &code, WNOHANG) == pid))
            sleep_s(0.01);
        if (!exited) sleep_s(t_ref / ANN_CASES * kd_rng_uniform(&rng));
        if (exited || waitpid(pid, &code, WNOHANG) == pid) {
            KD_CHECK(WIFEXITED(code) && WEXITSTATUS(code) == 0, "annotate run %d failed", k);
            finished = 1;
            break;
        }
        kill(pid, SIGKILL);
        code = wait_for(pid);
        if (code == 0) {
            finished = 1;
            break;
        }
        KD_CHECK(code == 128 + SIGKILL, "annotate run %d exited %d", k, code);
        kills++;
        int done = check_annotations(tmp("ann"));
        KD_CHECK(done >= 0, "after kill %d a file under a final name is truncated", k);
        partial += done > 0 && done < ANN_CASES;
        done_before = done;
        int rows = agreement_rows(tmp("ann/agreement.csv"), counts);
        KD_CHECK(rows >= 0, "after kill %d agreement.csv is malformed", k);
        int aged = age_temps(tmp("ann"));
        printf("kill %d: %d cases written, %d agreement rows, %d temporary files\n", k, done, rows, aged);
    }
    if (!finished) {
        code = kdseg_log(tmp("log.txt"), "annotate %s", args);
        if (code) show(tmp("log.txt"));
        KD_CHECK(code == 0, "final annotate");
    }
    printf("%d kills, %d with some but not all cases written\n", kills, partial);
    KD_CHECK(kills >= 2 && partial >= 1, "the kills did not land during annotation (%d, %d)", kills, partial);
    KD_CHECK(check_annotations(tmp("ann")) == ANN_CASES, "every case annotated");
    KD_CHECK(agreement_rows(tmp("ann/agreement.csv"), counts) == ANN_CASES, "one row per case");
    for (int c = 0; c < ANN_CASES; c++) {
        char p[2048], q[2048], ra[256], rb[256];
        KD_CHECK(counts[c] == 1, "case %d has %d agreement rows", c, counts[c]);
        snprintf(p, sizeof p, "%s/KDPhantom_%03d.nii.gz", tmp("ann"), c);
        snprintf(q, sizeof q, "%s/KDPhantom_%03d.nii.gz", tmp("ref"), c);
        KD_CHECK(same_bytes(p, q), "case %d differs from the uninterrupted run", c);
        agreement_row(tmp("ann/agreement.csv"), c, ra, sizeof ra);
        agreement_row(tmp("ref/agreement.csv"), c, rb, sizeof rb);
        KD_CHECK(!strcmp(ra, rb), "agreement of case %d: %s vs %s", c, ra, rb);
    }
    /* the reruns removed the (aged) temporary files of the killed ones */
    char left[1024];
    KD_CHECK(temp_files(tmp("ann"), left, sizeof left) == 0, "stale temporary files left:%s", left);
    /* read as --annotations, each case's label is exactly ANN/CASE.nii.gz */
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    o.annotations = tmp("ann");
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(tmp("unl"), &o, &ds));
    KD_CHECK(kd_dataset_count(ds) == ANN_CASES, "cases");
    for (int c = 0; c < ANN_CASES; c++) {
        const char *l = kd_dataset_case_label(ds, c);
        size_t n = l ? strlen(l) : 0;
        KD_CHECK(kd_dataset_case_labeled(ds, c) == 2 && n > 7 && !strcmp(l + n - 7, ".nii.gz"),
                 "case %d label %s", c, l ? l : "(none)");
    }
    kd_dataset_free(ds);
    return 0;
}

/* The states a killed annotate run can leave in agreement.csv, made by hand: a row of a
 * case whose output was never renamed into place (its temporary file still there), a
 * duplicated row, a partial last row. A rerun keeps exactly one complete row per case.
 * Catches: appending to such a file as it is (duplicates, a row glued to a partial one),
 * a redone case logged twice. */
static int annotate_stale_rows(void) {
    if (phantom(tmp("unl"), 3, 1, 21)) return 1;
    if (save_model(TINY, 1, tmp("t1.kds")) || save_model("unet3d:widths=8,16", 2, tmp("t2.kds"))) return 1;
    char args[4096];
    snprintf(args, sizeof args, "annotate --teacher %s --teacher %s --dataset %s --out %s",
             tmp("t1.kds"), tmp("t2.kds"), tmp("unl"), tmp("ann"));
    KD_CHECK(kdseg_log(tmp("log.txt"), "%s", args) == 0, "annotate");
    char row1[256], *all = slurp(tmp("ann/agreement.csv"), NULL);
    agreement_row(tmp("ann/agreement.csv"), 1, row1, sizeof row1);
    KD_CHECK(all && row1[0], "row of case 1");
    /* case 1: output gone (a temporary file instead), row present twice; case 0 twice;
     * a partial row at the end */
    KD_CHECK(rename(tmp("ann/KDPhantom_001.nii.gz"), tmp("ann/KDPhantom_001.nii.gz.tmp-1-0")) == 0, "mv");
    FILE *f = fopen(tmp("ann/agreement.csv"), "a");
    char row0[256];
    agreement_row(tmp("ann/agreement.csv"), 0, row0, sizeof row0);
    KD_CHECK(f && fprintf(f, "%s\n%s\nKDPhantom_002,0.9", row1, row0) > 0 && fclose(f) == 0, "append");
    free(all);
    KD_CHECK(kdseg_log(tmp("log2.txt"), "%s", args) == 0, "annotate again");
    int counts[ANN_CASES];
    int rows = agreement_rows(tmp("ann/agreement.csv"), counts);
    if (rows != 3) show(tmp("ann/agreement.csv"));
    KD_CHECK(rows == 3 && counts[0] == 1 && counts[1] == 1 && counts[2] == 1,
             "%d rows (case 0: %d, 1: %d, 2: %d)", rows, counts[0], counts[1], counts[2]);
    char again[256];
    agreement_row(tmp("ann/agreement.csv"), 1, again, sizeof again);
    KD_CHECK(!strcmp(again, row1), "case 1 redone: %s vs %s", again, row1);
    KD_CHECK(check_annotations(tmp("ann")) == 3, "outputs");
    return 0;
}

/* ------------------------------------------------------------ 3. SIGINT -- */

/* SIGINT in the middle of training: the command saves last.kds at the step it reached,
 * exits non-zero saying it was interrupted, and --resume continues to the end with every
 * step logged once.
 * Catches: Ctrl-C losing the work since the last periodic checkpoint (ckpt-every is
 * huge here), a zero exit status, a checkpoint at the wrong step, a torn CSV. */
static int sigint_train(void) {
    const char *d = tmp("d"), *csv = tmp("out/train.csv");
    if (phantom(d, 3, 0, 15)) return 1;
    const char *opts = "--ckpt-every 100000 --val-every 0 --threads 1 " TRAIN_OPTS;
    pid_t pid = spawn(tmp("log.txt"), "train --dataset %s --out %s --steps 100000 %s", d, tmp("out"), opts);
    int w = wait_rows(csv, 5, pid, 40);
    KD_CHECK(w == 1, "training did not log 6 steps");
    kill(pid, SIGINT);
    int code = wait_for(pid);
    int seen = csv_lines(csv);
    if (code != 1) show(tmp("log.txt"));
    KD_CHECK(code == 1, "exit status %d after SIGINT (expected 1)", code);
    KD_CHECK(file_has(tmp("log.txt"), "interrupted") && file_has(tmp("log.txt"), "last.kds saved"),
             "the message does not say it was interrupted and saved");
    long st = ckpt_step(tmp("out/last.kds"));
    KD_CHECK(st >= 6 && st == seen, "last.kds at step %ld, %d steps logged", st, seen);
    if (csv_steps_are(csv, (int)st)) return 1;
    code = kdseg_log(tmp("log2.txt"), "train --dataset %s --out %s --steps %ld --resume %s", d, tmp("out"), st + 3, opts);
    if (code) show(tmp("log2.txt"));
    KD_CHECK(code == 0, "resume exited %d", code);
    KD_CHECK(ckpt_step(tmp("out/last.kds")) == st + 3, "resumed to the end");
    return csv_steps_are(csv, (int)st + 3);
}

/* ---------------------------------------------- 4. full or read-only disk -- */

static char g_mnt[1024];
static void unmount(void) {
    if (g_mnt[0]) umount2(g_mnt, MNT_DETACH);
    g_mnt[0] = 0;
}

/* A small tmpfs at tmp(name) (needs root and CAP_SYS_ADMIN; else the case skips). */
static int mount_small(const char *name, const char *size) {
    const char *dir = tmp(name);
    if (mkdir(dir, 0755)) return -1;
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    if (mount("tmpfs", dir, "tmpfs", 0, opts)) {
        printf("SKIP: cannot mount a tmpfs (%s); the disk-full case needs root\n", strerror(errno));
        return KD_TEST_SKIP;
    }
    snprintf(g_mnt, sizeof g_mnt, "%s", dir);
    atexit(unmount); /* runs before the harness removes the temporary folder */
    return 0;
}

/* Fills the file system of dir with a new file, leaving about `leave` bytes free (0:
 * writes until the file system refuses even one more byte). */
static int fill(const char *dir, long leave) {
    static int serial;
    struct statvfs sv;
    if (statvfs(dir, &sv)) return -1;
    long avail = (long)(sv.f_bavail * sv.f_frsize) - leave;
    char p[2048];
    snprintf(p, sizeof p, "%s/filler%d", dir, serial++);
    FILE *f = fopen(p, "wb");
    if (!f) return leave == 0 && errno == ENOSPC ? 0 : -1;
    setvbuf(f, NULL, _IONBF, 0);
    static char block[4096];
    long k = 0;
    while ((leave == 0 || k + (long)sizeof block <= avail) && fwrite(block, 1, sizeof block, f) == sizeof block)
        k += (long)sizeof block;
    while (leave == 0 && fwrite(block, 1, 1, f) == 1) {
    }
    fclose(f);
    return 0;
}

static int no_temp_files(const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep '[.]tmp' >&2", dir);
    return system(cmd) != 0;
}

/* Output on a full file system: training resumes, cannot write its next checkpoint, says
 * so (No space left on device) with exit status 1; the previous last.kds is kept byte for
 * byte and still loads, and no temporary file is left. Then annotate into the full disk:
 * exit 1, "write failed", no file under the final name.
 * Catches: a checkpoint overwritten in place (lost on ENOSPC), errors ignored (exit 0 with
 * a missing file), temporary files left to fill the disk further. */
static int disk_full(void) {
    int r = mount_small("full", "4M");
    if (r) return r;
    char d[1024], out[1024], last[1024]; /* (tmp() reuses its buffers) */
    snprintf(d, sizeof d, "%s", tmp("d"));
    snprintf(out, sizeof out, "%s", tmp("full/out"));
    snprintf(last, sizeof last, "%s", tmp("full/out/last.kds"));
    if (phantom(d, 3, 0, 16)) return 1;
    int code = kdseg_log(tmp("log0.txt"), "train --dataset %s --out %s --steps 2 --val-every 0 " TRAIN_OPTS, d, out);
    KD_CHECK(code == 0, "first run");
    KD_CHECK(copy_file(last, tmp("good.kds")) == 0, "copy");
    KD_CHECK(fill(tmp("full"), 64 * 1024) == 0, "fill the disk");
    code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --steps 4 --val-every 0 --resume " TRAIN_OPTS, d, out);
    if (code != 1) show(tmp("log.txt"));
    KD_CHECK(code == 1, "exit status %d on a full disk", code);
    KD_CHECK(file_has(tmp("log.txt"), "No space left on device"), "the message does not name the cause");
    KD_CHECK(file_has(tmp("log.txt"), "last.kds"), "the message does not name the file");
    KD_CHECK(same_bytes(last, tmp("good.kds")), "the previous last.kds was not kept");
    KD_CHECK(ckpt_step(last) == 2, "the kept last.kds loads");
    KD_CHECK(no_temp_files(out), "temporary files left in %s", out);
    /* annotate into the full disk (the teacher checkpoint lives elsewhere) */
    if (phantom(tmp("unl"), 1, 1, 17) || save_model(TINY, 1, tmp("t.kds"))) return 1;
    KD_CHECK(fill(tmp("full"), 0) == 0, "fill");
    code = kdseg_log(tmp("log2.txt"), "annotate --teacher %s --dataset %s --out %s", tmp("t.kds"),
                     tmp("unl"), tmp("full/out"));
    if (code != 1) show(tmp("log2.txt"));
    KD_CHECK(code == 1, "annotate exit status %d on a full disk", code);
    KD_CHECK(file_has(tmp("log2.txt"), "write failed"), "annotate's message");
    KD_CHECK(!exists(tmp("full/out/KDPhantom_000.nii.gz")), "a partial annotation under the final name");
    KD_CHECK(no_temp_files(out), "temporary files left by annotate");
    return 0;
}

/* A read-only output file system (root ignores permission bits, not a read-only
 * mount): resume fails at once with "Read-only file system", exit 1; last.kds kept.
 * Catches: errors on opening the log or checkpoint ignored, files clobbered. */
static int output_read_only(void) {
    int r = mount_small("ro", "4M");
    if (r) return r;
    char d[1024], out[1024], last[1024];
    snprintf(d, sizeof d, "%s", tmp("d"));
    snprintf(out, sizeof out, "%s", tmp("ro/out"));
    snprintf(last, sizeof last, "%s", tmp("ro/out/last.kds"));
    if (phantom(d, 3, 0, 18)) return 1;
    KD_CHECK(kdseg_log(tmp("log0.txt"), "train --dataset %s --out %s --steps 2 --val-every 0 " TRAIN_OPTS, d,
                       out) == 0, "first run");
    KD_CHECK(copy_file(last, tmp("good.kds")) == 0, "copy");
    if (mount(NULL, tmp("ro"), NULL, MS_REMOUNT | MS_RDONLY, NULL)) {
        printf("SKIP: cannot remount read-only: %s\n", strerror(errno));
        return KD_TEST_SKIP;
    }
    int code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --steps 4 --val-every 0 --resume " TRAIN_OPTS, d, out);
    if (code != 1) show(tmp("log.txt"));
    KD_CHECK(code == 1, "exit status %d on a read-only folder", code);
    KD_CHECK(file_has(tmp("log.txt"), "Read-only file system"), "the message does not name the cause");
    KD_CHECK(same_bytes(last, tmp("good.kds")) && ckpt_step(last) == 2, "last.kds kept");
    return 0;
}

/* ------------------------------------------------ 5. device faults -- */

enum { F_TRAIN, F_SEGMENT };

typedef struct fault_row {
    const char *fault; /* KDSEG_FAULT */
    int cmd;           /* F_TRAIN: resume a 2-step run to step 6; F_SEGMENT: 3 cases */
    const char *frag;  /* expected in the message besides the injected error */
    const char *frag2; /* and this (the op or the shape), or NULL */
    int fails_in_case; /* F_SEGMENT: 1 when the fault lands in a case (not at start-up) */
} fault_row;

/* The launch and transfer counts land in these phases with the tiny model of this file
 * and KDSEG_CONV=direct (no timing runs of the conv chooser, so the counts do not depend
 * on its cache): about 150 launches a training step, 60 to 75 a segmented 32^3 case. The
 * messages are checked for their parts, not for which op it is. */
static const fault_row fault_rows[] = {
    /* loading the checkpoint: the parameter slab is filled, then uploaded */
    {"launch:1", F_TRAIN, "launching kernel kd_fill over 23675", "filling tensor (N=1, C=23675", 0},
    {"write:1", F_TRAIN, "writing 3456 bytes to the device", "uploading tensor (N=", 0},
    /* the forward and backward passes of step 2, the loss, step 4 */
    {"launch:40", F_TRAIN, "forward of node", "(output (N=1, C=", 0},
    {"launch:100", F_TRAIN, "backward of node", "launching kernel kd_", 0},
    {"launch:400:CL_INVALID_WORK_GROUP_SIZE", F_TRAIN, "launching kernel kd_", "(N=1, C=", 0},
    {"read:1", F_TRAIN, "reading the loss", "downloading tensor (N=1, C=1", 0},
    {"read:2:CL_MEM_OBJECT_ALLOCATION_FAILURE", F_TRAIN, "reading the gradient norm", "out of memory", 0},
    /* segment: the model, the second case's forward pass, its label map (thresholded on
     * the device: 32^3 bytes, packed 4 per element) */
    {"launch:1", F_SEGMENT, "model 'resunet", "filling tensor", 0},
    {"launch:100", F_SEGMENT, ": forward of node", "launching kernel kd_", 1},
    {"read:2", F_SEGMENT, "downloading tensor (N=1, C=1, D=1, H=1, W=8192)", NULL, 1},
};

/* A failing kernel launch or transfer (CL_OUT_OF_RESOURCES and others, injected with
 * KDSEG_FAULT at several counts) during `kdseg train --resume` and `kdseg segment`: exit
 * status 1, no crash; the message names the injected error, the kernel or transfer and
 * the op or tensor shape (the row's fragments); training keeps the previous last.kds
 * byte for byte and train.csv whole (a resume without the fault then logs every step
 * once); segment keeps the cases finished before the fault and writes nothing under the
 * failing case's name; no temporary file is left. Also: a malformed KDSEG_FAULT is
 * refused with a message, not ignored.
 * Catches: a failed enqueue ignored (exit 0, a checkpoint or a segmentation of garbage),
 * a crash or abort on the error path (double free of a half-built graph), a checkpoint
 * saved after the failure (half-applied update), messages without the kernel, op or
 * shape, files left half-written. */
static int device_faults(void) {
    char d[1024], out[1024], seg[1024], last[1024], good[1024], csv[1024], goodcsv[1024];
    snprintf(d, sizeof d, "%s", tmp("d"));
    snprintf(out, sizeof out, "%s", tmp("out"));
    snprintf(seg, sizeof seg, "%s", tmp("seg"));
    snprintf(last, sizeof last, "%s", tmp("out/last.kds"));
    snprintf(good, sizeof good, "%s", tmp("good.kds"));
    snprintf(csv, sizeof csv, "%s", tmp("out/train.csv"));
    snprintf(goodcsv, sizeof goodcsv, "%s", tmp("good.csv"));
    const char *opts = "--val-every 0 --threads 1 " TRAIN_OPTS;
    setenv("KDSEG_CONV", "direct", 1);
    if (phantom(d, 3, 0, 23)) return 1;
    KD_CHECK(kdseg_log(tmp("log0.txt"), "train --dataset %s --out %s --steps 2 %s", d, out, opts) == 0,
             "first run");
    KD_CHECK(copy_file(last, good) == 0 && copy_file(csv, goodcsv) == 0, "copy");
    int failed = 0;
    for (size_t i = 0; i < sizeof fault_rows / sizeof fault_rows[0]; i++) {
        const fault_row *r = &fault_rows[i];
        setenv("KDSEG_FAULT", r->fault, 1);
        int code;
        if (r->cmd == F_TRAIN)
            code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --steps 6 --resume %s", d, out, opts);
        else
            /* one whole-volume pass: the download's shape in the message is the case's */
            code = kdseg_log(tmp("log.txt"), "segment --checkpoint %s --dataset %s --out %s --tile whole",
                             good, d, seg);
        unsetenv("KDSEG_FAULT");
        const char *what = r->cmd == F_TRAIN ? "train" : "segment";
        int ok = code == 1 && file_has(tmp("log.txt"), "(injected by KDSEG_FAULT)") &&
                 file_has(tmp("log.txt"), r->frag) && (!r->frag2 || file_has(tmp("log.txt"), r->frag2));
        char left[1024] = "";
        if (r->cmd == F_TRAIN) {
            long steps[16];
            ok = ok && same_bytes(last, good) && csv_rows(csv, steps, NULL, 16) >= 2 &&
                 temp_files(out, left, sizeof left) == 0;
            KD_CHECK(copy_file(goodcsv, csv) == 0, "restore train.csv");
        } else {
            /* the case the fault landed in: the ones before it are written, it and the
             * ones after it are not */
            int failing = 0;
            char *log = slurp(tmp("log.txt"), NULL), *at = log ? strstr(log, "case KDPhantom_") : NULL;
            if (at) failing = atoi(at + 15);
            else ok = ok && !r->fails_in_case;
            free(log);
            for (int c = 0; c < 3; c++) {
                char p[2048];
                snprintf(p, sizeof p, "%s/KDPhantom_%03d.nii.gz", seg, c);
                kd_volume *v = NULL;
                int there = exists(p);
                if (there && kd_nifti_read(p, &v) == KD_OK) kd_volume_free(v);
                else if (there) ok = 0; /* a broken file under the final name */
                ok = ok && there == (c < failing);
                remove(p);
            }
            ok = ok && temp_files(seg, left, sizeof left) == 0;
        }
        printf("%s %s KDSEG_FAULT=%s: exit %d\n", ok ? "ok  " : "FAIL", what, r->fault, code);
        if (!ok) {
            show(tmp("log.txt"));
            fprintf(stderr, "expected exit 1, '%s'%s%s, outputs kept%s%s\n", r->frag, r->frag2 ? ", " : "",
                    r->frag2 ? r->frag2 : "", left[0] ? "; temporary files:" : "", left);
            failed++;
        }
        KD_CHECK(code < 128, "kdseg %s crashed under KDSEG_FAULT=%s (status %d)", what, r->fault, code);
    }
    KD_CHECK(failed == 0, "%d of %zu fault rows failed", failed, sizeof fault_rows / sizeof fault_rows[0]);
    /* a malformed value is refused */
    setenv("KDSEG_FAULT", "launch:0", 1);
    int code = kdseg_log(tmp("log.txt"), "segment --checkpoint %s --dataset %s --out %s", good, d, seg);
    unsetenv("KDSEG_FAULT");
    KD_CHECK(code == 1 && file_has(tmp("log.txt"), "KDSEG_FAULT='launch:0': expected"),
             "a malformed KDSEG_FAULT: exit %d", code);
    /* nothing the failed runs did keeps training from going on exactly */
    code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --steps 6 --resume %s", d, out, opts);
    if (code) show(tmp("log.txt"));
    KD_CHECK(code == 0 && ckpt_step(last) == 6, "resume after the faults");
    return csv_steps_are(csv, 6);
}

/* ------------------------------------------ 6. stale temporary files -- */

/* Temporary files of dead writers are removed by the next run that writes into the same
 * folder (train's OUT, segment's and annotate's OUT, the program cache), and nothing
 * else is: in each folder a stale file (dead writer, changed 11 minutes ago) of each of
 * the three name patterns must go; these must stay: the same names changed just now (a
 * writer on another host sharing the folder may still be writing), an old file of a live
 * process (this test), names that only look alike (x.tmp, x.tmp12a, x.tmp-5-, .tmp7), a
 * folder with a temporary name, and a symbolic link to a file.
 * Catches: stale files never removed, a sweep that deletes a concurrent writer's file,
 * user files or folders, or follows links. */
/* The shared program cache gets the decoys too; they go again at exit, pass or fail. */
static char g_decoy_dir[1024];
static long g_decoy_pids[2];
static void remove_decoys(void) {
    if (!g_decoy_dir[0]) return;
    static const char *const names[] = {"last.kds.tmp%ld", "KDPhantom_000.nii.gz.tmp-%ld-3",
                                        "metrics.csv.tmp.%ld", "fresh-last.kds.tmp%ld",
                                        "fresh-KDPhantom_000.nii.gz.tmp-%ld-3",
                                        "fresh-metrics.csv.tmp.%ld", "live.kds.tmp%ld",
                                        "folder.tmp%ld", "link.tmp%ld"};
    char name[256], p[2048];
    for (int k = 0; k < 9; k++)
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, names[k], g_decoy_pids[i]);
            snprintf(p, sizeof p, "%s/%s", g_decoy_dir, name);
            if (remove(p) != 0) rmdir(p);
        }
    static const char *const alike[] = {"notes.tmp", "x.tmp12a", "x.tmp-5-", ".tmp7"};
    for (int a = 0; a < 4; a++) {
        snprintf(p, sizeof p, "%s/%s", g_decoy_dir, alike[a]);
        remove(p);
    }
}

static int stale_temps(void) {
    if (phantom(tmp("d"), 3, 0, 24) || save_model(TINY, 1, tmp("m.kds"))) return 1;
    const char *cache_root = getenv("XDG_CACHE_HOME");
    char cache[1024];
    snprintf(cache, sizeof cache, "%s/kdseg", cache_root && *cache_root ? cache_root : tmp("xdg"));
    const char *dirs[] = {tmp("out"), tmp("seg"), tmp("ann"), cache};
    long dead = (long)dead_pid(), me = (long)getpid();
    snprintf(g_decoy_dir, sizeof g_decoy_dir, "%s", cache);
    g_decoy_pids[0] = dead;
    g_decoy_pids[1] = me;
    atexit(remove_decoys);
    for (int k = 0; k < 4; k++) {
        const char *dir = dirs[k];
        char name[256];
        KD_CHECK(mkdirs(dir) == 0, "mkdir %s", dir);
        const char *gone[] = {"last.kds.tmp%ld", "KDPhantom_000.nii.gz.tmp-%ld-3", "metrics.csv.tmp.%ld"};
        for (int g = 0; g < 3; g++) {
            snprintf(name, sizeof name, gone[g], dead);
            KD_CHECK(touch(dir, name) == 0 && backdate(dir, name, KD_TMP_STALE_SECONDS + 60) == 0, "plant %s", name);
            snprintf(name, sizeof name, "fresh-%s", gone[g]);
            char fresh[256];
            snprintf(fresh, sizeof fresh, name, dead);
            KD_CHECK(touch(dir, fresh) == 0, "plant %s", fresh);
        }
        snprintf(name, sizeof name, "live.kds.tmp%ld", me);
        KD_CHECK(touch(dir, name) == 0 && backdate(dir, name, KD_TMP_STALE_SECONDS + 60) == 0, "plant live");
        const char *alike[] = {"notes.tmp", "x.tmp12a", "x.tmp-5-", ".tmp7"};
        for (int a = 0; a < 4; a++)
            KD_CHECK(touch(dir, alike[a]) == 0 && backdate(dir, alike[a], KD_TMP_STALE_SECONDS + 60) == 0,
                     "plant %s", alike[a]);
        char p[2048], q[2048];
        snprintf(p, sizeof p, "%s/folder.tmp%ld", dir, dead);
        KD_CHECK(mkdir(p, 0755) == 0 && backdate(dir, strrchr(p, '/') + 1, KD_TMP_STALE_SECONDS + 60) == 0, "dir");
        snprintf(p, sizeof p, "%s/link.tmp%ld", dir, dead);
        snprintf(q, sizeof q, "%s/notes.tmp", dir);
        KD_CHECK(symlink(q, p) == 0 && backdate(dir, strrchr(p, '/') + 1, KD_TMP_STALE_SECONDS + 60) == 0, "link");
    }
    /* each command sweeps its OUT; every device open sweeps the program cache */
    int code = kdseg_log(tmp("log1.txt"), "train --dataset %s --out %s --steps 1 --val-every 0 " TRAIN_OPTS,
                         tmp("d"), tmp("out"));
    KD_CHECK(code == 0, "train exited %d", code);
    code = kdseg_log(tmp("log2.txt"), "segment --checkpoint %s --case %s --out %s", tmp("m.kds"),
                     tmp("d/KDPhantom_000"), tmp("seg"));
    KD_CHECK(code == 0, "segment exited %d", code);
    code = kdseg_log(tmp("log3.txt"), "annotate --teacher %s --dataset %s --out %s", tmp("m.kds"),
                     tmp("d"), tmp("ann"));
    if (code) show(tmp("log3.txt"));
    KD_CHECK(code == 0, "annotate exited %d", code);
    for (int k = 0; k < 4; k++) {
        const char *dir = dirs[k];
        char name[256], left[1024];
        const char *gone[] = {"last.kds.tmp%ld", "KDPhantom_000.nii.gz.tmp-%ld-3", "metrics.csv.tmp.%ld"};
        for (int g = 0; g < 3; g++) {
            char p[2048];
            snprintf(name, sizeof name, gone[g], dead);
            snprintf(p, sizeof p, "%s/%s", dir, name);
            KD_CHECK(!exists(p), "%s: the stale %s was not removed", dir, name);
            char fresh[256];
            snprintf(name, sizeof name, "fresh-%s", gone[g]);
            snprintf(fresh, sizeof fresh, name, dead);
            snprintf(p, sizeof p, "%s/%s", dir, fresh);
            KD_CHECK(exists(p), "%s: the recent %s was removed", dir, fresh);
        }
        const char *kept[] = {"notes.tmp", "x.tmp12a", "x.tmp-5-", ".tmp7"};
        for (int a = 0; a < 4; a++) {
            char p[2048];
            snprintf(p, sizeof p, "%s/%s", dir, kept[a]);
            KD_CHECK(exists(p), "%s: %s was removed", dir, kept[a]);
        }
        char p[2048];
        struct stat st;
        snprintf(p, sizeof p, "%s/live.kds.tmp%ld", dir, me);
        KD_CHECK(exists(p), "%s: a live process's file was removed", dir);
        snprintf(p, sizeof p, "%s/folder.tmp%ld", dir, dead);
        KD_CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s: a folder was removed", dir);
        snprintf(p, sizeof p, "%s/link.tmp%ld", dir, dead);
        KD_CHECK(lstat(p, &st) == 0 && S_ISLNK(st.st_mode), "%s: a link was removed", dir);
        temp_files(dir, left, sizeof left);
        printf("%s: temporary names kept:%s\n", dir, left);
    }
    return 0;
}

/* ------------------------------------------------------- 7. determinism -- */

/* Two `kdseg train` runs with the same seed (background loader, augmentation on,
 * validation, best and last checkpoints): identical train.csv losses and gradient norms,
 * and bit-identical last.kds and best.kds.
 * Catches: unseeded randomness (loader threads, augmentation), float atomics or
 * order-dependent reductions in kernels, timestamps or paths leaking into checkpoints. */
static int determinism(void) {
    const char *d = tmp("d");
    if (phantom(d, 3, 0, 19)) return 1;
    const char *opts = "--steps 24 --ckpt-every 8 --val-every 8 --threads 2 --aug default --seed 5 " TRAIN_OPTS;
    KD_CHECK(kdseg_log(tmp("a.txt"), "train --dataset %s --out %s %s", d, tmp("a"), opts) == 0, "run a");
    KD_CHECK(kdseg_log(tmp("b.txt"), "train --dataset %s --out %s %s", d, tmp("b"), opts) == 0, "run b");
    /* step, kind, loss, lr, grad_norm: all but the seconds column */
    char *a = slurp(tmp("a/train.csv"), NULL), *b = slurp(tmp("b/train.csv"), NULL);
    KD_CHECK(a && b, "csv");
    char *sa = NULL, *sb = NULL;
    int rows = 0;
    for (char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb); la || lb;
         la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), rows++) {
        KD_CHECK(la && lb, "row counts differ");
        const char *ea = la, *eb = lb;
        for (int c = 0; c < 5 && ea && eb; c++) {
            ea = strchr(ea + 1, ',');
            eb = strchr(eb + 1, ',');
        }
        KD_CHECK(ea && eb && ea - la == eb - lb && !strncmp(la, lb, (size_t)(ea - la)),
                 "row %d: %s vs %s", rows, la, lb);
        /* validation Dice (after the seconds column) too */
        KD_CHECK(!strcmp(strchr(ea + 1, ',') ? strchr(ea + 1, ',') : "", strchr(eb + 1, ',') ? strchr(eb + 1, ',') : ""),
                 "row %d validation: %s vs %s", rows, la, lb);
    }
    free(a);
    free(b);
    KD_CHECK(rows == 25, "rows %d", rows);
    KD_CHECK(same_bytes(tmp("a/last.kds"), tmp("b/last.kds")), "last.kds differ");
    KD_CHECK(same_bytes(tmp("a/best.kds"), tmp("b/best.kds")), "best.kds differ");
    return 0;
}

/* ------------------------------- 8. issue 22: paths, one writer, links, phantoms -- */

/* Creates (mkdir -p) and returns a folder path of exactly len characters under root,
 * in components of at most 200 characters (malloc'd). */
static char *long_dir(const char *root, size_t len, int create) {
    char *p = malloc(len + 1);
    if (!p) return NULL;
    size_t u = (size_t)snprintf(p, len + 1, "%s", root);
    if (create) mkdirs(root);
    while (u < len) {
        size_t k = len - u - 1 < 200 ? len - u - 1 : 200;
        if (k == 0) { /* a one-character tail: lengthen the last component */
            p[u++] = 'a';
            break;
        }
        p[u++] = '/';
        memset(p + u, 'a', k);
        u += k;
        p[u] = 0;
        if (create && u < len && mkdir(p, 0755) && errno != EEXIST) {
            free(p);
            return NULL;
        }
    }
    p[u] = 0;
    if (create && mkdir(p, 0755) && errno != EEXIST) {
        free(p);
        return NULL;
    }
    return p;
}

/* Entries of dir other than . and .. (-1 when it cannot be read). */
static int entries(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(dp));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(dp);
    return n;
}

/* Finding 1. A 4086-character --out for segment (the folder exists) and a 4090-character
 * one for train (it does not): each refused before any work with "path too long", exit
 * status below 128, nothing written (neither a file nor a folder); a 3990-character
 * folder, where every name fits, gets all three cases under their full names. An error
 * message with a 3000-character path keeps its reason.
 * Catches: snprintf into fixed buffers without a truncation check (on main: exit 0, one
 * file "KDPhanto" overwritten by every case; train's "last", "best", "trai"), error
 * messages cut before the reason. */
static int long_paths(void) {
    if (phantom(tmp("d"), 3, 0, 31) || save_model(TINY, 1, tmp("m.kds"))) return 1;
    char m[1024], d[1024];
    snprintf(m, sizeof m, "%s", tmp("m.kds"));
    snprintf(d, sizeof d, "%s", tmp("d"));
    char *seg = long_dir(tmp("L1"), 4086, 1), *tr = long_dir(tmp("L2"), 4090, 0),
         *ok = long_dir(tmp("L3"), 3990, 1);
    KD_CHECK(seg && tr && ok && strlen(seg) == 4086 && strlen(tr) == 4090, "long folders");
    /* train's folder: its parent exists, the folder does not */
    char *parent = strdup(tr);
    *strrchr(parent, '/') = 0;
    KD_CHECK(mkdirs(parent) == 0 && !exists(tr), "parent of the train folder");
    int code = kdseg_log(tmp("seg.txt"), "segment --checkpoint %s --dataset %s --out %s", m, d, seg);
    if (!file_has(tmp("seg.txt"), "path too long")) show(tmp("seg.txt"));
    KD_CHECK(code > 0 && code < 128, "segment into a 4086-character folder exited %d", code);
    KD_CHECK(file_has(tmp("seg.txt"), "path too long"), "segment: no 'path too long'");
    KD_CHECK(entries(seg) == 0, "segment wrote %d entries into the 4086-character folder", entries(seg));
    code = kdseg_log(tmp("train.txt"), "train --dataset %s --out %s --steps 2 --val-every 0 " TRAIN_OPTS, d, tr);
    if (!file_has(tmp("train.txt"), "path too long")) show(tmp("train.txt"));
    KD_CHECK(code > 0 && code < 128, "train into a 4090-character folder exited %d", code);
    KD_CHECK(file_has(tmp("train.txt"), "path too long"), "train: no 'path too long'");
    KD_CHECK(entries(parent) == 0, "train left %d entries beside its folder (last, best, trai?)", entries(parent));
    /* near the limit, names that fit: every case under its own full name */
    code = kdseg_log(tmp("ok.txt"), "segment --checkpoint %s --dataset %s --out %s", m, d, ok);
    if (code) show(tmp("ok.txt"));
    KD_CHECK(code == 0, "segment into a 3990-character folder exited %d", code);
    for (int c = 0; c < 3; c++) {
        size_t n = strlen(ok) + 64;
        char *p = malloc(n);
        snprintf(p, n, "%s/KDPhantom_%03d.nii.gz", ok, c);
        kd_volume *v = NULL;
        kd_status s = kd_nifti_read(p, &v);
        kd_volume_free(v);
        free(p);
        KD_CHECK(s == KD_OK, "case %d under its full name: %s", c, kd_last_error());
    }
    KD_CHECK(entries(ok) == 4, "%d entries (3 cases and the lock file expected)", entries(ok));
    /* a message longer than the old 2048-byte buffer keeps its reason at the end */
    char *nodata = long_dir(tmp("nodata"), 3000, 0);
    code = kdseg_log(tmp("msg.txt"), "train --dataset %s --out %s --steps 1 " TRAIN_OPTS, nodata, tmp("o"));
    if (!file_has(tmp("msg.txt"), "dataset folder not found")) show(tmp("msg.txt"));
    KD_CHECK(code == 1 && file_has(tmp("msg.txt"), "dataset folder not found"),
             "a 3000-character --data: exit %d, the reason lost", code);
    KD_CHECK(file_has(tmp("msg.txt"), "characters...]"), "the long path was not shortened in its middle");
    free(seg);
    free(tr);
    free(ok);
    free(parent);
    free(nodata);
    return 0;
}

/* Finding 2. Two `kdseg train` into one --out: the second is refused at once (exit 1)
 * with a message naming the folder and the first one's pid, while the first goes on;
 * after the first is killed (SIGKILL) a --resume takes the folder (the lock dies with its
 * holder) and finishes with every step logged once.
 * Catches: no lock (on main both exit 0, train.csv interleaved, checkpoints of two runs),
 * a lock a killed run leaves behind. */
static int concurrent_train(void) {
    const char *d = tmp("d");
    if (phantom(d, 3, 0, 32)) return 1;
    char out[1024], csv[1024], last[1024];
    snprintf(out, sizeof out, "%s", tmp("out"));
    snprintf(csv, sizeof csv, "%s", tmp("out/train.csv"));
    snprintf(last, sizeof last, "%s", tmp("out/last.kds"));
    const char *opts = "--val-every 0 --ckpt-every 5 --threads 1 " TRAIN_OPTS;
    pid_t a = spawn(tmp("a.txt"), "train --dataset %s --out %s --steps 100000 %s", d, out, opts);
    KD_CHECK(wait_rows(csv, 2, a, 40) == 1, "the first run did not log 3 steps");
    int code = kdseg_log(tmp("b.txt"), "train --dataset %s --out %s --steps 3 %s", d, out, opts);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)a);
    if (code != 1 || !file_has(tmp("b.txt"), pid)) show(tmp("b.txt"));
    KD_CHECK(code == 1, "the second train into the same folder exited %d", code);
    KD_CHECK(file_has(tmp("b.txt"), pid) && file_has(tmp("b.txt"), out), "the message names neither %s nor %s", pid, out);
    KD_CHECK(kill(a, 0) == 0, "the first run ended");
    /* it goes on: more rows after the refusal */
    int rows = csv_lines(csv);
    KD_CHECK(wait_rows(csv, rows + 5, a, 40) == 1 && exists(last), "the first run stopped logging");
    kill(a, SIGKILL);
    KD_CHECK(wait_for(a) == 128 + SIGKILL, "kill");
    long st = ckpt_step(last);
    KD_CHECK(st >= 5, "last.kds at step %ld", st);
    code = kdseg_log(tmp("c.txt"), "train --dataset %s --out %s --steps %ld --resume %s", d, out, st + 3, opts);
    if (code) show(tmp("c.txt"));
    KD_CHECK(code == 0, "resume after the holder was killed exited %d", code);
    return csv_steps_are(csv, (int)st + 3);
}

/* Finding 3. Two `kdseg annotate` on one output folder: the second is refused (exit 1,
 * the folder and the first's pid named) while the first annotates; the first finishes
 * with one agreement row per case, and a rerun skips every case and keeps the rows.
 * Catches: no lock (on main the second renames a fresh agreement.csv over the file the
 * first appends to: rows lost for good). */
static int concurrent_annotate(void) {
    enum { CASES = 10 };
    if (phantom(tmp("unl"), CASES, 1, 33)) return 1;
    if (save_model(TINY, 1, tmp("t1.kds")) || save_model("unet3d:widths=8,16", 2, tmp("t2.kds"))) return 1;
    char args[4096];
    snprintf(args, sizeof args, "annotate --tta 8 --teacher %s --teacher %s --dataset %s --out %s",
             tmp("t1.kds"), tmp("t2.kds"), tmp("unl"), tmp("ann"));
    pid_t a = spawn(tmp("a.txt"), "%s", args);
    /* the first case written: the first run holds the folder and has far to go */
    double t0 = now_s();
    while (!exists(tmp("ann/KDPhantom_000.nii.gz")) && now_s() - t0 < 60 && waitpid(a, NULL, WNOHANG) == 0)
        sleep_s(0.01);
    KD_CHECK(exists(tmp("ann/KDPhantom_000.nii.gz")), "the first annotate wrote nothing in 60 s");
    int code = kdseg_log(tmp("b.txt"), "%s", args);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)a);
    if (code != 1 || !file_has(tmp("b.txt"), pid)) show(tmp("b.txt"));
    KD_CHECK(code == 1 && file_has(tmp("b.txt"), pid), "the second annotate exited %d without naming %s", code, pid);
    KD_CHECK(file_has(tmp("b.txt"), tmp("ann")), "the message does not name the folder");
    code = wait_for(a);
    if (code) show(tmp("a.txt"));
    KD_CHECK(code == 0, "the first annotate exited %d", code);
    int counts[ANN_CASES];
    (void)counts;
    size_t n;
    char *b = slurp(tmp("ann/agreement.csv"), &n);
    int rows = 0;
    for (size_t i = 0; b && i < n; i++) rows += b[i] == '\n';
    free(b);
    KD_CHECK(rows == CASES + 1, "agreement.csv has %d rows for %d cases", rows - 1, CASES);
    code = kdseg_log(tmp("c.txt"), "%s", args);
    KD_CHECK(code == 0 && file_has(tmp("c.txt"), "already annotated, skipped"), "rerun");
    b = slurp(tmp("ann/agreement.csv"), &n);
    rows = 0;
    for (size_t i = 0; b && i < n; i++) rows += b[i] == '\n';
    free(b);
    KD_CHECK(rows == CASES + 1, "after the rerun agreement.csv has %d rows", rows - 1);
    return 0;
}

/* A child process that holds dir (kd_outdir_open) until killed; its pid, or -1. */
static pid_t hold_folder(const char *dir) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        kd_outdir *o = NULL;
        char c = kd_outdir_open(dir, NULL, &o) ? 'n' : 'y';
        if (write(fd[1], &c, 1) != 1) _exit(1);
        for (;;) pause();
    }
    close(fd[1]);
    char c = 0;
    int got = (int)read(fd[0], &c, 1);
    close(fd[0]);
    if (got != 1 || c != 'y') {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* One writer per output folder, each command: while another process holds OUT (through
 * the library's kd_outdir_open), train, distill, annotate, segment --out and segment
 * --member-out into it are each refused with exit 1, naming the folder and the holder's
 * pid, and write nothing there; one command given the same folder twice says so; after
 * the holder is killed (SIGKILL) the folder is free at once.
 * Catches: a command that skips the lock, a message without the pid, a lock that
 * outlives a killed holder. */
static int lock_each_command(void) {
    if (phantom(tmp("d"), 3, 0, 34) || phantom(tmp("unl"), 2, 1, 35) || save_model(TINY, 1, tmp("m.kds")))
        return 1;
    char out[1024];
    snprintf(out, sizeof out, "%s", tmp("out"));
    pid_t h = hold_folder(out);
    KD_CHECK(h > 0, "the holder could not take %s", out);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)h);
    static const char *const cmds[] = {
        "train --dataset {D} --out {O} --steps 1 --val-every 0 " TRAIN_OPTS,
        "distill --online --teacher {M} --dataset {D} --unlabeled {U} --out {O} --steps 1 " TRAIN_OPTS,
        "annotate --teacher {M} --dataset {U} --out {O}",
        "segment --checkpoint {M} --dataset {D} --out {O}",
        "segment --checkpoint {M} --dataset {D} --out {S} --member-out {O}",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char cmd[4096];
        size_t u = 0;
        for (const char *p = cmds[i]; *p && u + 1 < sizeof cmd;) {
            const char *rep = NULL;
            if (p[0] == '{' && p[2] == '}')
                rep = p[1] == 'D' ? tmp("d") : p[1] == 'U' ? tmp("unl") : p[1] == 'M' ? tmp("m.kds")
                    : p[1] == 'S' ? tmp("other") : out;
            if (rep) {
                u += (size_t)snprintf(cmd + u, sizeof cmd - u, "%s", rep);
                p += 3;
            } else cmd[u++] = *p++;
        }
        cmd[u] = 0;
        int code = kdseg_log(tmp("log.txt"), "%s", cmd);
        int ok = code == 1 && file_has(tmp("log.txt"), pid) && file_has(tmp("log.txt"), out) &&
                 file_has(tmp("log.txt"), "is writing into this folder");
        printf("%s kdseg %.40s...: exit %d\n", ok ? "ok  " : "FAIL", cmd, code);
        if (!ok) show(tmp("log.txt"));
        KD_CHECK(ok, "kdseg %s: exit %d, expected 1 naming %s and %s", cmd, code, out, pid);
        KD_CHECK(entries(out) == 1, "%d entries in the held folder (only its lock file expected)", entries(out));
    }
    /* the same folder twice in one command */
    int code = kdseg_log(tmp("log.txt"), "segment --checkpoint %s --dataset %s --out %s --member-out %s",
                         tmp("m.kds"), tmp("d"), tmp("twice"), tmp("twice"));
    if (code != 1) show(tmp("log.txt"));
    KD_CHECK(code == 1 && file_has(tmp("log.txt"), "this process is already writing into this folder"),
             "--out and --member-out alike: exit %d", code);
    /* the holder killed: the folder is free */
    kill(h, SIGKILL);
    waitpid(h, NULL, 0);
    code = kdseg_log(tmp("log.txt"), "segment --checkpoint %s --dataset %s --out %s", tmp("m.kds"), tmp("d"), out);
    if (code) show(tmp("log.txt"));
    KD_CHECK(code == 0 && entries(out) == 4, "segment after the holder was killed: exit %d", code);
    return 0;
}

/* ------------------------------------------------------- write errors -- */

typedef struct write_row {
    const char *cmd;   /* {D} labeled cohort, {U} unlabeled, {M}/{T} models, {O} output
                          folder, {P} a prediction folder of {D} */
    const char *fault; /* KDSEG_FAULT=full:N: the N-th output file goes to /dev/full */
    const char *frag;  /* expected: the file that failed */
    const char *gone;  /* relative to {O}: must not exist afterwards (NULL: none) */
    long leave;        /* on the tmpfs: bytes left free (-1: the row runs injected only) */
} write_row;

/* Each output kind, failing as on a full disk (writes to /dev/full: ENOSPC), through the
 * command that writes it. */
static const write_row write_rows[] = {
    {"segment --checkpoint {M} --dataset {D} --out {O}", "full:1", "KDPhantom_000.nii.gz: write failed",
     "KDPhantom_000.nii.gz", 0},
    /* 390 KB of float32 probabilities: gzip fails inside gzwrite, not at gzclose (finding 4) */
    {"segment --checkpoint {M} --dataset {D} --out {O} --probabilities f32", "full:2",
     "KDPhantom_000_prob.nii.gz: write failed", "KDPhantom_000_prob.nii.gz", 64 * 1024},
    {"segment --checkpoint {M} --dataset {D} --out {O} --png", "full:2", "KDPhantom_000.png: write failed",
     "KDPhantom_000.png", -1},
    {"annotate --teacher {M} --dataset {U} --out {O} --soft", "full:1", "KDPhantom_000.nii.gz: write failed",
     "KDPhantom_000.nii.gz", 0},
    {"annotate --teacher {M} --teacher {T} --dataset {U} --out {O}", "full:1", "agreement.csv: write failed",
     NULL, 0},
    {"train --dataset {D} --out {O} --steps 2 --val-every 0 --val-cases 1 " TRAIN_OPTS, "full:1",
     "train.csv: write failed", NULL, 0},
    {"train --dataset {D} --out {O} --steps 2 --val-every 0 --val-cases 1 " TRAIN_OPTS, "full:2",
     "last.kds: write failed", "last.kds", -1},
    {"distill --online --teacher {M} --dataset {D} --unlabeled {U} --out {O} --steps 2 --val-every 0 " TRAIN_OPTS,
     "full:1", "train.csv: write failed", NULL, 0},
    {"evaluate --pred {P} --ref {D} --csv {O}/metrics.csv", "full:1", "metrics.csv: write failed", "metrics.csv", 0},
    {"phantom --out {O}/cohort --cases 2 --size 32", "full:3", ".nii.gz: write failed", "cohort", 0},
    {"phantom --out {O}/msd --cases 1 --size 32 --layout msd", "full:3", "dataset.json: write failed", "msd", -1},
};

static void expand_w(const char *fmt, const char *out, char *cmd, size_t n) {
    size_t u = 0;
    for (const char *p = fmt; *p && u + 1 < n;) {
        const char *rep = NULL;
        if (p[0] == '{' && p[1] && p[2] == '}')
            rep = p[1] == 'D' ? tmp("d") : p[1] == 'U' ? tmp("unl") : p[1] == 'M' ? tmp("m.kds")
                : p[1] == 'T' ? tmp("t2.kds") : p[1] == 'P' ? tmp("pred") : out;
        if (rep) {
            u += (size_t)snprintf(cmd + u, n - u, "%s", rep);
            p += 3;
        } else cmd[u++] = *p++;
    }
    cmd[u] = 0;
}

/* Nothing whose name carries ".tmp" below dir (files and folders, any depth). */
static int no_tmp_below(const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "find '%s' -name '*.tmp*' | grep . >&2", dir);
    return system(cmd) != 0;
}

/* Writes of every output kind fail as on a full disk, two ways: KDSEG_FAULT=full:N
 * (always: the N-th output file goes to /dev/full, real ENOSPC through zlib and stdio),
 * and a full tmpfs (root only; else that half is skipped with a note). Each: exit 1,
 * the message names the file and "No space left on device", nothing under the final
 * name, no temporary file or folder left. In the asan stage the kdseg under test is the
 * AddressSanitizer build.
 * Catches: gzerror's string read after gzclose freed it (finding 4: garbage in the
 * message, heap-use-after-free under ASan), write errors ignored (exit 0, a missing or
 * truncated file), reasons lost ("write failed" alone), half-written outputs. */
static int write_errors(void) {
    if (phantom(tmp("d"), 2, 0, 36) || phantom(tmp("unl"), 1, 1, 37) || save_model(TINY, 1, tmp("m.kds")) ||
        save_model("unet3d:widths=8,16", 2, tmp("t2.kds")))
        return 1;
    KD_CHECK(kdseg_log(tmp("pred.txt"), "segment --checkpoint %s --dataset %s --out %s", tmp("m.kds"), tmp("d"),
                       tmp("pred")) == 0, "predictions");
    int failed = 0;
    for (int way = 0; way < 2; way++) {
        char out[1024];
        if (way == 1) {
            int r = mount_small("full", "1M");
            if (r == KD_TEST_SKIP) break;
            KD_CHECK(r == 0, "mount");
        }
        for (size_t i = 0; i < sizeof write_rows / sizeof write_rows[0]; i++) {
            const write_row *w = &write_rows[i];
            if (way == 1 && w->leave < 0) continue;
            snprintf(out, sizeof out, "%s/o%d-%zu", way ? tmp("full") : tmp("inj"), way, i);
            KD_CHECK(mkdirs(out) == 0, "mkdir %s", out);
            if (way == 1) /* a fresh empty folder on a disk with (almost) no room left */
                KD_CHECK(fill(tmp("full"), w->leave) == 0, "fill");
            char cmd[4096];
            expand_w(w->cmd, out, cmd, sizeof cmd);
            if (way == 0) setenv("KDSEG_FAULT", w->fault, 1);
            int code = kdseg_log(tmp("log.txt"), "%s", cmd);
            unsetenv("KDSEG_FAULT");
            char gone[2048] = "";
            if (w->gone) snprintf(gone, sizeof gone, "%s/%s", out, w->gone);
            int ok = code == 1 && file_has(tmp("log.txt"), w->frag) &&
                     file_has(tmp("log.txt"), "No space left on device") && !(w->gone && exists(gone)) &&
                     no_tmp_below(out);
            printf("%s %s %s: exit %d\n", ok ? "ok  " : "FAIL", way ? "full tmpfs" : w->fault, cmd, code);
            if (!ok) {
                show(tmp("log.txt"));
                fprintf(stderr, "expected exit 1, '%s: No space left on device'%s%s\n", w->frag,
                        w->gone && exists(gone) ? ", and this should not exist: " : "", w->gone && exists(gone) ? gone : "");
                failed++;
            }
            KD_CHECK(code < 128, "kdseg crashed (status %d): %s", code, cmd);
            if (way == 1) { /* room again for the next row's folder */
                char rm[2048];
                snprintf(rm, sizeof rm, "rm -rf '%s'/filler* '%s'", tmp("full"), out);
                KD_CHECK(system(rm) == 0, "clean");
            }
        }
        if (way == 1) {
            /* the library's writers called directly, on the full disk */
            KD_CHECK(fill(tmp("full"), 0) == 0, "fill");
            char p[2048];
            char name[] = "x";
            kd_named_tensor t = {name, 1, {1 << 18}, 1 << 18, NULL};
            t.data = calloc(1 << 18, sizeof(float));
            snprintf(p, sizeof p, "%s/t.kdt", tmp("full"));
            kd_status s = kd_tensorfile_write(p, &t, 1);
            free(t.data);
            KD_CHECK(s == KD_ERR_IO && strstr(kd_last_error(), "No space left on device") && !exists(p),
                     "kd_tensorfile_write on a full disk: %s", kd_last_error());
            KD_CHECK(no_tmp_below(tmp("full")), "temporary files left by the library's writers");
        }
    }
    KD_CHECK(failed == 0, "%d write-error rows failed", failed);
    return 0;
}

/* ---------------------------------------------------- dataset discovery -- */

/* Finding 5. A cohort of 3 cases with a self-loop (HGG -> .) and a parent loop (again ->
 * ../d): each case found once (the library: 3 cases; train: "3 labeled cases (1 held
 * out)"; segment: 3 cases, 3 files), the loops skipped with a note. And the held-out
 * case reached through links from the unlabeled pool of distill (its images linked into
 * U/KDPhantom_002/) is refused when the split is made.
 * Catches: case discovery by path instead of real path (on main 9 cases: the validation
 * case trained on, each output written three times), a validation case that is also a
 * training case. */
static int symlinked_dataset(void) {
    const char *d = tmp("d");
    if (phantom(d, 3, 0, 38) || phantom(tmp("u"), 1, 1, 39) || save_model(TINY, 1, tmp("m.kds"))) return 1;
    KD_CHECK(symlink(".", tmp("d/HGG")) == 0 && symlink("../d", tmp("d/again")) == 0, "links");
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(d, NULL, &ds));
    int n = kd_dataset_count(ds);
    kd_dataset_free(ds);
    KD_CHECK(n == 3, "the library found %d cases, not 3", n);
    int code = kdseg_log(tmp("train.txt"), "train --dataset %s --out %s --steps 1 --val-every 0 --arch " TINY
                         " --patch 16 --margin 4", d, tmp("o"));
    if (code || !file_has(tmp("train.txt"), "3 labeled cases (1 held out)")) show(tmp("train.txt"));
    KD_CHECK(code == 0 && file_has(tmp("train.txt"), "3 labeled cases (1 held out)"), "train: exit %d", code);
    KD_CHECK(file_has(tmp("train.txt"), "not scanned twice"), "no note on the skipped loops");
    code = kdseg_log(tmp("seg.txt"), "segment --checkpoint %s --dataset %s --out %s", tmp("m.kds"), d, tmp("s"));
    if (code || !file_has(tmp("seg.txt"), "segmenting 3 cases")) show(tmp("seg.txt"));
    KD_CHECK(code == 0 && file_has(tmp("seg.txt"), "segmenting 3 cases"), "segment: exit %d", code);
    KD_CHECK(entries(tmp("s")) == 4, "%d entries in the output (3 cases and the lock file)", entries(tmp("s")));
    /* the validation case (the last labeled one, KDPhantom_002) linked into the pool */
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/KDPhantom_002", tmp("u"));
    KD_CHECK(mkdir(dir, 0755) == 0, "mkdir");
    static const char *const mods[] = {"t1", "t1ce", "t2", "flair"};
    for (int m = 0; m < 4; m++) {
        char from[2048], to[2048];
        snprintf(from, sizeof from, "%s/KDPhantom_002/KDPhantom_002_%s.nii.gz", d, mods[m]);
        snprintf(to, sizeof to, "%s/KDPhantom_002_%s.nii.gz", dir, mods[m]);
        KD_CHECK(symlink(from, to) == 0, "link %s", to);
    }
    code = kdseg_log(tmp("distill.txt"), "distill --online --teacher %s --dataset %s --unlabeled %s --out %s "
                     "--steps 1 --val-every 0 " TRAIN_OPTS, tmp("m.kds"), d, tmp("u"), tmp("o2"));
    if (code != 2) show(tmp("distill.txt"));
    KD_CHECK(code == 2 && file_has(tmp("distill.txt"), "validation case KDPhantom_002") &&
             file_has(tmp("distill.txt"), "is also a unlabeled training case"),
             "distill with the validation case in its pool: exit %d", code);
    KD_CHECK(!exists(tmp("o2/last.kds")), "a checkpoint was written");
    return 0;
}

/* ------------------------------------------------------------- phantoms -- */

/* Complete case folders (KDPhantom_NNN) directly in dir. */
static int case_folders(const char *dir) {
    DIR *dp = opendir(dir);
    int n = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) n += !strncmp(e->d_name, "KDPhantom_", 10) && !strstr(e->d_name, ".tmp");
    if (dp) closedir(dp);
    return n;
}

/* The partial cohort folder (phantom.tmp-PID-N) in out, in name[n]; 0 when none. */
static int partial_cohort(const char *out, char *name, size_t n) {
    DIR *dp = opendir(out);
    int found = 0;
    for (struct dirent *e; dp && (e = readdir(dp));)
        if (!strncmp(e->d_name, "phantom.tmp-", 12)) {
            snprintf(name, n, "%s", e->d_name);
            found = 1;
        }
    if (dp) closedir(dp);
    return found;
}

/* Finding 6 (first item). `kdseg train --synthetic` killed while it generates its phantom
 * cohort leaves no cohort under OUT/phantom (only a temporary folder); the rerun, once
 * that folder is stale, removes it, generates the whole cohort and trains. A cohort with
 * a file missing, or of another size or count than asked for, is refused by name.
 * Catches: cohorts written in place (on main a kill leaves OUT/phantom partial and the
 * rerun fails on a missing file or trains on fewer cases without saying so). */
static int phantom_atomic(void) {
    char out[1024], ph[1024], name[256] = "";
    snprintf(out, sizeof out, "%s", tmp("o"));
    snprintf(ph, sizeof ph, "%s", tmp("o/phantom"));
    const char *opts = "--synthetic --cases 8 --size 96 --steps 1 --val-every 0 " TRAIN_OPTS;
    pid_t pid = spawn(tmp("a.txt"), "train --out %s %s", out, opts);
    /* kill once a case is finished and before all are */
    double t0 = now_s();
    int done = 0;
    while (now_s() - t0 < 60 && waitpid(pid, NULL, WNOHANG) == 0) {
        char p[2048];
        done = case_folders(ph);
        if (partial_cohort(out, name, sizeof name)) {
            snprintf(p, sizeof p, "%s/%s", out, name);
            done += case_folders(p);
        }
        if (done >= 1) break;
        sleep_s(0.005);
    }
    kill(pid, SIGKILL);
    int code = wait_for(pid);
    KD_CHECK(code == 128 + SIGKILL && done >= 1 && done < 8,
             "the kill missed the generation (exit %d, %d cases done)", code, done);
    KD_CHECK(!exists(ph), "a kill during generation left a partial cohort at %s (%d cases)", ph, case_folders(ph));
    KD_CHECK(partial_cohort(out, name, sizeof name), "no temporary cohort folder");
    printf("killed with %d of 8 cases written, in %s\n", done, name);
    KD_CHECK(backdate(out, name, KD_TMP_STALE_SECONDS + 60) == 0, "age");
    code = kdseg_log(tmp("b.txt"), "train --out %s %s", out, opts);
    if (code) show(tmp("b.txt"));
    KD_CHECK(code == 0, "the rerun exited %d", code);
    kd_phantom_opts po;
    memset(&po, 0, sizeof po);
    po.cases = 8;
    po.size[0] = po.size[1] = po.size[2] = 96;
    po.seed = 1;
    po.layout = KD_LAYOUT_BRATS2018;
    KD_CHECK_OK(kd_phantom_check_cohort(ph, &po));
    KD_CHECK(!partial_cohort(out, name, sizeof name), "the stale temporary cohort %s was not removed", name);
    /* a cohort with a file missing, and one asked for with another count (--overwrite:
     * OUT holds the rerun's checkpoints) */
    KD_CHECK(remove(tmp("o/phantom/KDPhantom_003/KDPhantom_003_t2.nii.gz")) == 0, "remove");
    code = kdseg_log(tmp("c.txt"), "train --out %s --overwrite %s", out, opts);
    if (code != 1) show(tmp("c.txt"));
    KD_CHECK(code == 1 && file_has(tmp("c.txt"), "not a complete phantom cohort of 8 cases") &&
             file_has(tmp("c.txt"), "KDPhantom_003_t2.nii.gz is missing"), "a cohort with a file missing: exit %d", code);
    KD_CHECK(phantom(tmp("x6/phantom"), 6, 0, 1) == 0, "a 6-case cohort");
    code = kdseg_log(tmp("e.txt"), "train --out %s --synthetic --cases 4 --size 32 --steps 1 --val-every 0 " TRAIN_OPTS,
                     tmp("x6"));
    if (code != 1) show(tmp("e.txt"));
    KD_CHECK(code == 1 && file_has(tmp("e.txt"), "holds 6 cases, not the 4 asked for"), "6 cases for 4: exit %d", code);
    return 0;
}

/* ------------------------------------------------------ item 6, small ones -- */

/* A 1x1x1 volume: written by kd_nifti_write it reads back as a 3-D volume (its header
 * kept 3-D, not 1-D), and segment refuses a 1x1x1 case (no contrast to segment) instead
 * of labelling its voxel tumour.
 * Catches: libnifti's dimension trimming in the writer (on main the output header is 1-D
 * and unreadable), a model's guess on an all-zero input passed off as a segmentation. */
static int tiny_volume(void) {
    if (save_model(TINY, 1, tmp("m.kds"))) return 1;
    KD_CHECK(mkdirs(tmp("d/C")) == 0, "mkdir");
    kd_volume *g;
    double sp[3] = {1, 1, 1};
    KD_CHECK_OK(kd_volume_create_geometry(1, 1, 1, sp, NULL, &g));
    float v = 100;
    static const char *const mods[] = {"t1", "t1ce", "t2", "flair"};
    for (int m = 0; m < 4; m++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/C_%s.nii.gz", tmp("d/C"), mods[m]);
        KD_CHECK_OK(kd_nifti_write(p, g, 1, KD_DT_FLOAT32, &v, NULL));
    }
    kd_volume_free(g);
    kd_volume *r = NULL;
    kd_status s = kd_nifti_read(tmp("d/C/C_t1.nii.gz"), &r);
    KD_CHECK(s == KD_OK, "a written 1x1x1 volume does not read back: %s", kd_last_error());
    KD_CHECK(r->info.ndim == 3 && r->nx == 1 && r->ny == 1 && r->nz == 1 && r->data[0] == 100,
             "read back as %d-D %dx%dx%d", r->info.ndim, r->nx, r->ny, r->nz);
    kd_volume_free(r);
    int code = kdseg_log(tmp("log.txt"), "segment --checkpoint %s --case %s --out %s", tmp("m.kds"), tmp("d/C"), tmp("s"));
    if (code != 1) show(tmp("log.txt"));
    KD_CHECK(code == 1 && file_has(tmp("log.txt"), "no image contrast to segment"), "segment of 1x1x1: exit %d", code);
    KD_CHECK(!exists(tmp("s/C.nii.gz")), "a label map was written");
    return 0;
}

/* Before any validation the summary says so instead of "best validation Dice -1.0000".
 * Catches: the "no score yet" sentinel printed as a score. */
static int best_dice_none(void) {
    if (phantom(tmp("d"), 3, 0, 40)) return 1;
    int code = kdseg_log(tmp("log.txt"), "train --dataset %s --out %s --steps 2 --val-every 0 --arch " TINY
                         " --patch 16 --margin 4", tmp("d"), tmp("o"));
    if (code || file_has(tmp("log.txt"), "-1.0000")) show(tmp("log.txt"));
    KD_CHECK(code == 0, "train exited %d", code);
    KD_CHECK(file_has(tmp("log.txt"), "best validation Dice none (no validation yet)") &&
             !file_has(tmp("log.txt"), "-1.0000"), "the summary");
    return 0;
}

/* ----------------------------------------------------------------- main -- */

static const bad_row *g_row;
static int run_selected_row(void) { return run_bad_row(g_row); }

/* With no argument, every bad-input row runs in a child process of its own (each needs a
 * fresh temporary folder), then the other cases. */
static int all_rows(const char *self) {
    int failed = 0;
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "'%s' 'bad/%s'", self, bad_rows[i].name);
        failed += system(cmd) != 0;
    }
    return failed;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strncmp(argv[1], "bad/", 4)) {
        for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++)
            if (!strcmp(argv[1] + 4, bad_rows[i].name)) {
                g_row = &bad_rows[i];
                const kd_test_case one[] = {{argv[1], run_selected_row}};
                return kd_test_main(argc, argv, one, 1);
            }
        fprintf(stderr, "no bad-input row named '%s'\n", argv[1] + 4);
        return 1;
    }
    static const kd_test_case cases[] = {
        {"patch_larger_than_volume", patch_larger_than_volume},
        {"kill_train", kill_train},
        {"kill_annotate", kill_annotate},
        {"annotate_stale_rows", annotate_stale_rows},
        {"sigint_train", sigint_train},
        {"disk_full", disk_full},
        {"output_read_only", output_read_only},
        {"device_faults", device_faults},
        {"stale_temps", stale_temps},
        {"determinism", determinism},
        {"long_paths", long_paths},
        {"concurrent_train", concurrent_train},
        {"concurrent_annotate", concurrent_annotate},
        {"lock_each_command", lock_each_command},
        {"write_errors", write_errors},
        {"symlinked_dataset", symlinked_dataset},
        {"phantom_atomic", phantom_atomic},
        {"tiny_volume", tiny_volume},
        {"best_dice_none", best_dice_none},
    };
    int failed = argc > 1 ? 0 : all_rows(argv[0]);
    int r = kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    return failed ? 1 : r;
}
