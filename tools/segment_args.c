/* Options of kdseg segment and annotate. */
#include "segment_args.h"

#include <string.h>

#include "cli.h"

/* An option both commands take, into e: 1 handled, 0 not one, 2 a bad value. */
static int ensemble_opt(const char *cmd, int argc, char **argv, int *i, kd_ensemble_opts *e) {
    const char *v;
    double x;
    int r = 0;
    kd_status s = KD_OK;
    if (kd_cli_opt(argc, argv, i, "--layout", &v)) s = kd_layout_parse(v ? v : "", &e->layout);
    else if (kd_cli_opt(argc, argv, i, "--modalities", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--modalities");
        e->modalities = v;
    } else if (kd_cli_opt(argc, argv, i, "--channels", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--channels");
        e->channels = v;
    } else if (kd_cli_opt(argc, argv, i, "--labels", &v)) {
        s = kd_label_convention_parse(v ? v : "", &e->post.labels);
    } else if (kd_cli_opt(argc, argv, i, "--tta", &v)) {
        if (kd_cli_tta(cmd, v, &e->infer.tta)) return 2;
    } else if (kd_cli_opt(argc, argv, i, "--tile", &v)) {
        if (v && !strcmp(v, "whole")) {
            e->whole = 1;
            e->infer.force_tiles = 0;
            memset(e->infer.tile, 0, sizeof e->infer.tile);
        } else {
            r = kd_cli_dims3(cmd, "--tile", v, 8, 1024, e->infer.tile);
            e->infer.force_tiles = 1;
            e->whole = 0;
        }
    } else if (kd_cli_opt(argc, argv, i, "--batch", &v)) {
        r = kd_cli_int(cmd, "--batch", v, 1, 64, &e->infer.batch);
    } else if (kd_cli_opt(argc, argv, i, "--overlap", &v)) {
        r = kd_cli_float(cmd, "--overlap", v, 0, 0.9, &x);
        e->infer.overlap = (float)x;
    } else if (kd_cli_opt(argc, argv, i, "--threshold", &v)) {
        r = kd_cli_float(cmd, "--threshold", v, 0, 1, &x);
        e->post.threshold = (float)x;
    } else if (kd_cli_opt(argc, argv, i, "--et-min", &v)) {
        r = kd_cli_int(cmd, "--et-min", v, -1, 1000000000, &e->post.et_min_voxels);
        e->post_given |= KD_POST_GIVEN_ET_MIN;
    } else if (kd_cli_opt(argc, argv, i, "--min-component", &v)) {
        r = kd_cli_float(cmd, "--min-component", v, 0, 1, &e->post.min_component_fraction);
        e->post_given |= KD_POST_GIVEN_MIN_COMPONENT;
    } else if (kd_cli_opt(argc, argv, i, "--largest-component", &v)) {
        r = kd_cli_int(cmd, "--largest-component", v, 0, 1, &e->post.largest_only);
        e->post_given |= KD_POST_GIVEN_LARGEST;
    } else if (kd_cli_opt(argc, argv, i, "--brain-mask", &v)) {
        r = kd_cli_int(cmd, "--brain-mask", v, 0, 1, &e->brain_mask);
        e->post_given |= KD_POST_GIVEN_BRAIN_MASK;
    } else if (kd_cli_flag(argv, *i, "--png")) {
        e->png = 1;
    } else {
        return 0;
    }
    return kd_cli_parsed(cmd, s, r);
}

int kd_segment_args_parse(const char *cmd, int argc, char **argv, kd_segment_args *a) {
    memset(a, 0, sizeof *a);
    kd_segment_opts_default(&a->seg);
    kd_annotate_opts_default(&a->ann);
    int annotate = !strcmp(cmd, "annotate");
    kd_ensemble_opts *e = annotate ? &a->ann.e : &a->seg.e;
    e->infer.progress = 1;
    e->progress = kd_cli_quiet ? NULL : kd_cli_progress; /* -q: no banner or case lines */
    e->stop = &kd_cli_stop;
    e->dist = kd_cli_dist; /* the job's ranks share the cases */
    e->models = a->models;
    a->seg.member_out = NULL;
    const char *v;
    for (int i = 1; i < argc; i++) {
        int r = ensemble_opt(cmd, argc, argv, &i, e);
        if (r == 1) continue;
        if (r) return r;
        /* checkpoints: segment's --checkpoint, annotate's --teacher (or --checkpoint) */
        if (kd_cli_opt(argc, argv, &i, "--checkpoint", &v) || (annotate && kd_cli_opt(argc, argv, &i, "--teacher", &v)) ||
            kd_cli_old_opt(cmd, argc, argv, &i, "--model", annotate ? "--teacher" : "--checkpoint", &v)) {
            if (!v) return kd_cli_unknown(cmd, argv[i]); /* the option, its value missing */
            if (e->nmodels == KD_ENSEMBLE_MAX) {
                fprintf(stderr, "kdseg %s: at most %d models\n", cmd, KD_ENSEMBLE_MAX);
                return 2;
            }
            a->models[e->nmodels++] = v;
        } else if (kd_cli_opt(argc, argv, &i, "--dataset", &v)) {
            a->seg.dataset = a->ann.dataset = v;
        } else if (kd_cli_opt(argc, argv, &i, "--out", &v)) {
            a->seg.out = a->ann.out = v;
        } else if (!annotate && kd_cli_opt(argc, argv, &i, "--case", &v)) {
            a->seg.case_dir = v;
        } else if (!annotate && kd_cli_flag(argv, i, "--probabilities")) {
            a->seg.probabilities = 1;
            if (i + 1 < argc && (!strcmp(argv[i + 1], "u8") || !strcmp(argv[i + 1], "f32")))
                a->seg.probabilities = !strcmp(argv[++i], "u8") ? 1 : 2;
        } else if (!annotate && kd_cli_opt(argc, argv, &i, "--member-out", &v)) {
            if (!v) return kd_cli_unknown(cmd, argv[i]);
            if (a->nmember_out == KD_ENSEMBLE_MAX) {
                fprintf(stderr, "kdseg %s: at most %d --member-out\n", cmd, KD_ENSEMBLE_MAX);
                return 2;
            }
            a->member_out[a->nmember_out++] = v;
        } else if (annotate && kd_cli_flag(argv, i, "--soft")) {
            a->ann.soft = 1;
        } else if (annotate && kd_cli_flag(argv, i, "--all")) {
            a->ann.all = 1;
        } else {
            return kd_cli_unknown(cmd, argv[i]);
        }
    }
    if (a->nmember_out && a->nmember_out != e->nmodels) {
        fprintf(stderr, "kdseg %s: %d --member-out for %d --checkpoint: give one per checkpoint, in order\n",
                cmd, a->nmember_out, e->nmodels);
        return 2;
    }
    if (a->nmember_out) a->seg.member_out = a->member_out;
    return 0;
}
