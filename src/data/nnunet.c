/* nnU-Net v2 raw datasets: dataset.json (channel_names -> modalities, labels -> BraTS
 * regions), the case files CASE_XXXX.nii.gz, and the dataset.json kdseg writes for
 * the MSD and nnU-Net layouts. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "dataset_internal.h"
#include "json_internal.h"

#define NN_MAX_CH 16     /* channels per case */
#define NN_MAX_VALUES 64 /* values of one region */

/* ------------------------------------------------------------ names ---- */

int kd_nnunet_parse_name(const char *file, char *case_name, size_t n, int *channel) {
    char stem[1024];
    if (strlen(file) >= sizeof stem) return -1;
    snprintf(stem, sizeof stem, "%s", file);
    if (!kd_ds_strip_nifti_ext(stem)) return -1;
    size_t len = strlen(stem);
    if (len < 6 || stem[len - 5] != '_') return 0;
    for (size_t k = len - 4; k < len; k++)
        if (!isdigit((unsigned char)stem[k])) return 0;
    if (len - 5 >= n) return 0;
    *channel = atoi(stem + len - 4);
    memcpy(case_name, stem, len - 5);
    case_name[len - 5] = 0;
    return 1;
}

/* Lower-case letters and digits of s only ("Tumor Core" -> "tumorcore"). */
static void normalise(const char *s, char *out, size_t n) {
    size_t k = 0;
    for (; *s && k + 1 < n; s++)
        if (isalnum((unsigned char)*s)) out[k++] = (char)tolower((unsigned char)*s);
    out[k] = 0;
}

/* The BraTS class of a plain label name: its region bits (edema 1, core 3, enhancing 7),
 * 0 background, -1 none. */
static int class_of(const char *name) {
    char k[128];
    normalise(name, k, sizeof k);
    if (!strcmp(k, "background") || !strcmp(k, "bg")) return 0;
    /* edema first: BraTS 2023's SNFH is the "surrounding non-enhancing FLAIR
     * hyperintensity", not the non-enhancing core */
    if (strstr(k, "edema") || strstr(k, "oedema") || strstr(k, "snfh") || strstr(k, "hyperintens") ||
        !strcmp(k, "ed"))
        return 1;
    if (strstr(k, "nonenhanc") || strstr(k, "notenhanc") || strstr(k, "necro") || strstr(k, "ncr") ||
        strstr(k, "netc") || !strcmp(k, "net") || strstr(k, "core"))
        return 3;
    if (strstr(k, "enhanc") || !strcmp(k, "et")) return 7;
    return -1;
}

/* The region bit of a region-based label name (WT 1, TC 2, ET 4), 0 background, -1 none. */
static int region_of(const char *name) {
    char k[128];
    normalise(name, k, sizeof k);
    if (!strcmp(k, "background") || !strcmp(k, "bg")) return 0;
    if (strstr(k, "whole") || !strcmp(k, "wt") || strstr(k, "complete")) return 1;
    if (strstr(k, "core") || !strcmp(k, "tc")) return 2;
    if ((strstr(k, "enhanc") && !strstr(k, "nonenhanc")) || !strcmp(k, "et")) return 4;
    return -1;
}

/* ------------------------------------------------------- dataset.json ---- */

typedef struct nn_label {
    const char *name;
    int values[NN_MAX_VALUES];
    int nv;
    int list; /* given as a list (region-based) */
} nn_label;

static const char *const region_names[] = {"", "whole tumour", "tumour core", "", "enhancing tumour"};

/* The labels of a dataset.json (v2 "name": value or [values]; v1/Decathlon "value":
 * "name") as entries; *n of at most cap. */
static kd_status read_label_entries(const char *path, const kd_json *labels, nn_label *e, int cap, int *n) {
    *n = 0;
    if (!labels || labels->type != KD_JSON_OBJECT || labels->n == 0)
        return kd_fail(KD_ERR_FORMAT, "%s: no \"labels\" object (name: value, e.g. \"background\": 0)", path);
    if (labels->n > cap) return kd_fail(KD_ERR_FORMAT, "%s: %d labels; at most %d", path, labels->n, cap);
    /* v1 and the Decathlon: {"0": "background", "1": "edema", ...} */
    int v1 = 1;
    for (int i = 0; i < labels->n && v1; i++) {
        char *end;
        strtol(labels->keys[i], &end, 10);
        v1 = *labels->keys[i] && !*end && labels->items[i].type == KD_JSON_STRING;
    }
    for (int i = 0; i < labels->n; i++) {
        nn_label *l = &e[(*n)++];
        memset(l, 0, sizeof *l);
        const kd_json *v = &labels->items[i];
        long x;
        if (v1) {
            l->name = v->string;
            l->values[l->nv++] = atoi(labels->keys[i]);
            if (l->values[0] < 0 || l->values[0] > 255)
                return kd_fail(KD_ERR_FORMAT, "%s: label value %s is outside 0..255", path, labels->keys[i]);
            continue;
        }
        l->name = labels->keys[i];
        if (v->type == KD_JSON_ARRAY) {
            l->list = 1;
            if (v->n == 0 || v->n > NN_MAX_VALUES)
                return kd_fail(KD_ERR_FORMAT, "%s: label \"%s\" has %d values (1 to %d)", path, l->name, v->n,
                               NN_MAX_VALUES);
            for (int k = 0; k < v->n; k++) {
                if (!kd_json_int(&v->items[k], 0, 255, &x)) {
                    char b[64];
                    kd_json_brief(&v->items[k], b, sizeof b);
                    return kd_fail(KD_ERR_FORMAT, "%s: label \"%s\": value %s is not an integer in 0..255",
                                   path, l->name, b);
                }
                l->values[l->nv++] = (int)x;
            }
        } else if (kd_json_int(v, 0, 255, &x)) {
            l->values[l->nv++] = (int)x;
        } else {
            char b[64];
            kd_json_brief(v, b, sizeof b);
            return kd_fail(KD_ERR_FORMAT, "%s: label \"%s\": %s is neither an integer in 0..255 nor a "
                           "list of them", path, l->name, b);
        }
    }
    return KD_OK;
}

/* The value written for the nested regions `bits`: the smallest one that reads back as
 * them. */
static int value_for(const kd_label_table *t, int bits) {
    for (int v = 0; v < 256; v++)
        if (t->regions[v] == bits) return v;
    return -1;
}

static kd_status plain_labels(const char *path, const nn_label *e, int n, kd_label_table *t) {
    for (int i = 0; i < n; i++) {
        int c = class_of(e[i].name), v = e[i].values[0];
        if (c < 0)
            return kd_fail(KD_ERR_FORMAT, "%s: label \"%s\" (value %d) is not a BraTS tumour class: "
                           "expected background, edema (or SNFH), necrotic/non-enhancing core (or "
                           "NETC) and enhancing tumour, or region-based whole tumour, tumour core "
                           "and enhancing tumour", path, e[i].name, v);
        if ((c == 0) != (v == 0))
            return kd_fail(KD_ERR_FORMAT, "%s: label \"%s\" has value %d: 0 is the background and only "
                           "the background", path, e[i].name, v);
        if (t->regions[v] >= 0 && t->regions[v] != c)
            return kd_fail(KD_ERR_FORMAT, "%s: value %d is given to two different classes (\"%s\" "
                           "and another)", path, v, e[i].name);
        t->regions[v] = (int8_t)c;
    }
    return KD_OK;
}

static kd_status region_labels(const char *path, const nn_label *e, int n, const kd_json *order,
                               kd_label_table *t) {
    int seen = 0, idx[5] = {-1, -1, -1, -1, -1}, nreg = 0, reg_of[64];
    for (int i = 0; i < n; i++) {
        int r = region_of(e[i].name);
        reg_of[i] = r;
        if (r < 0)
            return kd_fail(KD_ERR_FORMAT, "%s: region \"%s\" is not a BraTS region (whole tumour, "
                           "tumour core, enhancing tumour)", path, e[i].name);
        if (r == 0) {
            if (e[i].nv != 1 || e[i].values[0] != 0)
                return kd_fail(KD_ERR_FORMAT, "%s: the background must be value 0", path);
            continue;
        }
        if (seen & r)
            return kd_fail(KD_ERR_FORMAT, "%s: two labels name the %s (\"%s\" and \"%s\")", path,
                           region_names[r], e[idx[r]].name, e[i].name);
        seen |= r;
        idx[r] = i;
        nreg++;
        for (int k = 0; k < e[i].nv; k++) {
            int v = e[i].values[k];
            if (v == 0)
                return kd_fail(KD_ERR_FORMAT, "%s: region \"%s\" holds value 0, the background", path,
                               e[i].name);
            t->regions[v] = (int8_t)((t->regions[v] < 0 ? 0 : t->regions[v]) | r);
        }
    }
    for (int r = 1; r <= 4; r <<= 1)
        if (!(seen & r))
            return kd_fail(KD_ERR_FORMAT, "%s: the region-based labels name no %s (expected whole "
                           "tumour, tumour core and enhancing tumour)", path, region_names[r]);
    for (int v = 1; v < 256; v++) {
        int b = t->regions[v];
        if (b >= 0 && b != 1 && b != 3 && b != 7)
            return kd_fail(KD_ERR_FORMAT, "%s: value %d is in %s%s%s but the BraTS regions nest (the "
                           "enhancing tumour inside the tumour core inside the whole tumour)", path, v,
                           b & 1 ? "WT " : "", b & 2 ? "TC " : "", b & 4 ? "ET" : "");
    }
    if (!order) return KD_OK;
    /* nnU-Net writes region i's value regions_class_order[i] where region i is found, in
     * order: a voxel gets the value of the last of its regions */
    if (order->type != KD_JSON_ARRAY || order->n != nreg)
        return kd_fail(KD_ERR_FORMAT, "%s: regions_class_order must list one value per region (%d)",
                       path, nreg);
    const int nested[3] = {1, 3, 7};
    uint8_t *dst[3] = {&t->edema, &t->core, &t->enhancing};
    for (int k = 0; k < 3; k++) {
        long val = -1, x;
        int j = 0;
        for (int i = 0; i < n; i++) {
            if (reg_of[i] == 0) continue;
            if (!kd_json_int(&order->items[j], 1, 255, &x))
                return kd_fail(KD_ERR_FORMAT, "%s: regions_class_order entry %d is not a label value "
                               "in 1..255", path, j);
            if (reg_of[i] & nested[k]) val = x;
            j++;
        }
        if (val < 0 || t->regions[val] != nested[k])
            return kd_fail(KD_ERR_FORMAT, "%s: regions_class_order writes %ld where the regions are "
                           "%s, which its labels read back otherwise", path, val,
                           k == 0 ? "WT" : k == 1 ? "WT+TC" : "WT+TC+ET");
        *dst[k] = (uint8_t)val;
    }
    return KD_OK;
}

/* The label table of a parsed dataset.json. */
static kd_status labels_from_json(const char *path, const kd_json *root, kd_label_table *t) {
    nn_label e[64];
    int n;
    kd_status s = read_label_entries(path, kd_json_get(root, "labels"), e, 64, &n);
    if (s) return s;
    for (int v = 0; v < 256; v++)
        t->regions[v] = -1;
    t->regions[0] = 0;
    const kd_json *order = kd_json_get(root, "regions_class_order");
    int regions = order != NULL;
    for (int i = 0; i < n; i++)
        regions |= e[i].list;
    s = regions ? region_labels(path, e, n, order, t) : plain_labels(path, e, n, t);
    if (s) return s;
    if (regions && order) return KD_OK;
    const char *what[3] = {"edema (the whole tumour alone)", "tumour core without enhancement",
                           "enhancing tumour"};
    const int nested[3] = {1, 3, 7};
    uint8_t *dst[3] = {&t->edema, &t->core, &t->enhancing};
    for (int k = 0; k < 3; k++) {
        int v = value_for(t, nested[k]);
        if (v < 0)
            return kd_fail(KD_ERR_FORMAT, "%s: its labels have no value for %s; a BraTS dataset has "
                           "edema, a non-enhancing or necrotic core and enhancing tumour", path, what[k]);
        *dst[k] = (uint8_t)v;
    }
    return KD_OK;
}

kd_status kd_nnunet_labels_parse(const char *text, size_t len, kd_label_table *t) {
    kd_json *root = NULL;
    kd_status s = kd_json_parse(text, len, "dataset.json", &root);
    if (!s && root->type != KD_JSON_OBJECT) s = kd_fail(KD_ERR_FORMAT, "dataset.json: not a JSON object");
    if (!s) s = labels_from_json("dataset.json", root, t);
    kd_json_free(root);
    return s;
}

kd_status kd_nnunet_find_labels(const char *dir, kd_label_table *t, int *found) {
    *found = 0;
    static const char *const where[] = {"dataset.json", "../dataset.json"};
    for (int k = 0; k < 2; k++) {
        char path[KD_PATH_MAX];
        kd_status s = kd_path_join(path, sizeof path, dir, where[k]);
        if (s) return s;
        if (!kd_data_is_file(path)) continue;
        kd_json *root = NULL;
        if ((s = kd_json_read(path, &root))) return s;
        if (root->type == KD_JSON_OBJECT && kd_json_get(root, "channel_names")) {
            *found = 1;
            s = labels_from_json(path, root, t);
        }
        kd_json_free(root);
        if (s || *found) return s;
    }
    return KD_OK;
}

/* What a dataset.json (or --channels) says about the files. */
typedef struct nn_desc {
    int nch;             /* channels per case (files _0000 .. _nch-1); 0: unknown */
    int mod[NN_MAX_CH];  /* modality of each channel, -1 none of the four */
    char name[NN_MAX_CH][48];
    char json[KD_PATH_MAX]; /* "" without one */
    long num_training;      /* -1 absent */
} nn_desc;

static void channels_text(const nn_desc *d, char *buf, size_t n) {
    size_t len = 0;
    snprintf(buf, n, "{");
    for (int k = 0; k < d->nch && (len = strlen(buf)) + 4 < n; k++)
        snprintf(buf + len, n - len, "%s%d: %s", k ? ", " : "", k, d->name[k]);
    len = strlen(buf);
    snprintf(buf + len, n - len, "}");
}

static kd_status channels_from_json(const char *path, const kd_json *root, nn_desc *d) {
    const kd_json *c = kd_json_get(root, "channel_names");
    if (!c) c = kd_json_get(root, "modality"); /* nnU-Net v1 */
    if (!c || c->type != KD_JSON_OBJECT || c->n == 0)
        return kd_fail(KD_ERR_FORMAT, "%s: no \"channel_names\" object (e.g. {\"0\": \"T1\", \"1\": "
                       "\"T1ce\", \"2\": \"T2\", \"3\": \"FLAIR\"})", path);
    if (c->n > NN_MAX_CH) return kd_fail(KD_ERR_FORMAT, "%s: %d channels; at most %d", path, c->n, NN_MAX_CH);
    d->nch = c->n;
    int have[NN_MAX_CH] = {0};
    for (int i = 0; i < c->n; i++) {
        char *end;
        long k = strtol(c->keys[i], &end, 10);
        if (!*c->keys[i] || *end || k < 0 || k >= c->n || have[k])
            return kd_fail(KD_ERR_FORMAT, "%s: channel_names key \"%s\": expected the channel numbers "
                           "0 to %d, each once", path, c->keys[i], c->n - 1);
        if (c->items[i].type != KD_JSON_STRING)
            return kd_fail(KD_ERR_FORMAT, "%s: channel_names \"%s\" is not a name", path, c->keys[i]);
        have[k] = 1;
        snprintf(d->name[k], sizeof d->name[k], "%s", c->items[i].string);
        d->mod[k] = kd_modality_parse(c->items[i].string);
    }
    long x;
    if (kd_json_int(kd_json_get(root, "numTraining"), 0, 100000000, &x)) d->num_training = x;
    return KD_OK;
}

/* Fills d and ds->labels from a dataset.json (json may be "" for none) and --channels. */
static kd_status describe(kd_dataset *ds, const char *json, nn_desc *d) {
    memset(d, 0, sizeof *d);
    d->num_training = -1;
    kd_status s = KD_OK;
    if (*json) {
        snprintf(d->json, sizeof d->json, "%s", json);
        kd_json *root = NULL;
        s = kd_json_read(json, &root);
        if (!s && root->type != KD_JSON_OBJECT) s = kd_fail(KD_ERR_FORMAT, "%s: not a JSON object", json);
        if (!s) s = channels_from_json(json, root, d);
        if (!s) s = labels_from_json(json, root, &ds->labels);
        const kd_json *fe = root ? kd_json_get(root, "file_ending") : NULL;
        if (!s && fe && fe->type == KD_JSON_STRING && strcmp(fe->string, ".nii.gz") && strcmp(fe->string, ".nii"))
            s = kd_fail(KD_ERR_UNSUPPORTED, "%s: file_ending \"%s\": kdseg reads NIfTI (.nii.gz, .nii) only",
                        json, fe->string);
        kd_json_free(root);
        if (s) return s;
        snprintf(ds->label_source, sizeof ds->label_source, "%s", json);
    } else {
        kd_label_table_of_layout(KD_LAYOUT_NNUNET, &ds->labels);
        snprintf(ds->label_source, sizeof ds->label_source,
                 "nnU-Net without dataset.json: 1 edema, 2 non-enhancing core, 3 enhancing");
    }
    if (!ds->channels) return KD_OK;
    /* --channels: the modality of each file channel */
    nn_desc given;
    memset(&given, 0, sizeof given);
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", ds->channels);
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (given.nch == NN_MAX_CH) return kd_fail(KD_ERR_INVALID_ARG, "--channels: at most %d", NN_MAX_CH);
        int m = strcmp(t, "-") ? kd_modality_parse(t) : -1;
        if (m < 0 && strcmp(t, "-"))
            return kd_fail(KD_ERR_INVALID_ARG, "--channels: unknown modality '%s' (t1, t1ce, t2, flair, "
                           "or - for a channel to leave out)", t);
        snprintf(given.name[given.nch], sizeof given.name[0], "%s", t);
        given.mod[given.nch++] = m;
    }
    if (!given.nch) return kd_fail(KD_ERR_INVALID_ARG, "--channels: empty list");
    if (d->nch) {
        int same = d->nch == given.nch;
        for (int k = 0; k < given.nch && same; k++) same = d->mod[k] == given.mod[k];
        if (!same) {
            char a[512], b[512];
            channels_text(d, a, sizeof a);
            channels_text(&given, b, sizeof b);
            return kd_fail(KD_ERR_INVALID_ARG, "--channels %s disagrees with %s's channel_names %s; "
                           "leave --channels out to use the dataset's", b, json, a);
        }
        return KD_OK;
    }
    d->nch = given.nch;
    memcpy(d->mod, given.mod, sizeof d->mod);
    memcpy(d->name, given.name, sizeof d->name);
    return KD_OK;
}

/* ---------------------------------------------------------- scanning ---- */

int kd_ds_one_volume(const char *path) {
    kd_volume *v = NULL;
    int one = kd_nifti_read_header(path, &v) == KD_OK && v->nt == 1;
    kd_volume_free(v);
    return one;
}

typedef struct nn_file {
    char *case_name, *file;
    int channel;
} nn_file;

static int cmp_file(const void *a, const void *b) {
    const nn_file *x = a, *y = b;
    int c = strcmp(x->case_name, y->case_name);
    return c ? c : x->channel - y->channel;
}

static void free_files(nn_file *f, int n) {
    for (int i = 0; i < n; i++) {
        free(f[i].case_name);
        free(f[i].file);
    }
    free(f);
}

/* The channel files of idir (only_case's, or all), sorted by case and channel. */
static kd_status list_files(const char *idir, const char *only, nn_file **out, int *nout) {
    char **names;
    int n;
    *out = NULL;
    *nout = 0;
    kd_status s = kd_ds_list_dir(idir, &names, &n);
    if (s) return s;
    nn_file *f = calloc((size_t)n + 1, sizeof *f);
    int k = 0;
    if (!f) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: %d files", idir, n);
    for (int i = 0; i < n && !s; i++) {
        char cname[1024];
        int ch, kind = kd_nnunet_parse_name(names[i], cname, sizeof cname, &ch);
        if (kind < 0) {
            kd_log(KD_LOG_DEBUG, "%s/%s: not a NIfTI file, left out", idir, names[i]);
            continue;
        }
        if (kind == 0) {
            s = kd_fail(KD_ERR_FORMAT, "%s/%s: not an nnU-Net image name: expected CASE_XXXX.nii.gz, "
                        "XXXX the channel number (a Decathlon 4-D image? then --layout msd)", idir, names[i]);
            break;
        }
        if (only && strcmp(cname, only)) continue;
        if (!(f[k].case_name = strdup(cname)) || !(f[k].file = strdup(names[i]))) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", idir);
            k++;
            break;
        }
        f[k++].channel = ch;
    }
    kd_ds_free_names(names, n);
    if (s) {
        free_files(f, k);
        return s;
    }
    if (k) qsort(f, (size_t)k, sizeof *f, cmp_file);
    *out = f;
    *nout = k;
    return KD_OK;
}

/* One case: files f[0..n) of one case name, sorted by channel. */
static kd_status add_nn_case(kd_dataset *ds, const nn_desc *d, const int *chan_of, const char *idir,
                             const char *ldir, int test, const nn_file *f, int n) {
    const char *name = f[0].case_name;
    for (int i = 0; i < n; i++) {
        if (f[i].channel >= d->nch) {
            char a[512];
            channels_text(d, a, sizeof a);
            return kd_fail(KD_ERR_FORMAT, "%s/%s: channel %d, but %s names %d channel%s %s", idir, f[i].file,
                           f[i].channel, *d->json ? d->json : "--channels", d->nch, d->nch == 1 ? "" : "s", a);
        }
        if (i > 0 && f[i].channel == f[i - 1].channel)
            return kd_fail(KD_ERR_FORMAT, "two files for one image: %s/%s and %s/%s; remove or rename one",
                           idir, f[i - 1].file, idir, f[i].file);
    }
    for (int ch = 0, i = 0; ch < d->nch; ch++) {
        if (i < n && f[i].channel == ch) {
            i++;
            continue;
        }
        return kd_fail(KD_ERR_FORMAT, "case %s: no %s_%04d.nii.gz (channel %d, %s) in %s; every case needs "
                       "all %d channels", name, name, ch, ch, d->name[ch], idir, d->nch);
    }
    kd_ds_case c;
    memset(&c, 0, sizeof c);
    c.test = test;
    kd_status s = KD_OK;
    if (!(c.name = strdup(name))) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
    char path[KD_PATH_MAX];
    for (int ch = 0; ch < ds->nch && !s; ch++) {
        s = kd_path_join(path, sizeof path, idir, f[chan_of[ch]].file);
        if (!s && !(c.images[ch] = strdup(path))) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset case list");
    }
    return kd_ds_finish_case(ds, &c, s, ldir);
}

static int has_case(const nn_file *f, int n, const char *name) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2, c = strcmp(f[mid].case_name, name);
        if (!c) return 1;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* Every label file of ldir must belong to a case of f (nnU-Net refuses such a folder
 * too: a label without its images is a case lost on the way). */
static kd_status check_labels(const char *ldir, const char *idir, const nn_file *f, int n) {
    char **names;
    int k;
    kd_status s = kd_ds_list_dir(ldir, &names, &k);
    for (int i = 0; i < k && !s; i++) {
        char stem[1024];
        snprintf(stem, sizeof stem, "%s", names[i]);
        if (!kd_ds_strip_nifti_ext(stem) || has_case(f, n, stem)) continue;
        s = kd_fail(KD_ERR_FORMAT, "%s/%s: a label without images (no %s_0000.nii.gz in %s)", ldir,
                    names[i], stem, idir);
    }
    kd_ds_free_names(names, k);
    return s;
}

/* The cases of one images folder. Returns how many in *count. */
static kd_status scan_images(kd_dataset *ds, const nn_desc *d, const int *chan_of, const char *idir,
                             const char *ldir, int test, const char *only, int *count) {
    *count = 0;
    int first = kd_ds_first_scan(ds, idir);
    if (first <= 0) return first < 0 ? kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset") : KD_OK;
    nn_file *f;
    int n;
    kd_status s = list_files(idir, only, &f, &n);
    if (s) return s;
    int before = ds->n;
    for (int i = 0; i < n && !s;) {
        int j = i + 1;
        while (j < n && !strcmp(f[j].case_name, f[i].case_name)) j++;
        s = add_nn_case(ds, d, chan_of, idir, ldir, test, f + i, j - i);
        i = j;
    }
    if (!s && ldir && !only) s = check_labels(ldir, idir, f, n);
    free_files(f, n);
    *count = ds->n - before;
    return s;
}

/* The labels folder beside an images folder: imagesTr -> labelsTr, imagesTs -> labelsTs,
 * imagesX -> labelsX; "" when none exists. */
static kd_status labels_beside(const char *idir, char *out, size_t n) {
    char buf[KD_PATH_MAX];
    out[0] = 0;
    kd_status s = kd_path_printf(buf, sizeof buf, "%s", idir);
    if (s) return s;
    for (size_t len = strlen(buf); len > 1 && buf[len - 1] == '/';) buf[--len] = 0;
    char *slash = strrchr(buf, '/');
    const char *base = slash ? slash + 1 : buf;
    if (strncmp(base, "images", 6)) return KD_OK;
    if (slash) *slash = 0;
    s = kd_path_printf(out, n, "%s/labels%s", slash ? buf : ".", base + 6);
    if (!s && !kd_data_is_dir(out)) out[0] = 0;
    return s;
}

kd_status kd_nnunet_scan(kd_dataset *ds, const char *dir, int flat, const char *only) {
    char json[KD_PATH_MAX] = "", path[KD_PATH_MAX];
    kd_status s = kd_path_join(path, sizeof path, dir, "dataset.json");
    if (s) return s;
    if (kd_data_is_file(path)) snprintf(json, sizeof json, "%s", path);
    else if (flat) {
        if ((s = kd_path_join(path, sizeof path, dir, "../dataset.json"))) return s;
        if (kd_data_is_file(path)) snprintf(json, sizeof json, "%s", path);
    }
    nn_desc d;
    if ((s = describe(ds, json, &d))) return s;
    if (!d.nch)
        return kd_fail(KD_ERR_FORMAT, "%s: nnU-Net images (CASE_0000.nii.gz ...) but no dataset.json %s to "
                       "say which modality each channel is; give --channels (nnU-Net's BraTS 2021 "
                       "conversion: t1,t1ce,t2,flair; its Decathlon Task01: flair,t1,t1ce,t2)",
                       dir, flat ? "here or in the parent folder" : "in it");
    /* the file channel of each selected modality */
    int chan_of[KD_MAX_MODALITIES];
    for (int ch = 0; ch < ds->nch; ch++) {
        chan_of[ch] = -1;
        for (int k = 0; k < d.nch; k++) {
            if (d.mod[k] != ds->mod[ch]) continue;
            if (chan_of[ch] >= 0)
                return kd_fail(KD_ERR_FORMAT, "%s: channels %d (%s) and %d (%s) are both %s", *json ? json : "--channels",
                               chan_of[ch], d.name[chan_of[ch]], k, d.name[k], kd_modality_name(ds->mod[ch]));
            chan_of[ch] = k;
        }
        if (chan_of[ch] < 0) {
            char a[512];
            channels_text(&d, a, sizeof a);
            return kd_fail(KD_ERR_FORMAT, "%s: the channels %s include no %s image (kdseg reads t1, t1ce, "
                           "t2 and flair, or those --modalities names)", *json ? json : "--channels", a,
                           kd_modality_name(ds->mod[ch]));
        }
    }
    int count;
    if (flat) {
        char ldir[KD_PATH_MAX];
        if ((s = labels_beside(dir, ldir, sizeof ldir))) return s;
        s = scan_images(ds, &d, chan_of, dir, *ldir ? ldir : NULL, 0, only, &count);
        if (!s && only && count == 0) s = kd_fail(KD_ERR_IO, "%s: no nnU-Net case %s (%s_0000.nii.gz)", dir, only, only);
        return s;
    }
    static const char *const sub[2][2] = {{"imagesTr", "labelsTr"}, {"imagesTs", "labelsTs"}};
    for (int k = 0; k < 2 && !s; k++) {
        char idir[KD_PATH_MAX], ldir[KD_PATH_MAX];
        if ((s = kd_path_join(idir, sizeof idir, dir, sub[k][0])) || (s = kd_path_join(ldir, sizeof ldir, dir, sub[k][1])))
            break;
        if (!kd_data_is_dir(idir)) {
            if (kd_data_is_dir(ldir) && !only)
                s = kd_fail(KD_ERR_FORMAT, "%s: labels without images (no %s)", ldir, idir);
            continue;
        }
        s = scan_images(ds, &d, chan_of, idir, kd_data_is_dir(ldir) ? ldir : NULL, k, only, &count);
        if (!s && k == 0 && d.num_training >= 0 && count != d.num_training)
            kd_log(KD_LOG_WARN, "%s: numTraining is %ld but %s holds %d case%s", json, d.num_training, idir,
                   count, count == 1 ? "" : "s");
    }
    return s;
}

/* NIfTI files of a folder: how many carry a channel suffix (one of them in *with), how
 * many do not (one in *without). */
static kd_status count_names(const char *dir, int *nwith, int *nwithout, char *with, char *without, size_t n) {
    char **names;
    int k;
    *nwith = *nwithout = 0;
    if (!kd_data_is_dir(dir)) return KD_OK;
    kd_status s = kd_ds_list_dir(dir, &names, &k);
    if (s) return s;
    for (int i = 0; i < k; i++) {
        char cname[1024];
        int ch, kind = kd_nnunet_parse_name(names[i], cname, sizeof cname, &ch);
        if (kind < 0) continue;
        int *cnt = kind ? nwith : nwithout;
        if (!*cnt) kd_path_join(kind ? with : without, n, dir, names[i]);
        (*cnt)++;
    }
    kd_ds_free_names(names, k);
    return KD_OK;
}

static int json_has_channel_names(const char *path) {
    kd_json *root = NULL;
    if (!kd_data_is_file(path) || kd_json_read(path, &root)) return 0;
    int yes = kd_json_get(root, "channel_names") != NULL;
    kd_json_free(root);
    return yes;
}

kd_status kd_nnunet_detect(const char *dir, int *kind) {
    *kind = 0;
    char p[KD_PATH_MAX], with[KD_PATH_MAX] = "", without[KD_PATH_MAX] = "";
    int w = 0, wo = 0, root = 0;
    static const char *const sub[] = {"imagesTr", "imagesTs"};
    kd_status s = KD_OK;
    for (int k = 0; k < 2 && !s; k++) {
        int a, b;
        char wa[KD_PATH_MAX], wb[KD_PATH_MAX];
        if ((s = kd_path_join(p, sizeof p, dir, sub[k]))) return s;
        if (!kd_data_is_dir(p)) continue;
        root = 1;
        s = count_names(p, &a, &b, wa, wb, sizeof wa);
        if (a && !w) snprintf(with, sizeof with, "%s", wa);
        if (b && !wo) snprintf(without, sizeof without, "%s", wb);
        w += a;
        wo += b;
    }
    if (s) return s;
    if ((s = kd_path_join(p, sizeof p, dir, "dataset.json"))) return s;
    if (root) {
        if (json_has_channel_names(p)) *kind = 1;
        else if (w && wo)
            return kd_fail(KD_ERR_FORMAT, "%s: holds nnU-Net channel files (%s) and Decathlon 4-D images "
                           "(%s); keep one layout per dataset, or give --layout", dir, with, without);
        else if (w && kd_ds_one_volume(with))
            *kind = 1;
        return KD_OK;
    }
    if ((s = count_names(dir, &w, &wo, with, without, sizeof with))) return s;
    if (w && wo)
        return kd_fail(KD_ERR_FORMAT, "%s: holds nnU-Net channel files (%s) and other NIfTI files (%s); "
                       "an nnU-Net images folder holds CASE_XXXX.nii.gz files only", dir, with, without);
    if (w) *kind = 2;
    return KD_OK;
}

/* ------------------------------------------------------ writing json ---- */

static kd_status write_json(const char *dir, kd_layout l, const char *name, char *const *train,
                            const int *train_labeled, int ntrain, char *const *test, int ntest);

static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* The cases of dir/sub (MSD: NAME.nii.gz; nnU-Net: NAME_0000.nii.gz), sorted. */
static kd_status case_names(const char *dir, const char *sub, kd_layout l, char ***out, int *nout) {
    char p[KD_PATH_MAX];
    *out = NULL;
    *nout = 0;
    kd_status s = kd_path_join(p, sizeof p, dir, sub);
    if (s || !kd_data_is_dir(p)) return s;
    char **names;
    int n, k = 0;
    if ((s = kd_ds_list_dir(p, &names, &n))) return s;
    for (int i = 0; i < n; i++) {
        char cname[1024];
        int ch;
        if (l == KD_LAYOUT_NNUNET ? kd_nnunet_parse_name(names[i], cname, sizeof cname, &ch) != 1 || ch != 0
                                  : (snprintf(cname, sizeof cname, "%s", names[i]), !kd_ds_strip_nifti_ext(cname)))
            continue;
        snprintf(names[k], strlen(names[i]) + 1, "%s", cname); /* never longer */
        k++;
    }
    for (int i = k; i < n; i++) free(names[i]);
    *out = names;
    *nout = k;
    return KD_OK;
}

kd_status kd_layout_write_json(const char *dir, kd_layout l, const char *name) {
    if (l != KD_LAYOUT_MSD && l != KD_LAYOUT_NNUNET)
        return kd_fail(KD_ERR_INVALID_ARG, "dataset.json: layout %s has none", kd_layout_name(l));
    char **train = NULL, **test = NULL;
    int ntrain = 0, ntest = 0;
    kd_status s = case_names(dir, "imagesTr", l, &train, &ntrain);
    if (!s) s = case_names(dir, "imagesTs", l, &test, &ntest);
    int *train_labeled = s ? NULL : calloc((size_t)ntrain + 1, sizeof *train_labeled);
    if (!s && !train_labeled) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "dataset.json");
    for (int i = 0; i < ntrain && !s; i++) {
        char base[KD_PATH_MAX];
        if (!(s = kd_path_printf(base, sizeof base, "%s/labelsTr/%s", dir, train[i])))
            train_labeled[i] = kd_ds_has_nifti(base);
    }
    if (!s) s = write_json(dir, l, name, train, train_labeled, ntrain, test, ntest);
    kd_ds_free_names(train, ntrain);
    kd_ds_free_names(test, ntest);
    free(train_labeled);
    return s;
}

static kd_status write_json(const char *dir, kd_layout l, const char *name, char *const *train,
                            const int *train_labeled, int ntrain, char *const *test, int ntest) {
    char path[KD_PATH_MAX];
    kd_atomic_file a;
    kd_status s = kd_path_join(path, sizeof path, dir, "dataset.json");
    if (!s) s = kd_atomic_open(&a, path, "w");
    if (s) return s;
    FILE *f = a.f;
    int labeled = 0;
    for (int i = 0; i < ntrain; i++) labeled += train_labeled[i] != 0;
    fprintf(f, "{\n  \"name\": ");
    put_json_string(f, name);
    if (l == KD_LAYOUT_NNUNET) {
        /* as nnU-Net's own BraTS conversion (Dataset137_BraTS2021) writes it */
        fprintf(f, ",\n  \"description\": \"BraTS regions: whole tumour, tumour core, enhancing tumour (written by "
                "kdseg)\",\n  \"channel_names\": {\"0\": \"T1\", \"1\": \"T1ce\", \"2\": \"T2\", \"3\": "
                "\"FLAIR\"},\n  \"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 3], \"tumor core\": "
                "[2, 3], \"enhancing tumor\": [3]},\n  \"regions_class_order\": [1, 2, 3],\n  "
                "\"numTraining\": %d,\n  \"file_ending\": \".nii.gz\"\n}\n", labeled);
    } else {
        fprintf(f, ",\n  \"description\": \"brain tumours, Decathlon Task01 layout (written by kdseg)\",\n  "
                "\"tensorImageSize\": \"4D\",\n  \"modality\": {\"0\": \"FLAIR\", \"1\": \"T1w\", \"2\": "
                "\"t1gd\", \"3\": \"T2w\"},\n  \"labels\": {\"0\": \"background\", \"1\": \"edema\", \"2\": "
                "\"non-enhancing tumor\", \"3\": \"enhancing tumour\"},\n  \"numTraining\": %d,\n  "
                "\"numTest\": %d,\n  \"training\": [", ntrain, ntest);
        for (int i = 0; i < ntrain; i++) {
            fprintf(f, "%s\n    {\"image\": ", i ? "," : "");
            char rel[KD_PATH_MAX];
            snprintf(rel, sizeof rel, "./imagesTr/%s.nii.gz", train[i]);
            put_json_string(f, rel);
            if (train_labeled[i]) {
                snprintf(rel, sizeof rel, "./labelsTr/%s.nii.gz", train[i]);
                fprintf(f, ", \"label\": ");
                put_json_string(f, rel);
            }
            fprintf(f, "}");
        }
        fprintf(f, "%s],\n  \"test\": [", ntrain ? "\n  " : "");
        for (int i = 0; i < ntest; i++) {
            char rel[KD_PATH_MAX];
            snprintf(rel, sizeof rel, "./imagesTs/%s.nii.gz", test[i]);
            fprintf(f, "%s\n    ", i ? "," : "");
            put_json_string(f, rel);
        }
        fprintf(f, "%s]\n}\n", ntest ? "\n  " : "");
    }
    return kd_atomic_close(&a, KD_OK);
}
