/* nnU-Net v2 raw datasets (dataset.json's channel names and labels, folders, errors)
 * and kd_dataset_convert between the BraTS, MSD and nnU-Net layouts. Host only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kdtest.h"
#include "kdseg/data.h"

static const int SZ[3] = {24, 28, 20}; /* (D, H, W), not cubic */

static const char *tpath(const char *name) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 1024, "%s/%s", kd_test_tmpdir(), name);
    return p;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs(text, f);
    return fclose(f) != 0;
}

static int mkdirs(const char *p) { return kd_mkdirs(p) != KD_OK; }

static kd_status open_ds(const char *dir, const char *channels, kd_dataset **ds) {
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    o.channels = channels;
    return kd_dataset_open(dir, &o, ds);
}

/* The error of opening dir must be KD_ERR_* `want` and name each of a, b. */
static int expect_open_error(const char *dir, const char *channels, kd_status want, const char *a, const char *b) {
    kd_dataset *ds = NULL;
    kd_status s = open_ds(dir, channels, &ds);
    KD_CHECK(s == want && !ds, "%s: expected %s, got %s (%s)", dir, kd_status_string(want), kd_status_string(s),
             kd_last_error());
    KD_CHECK(strstr(kd_last_error(), a) && (!b || strstr(kd_last_error(), b)), "%s: message '%s' lacks '%s'/'%s'",
             dir, kd_last_error(), a, b ? b : "");
    fprintf(stderr, "  ok: %s\n", kd_last_error());
    return 0;
}

static int phantom(const char *dir, kd_layout l, int cases, int first, int unlabeled) {
    kd_phantom_opts o;
    memset(&o, 0, sizeof o);
    o.cases = cases;
    o.first_index = first;
    memcpy(o.size, SZ, sizeof o.size);
    o.seed = 5;
    o.layout = l;
    o.unlabeled = unlabeled;
    KD_CHECK_OK(kd_phantom_write_cohort(dir, &o));
    return 0;
}

/* Case i of a and case j of b preprocess to the same images and targets. */
static int same_case(const kd_dataset *a, int i, const kd_dataset *b, int j) {
    kd_case *x, *y;
    KD_CHECK_OK(kd_case_load(a, i, &x));
    KD_CHECK_OK(kd_case_load(b, j, &y));
    KD_CHECK(x->d == y->d && x->h == y->h && x->w == y->w && x->channels == y->channels, "grids");
    size_t n = (size_t)x->d * x->h * x->w;
    KD_CHECK(!memcmp(x->image, y->image, (size_t)x->channels * n * sizeof(float)), "case %s: images differ",
             x->name);
    KD_CHECK(!x->target == !y->target, "case %s: labeled in one only", x->name);
    if (x->target) {
        size_t wt = 0;
        for (size_t k = 0; k < 3 * n; k++) {
            KD_CHECK(x->target[k] == y->target[k], "case %s: region %zu voxel %zu: %g vs %g", x->name, k / n,
                     k % n, (double)x->target[k], (double)y->target[k]);
            wt += k < n && x->target[k] > 0.5f;
        }
        KD_CHECK(wt > 0, "case %s has tumour", x->name);
    }
    kd_case_free(x);
    kd_case_free(y);
    return 0;
}

/* Catches: the nnU-Net layout not detected, its channel files or labels misread, case
 * names with the channel suffix, unlabeled cases of imagesTs/ lost. */
static int nnunet_phantom(void) {
    const char *nn = tpath("nn"), *b = tpath("b18");
    if (phantom(nn, KD_LAYOUT_NNUNET, 2, 0, 0) || phantom(nn, KD_LAYOUT_NNUNET, 1, 2, 1) ||
        phantom(b, KD_LAYOUT_BRATS2018, 2, 0, 0) || phantom(b, KD_LAYOUT_BRATS2018, 1, 2, 1))
        return 1;
    kd_dataset *x, *y;
    KD_CHECK_OK(kd_dataset_open(nn, NULL, &x));
    KD_CHECK_OK(kd_dataset_open(b, NULL, &y));
    KD_CHECK(kd_dataset_layout(x) == KD_LAYOUT_NNUNET, "detected %s", kd_layout_name(kd_dataset_layout(x)));
    KD_CHECK(kd_dataset_count(x) == 3 && kd_dataset_labeled_count(x) == 2, "%d cases, %d labeled",
             kd_dataset_count(x), kd_dataset_labeled_count(x));
    KD_CHECK(!strcmp(kd_dataset_case_name(x, 0), "KDPH_000") && !strcmp(kd_dataset_case_name(x, 2), "KDPH_002"),
             "names %s %s", kd_dataset_case_name(x, 0), kd_dataset_case_name(x, 2));
    KD_CHECK(strstr(kd_dataset_case_image(x, 2, 0, NULL), "imagesTs/KDPH_002_0000.nii.gz"), "%s",
             kd_dataset_case_image(x, 2, 0, NULL));
    const kd_label_table *t = kd_dataset_label_table(x);
    KD_CHECK(t->edema == 1 && t->core == 2 && t->enhancing == 3 && t->regions[4] == -1, "table %d %d %d",
             t->edema, t->core, t->enhancing);
    for (int i = 0; i < 3; i++)
        if (same_case(x, i, y, i)) return 1;
    kd_dataset_free(y);
    /* one case, given by any of its channel files */
    KD_CHECK_OK(kd_dataset_open_case(tpath("nn/imagesTr/KDPH_001_0002.nii.gz"), NULL, &y));
    KD_CHECK(kd_dataset_layout(y) == KD_LAYOUT_NNUNET && kd_dataset_count(y) == 1 &&
                 !strcmp(kd_dataset_case_name(y, 0), "KDPH_001") && kd_dataset_case_labeled(y, 0) == 1,
             "one case");
    if (same_case(x, 1, y, 0)) return 1;
    kd_dataset_free(y);
    kd_dataset_free(x);
    return 0;
}

/* A phantom written by hand in an nnU-Net layout: channels in the order `order` (file
 * channel k holds canonical modality order[k]), labels written with values val[0..3]
 * for background, edema, core, enhancing; dataset.json text json (NULL: none). */
static int hand_dataset(const char *dir, const char *images, const int order[4], const int val[4], const char *json,
                        int cases) {
    const size_t n = (size_t)SZ[0] * SZ[1] * SZ[2];
    int16_t *img = malloc(4 * n * sizeof *img);
    uint8_t *lab = malloc(n);
    kd_volume *g = NULL;
    const double sp[3] = {1, 1, 1};
    KD_CHECK_OK(kd_volume_create_geometry(SZ[2], SZ[1], SZ[0], sp, NULL, &g));
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, images);
    if (mkdirs(p)) return 1;
    const char *lsub = !strcmp(images, "imagesTr") ? "labelsTr" : !strcmp(images, "imagesTs") ? "labelsTs" : NULL;
    if (lsub) {
        snprintf(p, sizeof p, "%s/%s", dir, lsub);
        if (mkdirs(p)) return 1;
    }
    for (int c = 0; c < cases; c++) {
        KD_CHECK_OK(kd_phantom_generate(SZ, 5, c, img, lab));
        for (int k = 0; k < 4; k++) {
            snprintf(p, sizeof p, "%s/%s/KDPhantom_%03d_%04d.nii.gz", dir, images, c, k);
            KD_CHECK_OK(kd_nifti_write(p, g, 1, KD_DT_INT16, img + (size_t)order[k] * n, NULL));
        }
        if (!lsub) continue;
        for (size_t i = 0; i < n; i++) /* phantom labels are BraTS 2018's: 1 core, 2 edema, 4 ET */
            lab[i] = (uint8_t)(lab[i] == 2 ? val[1] : lab[i] == 1 ? val[2] : lab[i] == 4 ? val[3] : val[0]);
        snprintf(p, sizeof p, "%s/%s/KDPhantom_%03d.nii.gz", dir, lsub, c);
        KD_CHECK_OK(kd_nifti_write(p, g, 1, KD_DT_UINT8, lab, NULL));
    }
    free(img);
    free(lab);
    kd_volume_free(g);
    if (json) {
        snprintf(p, sizeof p, "%s/dataset.json", dir);
        if (write_text(p, json)) return 1;
    }
    return 0;
}

/* Catches: channel_names ignored (a Decathlon-derived channel order read as kdseg's),
 * plain and region-based label definitions, BraTS 2023 names and unusual values read
 * into the wrong regions. Each dataset must preprocess exactly like the BraTS 2018
 * phantom of the same cases. */
static int nnunet_channels_labels(void) {
    const char *b = tpath("b18");
    if (phantom(b, KD_LAYOUT_BRATS2018, 2, 0, 0)) return 1;
    kd_dataset *ref;
    KD_CHECK_OK(kd_dataset_open(b, NULL, &ref));
    static const struct {
        const char *name;
        int order[4], val[4];
        const char *json;
    } t[] = {
        {"d001", {KD_MOD_FLAIR, KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2}, {0, 1, 2, 3},
         "{\"channel_names\": {\"0\": \"FLAIR\", \"1\": \"T1w\", \"2\": \"t1gd\", \"3\": \"T2w\"},\n"
         " \"labels\": {\"background\": 0, \"edema\": 1, \"non-enhancing tumor\": 2, \"enhancing tumour\": 3},\n"
         " \"numTraining\": 2, \"file_ending\": \".nii.gz\"}"},
        {"d137", {KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2, KD_MOD_FLAIR}, {0, 1, 2, 3},
         "{\"channel_names\": {\"0\": \"T1\", \"1\": \"T1ce\", \"2\": \"T2\", \"3\": \"Flair\"},\n"
         " \"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 3], \"tumor core\": [2, 3],\n"
         "            \"enhancing tumor\": 3},\n"
         " \"regions_class_order\": [1, 2, 3], \"numTraining\": 2, \"file_ending\": \".nii.gz\"}"},
        {"d23", {KD_MOD_T2, KD_MOD_FLAIR, KD_MOD_T1CE, KD_MOD_T1}, {0, 2, 1, 3},
         "{\"channel_names\": {\"3\": \"t1n\", \"2\": \"t1c\", \"1\": \"t2f\", \"0\": \"t2w\"},\n"
         " \"labels\": {\"background\": 0, \"NETC\": 1, \"SNFH\": 2, \"ET\": 3}, \"numTraining\": 2}"},
        {"dodd", {KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2, KD_MOD_FLAIR}, {0, 7, 5, 9},
         "{\"channel_names\": {\"0\": \"T1\", \"1\": \"T1-Gd\", \"2\": \"T2\", \"3\": \"T2-FLAIR\"},\n"
         " \"labels\": {\"background\": 0, \"enhancing\": 9, \"peritumoral edema\": 7,\n"
         "            \"necrotic core\": 5}}"},
        {"dv1", {KD_MOD_FLAIR, KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2}, {0, 1, 2, 3},
         "{\"channel_names\": {\"0\": \"FLAIR\", \"1\": \"T1w\", \"2\": \"t1gd\", \"3\": \"T2w\"},\n"
         " \"labels\": {\"0\": \"background\", \"1\": \"edema\", \"2\": \"non-enhancing tumor\",\n"
         "            \"3\": \"enhancing tumour\"}}"},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        const char *dir = tpath(t[k].name);
        if (hand_dataset(dir, "imagesTr", t[k].order, t[k].val, t[k].json, 2)) return 1;
        kd_dataset *ds;
        KD_CHECK_OK(kd_dataset_open(dir, NULL, &ds));
        KD_CHECK(kd_dataset_layout(ds) == KD_LAYOUT_NNUNET, "%s: %s", t[k].name,
                 kd_layout_name(kd_dataset_layout(ds)));
        const kd_label_table *lt = kd_dataset_label_table(ds);
        KD_CHECK(lt->edema == t[k].val[1] && lt->core == t[k].val[2] && lt->enhancing == t[k].val[3],
                 "%s: written values %d %d %d", t[k].name, lt->edema, lt->core, lt->enhancing);
        for (int i = 0; i < 2; i++)
            if (same_case(ds, i, ref, i)) return 1;
        kd_dataset_free(ds);
    }
    kd_dataset_free(ref);
    return 0;
}

/* dataset.json in dir with the given labels part; then the table or the error. */
static int labels_json(const char *dir, const char *labels) {
    char p[1024], text[2048];
    snprintf(text, sizeof text, "{\"channel_names\": {\"0\": \"T1\"}, %s}", labels);
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    return mkdirs(dir) || write_text(p, text);
}

/* Catches: label definitions that cannot be BraTS regions accepted (a wrong table would
 * train on wrong targets), nnU-Net's regions_class_order misapplied, bad JSON without a
 * position. */
static int nnunet_label_errors(void) {
    static const struct {
        const char *labels, *want; /* want NULL: accepted */
        int edema, core, et;
    } t[] = {
        {"\"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 3], \"tumor core\": [2, 3], \"enhancing tumor\": [3]}",
         NULL, 1, 2, 3},
        /* regions in another order, nnU-Net's order: ET written last */
        {"\"labels\": {\"background\": 0, \"enhancing tumor\": [4], \"tumor core\": [1, 4], \"whole tumor\": [1, 2, 4]}, "
         "\"regions_class_order\": [4, 1, 2]",
         "read back", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 4], \"tumor core\": [1, 4], \"enhancing tumor\": [4]}, "
         "\"regions_class_order\": [2, 1, 4]",
         NULL, 2, 1, 4},
        {"\"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 3], \"tumor core\": [2, 3, 5], \"enhancing tumor\": [3]}",
         "nest", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 3], \"enhancing tumor\": [3]}", "tumour core", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"edema\": 1, \"liver\": 2, \"enhancing\": 3}", "\"liver\"", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"edema\": 1, \"enhancing\": 3}", "core", 0, 0, 0},
        {"\"labels\": {\"background\": 1, \"edema\": 0, \"core\": 2, \"enhancing\": 3}", "background", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"edema\": 300, \"core\": 2, \"enhancing\": 3}", "0..255", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"whole tumor\": [1, 2, 3], \"tumor core\": [2, 3], \"enhancing tumor\": [3]}, "
         "\"regions_class_order\": [1, 2]",
         "one value per region", 0, 0, 0},
        {"\"name\": \"no labels\"", "\"labels\"", 0, 0, 0},
        {"\"labels\": {\"background\": 0, \"edema\": 1,\n \"core\": 2 \"enhancing\": 3}", "line 2, column 12", 0, 0, 0},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "lj%zu", k);
        const char *dir = tpath(name);
        if (labels_json(dir, t[k].labels)) return 1;
        kd_label_table lt;
        int found = 0;
        kd_status s = kd_nnunet_find_labels(dir, &lt, &found);
        if (!t[k].want) {
            KD_CHECK(s == KD_OK && found, "case %zu: %s", k, kd_last_error());
            KD_CHECK(lt.edema == t[k].edema && lt.core == t[k].core && lt.enhancing == t[k].et, "case %zu: %d %d %d",
                     k, lt.edema, lt.core, lt.enhancing);
            continue;
        }
        KD_CHECK(s == KD_ERR_FORMAT, "case %zu accepted", k);
        KD_CHECK(strstr(kd_last_error(), t[k].want) && strstr(kd_last_error(), "dataset.json"),
                 "case %zu: '%s' lacks '%s'", k, kd_last_error(), t[k].want);
        fprintf(stderr, "  ok: %s\n", kd_last_error());
    }
    /* the region-based BraTS table: which values are which regions */
    kd_label_table lt;
    int found;
    KD_CHECK_OK(kd_nnunet_find_labels(tpath("lj0"), &lt, &found));
    KD_CHECK(lt.regions[0] == 0 && lt.regions[1] == 1 && lt.regions[2] == 3 && lt.regions[3] == 7 &&
                 lt.regions[4] == -1,
             "regions %d %d %d %d", lt.regions[1], lt.regions[2], lt.regions[3], lt.regions[4]);
    /* a Decathlon dataset.json (no channel_names) is not nnU-Net's */
    const char *msd = tpath("ljmsd");
    char p[1024];
    snprintf(p, sizeof p, "%s/dataset.json", msd);
    if (mkdirs(msd) || write_text(p, "{\"modality\": {\"0\": \"FLAIR\"}, \"labels\": {\"0\": \"background\"}}"))
        return 1;
    KD_CHECK(kd_nnunet_find_labels(msd, &lt, &found) == KD_OK && !found, "MSD json taken for nnU-Net's");
    return 0;
}

static const int ORDER[4] = {KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2, KD_MOD_FLAIR};
static const int VAL[4] = {0, 1, 2, 3};
static const char *const JSON =
    "{\"channel_names\": {\"0\": \"T1\", \"1\": \"T1ce\", \"2\": \"T2\", \"3\": \"FLAIR\"},\n"
    " \"labels\": {\"background\": 0, \"edema\": 1, \"non-enhancing\": 2, \"enhancing\": 3}}";

static int run_sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd);
}

/* Catches: inconsistent nnU-Net folders read anyway (a missing or extra channel, a
 * channel in two files, a label without images, a Decathlon file among channel files,
 * a channel list that disagrees with dataset.json, a format kdseg cannot read): each is
 * an error naming the file and the problem. */
static int nnunet_bad_folders(void) {
    struct {
        const char *name, *setup, *channels;
        kd_status want;
        const char *a, *b;
    } t[] = {
        {"missing", "rm %s/imagesTr/KDPhantom_001_0002.nii.gz", NULL, KD_ERR_FORMAT, "KDPhantom_001_0002.nii.gz",
         "channel 2"},
        {"extra", "cp %s/imagesTr/KDPhantom_001_0002.nii.gz %s/imagesTr/KDPhantom_001_0004.nii.gz", NULL,
         KD_ERR_FORMAT, "KDPhantom_001_0004.nii.gz", "channel 4"},
        {"twofiles", "gunzip -c %s/imagesTr/KDPhantom_000_0001.nii.gz > %s/imagesTr/KDPhantom_000_0001.nii", NULL,
         KD_ERR_FORMAT, "two files for one image", "KDPhantom_000_0001.nii"},
        {"orphan", "cp %s/labelsTr/KDPhantom_000.nii.gz %s/labelsTr/KDPhantom_007.nii.gz", NULL, KD_ERR_FORMAT,
         "KDPhantom_007.nii.gz", "without images"},
        {"mixed", "cp %s/imagesTr/KDPhantom_000_0000.nii.gz %s/imagesTr/BRATS_001.nii.gz", NULL, KD_ERR_FORMAT,
         "BRATS_001.nii.gz", "CASE_XXXX"},
        {"chdisagree", "true %s %s", "flair,t1,t1ce,t2", KD_ERR_INVALID_ARG, "--channels", "channel_names"},
        {"mha", "sed -i 's/}}$/}, \"file_ending\": \".mha\"}/' %s/dataset.json; true %s", NULL, KD_ERR_UNSUPPORTED,
         ".mha", "dataset.json"},
        {"nochan", "sed -i 's/\"2\": \"T2\"/\"2\": \"ADC\"/' %s/dataset.json; true %s", NULL, KD_ERR_FORMAT, "t2",
         "ADC"},
        {"badlabel", "cp %s/imagesTr/KDPhantom_000_0000.nii.gz %s/labelsTr/KDPhantom_001.nii.gz", NULL, KD_OK, "", ""},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        const char *dir = tpath(t[k].name);
        if (hand_dataset(dir, "imagesTr", ORDER, VAL, JSON, 2)) return 1;
        KD_CHECK(run_sh(t[k].setup, dir, dir) == 0, "%s: setup", t[k].name);
        if (t[k].want) {
            if (expect_open_error(dir, t[k].channels, t[k].want, t[k].a, t[k].b)) return 1;
            continue;
        }
        /* an image in place of a label: the labels are checked when the case loads */
        kd_dataset *ds;
        KD_CHECK_OK(open_ds(dir, NULL, &ds));
        kd_case *c = NULL;
        kd_status s = kd_case_load(ds, 1, &c);
        KD_CHECK(s == KD_ERR_FORMAT && !c, "bad label values accepted");
        KD_CHECK(strstr(kd_last_error(), "not one of 0, 1, 2, 3") && strstr(kd_last_error(), "dataset.json"), "%s",
                 kd_last_error());
        fprintf(stderr, "  ok: %s\n", kd_last_error());
        kd_dataset_free(ds);
    }
    return 0;
}

/* Catches: a flat folder of CASE_XXXX files not read (the "not a case folder" of old),
 * its dataset.json in the parent not found, labelsTs/ beside imagesTs/ ignored, a folder
 * without dataset.json guessed instead of refused, --channels ignored. */
static int nnunet_flat(void) {
    const char *dir = tpath("flat");
    if (hand_dataset(dir, "imagesTs", ORDER, VAL, JSON, 2)) return 1;
    kd_dataset *ds, *b;
    KD_CHECK_OK(kd_dataset_open(tpath("flat/imagesTs"), NULL, &ds));
    KD_CHECK(kd_dataset_layout(ds) == KD_LAYOUT_NNUNET && kd_dataset_count(ds) == 2 &&
                 kd_dataset_labeled_count(ds) == 2,
             "flat: %d cases, %d labeled", kd_dataset_count(ds), kd_dataset_labeled_count(ds));
    const char *b18 = tpath("b18");
    if (phantom(b18, KD_LAYOUT_BRATS2018, 2, 0, 0)) return 1;
    KD_CHECK_OK(kd_dataset_open(b18, NULL, &b));
    for (int i = 0; i < 2; i++)
        if (same_case(ds, i, b, i)) return 1;
    kd_dataset_free(ds);
    /* the same files elsewhere, without dataset.json */
    const char *bare = tpath("bare");
    KD_CHECK(run_sh("cp -r %s/imagesTs %s", dir, bare) == 0, "copy");
    if (expect_open_error(bare, NULL, KD_ERR_FORMAT, "--channels", "dataset.json")) return 1;
    KD_CHECK_OK(open_ds(bare, "t1,t1ce,t2,flair", &ds));
    KD_CHECK(kd_dataset_count(ds) == 2 && kd_dataset_labeled_count(ds) == 0, "bare: %d", kd_dataset_count(ds));
    kd_case *c;
    KD_CHECK_OK(kd_case_load(ds, 0, &c));
    kd_case *r;
    KD_CHECK_OK(kd_case_load(b, 0, &r));
    KD_CHECK(!memcmp(c->image, r->image, (size_t)4 * c->d * c->h * c->w * sizeof(float)), "images");
    kd_case_free(c);
    kd_case_free(r);
    kd_dataset_free(ds);
    /* a wrong --channels order gives other images: the option is used */
    KD_CHECK_OK(open_ds(bare, "flair,t1,t1ce,t2", &ds));
    KD_CHECK_OK(kd_case_load(ds, 0, &c));
    KD_CHECK_OK(kd_case_load(b, 0, &r));
    KD_CHECK(memcmp(c->image, r->image, (size_t)c->d * c->h * c->w * sizeof(float)), "channel order ignored");
    kd_case_free(c);
    kd_case_free(r);
    kd_dataset_free(ds);
    kd_dataset_free(b);
    return 0;
}

/* Catches: the rel branch's properties lost for the new layout: a case reached again
 * through a link counted twice, a linked images folder scanned twice. */
static int nnunet_links(void) {
    const char *dir = tpath("links");
    if (hand_dataset(dir, "imagesTr", ORDER, VAL, JSON, 2)) return 1;
    KD_CHECK(run_sh("ln -s imagesTr %s/imagesTs%s", dir, "") == 0, "link");
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(dir, NULL, &ds));
    KD_CHECK(kd_dataset_count(ds) == 2, "linked folder: %d cases", kd_dataset_count(ds));
    kd_dataset_free(ds);
    KD_CHECK(run_sh("rm %s/imagesTs && cd %s/imagesTr && for k in 0 1 2 3; do ln -s KDPhantom_000_000$k.nii.gz "
                    "KDPhantom_009_000$k.nii.gz; done",
                    dir, dir) == 0,
             "links");
    KD_CHECK_OK(kd_dataset_open(dir, NULL, &ds));
    KD_CHECK(kd_dataset_count(ds) == 2, "linked case: %d cases", kd_dataset_count(ds));
    kd_dataset_free(ds);
    return 0;
}

static int same_file(const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static int convert(const char *src, kd_layout to, const char *dst) {
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(src, NULL, &ds));
    kd_convert_opts o;
    memset(&o, 0, sizeof o);
    o.to = to;
    KD_CHECK_OK(kd_dataset_convert(ds, dst, &o));
    kd_dataset_free(ds);
    return 0;
}

/* Catches: any layout conversion losing voxels, geometry, cases or unlabeled cases,
 * translating labels wrongly, or writing a dataset the reader does not take back. Round
 * trip BraTS 2018 -> nnU-Net -> BraTS 2023 -> MSD -> nnU-Net -> BraTS 2018 ends with
 * the same bytes; every stage preprocesses like the original. */
static int convert_roundtrip(void) {
    const char *b = tpath("rt0");
    if (phantom(b, KD_LAYOUT_BRATS2018, 2, 0, 0) || phantom(b, KD_LAYOUT_BRATS2018, 1, 2, 1)) return 1;
    const kd_layout chain[] = {KD_LAYOUT_NNUNET, KD_LAYOUT_BRATS2023, KD_LAYOUT_MSD, KD_LAYOUT_NNUNET,
                               KD_LAYOUT_BRATS2018};
    kd_dataset *ref;
    KD_CHECK_OK(kd_dataset_open(b, NULL, &ref));
    char prev[1024];
    snprintf(prev, sizeof prev, "%s", b);
    for (int k = 0; k < 5; k++) {
        char name[16];
        snprintf(name, sizeof name, "rt%d", k + 1);
        const char *dst = tpath(name);
        if (convert(prev, chain[k], dst)) return 1;
        kd_dataset *ds;
        KD_CHECK_OK(kd_dataset_open(dst, NULL, &ds));
        KD_CHECK(kd_dataset_layout(ds) == chain[k], "stage %d: %s", k, kd_layout_name(kd_dataset_layout(ds)));
        KD_CHECK(kd_dataset_count(ds) == 3 && kd_dataset_labeled_count(ds) == 2, "stage %d: %d cases", k,
                 kd_dataset_count(ds));
        for (int i = 0; i < 3; i++)
            if (same_case(ds, i, ref, i)) return 1;
        kd_dataset_free(ds);
        snprintf(prev, sizeof prev, "%s", dst);
    }
    for (int i = 0; i < 3; i++) {
        const char *suf[] = {"t1", "t1ce", "t2", "flair", "seg"};
        for (int f = 0; f < (i < 2 ? 5 : 4); f++) {
            char a[1024], c[1024];
            snprintf(a, sizeof a, "%s/KDPhantom_%03d/KDPhantom_%03d_%s.nii.gz", b, i, i, suf[f]);
            snprintf(c, sizeof c, "%s/KDPhantom_%03d/KDPhantom_%03d_%s.nii.gz", tpath("rt5"), i, i, suf[f]);
            KD_CHECK(same_file(a, c), "%s and %s differ", a, c);
        }
    }
    /* the unlabeled case went to imagesTs/ */
    struct stat st;
    KD_CHECK(stat(tpath("rt1/imagesTs/KDPhantom_002_0003.nii.gz"), &st) == 0, "unlabeled case in imagesTs");
    KD_CHECK(stat(tpath("rt3/imagesTs/KDPhantom_002.nii.gz"), &st) == 0, "unlabeled case in imagesTs (MSD)");
    /* a dataset.json of nnU-Net's own kind: its labels read back */
    kd_label_table lt;
    int found;
    KD_CHECK_OK(kd_nnunet_find_labels(tpath("rt1"), &lt, &found));
    KD_CHECK(found && lt.edema == 1 && lt.core == 2 && lt.enhancing == 3, "written dataset.json");
    kd_dataset_free(ref);
    return 0;
}

/* Catches: convert overwriting an existing dataset, leaving a partial one (or its
 * temporary folder) behind when a case fails, or translating through the wrong table. */
static int convert_refusals(void) {
    const char *b = tpath("src");
    if (phantom(b, KD_LAYOUT_BRATS2018, 2, 0, 0)) return 1;
    const char *out = tpath("exists");
    char p[1024];
    snprintf(p, sizeof p, "%s/keep.txt", out);
    KD_CHECK(!mkdirs(out) && !write_text(p, "mine"), "setup");
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(b, NULL, &ds));
    kd_convert_opts o;
    memset(&o, 0, sizeof o);
    o.to = KD_LAYOUT_NNUNET;
    KD_CHECK(kd_dataset_convert(ds, out, &o) == KD_ERR_INVALID_ARG && strstr(kd_last_error(), "not an empty folder"),
             "%s", kd_last_error());
    struct stat st;
    KD_CHECK(stat(p, &st) == 0, "existing file lost");
    /* an empty folder is fine */
    const char *empty = tpath("empty");
    KD_CHECK(!mkdirs(empty), "mkdir");
    KD_CHECK_OK(kd_dataset_convert(ds, empty, &o));
    kd_dataset_free(ds);
    /* a bad label value in the second case: an error naming it, and nothing written */
    const size_t n = (size_t)SZ[0] * SZ[1] * SZ[2];
    uint8_t *lab = calloc(n, 1);
    lab[n / 2] = 3; /* not a BraTS 2018 label */
    kd_volume *g;
    KD_CHECK_OK(kd_nifti_read_header(tpath("src/KDPhantom_001/KDPhantom_001_seg.nii.gz"), &g));
    KD_CHECK_OK(kd_nifti_write(tpath("src/KDPhantom_001/KDPhantom_001_seg.nii.gz"), g, 1, KD_DT_UINT8, lab, NULL));
    kd_volume_free(g);
    free(lab);
    KD_CHECK_OK(kd_dataset_open(b, NULL, &ds));
    const char *fail = tpath("failed");
    KD_CHECK(kd_dataset_convert(ds, fail, &o) == KD_ERR_FORMAT, "bad label converted");
    KD_CHECK(strstr(kd_last_error(), "KDPhantom_001_seg") && strstr(kd_last_error(), "label 3"), "%s", kd_last_error());
    fprintf(stderr, "  ok: %s\n", kd_last_error());
    KD_CHECK(stat(fail, &st) != 0, "a partial dataset was left");
    KD_CHECK(run_sh("ls -d %s.tmp* 2>/dev/null | grep -q .%s", fail, "") != 0, "a temporary folder was left");
    kd_dataset_free(ds);
    return 0;
}

/* Catches: the Decathlon's 4-D images split into the wrong modalities, or float32 and
 * scaled integer voxels changed on the way out and back. */
static int convert_msd_voxels(void) {
    const char *dir = tpath("msdsrc");
    char p[1024];
    snprintf(p, sizeof p, "%s/imagesTr", dir);
    KD_CHECK(!mkdirs(p), "mkdir");
    snprintf(p, sizeof p, "%s/labelsTr", dir);
    KD_CHECK(!mkdirs(p), "mkdir");
    const size_t n = (size_t)SZ[0] * SZ[1] * SZ[2];
    int16_t *img = malloc(4 * n * sizeof *img);
    uint8_t *lab = malloc(n);
    float *f = malloc(4 * n * sizeof *f);
    kd_volume *g;
    const double sp[3] = {0.9, 1.1, 2.5};
    KD_CHECK_OK(kd_volume_create_geometry(SZ[2], SZ[1], SZ[0], sp, NULL, &g));
    const int from[4] = {KD_MOD_FLAIR, KD_MOD_T1, KD_MOD_T1CE, KD_MOD_T2};
    for (int c = 0; c < 2; c++) {
        KD_CHECK_OK(kd_phantom_generate(SZ, 9, c, img, lab));
        for (size_t i = 0; i < n; i++) lab[i] = lab[i] == 2 ? 1 : lab[i] == 1 ? 2 : lab[i] == 4 ? 3 : 0;
        snprintf(p, sizeof p, "%s/labelsTr/C%d.nii.gz", dir, c);
        KD_CHECK_OK(kd_nifti_write(p, g, 1, KD_DT_UINT8, lab, NULL));
        snprintf(p, sizeof p, "%s/imagesTr/C%d.nii.gz", dir, c);
        if (c == 0) { /* float32 with fractions */
            for (int k = 0; k < 4; k++)
                for (size_t i = 0; i < n; i++) f[k * n + i] = img[from[k] * n + i] * 0.37f + (float)k;
            KD_CHECK_OK(kd_nifti_write(p, g, 4, KD_DT_FLOAT32, f, NULL));
        } else { /* int16 with scl_slope 0.5, scl_inter 3 */
            int16_t *v = malloc(4 * n * sizeof *v);
            for (int k = 0; k < 4; k++) memcpy(v + k * n, img + from[k] * n, n * sizeof *v);
            kd_nifti_write_opts wo = {0, 0.5, 3};
            KD_CHECK_OK(kd_nifti_write(p, g, 4, KD_DT_INT16, v, &wo));
            free(v);
        }
    }
    if (convert(dir, KD_LAYOUT_NNUNET, tpath("msdnn")) || convert(tpath("msdnn"), KD_LAYOUT_MSD, tpath("msdback")))
        return 1;
    for (int c = 0; c < 2; c++) {
        kd_volume *a, *b2;
        snprintf(p, sizeof p, "%s/imagesTr/C%d.nii.gz", dir, c);
        KD_CHECK_OK(kd_nifti_read(p, &a));
        snprintf(p, sizeof p, "%s/imagesTr/C%d.nii.gz", tpath("msdback"), c);
        KD_CHECK_OK(kd_nifti_read(p, &b2));
        KD_CHECK(a->nt == 4 && b2->nt == 4 && !strcmp(a->info.datatype_name, b2->info.datatype_name),
                 "case %d: %s vs %s", c, a->info.datatype_name, b2->info.datatype_name);
        KD_CHECK(!memcmp(a->data, b2->data, 4 * n * sizeof(float)), "case %d: voxels changed", c);
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 4; k++)
                KD_CHECK(a->info.affine[r][k] == b2->info.affine[r][k], "case %d: affine", c);
        kd_volume_free(a);
        kd_volume_free(b2);
        /* the split: nnU-Net channel 0 is T1 = the Decathlon's volume 1 */
        snprintf(p, sizeof p, "%s/imagesTr/C%d_0000.nii.gz", tpath("msdnn"), c);
        KD_CHECK_OK(kd_nifti_read(p, &a));
        snprintf(p, sizeof p, "%s/imagesTr/C%d.nii.gz", dir, c);
        KD_CHECK_OK(kd_nifti_read(p, &b2));
        KD_CHECK(a->nt == 1 && !memcmp(a->data, b2->data + n, n * sizeof(float)), "case %d: T1 is volume 1", c);
        kd_volume_free(a);
        kd_volume_free(b2);
    }
    kd_volume_free(g);
    free(img);
    free(lab);
    free(f);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"nnunet_phantom", nnunet_phantom},
        {"nnunet_channels_labels", nnunet_channels_labels},
        {"nnunet_label_errors", nnunet_label_errors},
        {"nnunet_bad_folders", nnunet_bad_folders},
        {"nnunet_flat", nnunet_flat},
        {"nnunet_links", nnunet_links},
        {"convert_roundtrip", convert_roundtrip},
        {"convert_refusals", convert_refusals},
        {"convert_msd_voxels", convert_msd_voxels},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
