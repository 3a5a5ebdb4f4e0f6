/* Charts on an RGB canvas with a built-in 5x7 font. */
#include "kdseg/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/data.h"

/* 5x7 glyphs, one byte per row (low 5 bits, bit 4 leftmost). */
static const char glyph_chars[] = " 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:/()%_,+=<>[]'";
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
    {4, 4, 8, 0, 0, 0, 0},                     /* ' */
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

/* Text from (x, y): left to right (up 0) or, turned a quarter, bottom to top (up 1), glyph
 * row r then running along x and glyph column b up from y. Returns the length drawn. */
static int draw_text(kd_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale, int up) {
    int len = 0;
    for (; *s; s++, len += 6 * scale) {
        char ch = *s >= 'a' && *s <= 'z' ? (char)(*s - 32) : *s;
        const char *p = strchr(glyph_chars, ch);
        int gi = p && ch ? (int)(p - glyph_chars) : 0;
        for (int r = 0; r < 7; r++)
            for (int b = 0; b < 5; b++)
                if (glyphs[gi][r] & (16 >> b))
                    for (int u = 0; u < scale; u++)
                        for (int v = 0; v < scale; v++) {
                            if (up)
                                kd_canvas_pixel(c, x + r * scale + u, y - len - b * scale - v, rgb);
                            else
                                kd_canvas_pixel(c, x + len + b * scale + u, y + r * scale + v, rgb);
                        }
    }
    return len;
}

int kd_canvas_text(kd_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale) {
    return draw_text(c, x, y, s, rgb, scale, 0);
}

kd_status kd_canvas_write(const kd_canvas *c, const char *path) {
    return kd_png_write(path, c->w, c->h, 3, c->rgb);
}

uint32_t kd_plot_colour(int i) {
    static const uint32_t pal[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                   0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
    return pal[(i % 10 + 10) % 10];
}

int kd_canvas_text_width(const char *s, int scale) {
    return (int)strlen(s) * 6 * scale;
}

int kd_canvas_text_up(kd_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale) {
    return draw_text(c, x, y, s, rgb, scale, 1);
}

/* A tick label: as few digits as the step needs. */
static void fmt_tick(char *b, size_t n, double v, double step) {
    double a = fabs(v);
    if (v == 0) {
        snprintf(b, n, "0");
        return;
    }
    if (a >= 1e5 || a < 1e-3) {
        snprintf(b, n, "%.0e", v);
        return;
    }
    int dec = 0;
    for (double st = step > 0 ? step : a; dec < 4 && fabs(st - round(st)) > 1e-9 * fabs(step + 1);
         st *= 10)
        dec++;
    snprintf(b, n, "%.*f", dec, v);
}

int kd_plot_nice_ticks(double lo, double hi, int max_ticks, double *ticks) {
    if (!(hi > lo)) hi = lo + 1;
    if (max_ticks < 1) max_ticks = 1;
    if (max_ticks > 15) max_ticks = 15;
    double raw = (hi - lo) / max_ticks, mag = pow(10, floor(log10(raw))), step = mag;
    static const double mult[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (mult[i] * mag >= raw * (1 - 1e-9)) {
            step = mult[i] * mag;
            break;
        }
    double t0 = floor(lo / step + 1e-9) * step;
    int n = 0;
    for (double t = t0; n < 16; t += step) {
        ticks[n++] = fabs(t) < step * 1e-9 ? 0 : t;
        if (t >= hi - step * 1e-9) break;
    }
    return n;
}

int kd_plot_log_ticks(double lo, double hi, double *ticks) {
    if (!(lo > 0)) lo = 1e-6;
    if (!(hi > lo)) hi = lo * 10;
    int e0 = (int)floor(log10(lo) + 1e-9), e1 = (int)ceil(log10(hi) - 1e-9);
    if (e1 <= e0) e1 = e0 + 1;
    /* candidates in ascending order: 1, 2, 5 x 10^e over few decades, else 10^e */
    static const double m125[] = {1, 2, 5}, m1[] = {1};
    const double *m = e1 - e0 <= 2 ? m125 : m1;
    int nm = e1 - e0 <= 2 ? 3 : 1, stride = e1 - e0 <= 8 ? 1 : (e1 - e0 + 7) / 8;
    double cand[64] = {0};
    int nc = 0;
    for (int e = e0; e <= e1 && nc < 60; e += stride)
        for (int k = 0; k < nm; k++)
            cand[nc++] = m[k] * pow(10, e);
    int first = 0, last = nc - 1;
    for (int i = 0; i < nc; i++)
        if (cand[i] <= lo * (1 + 1e-9)) first = i;
    for (int i = nc - 1; i >= 0; i--)
        if (cand[i] >= hi * (1 - 1e-9)) last = i;
    int n = 0;
    for (int i = first; i <= last && n < 16; i++)
        ticks[n++] = cand[i];
    return n;
}

void kd_moving_average(const double *y, int n, int window, double *out) {
    if (window < 1) window = 1;
    double sum = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        if (isfinite(y[i])) sum += y[i], cnt++;
        if (i >= window && isfinite(y[i - window])) sum -= y[i - window], cnt--;
        out[i] = cnt ? sum / cnt : NAN;
    }
}

void kd_plot_chart(kd_canvas *c, int x0, int y0, int w, int h, const kd_chart *ch,
                   const kd_series *s, int ns) {
    kd_plot_chart_errors(c, x0, y0, w, h, ch, s, NULL, ns, 0);
}

/* err[k][i] when it is a bar's half-length, else 0. */
static double bar(const double *const *err, int k, int i) {
    return err && err[k] && isfinite(err[k][i]) ? fabs(err[k][i]) : 0;
}

void kd_plot_chart_errors(kd_canvas *c, int x0, int y0, int w, int h, const kd_chart *ch,
                          const kd_series *s, const double *const *err, int ns, int legend_bottom) {
    int log_y = ch->log_y;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            double y = s[k].y[i], e = log_y ? 0 : bar(err, k, i);
            if (!isfinite(y) || (log_y && y <= 0)) continue;
            xmin = fmin(xmin, s[k].x[i]);
            xmax = fmax(xmax, s[k].x[i]);
            ymin = fmin(ymin, y - e);
            ymax = fmax(ymax, y + e);
        }
    if (!isfinite(xmin)) xmin = 0, xmax = 1, ymin = log_y ? 0.1 : 0, ymax = 1;
    if (ch->ymax > ch->ymin) ymin = ch->ymin, ymax = ch->ymax;
    if (ch->xmax > ch->xmin) xmin = ch->xmin, xmax = ch->xmax;
    double xt[16], yt[16];
    int nxt = kd_plot_nice_ticks(xmin, xmax > xmin ? xmax : xmin + 1, 5, xt);
    int nyt = log_y ? kd_plot_log_ticks(ymin, ymax, yt) : kd_plot_nice_ticks(ymin, ymax, 5, yt);
    double ax0 = xt[0], ax1 = xt[nxt - 1];
    double ay0 = log_y ? log10(yt[0]) : yt[0], ay1 = log_y ? log10(yt[nyt - 1]) : yt[nyt - 1];
    if (ch->ymax > ch->ymin && !log_y) ay0 = ch->ymin, ay1 = ch->ymax;
    if (!(ax1 > ax0)) ax1 = ax0 + 1;
    if (!(ay1 > ay0)) ay1 = ay0 + 1;
    int L = x0 + 62, R = x0 + w - 12, T = y0 + 28, B = y0 + h - 36;
    if (ch->title) kd_canvas_text(c, L, y0 + 6, ch->title, 0x000000, 2);
    double ystep = nyt > 1 ? yt[1] - yt[0] : 1, xstep = nxt > 1 ? xt[1] - xt[0] : 1;
    char lab[48];
    for (int t = 0; t < nyt; t++) {
        double fy = log_y ? log10(yt[t]) : yt[t];
        if (fy < ay0 - 1e-9 || fy > ay1 + 1e-9) continue;
        int py = B - (int)lround((B - T) * (fy - ay0) / (ay1 - ay0));
        fmt_tick(lab, sizeof lab, yt[t], log_y ? yt[t] : ystep);
        kd_canvas_line(c, L, py, R, py, 0xdddddd);
        kd_canvas_line(c, L - 4, py, L, py, 0x000000);
        kd_canvas_text(c, L - 6 - kd_canvas_text_width(lab, 1), py - 3, lab, 0x000000, 1);
    }
    for (int t = 0; t < nxt; t++) {
        int px = L + (int)lround((R - L) * (xt[t] - ax0) / (ax1 - ax0));
        fmt_tick(lab, sizeof lab, xt[t], xstep);
        kd_canvas_line(c, px, B, px, B + 4, 0x000000);
        kd_canvas_text(c, px - kd_canvas_text_width(lab, 1) / 2, B + 7, lab, 0x000000, 1);
    }
    kd_canvas_rect(c, L, T, R, B, 0x000000, 0);
    if (ch->xlabel)
        kd_canvas_text(c, (L + R - kd_canvas_text_width(ch->xlabel, 1)) / 2, B + 20, ch->xlabel,
                       0x000000, 1);
    if (ch->ylabel) {
        char yl[128];
        snprintf(yl, sizeof yl, "%s%s", ch->ylabel, log_y ? " (log scale)" : "");
        kd_canvas_text_up(c, x0 + 4, (T + B + kd_canvas_text_width(yl, 1)) / 2, yl, 0x000000, 1);
    }
    for (int k = 0; k < ns; k++) {
        int have = 0, lx = 0, ly = 0;
        for (int i = 0; i < s[k].n; i++) {
            double y = s[k].y[i];
            if (!isfinite(y) || (log_y && y <= 0)) continue;
            if (log_y) y = log10(y);
            if (y < ay0) y = ay0;
            if (y > ay1) y = ay1;
            int px = L + (int)lround((R - L) * (s[k].x[i] - ax0) / (ax1 - ax0));
            int py = B - (int)lround((B - T) * (y - ay0) / (ay1 - ay0));
            if (have) kd_canvas_line(c, lx, ly, px, py, s[k].rgb);
            if (s[k].markers || !have) kd_canvas_rect(c, px - 1, py - 1, px + 1, py + 1, s[k].rgb, 1);
            double e = log_y ? 0 : bar(err, k, i);
            if (e > 0) {
                double lo = fmax(y - e, ay0), hi = fmin(y + e, ay1);
                int plo = B - (int)lround((B - T) * (lo - ay0) / (ay1 - ay0));
                int phi = B - (int)lround((B - T) * (hi - ay0) / (ay1 - ay0));
                kd_canvas_line(c, px, plo, px, phi, s[k].rgb);
                kd_canvas_line(c, px - 3, plo, px + 3, plo, s[k].rgb);
                kd_canvas_line(c, px - 3, phi, px + 3, phi, s[k].rgb);
            }
            lx = px, ly = py, have = 1;
        }
    }
    /* the legend, on white, in the top right corner */
    int lw = 0;
    for (int k = 0; k < ns; k++) {
        int tw = kd_canvas_text_width(s[k].name, 1);
        if (tw > lw) lw = tw;
    }
    if (ns > 0) {
        int bx = R - lw - 26, by = legend_bottom ? B - 12 * ns - 8 : T + 4;
        kd_canvas_rect(c, bx, by, R - 4, by + 12 * ns + 4, 0xffffff, 1);
        kd_canvas_rect(c, bx, by, R - 4, by + 12 * ns + 4, 0x888888, 0);
        for (int k = 0; k < ns; k++) {
            kd_canvas_rect(c, bx + 4, by + 5 + 12 * k, bx + 14, by + 10 + 12 * k, s[k].rgb, 1);
            kd_canvas_text(c, bx + 18, by + 4 + 12 * k, s[k].name, 0x000000, 1);
        }
    }
}

void kd_plot_lines(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const kd_series *s, int ns, int log_y) {
    kd_chart ch = {title, NULL, NULL, log_y, 0, 0, 0, 0};
    kd_plot_chart(c, x0, y0, w, h, &ch, s, ns);
}

kd_status kd_plot_training_curves(const char *png_path, const double *step, const double *loss,
                                  const double *const dice[3], int n) {
    double *avg = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!avg) return kd_fail(KD_ERR_OUT_OF_MEMORY, "plot: %d steps", n);
    int window = n / 25 > 5 ? n / 25 : 5;
    kd_moving_average(loss, n, window, avg);
    kd_canvas c = {0};
    kd_status s = kd_canvas_create(1000, 400, &c);
    if (!s) {
        char avg_name[64];
        snprintf(avg_name, sizeof avg_name, "mean of %d steps", window);
        kd_series ls[2] = {{"loss per step", step, loss, n, 0xa6c8e6, 0},
                           {avg_name, step, avg, n, 0x08306b, 0}};
        double x0 = n ? step[0] : 0, x1 = n ? step[n - 1] : 1; /* both panels alike */
        kd_chart lc = {"training loss", "step", "loss", 1, 0, 0, x0, x1};
        kd_plot_chart(&c, 0, 0, 500, 400, &lc, ls, 2);
        kd_series ds[3] = {{"WT", step, dice[0], n, 0x2ca02c, 1},
                           {"TC", step, dice[1], n, 0xd62728, 1},
                           {"ET", step, dice[2], n, 0xb8a000, 1}};
        kd_chart dc = {"validation dice per region", "step", "dice", 0, 0.0, 1.0, x0, x1};
        kd_plot_chart(&c, 500, 0, 500, 400, &dc, ds, 3);
        s = kd_canvas_write(&c, png_path);
    }
    kd_canvas_free(&c);
    free(avg);
    return s;
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
    kd_plot_boxes_labeled(c, x0, y0, w, h, title, NULL, groups, ngroups, series, nseries, values,
                          counts, ymin, ymax);
}

void kd_plot_boxes_labeled(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                           const char *ylabel, const char *const *groups, int ngroups,
                           const char *const *series, int nseries, const double *const *values,
                           const int *counts, double ymin, double ymax) {
    int L = x0 + 50, R = x0 + w - 10, T = y0 + 25, B = y0 + h - 60;
    kd_canvas_text(c, x0 + 50, y0 + 6, title, 0x000000, 2);
    if (ylabel)
        kd_canvas_text_up(c, x0 + 4, (T + B + kd_canvas_text_width(ylabel, 1)) / 2, ylabel,
                          0x000000, 1);
    for (int t = 0; t <= 5; t++) {
        double v = ymin + (ymax - ymin) * t / 5.0;
        int py = B - (int)((B - T) * t / 5.0);
        char lab[32];
        fmt_tick(lab, sizeof lab, v, (ymax - ymin) / 5.0);
        kd_canvas_line(c, L, py, R, py, 0xdddddd);
        kd_canvas_text(c, L - 4 - kd_canvas_text_width(lab, 1), py - 3, lab, 0x000000, 1);
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

/* ---- segmentation overlays ---- */

int kd_plot_region_legend(kd_canvas *c, int x, int y, int scale) {
    static const struct {
        uint32_t rgb;
        const char *text;
    } item[3] = {
        {KD_OVERLAY_WT, "WT whole tumour: edema (outside TC)"},
        {KD_OVERLAY_TC, "TC tumour core: necrosis, non-enhancing (outside ET)"},
        {KD_OVERLAY_ET, "ET enhancing tumour"},
    };
    int lh = 10 * scale;
    for (int k = 0; k < 3; k++) {
        int yy = y + k * lh;
        kd_canvas_rect(c, x, yy, x + 7 * scale, yy + 6 * scale, item[k].rgb, 1);
        kd_canvas_rect(c, x, yy, x + 7 * scale, yy + 6 * scale, 0x000000, 0);
        kd_canvas_text(c, x + 10 * scale, yy, item[k].text, 0x000000, scale);
    }
    return 3 * lh;
}

int kd_overlay_slices(const float *image, int channels, int d, int h, int w,
                      const float *regions, int slice[3]) {
    const size_t n = (size_t)d * h * w;
    int dims[3] = {d, h, w};
    int found = 0;
    if (regions) {
        int64_t *cnt[3];
        cnt[0] = calloc((size_t)d + h + w, sizeof(int64_t));
        if (cnt[0]) {
            cnt[1] = cnt[0] + d, cnt[2] = cnt[1] + h;
            size_t i = 0;
            for (int z = 0; z < d; z++)
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++, i++)
                        if (regions[i] > 0.5f) cnt[0][z]++, cnt[1][y]++, cnt[2][x]++, found = 1;
            for (int a = 0; a < 3 && found; a++) {
                int best = 0;
                for (int k = 1; k < dims[a]; k++)
                    if (cnt[a][k] > cnt[a][best]) best = k;
                slice[a] = best;
            }
            free(cnt[0]);
        }
    }
    if (found) return 1;
    int lo[3] = {d, h, w}, hi[3] = {-1, -1, -1};
    for (int ch = 0; ch < channels; ch++) {
        size_t i = 0;
        const float *v = image + (size_t)ch * n;
        for (int z = 0; z < d; z++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++, i++)
                    if (v[i] != 0) {
                        int p[3] = {z, y, x};
                        for (int a = 0; a < 3; a++) {
                            if (p[a] < lo[a]) lo[a] = p[a];
                            if (p[a] > hi[a]) hi[a] = p[a];
                        }
                    }
    }
    for (int a = 0; a < 3; a++)
        slice[a] = hi[a] >= 0 ? (lo[a] + hi[a]) / 2 : dims[a] / 2;
    return 0;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* 0.5 and 99.5 percentiles of the nonzero voxels (a strided sample). */
static void grey_window(const float *v, size_t n, float *lo, float *hi) {
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        cnt += v[i] != 0;
    *lo = 0;
    *hi = 1;
    if (!cnt) return;
    size_t stride = cnt > 200000 ? cnt / 200000 : 1, k = 0, m = 0;
    float *s = malloc((cnt / stride + 1) * sizeof(float));
    if (!s) return;
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0 && k++ % stride == 0) s[m++] = v[i];
    qsort(s, m, sizeof(float), cmp_float);
    *lo = s[(size_t)(0.005 * (m - 1))];
    *hi = s[(size_t)(0.995 * (m - 1))];
    if (!(*hi > *lo)) *hi = *lo + 1;
    free(s);
}

/* Text with a one-pixel dark outline, readable on any image. */
static void text_outlined(kd_canvas *c, int x, int y, const char *s, uint32_t rgb) {
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++)
            if (dx || dy) kd_canvas_text(c, x + dx, y + dy, s, 0x000000, 1);
    kd_canvas_text(c, x, y, s, rgb, 1);
}

kd_status kd_plot_overlay(kd_canvas *c, const float *image, int channels, int d, int h, int w,
                          const float *regions, const kd_overlay_info *info) {
    c->rgb = NULL;
    if (!image || channels < 1 || channels > 16 || d < 1 || h < 1 || w < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "overlay of %d channels %dx%dx%d", channels, d, h, w);
    const size_t n = (size_t)d * h * w;
    int sl[3];
    int tumour = kd_overlay_slices(image, channels, d, h, w, regions, sl);
    int big = d > h ? d : h;
    if (w > big) big = w;
    int sc = big >= 128 ? 1 : (160 + big - 1) / big; /* enlarge small volumes */
    const int gap = 4, title_h = 40, head_h = 14, legend_h = 44;
    int cw = (w > h ? w : h) * sc, chh = (h > d ? h : d) * sc;
    if (cw < 120) cw = 120;
    int W = channels * (cw + gap) + gap, H = title_h + head_h + 3 * (chh + gap) + gap + legend_h;
    if (W < 460) W = 460;
    kd_status s = kd_canvas_create(W, H, c);
    if (s) return s;
    char t[512];
    snprintf(t, sizeof t, "%s%s%s", info && info->case_name ? info->case_name : "case",
             info && info->what ? ": " : "", info && info->what ? info->what : "");
    kd_canvas_text(c, gap, 6, t, 0x000000, 2);
    snprintf(t, sizeof t, "%s",
             tumour    ? "slices through the tumour's largest extent in each plane"
             : regions ? "no tumour: slices through the centre of the brain"
                       : "no labels: slices through the centre of the brain");
    kd_canvas_text(c, gap, 26, t, 0x444444, 1);
    int dims[3] = {d, h, w};
    for (int k = 0; k < channels; k++) {
        const float *v = image + k * n;
        float lo, hi;
        grey_window(v, n, &lo, &hi);
        int colx = gap + k * (cw + gap);
        char head[64];
        if (info && info->channel_names && info->channel_names[k])
            snprintf(head, sizeof head, "%s", info->channel_names[k]);
        else
            snprintf(head, sizeof head, "channel %d", k + 1);
        kd_canvas_text(c, colx + (cw - kd_canvas_text_width(head, 1)) / 2, title_h + 2, head,
                       0x000000, 1);
        for (int view = 0; view < 3; view++) {
            /* axial: rows y, cols x; coronal: rows z (superior up), cols x;
               sagittal: rows z (superior up), cols y. */
            int rows = view == 0 ? h : d, cols = view == 2 ? h : w;
            int oy0 = title_h + head_h + view * (chh + gap);
            kd_canvas_rect(c, colx, oy0, colx + cw - 1, oy0 + chh - 1, 0x000000, 1);
            int ox = colx + (cw - cols * sc) / 2, oy = oy0 + (chh - rows * sc) / 2;
            for (int r = 0; r < rows; r++)
                for (int q = 0; q < cols; q++) {
                    int z = view == 0 ? sl[0] : d - 1 - r;
                    int y = view == 0 ? r : view == 1 ? sl[1] : q;
                    int x = view == 2 ? sl[2] : q;
                    size_t i = ((size_t)z * h + y) * w + x;
                    float g = (v[i] - lo) / (hi - lo);
                    g = v[i] == 0 ? 0 : g < 0 ? 0 : g > 1 ? 1 : g; /* background black */
                    float rgb[3] = {g * 255, g * 255, g * 255};
                    uint32_t col = 0;
                    if (regions) {
                        if (regions[2 * n + i] > 0.5f)
                            col = KD_OVERLAY_ET;
                        else if (regions[n + i] > 0.5f)
                            col = KD_OVERLAY_TC;
                        else if (regions[i] > 0.5f)
                            col = KD_OVERLAY_WT;
                    }
                    if (col) {
                        float cc[3] = {(float)(col >> 16 & 255), (float)(col >> 8 & 255),
                                       (float)(col & 255)};
                        for (int j = 0; j < 3; j++)
                            rgb[j] = 0.45f * rgb[j] + 0.55f * cc[j];
                    }
                    uint32_t px = (uint32_t)lrintf(rgb[0]) << 16 | (uint32_t)lrintf(rgb[1]) << 8 |
                                  (uint32_t)lrintf(rgb[2]);
                    kd_canvas_rect(c, ox + q * sc, oy + r * sc, ox + q * sc + sc - 1,
                                   oy + r * sc + sc - 1, px, 1);
                }
            static const char *plane[3] = {"axial", "coronal", "sagittal"};
            int axis = view; /* axial: z (0), coronal: y (1), sagittal: x (2) */
            int off = info ? info->offset[axis] : 0;
            int ext = info && info->extent[axis] > 0 ? info->extent[axis] : dims[axis];
            char lab[64];
            snprintf(lab, sizeof lab, "%s %d/%d", plane[view], sl[axis] + off + 1, ext);
            text_outlined(c, colx + 3, oy0 + 3, lab, 0xffffff);
        }
    }
    if (regions) kd_plot_region_legend(c, gap, H - legend_h + 8, 1);
    return KD_OK;
}

kd_status kd_plot_overlay_write(const char *path, const float *image, int channels, int d, int h,
                                int w, const float *regions, const kd_overlay_info *info) {
    kd_canvas c = {0};
    kd_status s = kd_plot_overlay(&c, image, channels, d, h, w, regions, info);
    if (!s) s = kd_canvas_write(&c, path);
    kd_canvas_free(&c);
    return s ? kd_fail_context(s, "%s", path) : KD_OK;
}

void kd_overlay_info_for_case(kd_overlay_info *info, const kd_dataset *ds, const kd_case *c,
                              const char *what) {
    memset(info, 0, sizeof *info);
    info->case_name = c->name;
    info->what = what;
    for (int k = 0; k < c->channels && k < 16; k++)
        info->name_store[k] = kd_modality_name(kd_dataset_modality(ds, k));
    info->channel_names = info->name_store;
    for (int a = 0; a < 3; a++) {
        info->offset[a] = c->crop_lo[a] - c->pad_lo[a];
        info->extent[a] = c->orig[a];
    }
}
