/* Post-processing tests: each rule of the paper's probabilities -> labels conversion, and
 * labels -> regions per convention. */
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"

enum { D = 8, H = 8, W = 8, N = D * H * W };
#define IDX(z, y, x) (((size_t)(z)*H + (y)) * W + (x))

static kd_postproc_options rules_off(kd_label_convention c) {
    kd_postproc_options o;
    kd_postproc_options_default(&o);
    o.labels = c;
    o.et_min_voxels = -1;
    o.min_component_fraction = 0;
    return o;
}

/* Sets region probabilities (3, D, H, W) of voxel i. */
static void setp(float *p, size_t i, float wt, float tc, float et) {
    p[i] = wt, p[N + i] = tc, p[2 * N + i] = et;
}

/* Catches: >= instead of >, a threshold option ignored, channels-last read wrongly. */
static int threshold(void) {
    static float p[3 * N], q[3 * N];
    static uint8_t l[N], l2[N];
    setp(p, 0, 0.5f, 0, 0);       /* exactly 0.5: absent */
    setp(p, 1, 0.51f, 0, 0);      /* WT only: edema 2 */
    setp(p, 2, 0.9f, 0.6f, 0.4f); /* WT + TC: core 1 */
    setp(p, 3, 0.35f, 0.1f, 0.1f);
    kd_postproc_options o = rules_off(KD_LABELS_2019);
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(l[0] == 0 && l[1] == 2 && l[2] == 1 && l[3] == 0, "labels %d %d %d %d", l[0], l[1],
             l[2], l[3]);
    o.threshold = 0.3f;
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(l[0] == 2 && l[2] == 4 && l[3] == 2, "threshold 0.3: %d %d %d", l[0], l[2], l[3]);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < 3; c++)
            q[(size_t)i * 3 + c] = p[(size_t)c * N + i];
    KD_CHECK_OK(kd_postproc_labels(q, KD_PROB_DHWC, D, H, W, &o, l2));
    KD_CHECK(!memcmp(l, l2, N), "channels-last layout gives other labels");
    p[5] = NAN;
    KD_CHECK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l) == KD_ERR_NUMERIC, "NaN refused");
    return 0;
}

/* Catches: a wrong label for a region or convention, region precedence reversed. */
static int label_mapping(void) {
    static float p[3 * N];
    static uint8_t l[N];
    setp(p, 10, 0.9f, 0, 0);
    setp(p, 11, 0.9f, 0.9f, 0);
    setp(p, 12, 0.9f, 0.9f, 0.9f);
    setp(p, 13, 0, 0.9f, 0); /* TC outside WT: later rule wins, core */
    kd_postproc_options o = rules_off(KD_LABELS_2019);
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(l[10] == 2 && l[11] == 1 && l[12] == 4 && l[13] == 1 && l[0] == 0, "2019: %d %d %d %d",
             l[10], l[11], l[12], l[13]);
    o = rules_off(KD_LABELS_2023);
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(l[10] == 2 && l[11] == 1 && l[12] == 3, "2023: %d %d %d", l[10], l[11], l[12]);
    /* MSD (annotations of a Decathlon dataset): 1 edema, 2 non-enhancing, 3 enhancing, and
     * a small ET becomes non-enhancing core (2), not 1 */
    o = rules_off(KD_LABELS_MSD);
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(l[10] == 1 && l[11] == 2 && l[12] == 3 && l[13] == 2 && l[0] == 0, "MSD: %d %d %d %d",
             l[10], l[11], l[12], l[13]);
    o.et_min_voxels = 5;
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(l[12] == 2 && l[10] == 1, "MSD small ET -> core 2: %d", l[12]);
    o = rules_off(KD_LABELS_AUTO);
    KD_CHECK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l) == KD_ERR_INVALID_ARG,
             "AUTO output refused");
    return 0;
}

/* A tumour: WT over a 4x4x4 box (64 voxels, core inside), ET on the first `et` voxels. */
static void tumour_with_et(float *p, int et) {
    memset(p, 0, sizeof(float) * 3 * N);
    int k = 0;
    for (int z = 2; z < 6; z++)
        for (int y = 2; y < 6; y++)
            for (int x = 2; x < 6; x++, k++)
                setp(p, IDX(z, y, x), 0.9f, 0.9f, k < et ? 0.9f : 0);
}

/* Catches: < instead of <= at the 32-voxel rule, ET removed instead of relabelled core,
 * the option ignored. */
static int small_et(void) {
    static float p[3 * N];
    static uint8_t l[N];
    kd_postproc_options o;
    kd_postproc_options_default(&o);
    for (int et = 32; et <= 33; et++) {
        tumour_with_et(p, et);
        KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
        int n4 = 0, n1 = 0;
        for (int i = 0; i < N; i++)
            n4 += l[i] == 4, n1 += l[i] == 1;
        int want4 = et == 32 ? 0 : 33;
        KD_CHECK(n4 == want4 && n1 == 64 - want4, "ET %d voxels: %d labelled 4, %d labelled 1", et,
                 n4, n1);
    }
    tumour_with_et(p, 32);
    o.et_min_voxels = -1;
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    int n4 = 0;
    for (int i = 0; i < N; i++)
        n4 += l[i] == 4;
    KD_CHECK(n4 == 32, "rule off: %d", n4);
    o.et_min_voxels = 32;
    o.labels = KD_LABELS_2023;
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    for (int i = 0; i < N; i++)
        KD_CHECK(l[i] != 3, "2023: small ET kept at %d", i);
    return 0;
}

static size_t count_nonzero(const uint8_t *l, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += l[i] != 0;
    return c;
}

/* Fills `count` voxels of the label map in raster order inside the box. */
static void fill(uint8_t *l, int z0, int z1, int y0, int y1, int x0, int x1, int count, uint8_t v) {
    for (int z = z0; z < z1; z++)
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++)
                if (count-- > 0) l[IDX(z, y, x)] = v;
}

/* Catches: the 10% boundary off by one (a component of exactly 10% must stay, also when
 * 0.1 * total is not exact in binary: 3 of 30), a one-voxel-smaller one removed. */
static int small_components(void) {
    static uint8_t l[N];
    struct {
        int big, small, removed;
    } cases[] = {{90, 10, 0}, {90, 9, 9}, {27, 3, 0}, {28, 3, 3}};
    for (int c = 0; c < 4; c++) {
        memset(l, 0, N);
        fill(l, 0, 4, 0, 8, 0, 8, cases[c].big, 2);   /* z 0..3 */
        fill(l, 6, 8, 0, 8, 0, 8, cases[c].small, 1); /* z 6..7: apart */
        size_t removed;
        KD_CHECK_OK(kd_labels_remove_small_components(l, D, H, W, 0.1, &removed));
        KD_CHECK((int)removed == cases[c].removed, "%d + %d: removed %zu, expected %d",
                 cases[c].big, cases[c].small, removed, cases[c].removed);
        KD_CHECK((int)count_nonzero(l, N) == cases[c].big + cases[c].small - cases[c].removed,
                 "voxels left");
    }
    /* through kd_postproc_labels with the default options: the speck goes */
    static float p[3 * N];
    fill(l, 0, 0, 0, 0, 0, 0, 0, 0);
    for (int i = 0; i < 95; i++)
        setp(p, (size_t)i, 0.9f, 0, 0);
    setp(p, IDX(7, 7, 7), 0.9f, 0, 0);
    kd_postproc_options o;
    kd_postproc_options_default(&o);
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(count_nonzero(l, N) == 95 && l[IDX(7, 7, 7)] == 0, "speck kept");
    return 0;
}

/* Catches: 6- or 18-connectivity instead of 26: a 5-voxel line touching a 95-voxel blob
 * only at a corner belongs to it (kept, 5 < 10% of 100 otherwise); moved off the corner
 * it is its own component and removed. */
static int connectivity26(void) {
    static uint8_t l[N];
    for (int apart = 0; apart <= 1; apart++) {
        memset(l, 0, N);
        /* raster fill of 95: z 0 and 1 whole (72), z 2: rows y 0..2 and (y 3, x 0..4) */
        fill(l, 0, 3, 0, 6, 0, 6, 95, 2);
        KD_CHECK(l[IDX(2, 3, 4)] && !l[IDX(2, 3, 5)] && !l[IDX(2, 4, 4)], "layout of the blob");
        /* (3,4,5) meets the blob's last voxel (2,3,4) at a corner only; (3,5,6) not at all */
        for (int z = 3; z < 8; z++)
            l[IDX(z, 4 + apart, 5 + apart)] = 1;
        size_t removed;
        KD_CHECK_OK(kd_labels_remove_small_components(l, D, H, W, 0.1, &removed));
        if (apart == 0)
            KD_CHECK(removed == 0, "corner-touching line removed (%zu)", removed);
        else
            KD_CHECK(removed == 5, "separate line: removed %zu of 5", removed);
    }
    return 0;
}

/* Catches: the brain mask ignored, applied after the component rule (a tumour blob outside
 * the brain would then count in the total and remove a real component), or zeroing
 * tumour inside the brain. */
static int brain_mask(void) {
    static float p[3 * N];
    static uint8_t l[N], mask[N];
    memset(p, 0, sizeof p);
    for (int z = 0; z < 2; z++) /* 2 x 8 x 8 = 128 voxels of tumour at z 0..1, in the brain */
        for (int i = 0; i < H * W; i++) setp(p, (size_t)z * H * W + i, 0.9f, 0.8f, 0);
    for (int i = 0; i < 20; i++) setp(p, IDX(4, 0, 0) + i, 0.9f, 0, 0); /* 20 at z 4: in */
    for (int z = 6; z < 8; z++) /* 128 at z 6..7: outside the brain */
        for (int i = 0; i < H * W; i++) setp(p, (size_t)z * H * W + i, 0.9f, 0, 0);
    for (int i = 0; i < N; i++) mask[i] = i < 6 * H * W;
    kd_postproc_options o;
    kd_postproc_options_default(&o); /* components under 10% go */
    o.brain_mask = mask;
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(count_nonzero(l, N) == 148, "tumour left %zu, expected 128 + 20", count_nonzero(l, N));
    KD_CHECK(l[IDX(0, 3, 3)] == 1 && l[IDX(4, 0, 5)] == 2 && l[IDX(7, 7, 7)] == 0, "labels");
    o.brain_mask = NULL; /* without the mask the 20 are under 10% of 276 and go */
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(count_nonzero(l, N) == 256 && l[IDX(4, 0, 5)] == 0, "no mask: %zu", count_nonzero(l, N));
    return 0;
}

/* Catches: largest-only keeping a smaller component, removing part of the largest, or
 * ignoring 26-connectivity. */
static int largest_component(void) {
    static uint8_t l[N];
    memset(l, 0, N);
    fill(l, 0, 2, 0, 8, 0, 8, 70, 2); /* 70 voxels at z 0..1 */
    fill(l, 4, 5, 0, 8, 0, 8, 40, 1); /* 40 at z 4 */
    fill(l, 7, 8, 0, 8, 0, 8, 30, 4); /* 30 at z 7 */
    l[IDX(2, 0, 0)] = 1;              /* touches the 70 (6-connected): 71 */
    size_t removed;
    KD_CHECK_OK(kd_labels_keep_largest_component(l, D, H, W, &removed));
    KD_CHECK(removed == 70 && count_nonzero(l, N) == 71 && l[IDX(2, 0, 0)] == 1, "kept %zu, removed %zu",
             count_nonzero(l, N), removed);
    /* through kd_postproc_labels */
    static float p[3 * N];
    memset(p, 0, sizeof p);
    for (int i = 0; i < 50; i++) setp(p, (size_t)i, 0.9f, 0, 0);
    for (int i = 0; i < 49; i++) setp(p, IDX(5, 0, 0) + i, 0.9f, 0.9f, 0.9f);
    kd_postproc_options o = rules_off(KD_LABELS_2019);
    o.largest_only = 1;
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, l));
    KD_CHECK(count_nonzero(l, N) == 50 && l[IDX(5, 0, 0)] == 0, "largest only: %zu", count_nonzero(l, N));
    memset(l, 0, N);
    KD_CHECK_OK(kd_labels_keep_largest_component(l, D, H, W, &removed));
    KD_CHECK(removed == 0, "empty map");
    return 0;
}

/* Catches: a wrong region set for a label in a convention, bad labels accepted. */
static int labels_to_regions(void) {
    uint8_t lab[5] = {0, 1, 2, 3, 4}, wt[5], tc[5], et[5];
    /* 2019: 1 NCR (WT TC), 2 ED (WT), 4 ET (all); 3 invalid */
    uint8_t l19[4] = {0, 1, 2, 4}, e19[4][3] = {{0, 0, 0}, {1, 1, 0}, {1, 0, 0}, {1, 1, 1}};
    KD_CHECK_OK(kd_labels_to_regions(l19, 4, KD_LABELS_2019, wt, tc, et));
    for (int i = 0; i < 4; i++)
        KD_CHECK(wt[i] == e19[i][0] && tc[i] == e19[i][1] && et[i] == e19[i][2], "2019 label %d",
                 l19[i]);
    KD_CHECK(kd_labels_to_regions(lab, 5, KD_LABELS_2019, wt, tc, et) == KD_ERR_FORMAT,
             "3 in 2019");
    KD_CHECK(strstr(kd_last_error(), "label 3") != NULL, "message names the label: %s",
             kd_last_error());
    /* 2023: 1 NETC (WT TC), 2 SNFH (WT), 3 ET (all) */
    uint8_t e23[4][3] = {{0, 0, 0}, {1, 1, 0}, {1, 0, 0}, {1, 1, 1}};
    KD_CHECK_OK(kd_labels_to_regions(lab, 4, KD_LABELS_2023, wt, tc, et));
    for (int i = 0; i < 4; i++)
        KD_CHECK(wt[i] == e23[i][0] && tc[i] == e23[i][1] && et[i] == e23[i][2], "2023 label %d",
                 i);
    KD_CHECK(kd_labels_to_regions(lab, 5, KD_LABELS_2023, wt, tc, et) == KD_ERR_FORMAT,
             "4 in 2023");
    /* MSD: 1 edema (WT), 2 non-enhancing (WT TC), 3 enhancing (all) */
    uint8_t emsd[4][3] = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {1, 1, 1}};
    KD_CHECK_OK(kd_labels_to_regions(lab, 4, KD_LABELS_MSD, wt, tc, et));
    for (int i = 0; i < 4; i++)
        KD_CHECK(wt[i] == emsd[i][0] && tc[i] == emsd[i][1] && et[i] == emsd[i][2], "MSD label %d",
                 i);
    KD_CHECK(kd_labels_to_regions(lab, 4, KD_LABELS_AUTO, wt, tc, et) == KD_ERR_INVALID_ARG,
             "AUTO is not a convention here");
    kd_label_convention c;
    KD_CHECK_OK(kd_labels_detect(l19, 4, KD_LABELS_2023, &c));
    KD_CHECK(c == KD_LABELS_2019, "4 means 2019");
    KD_CHECK_OK(kd_labels_detect(lab, 4, KD_LABELS_2019, &c));
    KD_CHECK(c == KD_LABELS_2023, "3 means 2023");
    KD_CHECK_OK(kd_labels_detect(lab, 3, KD_LABELS_2019, &c));
    KD_CHECK(c == KD_LABELS_2019, "fallback");
    KD_CHECK(kd_labels_detect(lab, 5, KD_LABELS_2019, &c) == KD_ERR_FORMAT, "3 and 4");
    KD_CHECK_OK(kd_label_convention_parse("MSD", &c));
    KD_CHECK(c == KD_LABELS_MSD, "parse");
    KD_CHECK(kd_label_convention_parse("2020", &c) == KD_ERR_INVALID_ARG, "bad name");
    /* round trip: probabilities of a label map's regions give the label map back */
    static float p[3 * N];
    static uint8_t l[N], back[N], rw[N], rt[N], re[N];
    for (int i = 0; i < N; i++)
        l[i] = (uint8_t)((i / 7) % 5 == 3 ? 0 : (i / 7) % 5);
    KD_CHECK_OK(kd_labels_to_regions(l, N, KD_LABELS_2019, rw, rt, re));
    for (int i = 0; i < N; i++)
        setp(p, (size_t)i, rw[i], rt[i], re[i]);
    kd_postproc_options o = rules_off(KD_LABELS_2019);
    KD_CHECK_OK(kd_postproc_labels(p, KD_PROB_CDHW, D, H, W, &o, back));
    KD_CHECK(!memcmp(l, back, N), "regions -> labels round trip");
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"threshold", threshold},
        {"label_mapping", label_mapping},
        {"small_et", small_et},
        {"small_components", small_components},
        {"connectivity26", connectivity26},
        {"labels_to_regions", labels_to_regions},
        {"brain_mask", brain_mask},
        {"largest_component", largest_component},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
