/* Charts on an RGB canvas with a built-in 5x7 font. */
#include "kdseg/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/data.h"

/* 5x7 glyphs, one byte per row (low 5 bits, bit 4 leftmost). */
static const char glyph_chars[] = " 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:/()%_,+=<>[]";
static const uint8_t glyphs[][7] = {
    {0, 0, 0, 0, 0, 0, 0},                     /* space */
    {14, 17, 19, 21, 25, 17, 14},              /* 0 */
    {4, 12, 4, 4, 4, 4, 14},                   /* 1 */
    {14, 17, 1, 2, 4, 8, 31},                  /* 2 */
    {31, 2, 4, 2, 1, 17, 14},                  /* 3 */
    {2, 6, 10, 18, 31, 2, 2},                  /* 4 */
    {31, 16, 30, 1, 1, 17, 14},                /* 5 */
    {6, 8, 16, 30, 17, 17, 14},                /* 6 */
    {31, 1, 2, 4, 8, 8, 8},                    /* 7 */
    {14, 17, 17, 14, 17, 17, 14},              /* 8 */
    {14, 17, 17, 15, 1, 2, 12},                /* 9 */
    {14, 17, 17, 31, 17, 17, 17},              /* A */
    {30, 17, 17, 30, 17, 17, 30},              /* B */
    {14, 17, 16, 16, 16, 17, 14},              /* C */
    {28, 18, 17, 17, 17, 18, 28},              /* D */
    {31, 16, 16, 30, 16, 16, 31},              /* E */
    {31, 16, 16, 30, 16, 16, 16},              /* F */
    {14, 17, 16, 23, 17, 17, 15},              /* G */
    {17, 17, 17, 31, 17, 17, 17},              /* H */
    {14, 4, 4, 4, 4, 4, 14},                   /* I */
    {7, 2, 2, 2, 2, 18, 12},                   /* J */
    {17, 18, 20, 24, 20, 18, 17},              /* K */
    {16, 16, 16, 16, 16, 16, 31},              /* L */
    {17, 27, 21, 21, 17, 17, 17},              /* M */
    {17, 17, 25, 21, 19, 17, 17},              /* N */
    {14, 17, 17, 17, 17, 17, 14},              /* O */
    {30, 17, 17, 30, 16, 16, 16},              /* P */
    {14, 17, 17, 17, 21, 18, 13},              /* Q */
    {30, 17, 17, 30, 20, 18, 17},              /* R */
    {15, 16, 16, 14, 1, 1, 30},                /* S */
    {31, 4, 4, 4, 4, 4, 4},                    /* T */
    {17, 17, 17, 17, 17, 17, 14},              /* U */
    {17, 17, 17, 17, 17, 10, 4},               /* V */
    {17, 17, 17, 21, 21, 21, 10},              /* W */
    {17, 17, 10, 4, 10, 17, 17},               /* X */
    {17, 17, 10, 4, 4, 4, 4},                  /* Y */
    {31, 1, 2, 4, 8, 16, 31},                  /* Z */
    {0, 0, 0, 0, 0, 12, 12},                   /* . */
    {0, 0, 0, 31, 0, 0, 0},                    /* - */
    {0, 12, 12, 0, 12, 12, 0},                 /* : */
    {1, 1, 2, 4, 8, 16, 16},                   /* / */
    {2, 4, 8, 8, 8, 4, 2},                     /* ( */
    {8, 4, 2, 2, 2, 4, 8},                     /* ) */
    {24, 25, 2, 4, 8, 19, 3},                  /* % */
    {0, 0, 0, 0, 0, 0, 31},                    /* _ */
    {0, 0, 0, 0, 12, 4, 8},                    /* , */
    {0, 4, 4, 31, 4, 4, 0},                    /* + */
    {0, 0, 31, 0, 31, 0, 0},                   /* = */
    {2, 4, 8, 16, 8, 4, 2},                    /* < */
    {8, 4, 2, 1, 2, 4, 8},                     /* > */
    {14, 8, 8, 8, 8, 8, 14},                   /* [ */
    {14, 2, 2, 2, 2, 2, 14},                   /* ] */
};

kd_status kd_canvas_create(int w, int h, kd_canvas *c) {
    c->w = w;
    c->h = h;
    c->rgb = malloc((size_t)w * h * 3);
    if (!c->rgb) return kd_fail(KD_ERR_OUT_OF_MEMORY, "canvas %dx%d", w, h);
    memset(c->rgb, 255, (size_t)w * h * 3);
    return KD_OK;
}

void kd_canvas_free(kd_canvas *c) {
    free(c->rgb);
    c->rgb = NULL;
}

void kd_canvas_pixel(kd_canvas *c, int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
    p[0] = (uint8_t)(rgb >> 16);
    p[1] = (uint8_t)(rgb >> 8);
    p[2] = (uint8_t)rgb;
}

void kd_canvas_line(kd_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (int guard = 0; guard < 100000; guard++) {
        kd_canvas_pixel(c, x0, y0, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

void kd_canvas_rect(kd_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, int fill) {
    if (fill) {
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) kd_canvas_pixel(c, x, y, rgb);
        return;
    }
    kd_canvas_line(c, x0, y0, x1, y0, rgb);
    kd_canvas_line(c, x0, y1, x1, y1, rgb);
    kd_canvas_line(c, x0, y0, x0, y1, rgb);
    kd_canvas_line(c, x1, y0, x1, y1, rgb);
}

int kd_canvas_text(kd_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale) {
    int x0 = x;
    for (; *s; s++) {
        char ch = *s >= 'a' && *s <= 'z' ? (char)(*s - 32) : *s;
        const char *p = strchr(glyph_chars, ch);
        int gi = p && ch ? (int)(p - glyph_chars) : 0;
        for (int r = 0; r < 7; r++)
            for (int b = 0; b < 5; b++)
                if (glyphs[gi][r] & (16 >> b))
                    for (int u = 0; u < scale; u++)
                        for (int v = 0; v < scale; v++)
                            kd_canvas_pixel(c, x + b * scale + u, y + r * scale + v, rgb);
        x += 6 * scale;
    }
    return x - x0;
}

kd_status kd_canvas_write(const kd_canvas *c, const char *path) {
    return kd_png_write(path, c->w, c->h, 3, c->rgb);
}

uint32_t kd_plot_colour(int i) {
    static const uint32_t pal[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                   0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
    return pal[(i % 10 + 10) % 10];
}

static void fmt_tick(char *b, size_t n, double v) {
    if (v != 0 && (fabs(v) < 0.01 || fabs(v) >= 10000)) snprintf(b, n, "%.0e", v);
    else if (fabs(v) < 10) snprintf(b, n, "%.2f", v);
    else snprintf(b, n, "%.0f", v);
}

void kd_plot_lines(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const kd_series *s, int ns, int log_y) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            double y = s[k].y[i];
            if (!isfinite(y) || (log_y && y <= 0)) continue;
            if (log_y) y = log10(y);
            xmin = fmin(xmin, s[k].x[i]);
            xmax = fmax(xmax, s[k].x[i]);
            ymin = fmin(ymin, y);
            ymax = fmax(ymax, y);
        }
    if (!(xmax > xmin)) xmax = xmin + 1;
    if (!(ymax > ymin)) ymax = ymin + 1;
    if (!isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
    int L = x0 + 60, R = x0 + w - 10, T = y0 + 25, B = y0 + h - 30;
    kd_canvas_text(c, x0 + 60, y0 + 6, title, 0x000000, 2);
    kd_canvas_rect(c, L, T, R, B, 0x000000, 0);
    for (int t = 0; t <= 4; t++) {
        double fy = ymin + (ymax - ymin) * t / 4.0;
        int py = B - (int)((B - T) * t / 4.0);
        char lab[32];
        fmt_tick(lab, sizeof lab, log_y ? pow(10, fy) : fy);
        kd_canvas_line(c, L, py, R, py, 0xdddddd);
        kd_canvas_text(c, x0 + 2, py - 3, lab, 0x000000, 1);
        double fx = xmin + (xmax - xmin) * t / 4.0;
        int px = L + (int)((R - L) * t / 4.0);
        fmt_tick(lab, sizeof lab, fx);
        kd_canvas_text(c, px - 10, B + 6, lab, 0x000000, 1);
    }
    kd_canvas_rect(c, L, T, R, B, 0x000000, 0);
    for (int k = 0; k < ns; k++) {
        int have = 0, lx = 0, ly = 0;
        for (int i = 0; i < s[k].n; i++) {
            double y = s[k].y[i];
            if (!isfinite(y) || (log_y && y <= 0)) continue;
            if (log_y) y = log10(y);
            int px = L + (int)((R - L) * (s[k].x[i] - xmin) / (xmax - xmin));
            int py = B - (int)((B - T) * (y - ymin) / (ymax - ymin));
            if (have) kd_canvas_line(c, lx, ly, px, py, s[k].rgb);
            else kd_canvas_rect(c, px - 1, py - 1, px + 1, py + 1, s[k].rgb, 1);
            lx = px;
            ly = py;
            have = 1;
        }
        kd_canvas_rect(c, R - 110, T + 8 + 12 * k, R - 100, T + 14 + 12 * k, s[k].rgb, 1);
        kd_canvas_text(c, R - 95, T + 8 + 12 * k, s[k].name, 0x000000, 1);
    }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quant(const double *v, int n, double q) {
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    double f = pos - i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

void kd_plot_boxes(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const char *const *groups, int ngroups, const char *const *series,
                   int nseries, const double *const *values, const int *counts, double ymin,
                   double ymax) {
    int L = x0 + 50, R = x0 + w - 10, T = y0 + 25, B = y0 + h - 60;
    kd_canvas_text(c, x0 + 50, y0 + 6, title, 0x000000, 2);
    for (int t = 0; t <= 5; t++) {
        double v = ymin + (ymax - ymin) * t / 5.0;
        int py = B - (int)((B - T) * t / 5.0);
        char lab[32];
        fmt_tick(lab, sizeof lab, v);
        kd_canvas_line(c, L, py, R, py, 0xdddddd);
        kd_canvas_text(c, x0 + 2, py - 3, lab, 0x000000, 1);
    }
    kd_canvas_rect(c, L, T, R, B, 0x000000, 0);
    double gw = (double)(R - L) / ngroups;
#define Y(v) (B - (int)((B - T) * (((v) < ymin ? ymin : (v) > ymax ? ymax : (v)) - ymin) / (ymax - ymin)))
    for (int g = 0; g < ngroups; g++) {
        kd_canvas_text(c, L + (int)(gw * g + gw / 2) - 6, B + 6, groups[g], 0x000000, 2);
        double bw = gw / (nseries + 1);
        for (int k = 0; k < nseries; k++) {
            int n = counts[g * nseries + k];
            if (n <= 0) continue;
            double *v = malloc((size_t)n * sizeof *v);
            if (!v) return;
            int m = 0;
            for (int i = 0; i < n; i++)
                if (isfinite(values[g * nseries + k][i])) v[m++] = values[g * nseries + k][i];
            if (!m) {
                free(v);
                continue;
            }
            qsort(v, (size_t)m, sizeof *v, cmp_d);
            double q1 = quant(v, m, 0.25), q2 = quant(v, m, 0.5), q3 = quant(v, m, 0.75);
            double iqr = q3 - q1, lo = v[0], hi = v[m - 1];
            for (int i = 0; i < m; i++)
                if (v[i] >= q1 - 1.5 * iqr) {
                    lo = v[i];
                    break;
                }
            for (int i = m - 1; i >= 0; i--)
                if (v[i] <= q3 + 1.5 * iqr) {
                    hi = v[i];
                    break;
                }
            uint32_t col = kd_plot_colour(k);
            int cx = L + (int)(gw * g + bw * (k + 1)), hw = (int)(bw * 0.35);
            kd_canvas_rect(c, cx - hw, Y(q3), cx + hw, Y(q1), col, 0);
            kd_canvas_line(c, cx - hw, Y(q2), cx + hw, Y(q2), 0x000000);
            kd_canvas_line(c, cx, Y(q3), cx, Y(hi), col);
            kd_canvas_line(c, cx, Y(q1), cx, Y(lo), col);
            kd_canvas_line(c, cx - hw / 2, Y(hi), cx + hw / 2, Y(hi), col);
            kd_canvas_line(c, cx - hw / 2, Y(lo), cx + hw / 2, Y(lo), col);
            for (int i = 0; i < m; i++)
                if (v[i] < lo || v[i] > hi) kd_canvas_rect(c, cx - 1, Y(v[i]) - 1, cx + 1, Y(v[i]) + 1, col, 1);
            free(v);
        }
    }
#undef Y
    for (int k = 0; k < nseries; k++) {
        int lx = L + 10 + (k % 4) * ((R - L) / 4), ly = B + 26 + 12 * (k / 4);
        kd_canvas_rect(c, lx, ly, lx + 8, ly + 6, kd_plot_colour(k), 1);
        kd_canvas_text(c, lx + 12, ly, series[k], 0x000000, 1);
    }
}
