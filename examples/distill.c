/* Knowledge distillation with libkdseg, start to end, on the public API alone:
 *   1. a tiny synthetic cohort: labeled and unlabeled phantom cases;
 *   2. two teachers of different architectures trained on the labeled cases;
 *   3. their ensemble annotates the unlabeled cases;
 *   4. a student is distilled from labeled + annotated cases;
 *   5. the student segments a case, which is scored against its labels.
 * Build: cc distill.c $(pkg-config --cflags --libs kdseg). Run: ./distill [FOLDER].
 * The sizes are tiny so that it runs in a minute on a CPU: the models learn little. */
#include <stdio.h>
#include <string.h>

#include <kdseg/kdseg.h>

#define CHECK(call)                                                                       \
    do {                                                                                  \
        kd_status s_ = (call);                                                            \
        if (s_) {                                                                         \
            fprintf(stderr, "%s: %s: %s\n", #call, kd_status_string(s_), kd_last_error()); \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

static void print_line(void *ctx, const char *line) {
    (void)ctx;
    printf("%s\n", line);
}

static const char *path(char *buf, const char *dir, const char *name) {
    snprintf(buf, 1024, "%s/%s", dir, name);
    return buf;
}

static int run(kd_device *dev, const char *dir) {
    char labeled[1024], unlabeled[1024], ann[1024], t1[1024], t2[1024], st[1024], pred[1024];
    char case_dir[1024], ckpt1[1024], ckpt2[1024], ckpt_st[1024];
    path(labeled, dir, "labeled");
    path(unlabeled, dir, "unlabeled");

    /* 1. 4 labeled and 3 unlabeled cases of 32^3 voxels in the BraTS 2018 layout */
    kd_phantom_opts po;
    memset(&po, 0, sizeof po);
    po.cases = 4;
    po.size[0] = po.size[1] = po.size[2] = 32;
    po.seed = 1;
    po.layout = KD_LAYOUT_BRATS2018;
    CHECK(kd_phantom_write_cohort(labeled, &po));
    po.cases = 3;
    po.unlabeled = 1;
    po.first_index = 100;
    CHECK(kd_phantom_write_cohort(unlabeled, &po));

    /* 2. two small teachers: 8 steps each on 16^3 patches, one case held out */
    kd_train_opts t;
    kd_train_opts_default(&t);
    t.data = labeled;
    t.steps = 8;
    t.val_every = 4;
    t.optim.lr = 3e-3f;
    t.sampler.patch[0] = t.sampler.patch[1] = t.sampler.patch[2] = 16;
    t.sampler.margin = 4;
    t.progress = print_line;
    t.overwrite = 1; /* a rerun trains again: an earlier run's files are kept as *.bak */
    t.model = "unet3d:widths=8,16";
    t.out = path(t1, dir, "teacher-unet3d");
    CHECK(kd_train(dev, &t, NULL));
    t.model = "resnext-se:widths=16,32:enc=1,1";
    t.out = path(t2, dir, "teacher-resnext");
    t.seed = 2;
    CHECK(kd_train(dev, &t, NULL));

    /* 3. the ensemble's annotations (and the teachers' agreement per case) */
    const char *teachers[2] = {path(ckpt1, t1, "best.kds"), path(ckpt2, t2, "best.kds")};
    kd_annotate_opts a;
    kd_annotate_opts_default(&a);
    a.e.models = teachers;
    a.e.nmodels = 2;
    a.e.progress = print_line;
    a.dataset = unlabeled;
    a.out = path(ann, dir, "annotations");
    kd_annotate_report ar;
    CHECK(kd_annotate(dev, &a, &ar));
    printf("annotated %d cases (%d already done)\n", ar.annotated, ar.skipped);

    /* 4. the student from labeled + annotated cases, half of its steps on each */
    kd_distill_opts d;
    kd_distill_opts_default(&d);
    d.train = t;
    d.train.model = "resunet:widths=8,16:enc=1,1:dec=1";
    d.train.out = path(st, dir, "student");
    d.train.seed = 3;
    d.unlabeled = unlabeled;
    d.annotations = ann;
    d.pseudo_ratio = 0.5;
    kd_distill_report dr;
    CHECK(kd_distill(dev, &d, &dr));
    printf("student: %d labeled + %d annotated cases, %ld steps, loss %.3f -> %.3f\n", dr.labeled,
           dr.pool, dr.train.steps_done, (double)dr.train.first_loss, (double)dr.train.last_loss);

    /* 5. the student segments a labeled case (on its original grid); scored against it */
    const char *student[1] = {path(ckpt_st, st, "best.kds")};
    kd_segment_opts s;
    kd_segment_opts_default(&s);
    s.e.models = student;
    s.e.nmodels = 1;
    s.e.progress = print_line;
    s.case_dir = path(case_dir, labeled, "KDPhantom_000");
    s.out = path(pred, dir, "pred");
    CHECK(kd_segment(dev, &s));
    kd_eval_options eo;
    kd_eval_options_default(&eo);
    eo.pred_dir = pred;
    eo.ref = labeled;
    eo.allow_missing = 1; /* the other labeled cases were not segmented */
    kd_eval_result *ev = NULL;
    CHECK(kd_evaluate(&eo, &ev));
    for (int i = 0; i < ev->n_cases; i++)
        if (ev->cases[i].status == KD_EVAL_OK)
            printf("%s: Dice WT %.3f TC %.3f ET %.3f\n", ev->cases[i].name, ev->cases[i].region[0].dice,
                   ev->cases[i].region[1].dice, ev->cases[i].region[2].dice);
    kd_eval_result_free(ev);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "kdseg-example";
    kd_device *dev = NULL;
    kd_status s = kd_device_open(NULL, &dev); /* $KDSEG_DEVICE, else GPU, accelerator, CPU */
    if (s) {
        fprintf(stderr, "no device: %s\n", kd_last_error());
        return 1;
    }
    printf("device: %s\n", kd_device_name(dev));
    int r = run(dev, dir);
    kd_device_free(dev);
    return r;
}
