/* The per-device tuning table of the direct conv kernels (conv_tune.h): built-in entries,
 * the user file in the cache folder (same conventions as the conv chooser's
 * conv-choices.txt: text lines, rewritten through a temporary file and a rename), the
 * lookup, and the parameters handed to each launch. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kdseg/fs.h"
#include "conv_tune.h"

#define TUNE_FILE "conv-tuning.txt"
#define TUNE_MAGIC "# kdseg conv tuning table 1"
#define MAX_LINE 1024

const kd_conv_tune kd_conv_tune_default = {KD_TUNE_LOCAL_AUTO, 1, 1, 16, 256, 64, 1, 4, 1, 4, 1, 0, 1, 1, 0, 0};

/* What is known. PoCL's CPU device: the values measured best on PoCL 3.1 (2-core EPYC):
 * one work-item per group for every conv shape (1x1x1 convs ran 3-4x slower with 8-32 rows
 * per group, 3x3x3 ones 10-30% slower with 4), float16 vectors. NVIDIA GPUs: the per-pass
 * winners of `kdseg tune` on an H200 (driver 580.159, 2026-11-27; over the student's 15
 * conv shapes at 64^3 they were 2.1x faster than the default for forward and input
 * gradient, 1.19x for the weight gradient): the driver's local size, scalar channels and
 * no channel-block-outer order (more work-items) for forward and input gradient, float8
 * for the weight gradient. Other NVIDIA GPUs start from these; `kdseg tune` measures them. */
static const kd_tune_entry builtin[] = {
    {KD_TUNE_LEVEL_VENDOR, "pocl", 2, "*", {KD_TUNE_LOCAL_SET, 1, 1, 16, 256, 64, 1, 8, 2, 8, 2, 1024, 1, 2, 1, 32},
     -1, -1, 0, "PoCL CPU, measured on PoCL 3.1"},
    {KD_TUNE_LEVEL_VENDOR, "nvidia", 0, "fwd", {KD_TUNE_LOCAL_DRIVER, 1, 1, 1, -1, 64, 1, 4, 1, 4, 1, 0, 1, 1, 0, 0}, 5.210,
     2.472, 0, "NVIDIA GPU, measured on an H200 (other models: run kdseg tune)"},
    {KD_TUNE_LEVEL_VENDOR, "nvidia", 0, "bwd_data", {KD_TUNE_LOCAL_DRIVER, 1, 1, 1, -1, 64, 1, 4, 1, 4, 1, 0, 1, 1, 0, 0},
     5.223, 2.503, 0, "NVIDIA GPU, measured on an H200 (other models: run kdseg tune)"},
    {KD_TUNE_LEVEL_VENDOR, "nvidia", 0, "bwd_weight", {KD_TUNE_LOCAL_DRIVER, 1, 1, 8, 256, 64, 1, 4, 1, 4, 1, 0, 1, 1, 0, 0},
     7.474, 6.258, 0, "NVIDIA GPU, measured on an H200 (other models: run kdseg tune)"},
};

const kd_tune_entry *kd_conv_tune_builtin(int *n) {
    *n = (int)(sizeof builtin / sizeof builtin[0]);
    return builtin;
}

/* ---- parameters as text ----------------------------------------------------------------- */

void kd_conv_tune_format(const kd_conv_tune *p, char *out, size_t n) {
    char co[16];
    if (p->coouter < 0) snprintf(co, sizeof co, "never");
    else snprintf(co, sizeof co, "%d", p->coouter);
    snprintf(out, n,
             "local=%s lx=%d ly=%d vmax=%d coouter=%s chunks=%d wlx=%d wb=%d cb=%d wci=%d "
             "wcb=%d wkb=%d small=%d rows=%d wt3=%d pw=%d",
             p->local == KD_TUNE_LOCAL_SET      ? "set"
             : p->local == KD_TUNE_LOCAL_DRIVER ? "driver"
                                                : "auto",
             p->lx, p->ly, p->vmax, co, p->chunks, p->wlx, p->wb, p->cb, p->wci, p->wcb, p->wkb,
             p->small, p->rows, p->wt3, p->pw);
}

int kd_conv_tune_valid(const kd_conv_tune *p, char *why, size_t nwhy) {
    const char *bad = NULL;
    if (p->local < -1 || p->local > 1) bad = "local must be auto, set or driver";
    else if (p->lx < 1 || p->lx > 1024 || p->ly < 1 || p->ly > 1024 || p->lx * p->ly > 1024)
        bad = "lx and ly must be 1..1024 with lx*ly <= 1024";
    else if (p->vmax != 1 && p->vmax != 8 && p->vmax != 16) bad = "vmax must be 1, 8 or 16";
    else if (p->coouter < -1 || p->coouter > (1 << 20))
        bad = "coouter must be never or 0..1048576 KiB";
    else if (p->chunks < 1 || p->chunks > 4096) bad = "chunks must be 1..4096";
    else if (p->wlx < 1 || p->wlx > 1024) bad = "wlx must be 1..1024";
    else if (p->wb != 4 && p->wb != 8) bad = "wb must be 4 or 8";
    else if (p->cb != 1 && p->cb != 2 && p->cb != 4) bad = "cb must be 1, 2 or 4";
    else if (p->wci != 4 && p->wci != 8) bad = "wci must be 4 or 8";
    else if (p->wcb != 1 && p->wcb != 2 && p->wcb != 4) bad = "wcb must be 1, 2 or 4";
    else if (p->wkb < 0 || p->wkb > (1 << 20)) bad = "wkb must be 0..1048576 KiB";
    else if (p->small != 0 && p->small != 1) bad = "small must be 0 or 1";
    else if (p->rows != 1 && p->rows != 2) bad = "rows must be 1 or 2";
    else if (p->wt3 != 0 && p->wt3 != 1) bad = "wt3 must be 0 or 1";
    else if (p->pw < 0 || p->pw > 64) bad = "pw must be 0..64";
    if (bad && why) snprintf(why, nwhy, "%s", bad);
    return bad == NULL;
}

static int parse_int(const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

int kd_conv_tune_parse(const char *s, kd_conv_tune *out, char *why, size_t nwhy) {
    kd_conv_tune p = kd_conv_tune_default;
    char buf[MAX_LINE];
    if (strlen(s) >= sizeof buf) {
        snprintf(why, nwhy, "parameters too long");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", s);
    int any = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            snprintf(why, nwhy, "'%s' is not key=value", tok);
            return -1;
        }
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        int r = 0;
        if (!strcmp(k, "local")) {
            if (!strcmp(v, "auto")) p.local = KD_TUNE_LOCAL_AUTO;
            else if (!strcmp(v, "set")) p.local = KD_TUNE_LOCAL_SET;
            else if (!strcmp(v, "driver")) p.local = KD_TUNE_LOCAL_DRIVER;
            else r = -1;
        } else if (!strcmp(k, "lx")) r = parse_int(v, 1, 1024, &p.lx);
        else if (!strcmp(k, "ly")) r = parse_int(v, 1, 1024, &p.ly);
        else if (!strcmp(k, "vmax")) r = parse_int(v, 1, 16, &p.vmax);
        else if (!strcmp(k, "coouter")) {
            if (!strcmp(v, "never")) p.coouter = -1;
            else r = parse_int(v, 0, 1 << 20, &p.coouter);
        } else if (!strcmp(k, "chunks")) r = parse_int(v, 1, 4096, &p.chunks);
        else if (!strcmp(k, "wlx")) r = parse_int(v, 1, 1024, &p.wlx);
        else if (!strcmp(k, "wb")) r = parse_int(v, 4, 8, &p.wb);
        else if (!strcmp(k, "cb")) r = parse_int(v, 1, 4, &p.cb);
        else if (!strcmp(k, "wci")) r = parse_int(v, 4, 8, &p.wci);
        else if (!strcmp(k, "wcb")) r = parse_int(v, 1, 4, &p.wcb);
        else if (!strcmp(k, "wkb")) r = parse_int(v, 0, 1 << 20, &p.wkb);
        else if (!strcmp(k, "small")) r = parse_int(v, 0, 1, &p.small);
        else if (!strcmp(k, "rows")) r = parse_int(v, 1, 2, &p.rows);
        else if (!strcmp(k, "wt3")) r = parse_int(v, 0, 1, &p.wt3);
        else if (!strcmp(k, "pw")) r = parse_int(v, 0, 64, &p.pw);
        else {
            snprintf(why, nwhy, "unknown parameter '%s'", k);
            return -1;
        }
        if (r) {
            snprintf(why, nwhy, "bad value '%s' for %s", v, k);
            return -1;
        }
        any = 1;
    }
    if (!any) {
        snprintf(why, nwhy, "no parameters");
        return -1;
    }
    if (!kd_conv_tune_valid(&p, why, nwhy)) return -1;
    *out = p;
    return 0;
}

int kd_conv_tune_equal(const kd_conv_tune *a, const kd_conv_tune *b) {
    return a->local == b->local && a->lx == b->lx && a->ly == b->ly && a->vmax == b->vmax &&
           a->coouter == b->coouter && a->chunks == b->chunks && a->wlx == b->wlx &&
           a->wb == b->wb && a->cb == b->cb && a->wci == b->wci && a->wcb == b->wcb &&
           a->wkb == b->wkb && a->small == b->small && a->rows == b->rows &&
           a->wt3 == b->wt3 && a->pw == b->pw;
}

static const char *rank_name(int rank) {
    static const char *names[] = {"gpu", "accelerator", "cpu", "other"};
    return rank >= 0 && rank <= 3 ? names[rank] : "*";
}

static int rank_of(const char *s) {
    for (int r = 0; r <= 3; r++)
        if (!strcasecmp(s, rank_name(r))) return r;
    return strcmp(s, "*") ? -2 : -1;
}

void kd_conv_tune_source(const kd_tune_entry *e, char *out, size_t n) {
    if (!e) {
        snprintf(out, n, "built-in default");
        return;
    }
    const char *where = e->user ? "user file" : "built-in";
    if (e->level == KD_TUNE_LEVEL_NAME)
        snprintf(out, n, "%s, device name, %s %s", where,
                 strchr(e->scope, '|') ? "shape" : "scope", e->scope);
    else
        snprintf(out, n, "%s, vendor '%s' + type %s, scope %s%s%s%s", where, e->match,
                 rank_name(e->rank), e->scope, e->note ? " (" : "", e->note ? e->note : "",
                 e->note ? ")" : "");
}

/* ---- lookup -------------------------------------------------------------------------------- */

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    if (!n || !strcmp(needle, "*")) return 1;
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n)) return 1;
    return 0;
}

/* 0: the scope is the exact key, 1: the key's pass, 2: "*", -1: no match. */
static int scope_rank(const char *scope, const char *key) {
    if (!strcmp(scope, "*")) return 2;
    if (!strcmp(scope, key)) return 0;
    const char *a = strchr(key, '|');
    if (!a) return -1;
    a++;
    const char *b = strchr(a, '|');
    size_t n = b ? (size_t)(b - a) : strlen(a);
    return strlen(scope) == n && !strncmp(scope, a, n) ? 1 : -1;
}

const kd_tune_entry *kd_conv_tune_resolve(const kd_tune_entry *e, int n, const kd_dev_ident *id,
                                          const char *key, kd_conv_tune *out) {
    const kd_tune_entry *best = NULL;
    int best_score = 1 << 30;
    for (int i = 0; i < n; i++) {
        int m;
        if (e[i].level == KD_TUNE_LEVEL_NAME) m = !strcmp(e[i].match, id->name);
        else
            m = (e[i].rank < 0 || e[i].rank == id->rank) &&
                (contains_ci(id->vendor, e[i].match) || contains_ci(id->pvendor, e[i].match));
        int sr = m ? scope_rank(e[i].scope, key) : -1;
        if (sr < 0) continue;
        int score = e[i].level * 100 + sr * 10 + (e[i].user ? 0 : 1);
        if (score <= best_score) { /* equal: the later line of a file wins */
            best = &e[i];
            best_score = score;
        }
    }
    *out = best ? best->p : kd_conv_tune_default;
    return best;
}

/* ---- the file --------------------------------------------------------------------------- */

void kd_conv_tune_path(char *out, size_t n) {
    const char *e = getenv("KDSEG_TUNE_FILE");
    /* a name cut short would be another file: not used, said once */
    if (e && *e && kd_path_printf(out, n, "%s", e))
        kd_log(KD_LOG_WARN, "KDSEG_TUNE_FILE not used: %s", kd_last_error());
    else if (!(e && *e)) snprintf(out, n, "%s/%s", kd_cache_dir(), TUNE_FILE); /* fits: device.c */
}

static int parse_ms(const char *s, double *out) {
    if (!strcmp(s, "-")) {
        *out = -1;
        return 0;
    }
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 1e9) return -1;
    *out = v;
    return 0;
}

static int parse_line(char *line, kd_tune_entry *e, char *why, size_t nwhy) {
    char *f[8];
    int nf = 0;
    char *p = line;
    while (nf < 8) {
        f[nf++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = 0;
        p = t + 1;
    }
    if (nf != 7) {
        snprintf(why, nwhy, "%d tab-separated fields, 7 expected", nf);
        return -1;
    }
    memset(e, 0, sizeof *e);
    e->user = 1;
    if (!strcmp(f[0], "name")) e->level = KD_TUNE_LEVEL_NAME;
    else if (!strcmp(f[0], "vendor")) e->level = KD_TUNE_LEVEL_VENDOR;
    else {
        snprintf(why, nwhy, "level '%.40s' is not name or vendor", f[0]);
        return -1;
    }
    if (!*f[1] || strlen(f[1]) >= sizeof e->match || !*f[3] || strlen(f[3]) >= sizeof e->scope) {
        snprintf(why, nwhy, "empty or too long device match or scope");
        return -1;
    }
    snprintf(e->match, sizeof e->match, "%s", f[1]);
    snprintf(e->scope, sizeof e->scope, "%s", f[3]);
    e->rank = rank_of(f[2]);
    if (e->rank < -1) {
        snprintf(why, nwhy, "type '%.40s' is not cpu, gpu, accelerator, other or *", f[2]);
        return -1;
    }
    char pwhy[128];
    if (kd_conv_tune_parse(f[4], &e->p, pwhy, sizeof pwhy)) {
        snprintf(why, nwhy, "parameters: %s", pwhy);
        return -1;
    }
    if (parse_ms(f[5], &e->ms_default) || parse_ms(f[6], &e->ms_best)) {
        snprintf(why, nwhy, "times '%.20s', '%.20s' are not numbers or -", f[5], f[6]);
        return -1;
    }
    return 0;
}

int kd_conv_tune_file_read(const char *path, kd_tune_entry **out, int *nout, char *why,
                           size_t nwhy) {
    *out = NULL;
    *nout = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 1;
        snprintf(why, nwhy, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    kd_tune_entry *e = NULL;
    int n = 0, cap = 0, lineno = 0, ended = 0, rc = 0;
    char line[MAX_LINE + 2], lwhy[200];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') {
            snprintf(lwhy, sizeof lwhy, "%s",
                     len > MAX_LINE ? "line too long" : "line cut off (no newline)");
            goto bad;
        }
        line[--len] = 0;
        if (lineno == 1) {
            if (strcmp(line, TUNE_MAGIC)) {
                snprintf(lwhy, sizeof lwhy, "first line is not '%s'", TUNE_MAGIC);
                goto bad;
            }
            continue;
        }
        if (line[0] == '#' || line[0] == 0) continue;
        if (ended) {
            snprintf(lwhy, sizeof lwhy, "text after the end line");
            goto bad;
        }
        if (!strncmp(line, "end\t", 4)) {
            int cnt;
            if (parse_int(line + 4, 0, 1 << 20, &cnt) || cnt != n) {
                snprintf(lwhy, sizeof lwhy, "end line says '%.20s' entries, the file holds %d",
                         line + 4, n);
                goto bad;
            }
            ended = 1;
            continue;
        }
        if (n == cap) {
            int c = cap ? 2 * cap : 32;
            kd_tune_entry *t = realloc(e, (size_t)c * sizeof *t);
            if (!t) {
                snprintf(lwhy, sizeof lwhy, "out of memory");
                goto bad;
            }
            e = t;
            cap = c;
        }
        if (parse_line(line, &e[n], lwhy, sizeof lwhy)) goto bad;
        n++;
    }
    if (ferror(f)) {
        snprintf(lwhy, sizeof lwhy, "read error");
        goto bad;
    }
    if (lineno == 0) {
        snprintf(why, nwhy, "%s: empty file", path);
        rc = -1;
    } else if (!ended) {
        snprintf(why, nwhy, "%s: no end line (truncated?)", path);
        rc = -1;
    }
    fclose(f);
    if (rc) {
        free(e);
        return rc;
    }
    *out = e;
    *nout = n;
    return 0;
bad:
    snprintf(why, nwhy, "%s line %d: %s", path, lineno, lwhy);
    fclose(f);
    free(e);
    return -1;
}

kd_status kd_conv_tune_file_write(const char *path, const kd_tune_entry *e, int n) {
    char dir[1300], tmp[1300];
    kd_status ps = kd_path_printf(dir, sizeof dir, "%s", path);
    if (!ps) ps = kd_tmp_name(path, tmp, sizeof tmp);
    if (ps) return ps;
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        (void)kd_mkdirs(dir); /* the fopen below reports a folder that is missing */
    }
    FILE *f = fopen(tmp, "w");
    if (!f) return kd_fail(KD_ERR_IO, "cannot write the tuning table %s: %s", tmp, strerror(errno));
    int ok = fprintf(f, "%s\n# level\tmatch\ttype\tscope\tparameters\tdefault_ms\tbest_ms\n",
                     TUNE_MAGIC) > 0;
    for (int i = 0; i < n; i++) {
        char ps[256], md[32], mb[32];
        kd_conv_tune_format(&e[i].p, ps, sizeof ps);
        if (e[i].ms_default >= 0) snprintf(md, sizeof md, "%.4f", e[i].ms_default);
        else snprintf(md, sizeof md, "-");
        if (e[i].ms_best >= 0) snprintf(mb, sizeof mb, "%.4f", e[i].ms_best);
        else snprintf(mb, sizeof mb, "-");
        ok = fprintf(f, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
                     e[i].level == KD_TUNE_LEVEL_NAME ? "name" : "vendor", e[i].match,
                     e[i].level == KD_TUNE_LEVEL_NAME ? "*" : rank_name(e[i].rank), e[i].scope,
                     ps, md, mb) > 0 && ok;
    }
    ok = fprintf(f, "end\t%d\n", n) > 0 && ok;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        return kd_fail(KD_ERR_IO, "cannot write the tuning table %s: %s", path, strerror(err));
    }
    return KD_OK;
}

/* ---- process state: the loaded table, forced parameters, identities ------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static kd_tune_entry *table; /* user entries, then the built-in ones */
static int ntable, nuser, loaded, user_state = 1;
static char user_why[600];
static int forced;
static kd_conv_tune forced_p, last_p;
static char last_src[400] = "none";

#define MAX_IDENTS 8
static struct {
    cl_device_id id;
    kd_dev_ident ident;
} idents[MAX_IDENTS];
static int nidents;

static void load_locked(void) {
    if (loaded) return;
    loaded = 1;
    free(table);
    table = NULL;
    ntable = nuser = 0;
    char path[1200];
    kd_conv_tune_path(path, sizeof path);
    kd_tune_entry *u = NULL;
    int nu = 0;
    user_state = kd_conv_tune_file_read(path, &u, &nu, user_why, sizeof user_why);
    if (user_state < 0)
        kd_log(KD_LOG_WARN, "conv tuning table ignored: %s (run kdseg tune to rewrite it)",
               user_why);
    int nb;
    const kd_tune_entry *b = kd_conv_tune_builtin(&nb);
    table = malloc((size_t)(nu + nb) * sizeof *table);
    if (!table) {
        free(u);
        return;
    }
    if (nu) memcpy(table, u, (size_t)nu * sizeof *table);
    memcpy(table + nu, b, (size_t)nb * sizeof *table);
    free(u);
    nuser = nu;
    ntable = nu + nb;
}

void kd_conv_tune_reload(void) {
    pthread_mutex_lock(&lock);
    loaded = 0;
    pthread_mutex_unlock(&lock);
}

int kd_conv_tune_user_state(int *n, char *why, size_t nwhy) {
    pthread_mutex_lock(&lock);
    load_locked();
    int st = user_state;
    if (n) *n = nuser;
    if (why && nwhy) snprintf(why, nwhy, "%s", st < 0 ? user_why : "");
    pthread_mutex_unlock(&lock);
    return st;
}

static const kd_dev_ident *ident_locked(kd_device *dev) {
    cl_device_id id = kd_rt_device_id(dev);
    for (int i = 0; i < nidents; i++)
        if (idents[i].id == id) return &idents[i].ident;
    int slot = nidents < MAX_IDENTS ? nidents++ : MAX_IDENTS - 1;
    idents[slot].id = id;
    kd_device_ident(dev, &idents[slot].ident);
    return &idents[slot].ident;
}

static int env_int(const char *name) {
    const char *e = getenv(name);
    return e && atoi(e) > 0 ? atoi(e) : 0;
}

void kd_conv_tune_get(kd_device *dev, const kd_conv_geom *g, kd_conv_pass pass,
                      kd_conv_tune *out, char *src, size_t nsrc) {
    char key[192], s[400];
    pthread_mutex_lock(&lock);
    if (forced) {
        *out = forced_p;
        snprintf(s, sizeof s, "forced");
    } else {
        load_locked();
        kd_conv_key(g, pass, key, sizeof key);
        const kd_tune_entry *e = kd_conv_tune_resolve(table, ntable, ident_locked(dev), key, out);
        kd_conv_tune_source(e, s, sizeof s);
        /* experiments: the environment overrides the table */
        int lx = env_int("KDSEG_CONV_LX"), ly = env_int("KDSEG_CONV_LY"),
            vm = env_int("KDSEG_CONV_VMAX"), wb = env_int("KDSEG_CONV_WB"),
            cb = env_int("KDSEG_CONV_CB"), wci = env_int("KDSEG_CONV_WCI"),
            wcb = env_int("KDSEG_CONV_WCB"), ch = env_int("KDSEG_CONV_CHUNKS"),
            wkb = env_int("KDSEG_CONV_WKB"), sm = env_int("KDSEG_CONV_SMALL"),
            rw = env_int("KDSEG_CONV_ROWS"), w3 = env_int("KDSEG_CONV_WT3");
        if (lx && lx <= 1024) out->lx = lx;
        if (ly && ly <= 1024) out->ly = ly;
        if (vm) out->vmax = vm >= 16 ? 16 : vm >= 8 ? 8 : 1;
        if (wb) out->wb = wb >= 8 ? 8 : 4;
        if (cb) out->cb = cb >= 4 ? 4 : cb >= 2 ? 2 : 1;
        if (wci) out->wci = wci >= 8 ? 8 : 4;
        if (wcb) out->wcb = wcb >= 4 ? 4 : wcb >= 2 ? 2 : 1;
        if (ch && ch <= 4096) out->chunks = ch;
        if (wkb) out->wkb = wkb;
        if (sm) out->small = sm == 2; /* 1: off, 2: on (0 means unset) */
        if (rw) out->rows = rw >= 2 ? 2 : 1;
        if (w3) out->wt3 = w3 == 2; /* 1: off, 2: on */
        const char *pe = getenv("KDSEG_CONV_PW"); /* 0: off, 1..64 blocks */
        int pwset = pe && *pe && atoi(pe) >= 0 && atoi(pe) <= 64;
        if (pwset) out->pw = atoi(pe);
        if (lx || ly || vm || wb || cb || wci || wcb || ch || wkb || sm || rw || w3 || pwset)
            snprintf(s + strlen(s), sizeof s - strlen(s), " + environment");
    }
    last_p = *out;
    snprintf(last_src, sizeof last_src, "%s", s);
    pthread_mutex_unlock(&lock);
    if (src && nsrc) snprintf(src, nsrc, "%s", s);
}

void kd_conv_tune_lookup(kd_device *dev, const kd_conv_geom *g, kd_conv_pass pass,
                         kd_conv_tune *out) {
    kd_conv_tune keep;
    char src[400];
    pthread_mutex_lock(&lock);
    keep = last_p;
    snprintf(src, sizeof src, "%s", last_src);
    pthread_mutex_unlock(&lock);
    kd_conv_tune_get(dev, g, pass, out, NULL, 0);
    pthread_mutex_lock(&lock);
    last_p = keep;
    snprintf(last_src, sizeof last_src, "%s", src);
    pthread_mutex_unlock(&lock);
}

void kd_conv_tune_force(const kd_conv_tune *p) {
    pthread_mutex_lock(&lock);
    forced = p != NULL;
    if (p) forced_p = *p;
    pthread_mutex_unlock(&lock);
}

void kd_conv_tune_last(kd_conv_tune *out, char *src, size_t nsrc) {
    pthread_mutex_lock(&lock);
    *out = last_p;
    if (src && nsrc) snprintf(src, nsrc, "%s", last_src);
    pthread_mutex_unlock(&lock);
}

static int tracing;
static char trace[2048];

void kd_conv_tune_trace_begin(void) {
    pthread_mutex_lock(&lock);
    tracing = 1;
    trace[0] = 0;
    pthread_mutex_unlock(&lock);
}

void kd_conv_tune_trace_end(char *out, size_t n) {
    pthread_mutex_lock(&lock);
    tracing = 0;
    snprintf(out, n, "%s", trace);
    pthread_mutex_unlock(&lock);
}

void kd_conv_tune_trace_add(const char *kernel, int dim, const size_t *gws, const size_t *lws) {
    pthread_mutex_lock(&lock);
    if (tracing) {
        size_t l = strlen(trace);
        l += (size_t)snprintf(trace + l, sizeof trace - l, "%s%s", l ? "; " : "", kernel);
        for (int i = 0; i < dim && l < sizeof trace; i++)
            l += (size_t)snprintf(trace + l, sizeof trace - l, "%s%zu", i ? "x" : " ", gws[i]);
        for (int i = 0; i < dim && lws && l < sizeof trace; i++)
            l += (size_t)snprintf(trace + l, sizeof trace - l, "%s%zu", i ? "x" : " / ", lws[i]);
    }
    pthread_mutex_unlock(&lock);
}

void kd_conv_tune_describe(FILE *f, const kd_dev_ident *id) {
    static const char *passes[] = {"fwd", "bwd_data", "bwd_weight"};
    char path[1200], why[600];
    kd_conv_tune_path(path, sizeof path);
    int nu = 0;
    int st = kd_conv_tune_user_state(&nu, why, sizeof why);
    pthread_mutex_lock(&lock);
    int shapes = 0, mine = 0;
    for (int i = 0; i < nuser; i++)
        if (table[i].level == KD_TUNE_LEVEL_NAME && !strcmp(table[i].match, id->name)) {
            mine++;
            shapes += strchr(table[i].scope, '|') != NULL;
        }
    fprintf(f, "conv tuning (direct kernels) for %s:\n", id->name);
    const kd_tune_entry *e[3];
    kd_conv_tune t[3];
    for (int p = 0; p < 3; p++) {
        char key[64];
        snprintf(key, sizeof key, "conv|%s|", passes[p]);
        e[p] = kd_conv_tune_resolve(table, ntable, id, key, &t[p]);
    }
    int one = e[0] == e[1] && e[1] == e[2]; /* the same entry for every pass */
    for (int p = 0; p < (one ? 1 : 3); p++) {
        char ps[256], src[400];
        kd_conv_tune_format(&t[p], ps, sizeof ps);
        kd_conv_tune_source(e[p], src, sizeof src);
        fprintf(f, "  %-10s %s\n  %-10s   from %s\n", one ? "all passes" : passes[p], ps, "",
                src);
    }
    pthread_mutex_unlock(&lock);
    if (st > 0)
        fprintf(f, "  tuning table %s: absent (kdseg tune writes it)\n", path);
    else if (st < 0)
        fprintf(f, "  tuning table %s: IGNORED: %s\n", path, why);
    else
        fprintf(f,
                "  tuning table %s: %d entries, %d for this device by name (%d per shape; "
                "a tuned shape uses its own entry)\n",
                path, nu, mine, shapes);
}
