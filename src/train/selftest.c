/* The golden self-test: the student against PyTorch's numbers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/tensorfile.h"
#include "kdseg/train.h"

static double rel_err(const float *got, const float *ref, size_t n) {
    double scale = 0, e = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)ref[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= e)) e = d;
    }
    return e / (scale > 0 ? scale : 1);
}

/* The tolerance of a tensor: `fixed`, or KD_SELFTEST_FP32_FACTOR times PyTorch's own
 * float32 error `e32` (negative: the file has no fp32/ result) where that is larger. */
static double tolerance(double fixed, double e32, kd_selftest_report *r) {
    if (e32 < 0) return fixed;
    r->fp32_tensors++;
    double t = KD_SELFTEST_FP32_FACTOR * e32;
    if (t > fixed) {
        r->fp32_loosened++;
        return t;
    }
    return fixed;
}

/* The fp32/ twin of tensor `name`, when the file has it with the same size. */
static const kd_named_tensor *fp32_of(const kd_tensorfile *f, const char *name, size_t numel) {
    char n[160];
    snprintf(n, sizeof n, "fp32/%s", name);
    const kd_named_tensor *t = kd_tensorfile_find(f, n);
    return t && t->numel == numel ? t : NULL;
}

/* Step errors of a stepped parameter tensor against the reference `pa`: absolute where
 * the reference gradient is not tiny, in units of lr where it is. */
static void step_errors(const float *got, const kd_named_tensor *pa, const kd_named_tensor *gr,
                        double lr, double *err, double *tiny) {
    double gmax = 0;
    *err = 0, *tiny = 0;
    for (size_t k = 0; k < gr->numel; k++) gmax = fmax(gmax, fabs((double)gr->data[k]));
    for (size_t k = 0; k < pa->numel; k++) {
        double d = fabs((double)got[k] - (double)pa->data[k]);
        if (fabs((double)gr->data[k]) >= 2e-3 * gmax) {
            if (!(d <= *err)) *err = d;
        } else if (!(d / lr <= *tiny)) {
            *tiny = d / lr;
        }
    }
}

static int has(const kd_tensorfile *f, const char *fmt, int a, int b) {
    char n[128];
    snprintf(n, sizeof n, fmt, a, b);
    return kd_tensorfile_find(f, n) != NULL;
}

/* widths and block counts from the parameter names and shapes */
static kd_status spec_from_file(const kd_tensorfile *f, const char *path, char *spec, size_t n) {
    const kd_named_tensor *ci = kd_tensorfile_find(f, "param/conv_input.weight");
    const kd_named_tensor *co = kd_tensorfile_find(f, "param/conv_output.weight");
    if (!ci || !co || ci->ndim != 5 || co->ndim != 5)
        return kd_fail(KD_ERR_FORMAT, "%s: no conv_input/conv_output weights: not a student golden file", path);
    int widths[8], enc[8], dec[8], L = 1;
    widths[0] = ci->dims[0];
    while (L < 8 && has(f, "param/encoder_convs.%d.%d.downsample.0.weight", L - 1, 0)) {
        char nm[128];
        snprintf(nm, sizeof nm, "param/encoder_convs.%d.0.downsample.0.weight", L - 1);
        widths[L] = kd_tensorfile_find(f, nm)->dims[0];
        L++;
    }
    if (L < 2) return kd_fail(KD_ERR_FORMAT, "%s: no encoder stages found", path);
    enc[0] = 0;
    while (has(f, "param/conv_first.%d.conv1.conv1.weight%.0d", enc[0], 0)) enc[0]++;
    for (int i = 0; i < L - 1; i++) {
        enc[i + 1] = 0;
        while (has(f, "param/encoder_convs.%d.%d.conv1.conv1.weight", i, enc[i + 1])) enc[i + 1]++;
        dec[i] = 0;
        while (has(f, "param/decoder_convs.%d.%d.conv1.conv1.weight", i, dec[i])) dec[i]++;
    }
    size_t u = (size_t)snprintf(spec, n, "resunet:widths=");
    for (int i = 0; i < L; i++) u += (size_t)snprintf(spec + u, n - u, "%s%d", i ? "," : "", widths[i]);
    u += (size_t)snprintf(spec + u, n - u, ":enc=");
    for (int i = 0; i < L; i++) u += (size_t)snprintf(spec + u, n - u, "%s%d", i ? "," : "", enc[i]);
    u += (size_t)snprintf(spec + u, n - u, ":dec=");
    for (int i = 0; i < L - 1; i++) u += (size_t)snprintf(spec + u, n - u, "%s%d", i ? "," : "", dec[i]);
    snprintf(spec + u, n - u, ":groups=8:in=%d:out=%d", ci->dims[1], co->dims[0]);
    return KD_OK;
}

static float hparam(const kd_tensorfile *f, const char *name, float def) {
    char n[64];
    snprintf(n, sizeof n, "hparam/%s", name);
    const kd_named_tensor *t = kd_tensorfile_find(f, n);
    return t && t->numel == 1 ? t->data[0] : def;
}

kd_status kd_selftest_golden(kd_device *dev, const char *path, kd_selftest_report *r) {
    memset(r, 0, sizeof *r);
    kd_tensorfile *f = NULL;
    kd_model *m = NULL;
    kd_tensor *x = NULL, *t = NULL, *dp = NULL, *out = NULL;
    kd_loss *loss = NULL;
    kd_optim *opt = NULL;
    float *buf = NULL, *buf2 = NULL;
    kd_status s = kd_tensorfile_read(path, &f);
    if (s) return s;
    const kd_named_tensor *in = kd_tensorfile_find(f, "input"), *tg = kd_tensorfile_find(f, "target");
    const kd_named_tensor *ref_out = kd_tensorfile_find(f, "output"), *ref_loss = kd_tensorfile_find(f, "loss");
    if (!in || !tg || !ref_out || !ref_loss || in->ndim != 5 || tg->ndim != 5) {
        s = kd_fail(KD_ERR_FORMAT, "%s: input, target, output or loss missing", path);
        goto done;
    }
    if ((s = spec_from_file(f, path, r->spec, sizeof r->spec))) goto done;
    if ((s = kd_model_create(dev, r->spec, 1, &m))) goto done;
    for (int i = 0; i < kd_model_param_tensors(m); i++) {
        char nm[128];
        snprintf(nm, sizeof nm, "param/%s", kd_model_param_name(m, i));
        const kd_named_tensor *p = kd_tensorfile_find(f, nm);
        if (!p || p->numel != kd_model_param_shape(m, i, NULL, NULL)) {
            s = kd_fail(KD_ERR_FORMAT, "%s: parameter %s missing or of another size", path, nm);
            goto done;
        }
        if ((s = kd_model_param_set(m, i, p->data))) goto done;
    }
    kd_shape xs = kd_shape5(in->dims[0], in->dims[1], in->dims[2], in->dims[3], in->dims[4]);
    kd_shape ts = kd_shape5(tg->dims[0], tg->dims[1], tg->dims[2], tg->dims[3], tg->dims[4]);
    r->batch = xs.n;
    r->depth = xs.d;
    r->height = xs.h;
    r->width = xs.w;
    if ((s = kd_tensor_create(dev, xs, &x)) || (s = kd_tensor_upload(x, in->data)) ||
        (s = kd_tensor_create(dev, ts, &t)) || (s = kd_tensor_upload(t, tg->data)) ||
        (s = kd_tensor_create(dev, ts, &dp)) || (s = kd_loss_create(dev, &loss)))
        goto done;
    kd_optim_config oc;
    kd_optim_defaults(&oc);
    oc.lr = hparam(f, "lr", oc.lr);
    oc.weight_decay = hparam(f, "weight_decay", oc.weight_decay);
    oc.beta1 = hparam(f, "beta1", oc.beta1);
    oc.beta2 = hparam(f, "beta2", oc.beta2);
    oc.eps = hparam(f, "eps", oc.eps);
    if ((s = kd_optim_create(m, &oc, &opt)) || (s = kd_model_zero_grad(m))) goto done;
    if ((s = kd_model_forward(m, x, 1, &out))) goto done;
    if ((s = kd_loss_add(loss, KD_LOSS_PAPER, out, t, 1.0f, dp, 0))) goto done;
    buf = malloc(ref_out->numel * sizeof(float));
    if (!buf || ref_out->numel != kd_tensor_numel(out)) {
        s = kd_fail(KD_ERR_FORMAT, "%s: output size differs from the model's", path);
        goto done;
    }
    if ((s = kd_tensor_download(out, buf))) goto done;
    r->out_err = rel_err(buf, ref_out->data, ref_out->numel);
    const kd_named_tensor *o32 = fp32_of(f, "output", ref_out->numel);
    r->out_tol = tolerance(KD_SELFTEST_TOL_REL, o32 ? rel_err(o32->data, ref_out->data, ref_out->numel) : -1, r);
    if ((s = kd_loss_read(loss, &r->loss_got))) goto done;
    r->loss_ref = ref_loss->data[0];
    r->loss_err = fabs((double)r->loss_got - r->loss_ref) / fabs((double)r->loss_ref);
    const kd_named_tensor *l32 = fp32_of(f, "loss", 1);
    r->loss_tol = tolerance(KD_SELFTEST_TOL_REL,
                            l32 ? fabs((double)l32->data[0] - r->loss_ref) / fabs((double)r->loss_ref) : -1,
                            r);
    if ((s = kd_model_backward(m, dp))) goto done;
    /* gradients, then one step */
    size_t maxn = 0;
    for (int i = 0; i < kd_model_param_tensors(m); i++)
        if (kd_model_param_shape(m, i, NULL, NULL) > maxn) maxn = kd_model_param_shape(m, i, NULL, NULL);
    free(buf);
    buf = malloc(maxn * sizeof(float));
    buf2 = malloc(maxn * sizeof(float));
    if (!buf || !buf2) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "selftest buffers");
        goto done;
    }
    double worst = -1;
    r->grad_tol = KD_SELFTEST_TOL_REL;
    for (int i = 0; i < kd_model_param_tensors(m); i++) {
        char nm[128];
        snprintf(nm, sizeof nm, "grad/%s", kd_model_param_name(m, i));
        const kd_named_tensor *gr = kd_tensorfile_find(f, nm);
        if (!gr) {
            s = kd_fail(KD_ERR_FORMAT, "%s: %s missing", path, nm);
            goto done;
        }
        if ((s = kd_model_grad_get(m, i, buf))) goto done;
        double e = rel_err(buf, gr->data, gr->numel);
        const kd_named_tensor *g32 = fp32_of(f, nm, gr->numel);
        double tol = tolerance(KD_SELFTEST_TOL_REL, g32 ? rel_err(g32->data, gr->data, gr->numel) : -1, r);
        if (!(e / tol <= worst)) {
            worst = e / tol;
            r->grad_err = e;
            r->grad_tol = tol;
            snprintf(r->grad_worst, sizeof r->grad_worst, "%s", kd_model_param_name(m, i));
        }
    }
    if ((s = kd_optim_step(opt, oc.lr, loss))) goto done;
    double sworst = -1, tworst = -1;
    r->step_tol = KD_SELFTEST_TOL_STEP;
    r->step_tiny_tol = KD_SELFTEST_TOL_TINY_LR;
    for (int i = 0; i < kd_model_param_tensors(m); i++) {
        char nm[128], gn[128];
        snprintf(nm, sizeof nm, "param_after_step/%s", kd_model_param_name(m, i));
        snprintf(gn, sizeof gn, "grad/%s", kd_model_param_name(m, i));
        const kd_named_tensor *pa = kd_tensorfile_find(f, nm), *gr = kd_tensorfile_find(f, gn);
        if (!pa) {
            s = kd_fail(KD_ERR_FORMAT, "%s: %s missing", path, nm);
            goto done;
        }
        if ((s = kd_model_param_get(m, i, buf))) goto done;
        double e, tiny, e32 = -1, tiny32 = -1;
        step_errors(buf, pa, gr, oc.lr, &e, &tiny);
        const kd_named_tensor *p32 = fp32_of(f, nm, pa->numel);
        if (p32) step_errors(p32->data, pa, gr, oc.lr, &e32, &tiny32);
        double tol = tolerance(KD_SELFTEST_TOL_STEP, e32, r);
        double ttol = tolerance(KD_SELFTEST_TOL_TINY_LR, tiny32, r);
        if (p32) r->fp32_tensors--; /* one tensor, judged on two parts */
        if (!(e / tol <= sworst)) sworst = e / tol, r->step_err = e, r->step_tol = tol;
        if (!(tiny / ttol <= tworst)) tworst = tiny / ttol, r->step_err_tiny = tiny, r->step_tiny_tol = ttol;
    }
    r->pass = r->out_err <= r->out_tol && r->loss_err <= r->loss_tol &&
              r->grad_err <= r->grad_tol && r->step_err <= r->step_tol &&
              r->step_err_tiny <= r->step_tiny_tol;
done:
    free(buf);
    free(buf2);
    kd_optim_free(opt);
    kd_loss_free(loss);
    kd_tensor_free(x);
    kd_tensor_free(t);
    kd_tensor_free(dp);
    kd_model_free(m);
    kd_tensorfile_free(f);
    return s;
}
