/* Models: spec strings, the model zoo's builders, parameters in PyTorch layout,
 * initialisation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "kdseg/rng.h"
#include "spec.h"

struct kd_model {
    kd_graph *g;
    char spec[512];
    char arch[32];
    int in_ch, out_ch, divisor;
};

/* ---- architectures ------------------------------------------------------------ */

typedef kd_status (*build_fn)(kd_graph *g, const kd_spec *sp, int *out_node, int *divisor);

static kd_status build_resunet(kd_graph *g, const kd_spec *sp, int *out_node, int *divisor);

typedef struct arch_entry {
    const char *name;
    const char *defaults;
    const char *description;
    build_fn build;
} arch_entry;

static const arch_entry archs[] = {
    {"resunet", "resunet:widths=16,32,64,128:enc=1,2,2,4:dec=1,1,1:groups=8:in=4:out=3",
     "the paper's student: residual U-Net, GroupNorm, LeakyReLU, trilinear upsampling",
     build_resunet},
};
#define NARCH ((int)(sizeof archs / sizeof archs[0]))

int kd_model_arch_count(void) { return NARCH + kd_zoo_count(); }
const char *kd_model_arch_name(int i) {
    return i < NARCH ? archs[i].name : kd_zoo_name(i - NARCH);
}
const char *kd_model_arch_default_spec(int i) {
    return i < NARCH ? archs[i].defaults : kd_zoo_defaults(i - NARCH);
}
const char *kd_model_arch_description(int i) {
    return i < NARCH ? archs[i].description : kd_zoo_description(i - NARCH);
}

/* A residual block as in the paper's code:
 *   [x = downsample(x)]; o = leaky(norm1(conv1(x))); o = leaky(norm2(conv2(o))); x + o
 * (the last norm, activation and sum one fused node: kd_g_gn_leaky_add) */
static int res_block(kd_graph *g, int x, int c, int down, int groups, const char *name) {
    char n[96];
    if (down) {
        snprintf(n, sizeof n, "%s.downsample.0", name);
        x = kd_g_conv(g, x, c, 2, 2, 0, 1, 0, n);
    }
    snprintf(n, sizeof n, "%s.conv1.conv1", name);
    int o = kd_g_conv(g, x, c, 3, 1, 1, 1, 0, n);
    snprintf(n, sizeof n, "%s.norm1", name);
    o = kd_g_gn_leaky(g, o, groups, 0.01f, n);
    snprintf(n, sizeof n, "%s.conv2.conv1", name);
    o = kd_g_conv(g, o, c, 3, 1, 1, 1, 0, n);
    snprintf(n, sizeof n, "%s.norm2", name);
    return kd_g_gn_leaky_add(g, o, x, groups, 0.01f, n);
}

static kd_status build_resunet(kd_graph *g, const kd_spec *sp, int *out_node, int *divisor) {
    const int *w = sp->widths, L = sp->nwidths;
    if (sp->nenc != L || sp->ndec != L - 1)
        return kd_fail(KD_ERR_INVALID_ARG,
                       "resunet: enc needs %d entries and dec %d (one per level), got %d and %d",
                       L, L - 1, sp->nenc, sp->ndec);
    for (int i = 0; i < L; i++)
        if (w[i] % sp->groups)
            return kd_fail(KD_ERR_INVALID_ARG, "resunet: width %d is not divisible by groups=%d",
                           w[i], sp->groups);
    char n[96];
    int skip[KD_SPEC_MAX];
    int c = kd_g_input(g, sp->in);
    c = kd_g_conv(g, c, w[0], 3, 1, 1, 1, 0, "conv_input");
    c = kd_g_gn(g, c, sp->groups, "norm_input");
    for (int j = 0; j < sp->enc[0]; j++) {
        snprintf(n, sizeof n, "conv_first.%d", j);
        c = res_block(g, c, w[0], 0, sp->groups, n);
    }
    for (int i = 0; i < L - 1; i++) {
        skip[i] = c;
        for (int j = 0; j < sp->enc[i + 1]; j++) {
            snprintf(n, sizeof n, "encoder_convs.%d.%d", i, j);
            c = res_block(g, c, w[i + 1], j == 0, sp->groups, n);
        }
    }
    for (int i = L - 2; i >= 0; i--) {
        /* The paper's upsampling block is trilinear x2, then a 1x1 conv without bias.
         * Both are linear, and trilinear weights sum to one, so the two commute: the conv
         * runs first, on 1/8 of the voxels, and the upsampling carries w[i] channels, not
         * w[i + 1]. Same parameters, same function up to float rounding (the golden
         * files check it); no upsampled w[i + 1]-channel tensor is made or kept, and the
         * LeakyReLU runs in place over the upsampled one. */
        snprintf(n, sizeof n, "upsampling.%d.1", i);
        c = kd_g_conv(g, c, w[i], 1, 1, 0, 1, 0, n);
        c = kd_g_unary(g, KD_N_UP_TRI, c);
        c = kd_g_leaky(g, c, 0.01f);
        /* conv1x1(concat(skip, c)): backward reads skip and c, so no concatenation is kept */
        snprintf(n, sizeof n, "decoder_convs1x1.%d", i);
        c = kd_g_conv_cat(g, skip[i], c, w[i], 0, n);
        for (int j = 0; j < sp->dec[i]; j++) {
            snprintf(n, sizeof n, "decoder_convs.%d.%d", i, j);
            c = res_block(g, c, w[i], 0, sp->groups, n);
        }
    }
    c = kd_g_conv(g, c, sp->out, 3, 1, 1, 1, 1, "conv_output");
    c = kd_g_unary(g, KD_N_SIGMOID, c);
    if (c < 0) return kd_fail(KD_ERR_OUT_OF_MEMORY, "building resunet");
    *out_node = c;
    *divisor = 1 << (L - 1);
    return KD_OK;
}

/* ---- create / free --------------------------------------------------------------- */

static kd_status init_params(kd_model *m, uint64_t seed) {
    kd_graph *g = m->g;
    float *host = malloc((g->param_numel ? g->param_numel : 1) * sizeof(float));
    if (!host) return kd_fail(KD_ERR_OUT_OF_MEMORY, "parameter init");
    uint64_t st = seed ^ 0x6b64736567ULL;
    for (int i = 0; i < g->nparams; i++) {
        kd_param_info *p = &g->params[i];
        float *dst = host + p->offset;
        /* norm layers: gamma 1, beta 0 */
        int norm = 0, gamma = 0;
        for (int n = 0; n < g->nnodes; n++) {
            kd_node *nd = &g->nodes[n];
            if ((nd->op == KD_N_GN || nd->op == KD_N_GN_LEAKY || nd->op == KD_N_GN_LEAKY_ADD ||
                 nd->op == KD_N_BN) &&
                (nd->w == i || nd->b == i)) {
                norm = 1;
                gamma = nd->w == i;
            }
        }
        /* convs: Kaiming-uniform with a = sqrt(5) as PyTorch, bound 1/sqrt(fan_in),
         * fan_in = dims[1] * kernel volume; a conv bias uses its weight's fan_in */
        double fan_in = 1;
        const kd_param_info *wp = p;
        if (p->ndim == 1 && i > 0 && g->params[i - 1].ndim == 5) wp = &g->params[i - 1];
        for (int d = 1; d < wp->ndim; d++) fan_in *= wp->dims[d];
        double bound = 1.0 / sqrt(fan_in);
        for (size_t k = 0; k < p->numel; k++) {
            double u = (double)(kd_splitmix64(&st) >> 11) / 9007199254740992.0;
            dst[k] = norm ? (gamma ? 1.0f : 0.0f) : (float)((2.0 * u - 1.0) * bound);
        }
    }
    /* stored layout: convert each conv weight from PyTorch order */
    kd_status s = KD_OK;
    for (int i = 0; i < g->nparams && !s; i++)
        s = kd_model_param_set(m, i, host + g->params[i].offset);
    free(host);
    if (!s && g->nstates) {
        /* running mean 0, running var 1 */
        for (int i = 0; i < g->nstates && !s; i++) {
            const char *nm = g->states[i].name;
            s = kd_tensor_fill(g->sview[i], strstr(nm, "running_var") ? 1.0f : 0.0f);
        }
    }
    return s;
}

/* The architecture of spec (its index in *ai) and the spec parsed over its defaults. */
static kd_status spec_resolve(const char *spec, int *ai, char arch[32], kd_spec *sp) {
    *ai = -1;
    snprintf(arch, 32, "%.*s", (int)strcspn(spec, ":"), spec);
    for (int i = 0; i < kd_model_arch_count(); i++)
        if (!strcmp(arch, kd_model_arch_name(i))) *ai = i;
    if (*ai < 0) {
        char names[256] = "";
        for (int i = 0; i < kd_model_arch_count(); i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     kd_model_arch_name(i));
        return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s': unknown architecture '%s' (known: %s)",
                       spec, arch, names);
    }
    return kd_spec_parse(kd_model_arch_default_spec(*ai), spec, sp);
}

kd_status kd_model_spec_canonical(const char *spec, char *out, size_t n) {
    if (!spec || !out || !n) return kd_fail(KD_ERR_INVALID_ARG, "model spec: none given");
    kd_spec sp;
    int ai;
    char arch[32];
    kd_status s = spec_resolve(spec, &ai, arch, &sp);
    if (s) return s;
    char buf[512];
    kd_spec_format(&sp, buf, sizeof buf);
    if (strlen(buf) >= n) return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s': too long", spec);
    snprintf(out, n, "%s", buf);
    return KD_OK;
}

kd_status kd_model_create(kd_device *dev, const char *spec, uint64_t seed, kd_model **out) {
    *out = NULL;
    kd_spec sp;
    int ai = -1;
    char arch[32];
    kd_status s = spec_resolve(spec, &ai, arch, &sp);
    if (s) return s;
    kd_model *m = calloc(1, sizeof *m);
    if (!m) return kd_fail(KD_ERR_OUT_OF_MEMORY, "model");
    m->g = kd_graph_new(dev);
    if (!m->g) {
        free(m);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "model graph");
    }
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    kd_spec_format(&sp, m->spec, sizeof m->spec);
    m->in_ch = sp.in;
    m->out_ch = sp.out;
    int outn = -1;
    s = ai < NARCH ? archs[ai].build(m->g, &sp, &outn, &m->divisor)
                   : kd_zoo_build(ai - NARCH, m->g, &sp, &outn, &m->divisor);
    if (!s) s = kd_graph_finalize(m->g, outn);
    if (!s) s = init_params(m, seed);
    if (s) {
        kd_fail_context(s, "model '%s'", spec);
        kd_model_free(m);
        return s;
    }
    *out = m;
    return KD_OK;
}

void kd_model_free(kd_model *m) {
    if (!m) return;
    kd_graph_free(m->g);
    free(m);
}

const char *kd_model_spec(const kd_model *m) { return m->spec; }
const char *kd_model_arch(const kd_model *m) { return m->arch; }
kd_device *kd_model_device(const kd_model *m) { return m->g->dev; }
int kd_model_in_channels(const kd_model *m) { return m->in_ch; }
int kd_model_out_channels(const kd_model *m) { return m->out_ch; }
int kd_model_divisor(const kd_model *m) { return m->divisor; }
size_t kd_model_param_count(const kd_model *m) { return m->g->param_numel; }
int kd_model_param_tensors(const kd_model *m) { return m->g->nparams; }
const char *kd_model_param_name(const kd_model *m, int i) { return m->g->params[i].name; }
size_t kd_model_param_bytes(const kd_model *m) { return m->g->param_numel * sizeof(float); }

size_t kd_model_param_shape(const kd_model *m, int i, int *ndim, int dims[5]) {
    const kd_param_info *p = &m->g->params[i];
    if (ndim) *ndim = p->ndim;
    if (dims)
        for (int d = 0; d < 5; d++) dims[d] = d < p->ndim ? p->dims[d] : 1;
    return p->numel;
}

int kd_model_param_find(const kd_model *m, const char *name) {
    for (int i = 0; i < m->g->nparams; i++)
        if (!strcmp(m->g->params[i].name, name)) return i;
    return -1;
}

int kd_model_state_tensors(const kd_model *m) { return m->g->nstates; }
const char *kd_model_state_name(const kd_model *m, int i) { return m->g->states[i].name; }
size_t kd_model_state_numel(const kd_model *m, int i) { return m->g->states[i].numel; }
kd_tensor *kd_model_params(kd_model *m) { return m->g->pslab; }
kd_tensor *kd_model_grads(kd_model *m) { return m->g->gslab; }
kd_tensor *kd_model_state(kd_model *m) { return m->g->sslab; }

/* PyTorch layout <-> stored layout of one parameter. to_stored: torch -> ours. */
static void convert(const kd_param_info *p, const float *src, float *dst, int to_stored) {
    if (p->layout == 0) {
        memcpy(dst, src, p->numel * sizeof(float));
        return;
    }
    /* conv: torch (Cout, Cin, k, k, k) -> (k, k, k, Cin, Cout)
     * transposed conv: torch (Cin, Cout, k, k, k) -> (k, k, k, Cin, Cout) */
    int a = p->dims[0], b = p->dims[1], kv = p->dims[2] * p->dims[3] * p->dims[4];
    int cin = p->layout == 1 ? b : a, cout = p->layout == 1 ? a : b;
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < cin; i++)
            for (int k = 0; k < kv; k++) {
                size_t t = p->layout == 1 ? ((size_t)o * cin + i) * kv + k
                                          : ((size_t)i * cout + o) * kv + k;
                size_t s = ((size_t)k * cin + i) * cout + o;
                if (to_stored) dst[s] = src[t];
                else dst[t] = src[s];
            }
}

static kd_status xfer(kd_model *m, int i, kd_tensor **views, float *host, int upload) {
    if (i < 0 || i >= m->g->nparams)
        return kd_fail(KD_ERR_INVALID_ARG, "parameter index %d of %d", i, m->g->nparams);
    const kd_param_info *p = &m->g->params[i];
    float *tmp = malloc(p->numel * sizeof(float));
    if (!tmp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "parameter %s", p->name);
    kd_status s;
    if (upload) {
        convert(p, host, tmp, 1);
        s = kd_tensor_upload_ndhwc(views[i], tmp);
    } else {
        s = kd_tensor_download_ndhwc(views[i], tmp);
        if (!s) convert(p, tmp, host, 0);
    }
    free(tmp);
    return s;
}

kd_status kd_model_param_set(kd_model *m, int i, const float *t) {
    return xfer(m, i, m->g->pview, (float *)t, 1);
}
kd_status kd_model_param_get(kd_model *m, int i, float *t) { return xfer(m, i, m->g->pview, t, 0); }
kd_status kd_model_grad_get(kd_model *m, int i, float *t) { return xfer(m, i, m->g->gview, t, 0); }

kd_status kd_model_forward(kd_model *m, const kd_tensor *x, int training, kd_tensor **out) {
    kd_shape s = kd_tensor_shape(x);
    if (s.d % m->divisor || s.h % m->divisor || s.w % m->divisor) {
        char b[96];
        return kd_fail(KD_ERR_SHAPE, "%s: input %s: D, H, W must be multiples of %d", m->arch,
                       kd_shape_str(s, b, sizeof b), m->divisor);
    }
    return kd_graph_forward(m->g, x, training, out);
}

kd_status kd_model_backward(kd_model *m, const kd_tensor *dout) {
    return kd_graph_backward(m->g, dout);
}

kd_status kd_model_zero_grad(kd_model *m) { return kd_tensor_fill(m->g->gslab, 0.0f); }

void kd_model_release(kd_model *m) { kd_graph_release(m->g); }

kd_status kd_model_plan(kd_model *m, kd_shape in, int training, size_t *peak) {
    return kd_graph_plan(m->g, in, training, peak);
}

kd_status kd_model_conv_flops(kd_model *m, kd_shape in, int training, double *flops) {
    return kd_graph_conv_flops(m->g, in, training, flops);
}

kd_status kd_model_plan_explain(kd_model *m, kd_shape in, int training, size_t *peak,
                                FILE *out) {
    return kd_graph_plan_explain(m->g, in, training, peak, out);
}
