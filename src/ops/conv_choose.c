/* The conv chooser: for each (device, shape, pass) both implementations are timed once,
 * after a warm-up run each, and the faster is remembered in memory and on disk
 * (kd_cache_dir()/conv-choices.txt, one line per choice, rewritten through a temporary
 * file and a rename), so that later runs do not time again. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conv_internal.h"
#include "kdseg/fs.h"

#define CHOICES_FILE "conv-choices.txt"

typedef struct choice {
    char dev[128];
    char key[128];
    kd_conv_impl impl;
    double ms_direct, ms_gemm;
} choice;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static choice *table;
static int ntable, cap_table, loaded, timings_done;
static kd_conv_impl forced = KD_CONV_AUTO;

void kd_conv_force(kd_conv_impl impl) {
    pthread_mutex_lock(&lock);
    forced = impl;
    pthread_mutex_unlock(&lock);
}

kd_conv_impl kd_conv_forced(void) {
    pthread_mutex_lock(&lock);
    kd_conv_impl f = forced;
    pthread_mutex_unlock(&lock);
    if (f != KD_CONV_AUTO) return f;
    const char *e = getenv("KDSEG_CONV");
    if (e && !strcmp(e, "direct")) return KD_CONV_DIRECT;
    if (e && !strcmp(e, "gemm")) return KD_CONV_GEMM;
    if (e && *e && strcmp(e, "auto"))
        kd_log(KD_LOG_WARN, "KDSEG_CONV='%s' is not direct, gemm or auto; choosing by timing", e);
    return KD_CONV_AUTO;
}

int kd_conv_timings_done(void) {
    pthread_mutex_lock(&lock);
    int n = timings_done;
    pthread_mutex_unlock(&lock);
    return n;
}

static void path_of(char *out, size_t n) { snprintf(out, n, "%s/%s", kd_cache_dir(), CHOICES_FILE); }

static choice *find(const char *dev, const char *key) {
    for (int i = 0; i < ntable; i++)
        if (!strcmp(table[i].dev, dev) && !strcmp(table[i].key, key)) return &table[i];
    return NULL;
}

static int add(const choice *c) {
    choice *old = find(c->dev, c->key);
    if (old) {
        *old = *c;
        return 1;
    }
    if (ntable == cap_table) {
        int cap = cap_table ? 2 * cap_table : 64;
        choice *t = realloc(table, (size_t)cap * sizeof *t);
        if (!t) return 0;
        table = t;
        cap_table = cap;
    }
    table[ntable++] = *c;
    return 1;
}

/* Lines: device TAB key TAB direct|gemm TAB ms_direct TAB ms_gemm. Malformed lines are
 * skipped (the file is a cache: a bad line only costs a re-timing). */
static void load_locked(void) {
    if (loaded) return;
    loaded = 1;
    char path[1200];
    path_of(path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *dev = strtok(line, "\t\n"), *key = strtok(NULL, "\t\n"),
             *impl = strtok(NULL, "\t\n"), *md = strtok(NULL, "\t\n"), *mg = strtok(NULL, "\t\n");
        if (!dev || !key || !impl || !md || !mg) continue;
        choice c = {0};
        if (strlen(dev) >= sizeof c.dev || strlen(key) >= sizeof c.key) continue;
        strcpy(c.dev, dev);
        strcpy(c.key, key);
        if (!strcmp(impl, "direct")) c.impl = KD_CONV_DIRECT;
        else if (!strcmp(impl, "gemm")) c.impl = KD_CONV_GEMM;
        else continue;
        c.ms_direct = atof(md);
        c.ms_gemm = atof(mg);
        add(&c);
    }
    fclose(f);
}

/* Rewrite the whole file: another process may have added lines since we loaded, so merge
 * them first (their lines win only for keys we do not hold). */
static void save_locked(void) {
    char path[1200], tmp[1300];
    path_of(path, sizeof path);
    (void)kd_mkdirs(kd_cache_dir()); /* the fopen below reports a folder that is missing */
    FILE *f = kd_tmp_name(path, tmp, sizeof tmp) ? NULL : fopen(tmp, "w");
    if (!f) {
        kd_log(KD_LOG_WARN, "cannot write conv choices %s: %s", tmp, strerror(errno));
        return;
    }
    int ok = 1;
    for (int i = 0; i < ntable; i++)
        ok = fprintf(f, "%s\t%s\t%s\t%.4f\t%.4f\n", table[i].dev, table[i].key,
                     table[i].impl == KD_CONV_GEMM ? "gemm" : "direct", table[i].ms_direct,
                     table[i].ms_gemm) > 0 && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        kd_log(KD_LOG_WARN, "cannot write conv choices %s", path);
        remove(tmp);
    }
}

void kd_conv_choices_reload(void) {
    pthread_mutex_lock(&lock);
    ntable = 0;
    loaded = 0;
    pthread_mutex_unlock(&lock);
}

kd_conv_impl kd_conv_choice_lookup(kd_device *dev, const char *key, double *ms_direct,
                                   double *ms_gemm) {
    pthread_mutex_lock(&lock);
    load_locked();
    choice *c = find(kd_device_name(dev), key);
    kd_conv_impl r = c ? c->impl : KD_CONV_AUTO;
    if (c && ms_direct) *ms_direct = c->ms_direct;
    if (c && ms_gemm) *ms_gemm = c->ms_gemm;
    pthread_mutex_unlock(&lock);
    return r;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* One warm-up run, then one timed run between two device waits. This is the only place
 * where the conv ops wait for the device, and it happens once per (device, key). */
static kd_status time_impl(kd_device *dev, kd_conv_run_fn run, void *ctx, kd_conv_impl impl,
                           double *ms) {
    kd_status s = run(ctx, impl);
    if (!s) s = kd_device_finish(dev);
    double t0 = now_ms();
    if (!s) s = run(ctx, impl);
    if (!s) s = kd_device_finish(dev);
    *ms = now_ms() - t0;
    return s;
}

kd_status kd_conv_select(kd_device *dev, const char *key, int gemm_ok, kd_conv_run_fn run,
                         void *ctx, kd_conv_impl *out) {
    kd_conv_impl f = kd_conv_forced();
    if (f != KD_CONV_AUTO || !gemm_ok) {
        *out = gemm_ok ? f : KD_CONV_DIRECT;
        return KD_OK;
    }
    kd_conv_impl known = kd_conv_choice_lookup(dev, key, NULL, NULL);
    if (known != KD_CONV_AUTO) {
        *out = known;
        return KD_OK;
    }
    choice c = {0};
    snprintf(c.dev, sizeof c.dev, "%s", kd_device_name(dev));
    snprintf(c.key, sizeof c.key, "%s", key);
    kd_status s = time_impl(dev, run, ctx, KD_CONV_DIRECT, &c.ms_direct);
    if (s) return s;
    if (time_impl(dev, run, ctx, KD_CONV_GEMM, &c.ms_gemm) != KD_OK) {
        /* e.g. the im2col buffer does not fit: the GEMM path is not an option here */
        kd_log(KD_LOG_INFO, "conv chooser: gemm path failed for %s (%s); using direct", key,
               kd_last_error());
        kd_clear_error();
        kd_device_finish(dev);
        c.ms_gemm = -1.0;
    }
    c.impl = (c.ms_gemm >= 0.0 && c.ms_gemm < c.ms_direct) ? KD_CONV_GEMM : KD_CONV_DIRECT;
    kd_log(KD_LOG_INFO, "conv chooser: %s: direct %.3f ms, gemm %.3f ms -> %s", key, c.ms_direct,
           c.ms_gemm, c.impl == KD_CONV_GEMM ? "gemm" : "direct");
    pthread_mutex_lock(&lock);
    load_locked();
    add(&c);
    timings_done++;
    /* merge lines other processes wrote meanwhile, then write everything */
    choice *mine = malloc((size_t)ntable * sizeof *mine);
    int nmine = ntable;
    if (mine) memcpy(mine, table, (size_t)ntable * sizeof *mine);
    ntable = 0;
    loaded = 0;
    load_locked();
    for (int i = 0; mine && i < nmine; i++) add(&mine[i]);
    free(mine);
    save_locked();
    pthread_mutex_unlock(&lock);
    *out = c.impl;
    return KD_OK;
}
