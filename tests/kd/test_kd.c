/* The workflow layer (src/kd): online distillation in the one training loop (resume,
 * checkpoints, metadata), through the command and through the public API. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"

/* the shared helpers of tests/kdtest.c */
#define tmp kd_test_path
#define show_log() kd_test_show_log(20)
#define save_model kd_test_save_model
#define copy_file kd_test_copy_file

#define kdseg kd_test_kdseg /* (tests/kdtest.c) */

/* TMP/lab (3 labeled cases), TMP/unl (3 unlabeled), TMP/t1.kds and TMP/t2.kds (two
 * untrained teachers of different architectures). */
static int cohort_and_teachers(kd_device *dev) {
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 6", tmp("lab")) == 0, "phantom");
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 7 --unlabeled --first 100", tmp("unl")) == 0,
             "phantom");
    return save_model(dev, "unet3d:widths=8,16", 1, tmp("t1.kds")) ||
           save_model(dev, "resnext-se:widths=16,32:enc=1,1", 2, tmp("t2.kds"));
}

/* Reads train.csv rows: step, kind, loss, lr and gradient norm, which a resumed run must
 * repeat exactly (not the time; nor the validation columns: a run validates at its last
 * step, so a run stopped early has one more validated row). Returns the row count (header
 * included) or -1; *validated gets the step 2 row's validation columns. */
static int csv_rows(const char *path, char rows[][256], int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char *p = line, *o = rows[n];
        for (int col = 0; *p && *p != '\n'; col++) {
            size_t len = strcspn(p, ",\n");
            if (col < 5) o += sprintf(o, "%.*s,", (int)len, p);
            if (col >= 6 && n == 3) o += sprintf(o, "v%.*s,", (int)len, p);
            p += len + (p[len] == ',');
        }
        n++;
    }
    fclose(f);
    return n;
}

#define ONLINE "distill --online --teacher %s --teacher %s --dataset %s --unlabeled %s " \
               "--arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --lr 1e-3 --val-every 3 " \
               "--val-cases 1 --ckpt-every 2 --margin 4 --threads 0 --quiet --pseudo-ratio 0.5"

/* Catches: a resumed online run appending to train.csv without cutting it back to the
 * checkpoint's step (steps logged twice after a run killed between a row and its
 * checkpoint), or not continuing exactly (losses differ from an uninterrupted run). */
static int online_resume(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (cohort_and_teachers(dev)) return 1;
    char t1[1024], t2[1024], lab[1024], unl[1024]; /* (tmp's buffers rotate) */
    snprintf(t1, sizeof t1, "%s", tmp("t1.kds"));
    snprintf(t2, sizeof t2, "%s", tmp("t2.kds"));
    snprintf(lab, sizeof lab, "%s", tmp("lab"));
    snprintf(unl, sizeof unl, "%s", tmp("unl"));
    int r = kdseg(ONLINE " --out %s --steps 6", t1, t2, lab, unl, tmp("a"));
    r |= kdseg(ONLINE " --out %s --steps 4", t1, t2, lab, unl, tmp("b"));
    char ck[1024], keep[1024];
    snprintf(ck, sizeof ck, "%s/last.kds", tmp("b"));
    snprintf(keep, sizeof keep, "%s/step4.kds", kd_test_tmpdir());
    r |= copy_file(ck, keep);
    /* on to step 6, then back to the step-4 checkpoint: as if killed after logging steps 4
     * and 5 but before their checkpoint */
    r |= kdseg(ONLINE " --out %s --steps 6 --resume", t1, t2, lab, unl, tmp("b"));
    r |= copy_file(keep, ck);
    r |= kdseg(ONLINE " --out %s --steps 6 --resume", t1, t2, lab, unl, tmp("b"));
    if (r) show_log();
    KD_CHECK(r == 0, "commands");
    static char ra[32][256], rb[32][256];
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/train.csv", tmp("a"));
    snprintf(pb, sizeof pb, "%s/train.csv", tmp("b"));
    int na = csv_rows(pa, ra, 32), nb = csv_rows(pb, rb, 32);
    KD_CHECK(na == 7 && nb == 7, "rows: straight %d, resumed %d (header + 6 steps each)", na, nb);
    for (int i = 0; i < na; i++) KD_CHECK(!strcmp(ra[i], rb[i]), "row %d: %s vs %s", i, ra[i], rb[i]);
    KD_CHECK(strchr(ra[3], 'v') && !strstr(ra[3], "v,"), "step 2's row carries the validation Dice: %s",
             ra[3]);
    return 0;
}

/* Online and offline checkpoints: the same keys, from the one loop. */
static int online_offline_meta(void) {
    KD_DEVICE_OR_FAIL(dev);
    if (cohort_and_teachers(dev)) return 1;
    char t1[1024], t2[1024], lab[1024], unl[1024]; /* (tmp's buffers rotate) */
    snprintf(t1, sizeof t1, "%s", tmp("t1.kds"));
    snprintf(t2, sizeof t2, "%s", tmp("t2.kds"));
    snprintf(lab, sizeof lab, "%s", tmp("lab"));
    snprintf(unl, sizeof unl, "%s", tmp("unl"));
    int r = kdseg("annotate --teacher %s --teacher %s --dataset %s --out %s", t1, t2, unl, tmp("ann"));
    r |= kdseg(ONLINE " --out %s --steps 3", t1, t2, lab, unl, tmp("on"));
    r |= kdseg("distill --dataset %s --unlabeled %s --annotations %s --out %s --steps 3 --ckpt-every 2 "
               "--arch resunet:widths=8,16:enc=1,1:dec=1 --patch 16 --lr 1e-3 --val-every 3 "
               "--val-cases 1 --margin 4 --threads 0 --quiet", lab, unl, tmp("ann"), tmp("off"));
    if (r) show_log();
    KD_CHECK(r == 0, "commands");
    const char *modes[2] = {"online", "distill"}, *dirs[2] = {"on", "off"};
    for (int k = 0; k < 2; k++) {
        char p[1024];
        kd_ckpt_meta m;
        snprintf(p, sizeof p, "%s/last.kds", tmp(dirs[k]));
        KD_CHECK_OK(kd_checkpoint_read_meta(p, &m));
        KD_CHECK(!strcmp(m.mode, modes[k]), "%s: mode '%s'", dirs[k], m.mode);
        KD_CHECK(m.step == 3 && m.steps == 3 && m.seed == 1 && m.lr > 0.00099 && m.lr < 0.00101 &&
                     m.best_dice >= 0 && m.batch == 1 && m.patch[0] == 16 && m.patch[2] == 16 &&
                     !strcmp(m.data, lab) && !strcmp(m.loss, "paper") && !strcmp(m.optim, "adam"),
                 "%s: step %ld steps %ld lr %g best %g batch %d patch %d data '%s' loss '%s'", dirs[k],
                 m.step, m.steps, m.lr, m.best_dice, m.batch, m.patch[0], m.data, m.loss);
    }
    return 0;
}

/* The scheduler's step wrapped: records the step of OUT/last.kds before each step. */
typedef struct watch {
    kd_sched *sc;
    char ckpt[1024];
    long seen[16];
} watch;

static kd_status watched_step(void *ctx, long step, long next, float lr, kd_step_report *rep) {
    watch *w = ctx;
    kd_ckpt_meta m;
    w->seen[step] = kd_checkpoint_read_meta(w->ckpt, &m) ? -1 : m.step;
    kd_clear_error();
    return kd_sched_step(w->sc, step, next, lr, rep);
}

/* Catches: an online run (the scheduler's step in the training loop) saving checkpoints on
 * its own rhythm instead of every ckpt_every steps; the public API's session, batch
 * source and scheduler step not composing. */
static int online_ckpt_every(void) {
    KD_DEVICE_OR_FAIL(dev);
    KD_CHECK(kdseg("phantom --out %s --cases 3 --size 32 --seed 6", tmp("lab")) == 0, "phantom");
    KD_CHECK(kdseg("phantom --out %s --cases 2 --size 32 --seed 7 --unlabeled", tmp("unl")) == 0, "phantom");
    kd_train_opts t;
    kd_train_opts_default(&t);
    t.data = tmp("lab");
    t.out = tmp("s");
    t.model = "resunet:widths=8,16:enc=1,1:dec=1";
    t.steps = 7;
    t.ckpt_every = 3;
    t.val_every = 0;
    t.threads = 0;
    t.sampler.patch[0] = t.sampler.patch[1] = t.sampler.patch[2] = 16;
    t.sampler.margin = 4;
    kd_session *s;
    KD_CHECK_OK(kd_session_open(dev, &t, &s));
    kd_dataset *ud;
    KD_CHECK_OK(kd_dataset_open(tmp("unl"), NULL, &ud));
    kd_sampler_opts so = t.sampler;
    so.allow_unlabeled = 1;
    kd_sampler *us;
    KD_CHECK_OK(kd_sampler_create(&so, &us));
    KD_CHECK_OK(kd_sampler_add(us, ud, NULL, 0));
    kd_batch_source_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.a = kd_session_sampler(s);
    bo.b = us;
    bo.ratio_b = 0.5f;
    bo.seed = 1;
    kd_batch_source *bs;
    KD_CHECK_OK(kd_batch_source_create(&bo, &bs));
    kd_model *teachers[2];
    KD_CHECK_OK(kd_model_create(dev, "unet3d:widths=8,16", 2, &teachers[0]));
    KD_CHECK_OK(kd_model_create(dev, "cascade:widths=8,16", 3, &teachers[1]));
    kd_sched_config c;
    memset(&c, 0, sizeof c);
    c.batch = 1;
    c.patch[0] = c.patch[1] = c.patch[2] = 16;
    c.batches = kd_batch_source_host;
    c.batches_ctx = bs;
    c.label_loss = KD_LOSS_PAPER;
    c.distill_loss = KD_LOSS_BCE;
    c.distill_weight = 1;
    watch w;
    memset(&w, 0, sizeof w);
    snprintf(w.ckpt, sizeof w.ckpt, "%s/last.kds", t.out);
    KD_CHECK_OK(kd_sched_create(kd_session_model(s), kd_session_optim(s), teachers, 2, &c, &w.sc));
    kd_train_result res;
    KD_CHECK_OK(kd_session_run_step(s, watched_step, &w, &res));
    const long want[7] = {-1, -1, -1, 3, 3, 3, 6};
    for (int i = 0; i < 7; i++)
        KD_CHECK(w.seen[i] == want[i], "before step %d last.kds holds step %ld, expected %ld", i,
                 w.seen[i], want[i]);
    kd_sched_report rep;
    kd_sched_stats(w.sc, &rep);
    int unlabeled_steps = 0;
    for (long i = 0; i < 7; i++) unlabeled_steps += kd_batch_source_uses_b(bs, i);
    KD_CHECK(rep.steps == 7 && rep.teacher_jobs == unlabeled_steps && unlabeled_steps > 0 &&
                 unlabeled_steps < 7, "scheduler: %ld steps, %ld teacher jobs, %d unlabeled batches",
             rep.steps, rep.teacher_jobs, unlabeled_steps);
    kd_ckpt_meta m;
    KD_CHECK_OK(kd_checkpoint_read_meta(w.ckpt, &m));
    KD_CHECK(m.step == 7 && res.steps_done == 7, "final checkpoint at step %ld", m.step);
    kd_sched_free(w.sc);
    for (int i = 0; i < 2; i++) kd_model_free(teachers[i]);
    kd_batch_source_free(bs);
    kd_sampler_free(us);
    kd_dataset_free(ud);
    kd_session_free(s);
    return 0;
}

/* Catches: import-torch losing, misplacing or reshaping a parameter, or accepting a state
 * dict that lacks one. */
static int import_torch(void) {
    KD_DEVICE_OR_FAIL(dev);
    const char *spec = "resunet:widths=8,16:enc=1,1:dec=1";
    kd_model *m, *back;
    KD_CHECK_OK(kd_model_create(dev, spec, 9, &m));
    int n = kd_model_param_tensors(m);
    kd_named_tensor *t = calloc((size_t)n, sizeof *t);
    char names[64][160];
    KD_CHECK(t && n <= 64, "%d tensors", n);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "param/%s", kd_model_param_name(m, i));
        t[i].name = names[i];
        t[i].numel = kd_model_param_shape(m, i, &t[i].ndim, t[i].dims);
        t[i].data = malloc(t[i].numel * sizeof(float));
        KD_CHECK_OK(kd_model_param_get(m, i, t[i].data));
    }
    char tf[1024], ck[1024];
    snprintf(tf, sizeof tf, "%s/sd.kdgold", kd_test_tmpdir());
    snprintf(ck, sizeof ck, "%s/imported.kds", kd_test_tmpdir());
    KD_CHECK_OK(kd_tensorfile_write(tf, t, n));
    KD_CHECK(kdseg("import-torch --tensors %s --spec %s --out %s --prefix param/", tf, spec, ck) == 0,
             "import-torch");
    KD_CHECK_OK(kd_checkpoint_load(ck, dev, &back, NULL, NULL, NULL));
    for (int i = 0; i < n; i++) {
        float *x = malloc(t[i].numel * sizeof(float));
        KD_CHECK_OK(kd_model_param_get(back, i, x));
        KD_CHECK(!memcmp(x, t[i].data, t[i].numel * sizeof(float)), "parameter %s differs", names[i]);
        free(x);
    }
    kd_model_free(back);
    KD_CHECK_OK(kd_tensorfile_write(tf, t, n - 1)); /* the last parameter missing */
    KD_CHECK(kdseg("import-torch --tensors %s --spec %s --out %s --prefix param/", tf, spec, ck) == 1,
             "a missing tensor accepted");
    char p[1024], line[1024];
    snprintf(p, sizeof p, "%s/log.txt", kd_test_tmpdir());
    FILE *f = fopen(p, "r");
    int named = 0;
    while (f && fgets(line, sizeof line, f)) named |= strstr(line, names[n - 1]) && strstr(line, "is missing");
    if (f) fclose(f);
    KD_CHECK(named, "the message names %s", names[n - 1]);
    for (int i = 0; i < n; i++) free(t[i].data);
    free(t);
    kd_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"online_resume", online_resume},
        {"online_offline_meta", online_offline_meta},
        {"online_ckpt_every", online_ckpt_every},
        {"import_torch", import_torch},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
