/* Pictures a reader gets: overlay slices through the tumour's largest extent (or the
 * brain's centre), the overlay's title, panel labels and colour legend, round and log
 * ticks, the moving average, training curves with legends and axis titles. */
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"

static uint32_t px(const kd_canvas *c, int x, int y) {
    const uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

/* Pixels of exactly colour rgb in the box [x0, x1) x [y0, y1). */
static int count_colour(const kd_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb) {
    int n = 0;
    for (int y = y0 < 0 ? 0 : y0; y < y1 && y < c->h; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x1 && x < c->w; x++)
            n += px(c, x, y) == rgb;
    return n;
}

static int nice_ticks(void) {
    double t[16];
    int n = kd_plot_nice_ticks(0, 399, 5, t);
    KD_CHECK(n == 5 && t[0] == 0 && t[4] == 400 && t[1] == 100, "0..399: %d ticks, %g..%g", n,
             t[0], t[n - 1]);
    n = kd_plot_nice_ticks(0.13, 0.87, 5, t);
    KD_CHECK(t[0] <= 0.13 && t[n - 1] >= 0.87 && n <= 6, "0.13..0.87: %d ticks", n);
    for (int i = 1; i < n; i++) {
        double step = t[i] - t[i - 1], mant = step / pow(10, floor(log10(step) + 1e-12));
        KD_CHECK(fabs(mant - 1) < 1e-9 || fabs(mant - 2) < 1e-9 || fabs(mant - 5) < 1e-9,
                 "step %g is not 1, 2 or 5 x 10^k", step);
    }
    n = kd_plot_log_ticks(0.08, 0.6, t);
    KD_CHECK(n == 5 && fabs(t[0] - 0.05) < 1e-12 && fabs(t[1] - 0.1) < 1e-12 &&
                 fabs(t[2] - 0.2) < 1e-12 && fabs(t[3] - 0.5) < 1e-12 && fabs(t[4] - 1) < 1e-12,
             "log 0.08..0.6: %d ticks %g %g ..", n, t[0], t[1]);
    n = kd_plot_log_ticks(1e-4, 3, t);
    KD_CHECK(n == 6 && fabs(t[0] - 1e-4) < 1e-16 && fabs(t[5] - 10) < 1e-9,
             "log over decades: %d ticks %g..%g", n, t[0], t[n - 1]);
    return 0;
}

static int moving_average(void) {
    double y[6] = {1, 3, NAN, 5, 7, 9}, m[6];
    kd_moving_average(y, 6, 3, m);
    KD_CHECK(m[0] == 1 && m[1] == 2 && m[2] == 2 && m[3] == 4 && m[4] == 6 && m[5] == 7,
             "got %g %g %g %g %g %g", m[0], m[1], m[2], m[3], m[4], m[5]);
    return 0;
}

enum { D = 32, H = 40, W = 48 };

/* A brain box, and a pyramid tumour whose largest axial slice (z = 20) is not its
 * centroid (z about 17.8); its WT/TC/ET nested. */
static void make_case(float *img, float *reg, int tumour) {
    size_t n = (size_t)D * H * W;
    memset(img, 0, 2 * n * sizeof(float));
    memset(reg, 0, 3 * n * sizeof(float));
    for (int z = 4; z < 28; z++)
        for (int y = 6; y < 34; y++)
            for (int x = 8; x < 40; x++) {
                size_t i = ((size_t)z * H + y) * W + x;
                img[i] = 100.0f + (float)((x * 7 + y * 3 + z) % 11);
                img[n + i] = 50.0f + (float)((x + y) % 5);
            }
    if (!tumour) return;
    for (int z = 10; z <= 20; z++) {
        int r = z - 10;
        for (int y = 20 - r; y <= 20 + r; y++)
            for (int x = 30 - r; x <= 30 + r; x++) {
                size_t i = ((size_t)z * H + y) * W + x;
                reg[i] = 1;
                if (abs(y - 20) < r / 2 + 1 && abs(x - 30) < r / 2 + 1) reg[n + i] = 1;
                if (abs(y - 20) < 2 && abs(x - 30) < 2) reg[2 * n + i] = 1;
            }
    }
}

static int overlay_slices(void) {
    size_t n = (size_t)D * H * W;
    float *img = malloc(2 * n * sizeof(float)), *reg = malloc(3 * n * sizeof(float));
    KD_CHECK(img && reg, "memory");
    int sl[3];
    make_case(img, reg, 1);
    KD_CHECK(kd_overlay_slices(img, 2, D, H, W, reg, sl) == 1, "tumour found");
    KD_CHECK(sl[0] == 20 && sl[1] == 20 && sl[2] == 30,
             "slices (%d, %d, %d): expected the largest extent (20, 20, 30)", sl[0], sl[1], sl[2]);
    make_case(img, reg, 0);
    KD_CHECK(kd_overlay_slices(img, 2, D, H, W, reg, sl) == 0, "no tumour");
    KD_CHECK(sl[0] == 15 && sl[1] == 19 && sl[2] == 23,
             "no tumour: (%d, %d, %d), expected the brain box centre (15, 19, 23)", sl[0], sl[1],
             sl[2]);
    KD_CHECK(kd_overlay_slices(img, 2, D, H, W, NULL, sl) == 0 && sl[0] == 15, "no regions");
    free(img), free(reg);
    return 0;
}

static int overlay_picture(void) {
    size_t n = (size_t)D * H * W;
    float *img = malloc(2 * n * sizeof(float)), *reg = malloc(3 * n * sizeof(float));
    KD_CHECK(img && reg, "memory");
    make_case(img, reg, 1);
    static const char *names[2] = {"t1ce", "flair"};
    kd_overlay_info info = {0};
    info.case_name = "case-7";
    info.what = "prediction";
    info.channel_names = names;
    info.offset[0] = 10, info.extent[0] = 155;
    kd_canvas c = {0};
    KD_CHECK_OK(kd_plot_overlay(&c, img, 2, D, H, W, reg, &info));
    /* 48 voxels enlarged 4x into panels of 192: 2 columns, 3 rows, title and legend */
    int sc = 4, cw = W * sc, chh = H * sc;
    KD_CHECK(c.w >= 2 * cw && c.h >= 3 * chh + 40 + 14 + 44, "canvas %dx%d", c.w, c.h);
    /* the title: dark text in the top band */
    KD_CHECK(count_colour(&c, 0, 0, c.w, 24, 0x000000) > 50, "no title");
    /* the legend: a swatch of each overlay colour in the bottom band */
    int lb = c.h - 44;
    KD_CHECK(count_colour(&c, 0, lb, 40, c.h, KD_OVERLAY_WT) >= 20 &&
                 count_colour(&c, 0, lb, 40, c.h, KD_OVERLAY_TC) >= 20 &&
                 count_colour(&c, 0, lb, 40, c.h, KD_OVERLAY_ET) >= 20,
             "legend swatches");
    KD_CHECK(count_colour(&c, 40, lb, c.w, c.h, 0x000000) > 100, "legend text");
    /* each panel: a white plane-and-slice label in its top-left corner, and tumour
     * colour (yellow-ish ET blend: red and green high, blue low) inside */
    for (int col = 0; col < 2; col++)
        for (int row = 0; row < 3; row++) {
            int x0 = 4 + col * (cw + 4), y0 = 40 + 14 + row * (chh + 4);
            KD_CHECK(count_colour(&c, x0, y0, x0 + 100, y0 + 12, 0xffffff) > 20,
                     "panel (%d, %d) label", row, col);
            int et = 0;
            for (int y = y0; y < y0 + chh; y++)
                for (int x = x0; x < x0 + cw; x++) {
                    uint32_t p = px(&c, x, y);
                    et += (p >> 16 & 255) > 140 && (p >> 8 & 255) > 140 && (p & 255) < 120;
                }
            KD_CHECK(et > 16, "panel (%d, %d) shows no enhancing tumour (%d)", row, col, et);
        }
    kd_canvas_free(&c);
    /* without regions: no overlay colours anywhere, no legend */
    KD_CHECK_OK(kd_plot_overlay(&c, img, 2, D, H, W, NULL, &info));
    KD_CHECK(count_colour(&c, 0, 0, c.w, c.h, KD_OVERLAY_WT) == 0 &&
                 count_colour(&c, 0, 0, c.w, c.h, KD_OVERLAY_ET) == 0,
             "overlay colours without regions");
    kd_canvas_free(&c);
    KD_CHECK(kd_plot_overlay(&c, img, 0, D, H, W, reg, &info) == KD_ERR_INVALID_ARG, "0 channels");
    char path[1024];
    snprintf(path, sizeof path, "%s/o.png", kd_test_tmpdir());
    KD_CHECK_OK(kd_plot_overlay_write(path, img, 2, D, H, W, reg, &info));
    FILE *f = fopen(path, "rb");
    unsigned char sig[8] = {0};
    KD_CHECK(f && fread(sig, 1, 8, f) == 8 && sig[1] == 'P' && sig[2] == 'N', "a PNG");
    fclose(f);
    free(img), free(reg);
    return 0;
}

static int chart_legend_axes(void) {
    enum { N = 400 };
    double x[N], loss[N], dice[3][N];
    for (int i = 0; i < N; i++) {
        x[i] = i;
        loss[i] = 0.5 * exp(-i / 150.0) * (1 + 0.3 * ((i * 37) % 7 - 3) / 3.0);
        for (int k = 0; k < 3; k++)
            dice[k][i] = i % 50 == 49 ? 0.3 + 0.1 * k + i / 1000.0 : NAN;
    }
    kd_canvas c = {0};
    KD_CHECK_OK(kd_canvas_create(500, 400, &c));
    kd_series s[2] = {{"raw", x, loss, N, 0x112233, 0}, {"mean", x, loss, N, 0x445566, 0}};
    kd_chart ch = {"loss", "step", "loss", 1, 0, 0, 0, 0};
    kd_plot_chart(&c, 0, 0, 500, 400, &ch, s, 2);
    /* legend swatches in the top right; a vertical axis title in the left margin */
    KD_CHECK(count_colour(&c, 300, 28, 500, 80, 0x112233) >= 20 &&
                 count_colour(&c, 300, 28, 500, 80, 0x445566) >= 20,
             "legend swatches");
    KD_CHECK(count_colour(&c, 0, 100, 14, 300, 0x000000) > 40, "y axis title");
    KD_CHECK(count_colour(&c, 150, 370, 350, 400, 0x000000) > 10, "x axis title");
    kd_canvas_free(&c);
    char path[1024];
    snprintf(path, sizeof path, "%s/train.png", kd_test_tmpdir());
    const double *dp[3] = {dice[0], dice[1], dice[2]};
    KD_CHECK_OK(kd_plot_training_curves(path, x, loss, dp, N));
    FILE *f = fopen(path, "rb");
    KD_CHECK(f != NULL, "train.png written");
    fclose(f);
    return 0;
}

/* Text drawn upward is the same glyphs as across, turned a quarter: pixel (x0 + i, y0 + j)
 * across is pixel (x1 + j, y1 - i) upward; both return the length 6 * scale per character.
 * Catches: the two directions drifting apart (mirrored or shifted glyphs, a wrong advance). */
static int text_turned(void) {
    const char *s = "Dice WT 0.8 (n=24)";
    const int scale = 2, len = (int)strlen(s) * 6 * scale;
    kd_canvas a, b;
    KD_CHECK_OK(kd_canvas_create(len + 20, 40, &a));
    KD_CHECK_OK(kd_canvas_create(40, len + 20, &b));
    int la = kd_canvas_text(&a, 10, 10, s, 0x000000, scale);
    int lb = kd_canvas_text_up(&b, 10, len + 10, s, 0x000000, scale);
    int set = 0, bad = 0;
    for (int i = 0; i < len; i++)
        for (int j = 0; j < 7 * scale; j++) {
            int on = px(&a, 10 + i, 10 + j) == 0x000000;
            set += on;
            bad += on != (px(&b, 10 + j, len + 10 - i) == 0x000000);
        }
    int stray = count_colour(&a, 0, 0, a.w, a.h, 0x000000) - set;
    kd_canvas_free(&a);
    kd_canvas_free(&b);
    KD_CHECK(la == len && lb == len, "lengths %d and %d, expected %d", la, lb, len);
    KD_CHECK(set > 100, "the text is drawn (%d pixels)", set);
    KD_CHECK(bad == 0 && stray == 0, "%d pixels differ between the directions, %d outside the text box", bad, stray);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"nice_ticks", nice_ticks},           {"moving_average", moving_average},
        {"overlay_slices", overlay_slices},   {"overlay_picture", overlay_picture},
        {"chart_legend_axes", chart_legend_axes}, {"text_turned", text_turned},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
