/* Model spec strings. */
#include "spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kd_status parse_into(const char *text, kd_spec *sp, int defaults) {
    char buf[512];
    if (strlen(text) >= sizeof buf)
        return kd_fail(KD_ERR_INVALID_ARG, "model spec too long: '%.40s...'", text);
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL;
    char *tok = strtok_r(buf, ":", &save);
    if (!tok) return kd_fail(KD_ERR_INVALID_ARG, "empty model spec");
    if (defaults) snprintf(sp->arch, sizeof sp->arch, "%s", tok);
    else if (strcmp(tok, sp->arch))
        return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s' is not a %s spec", text, sp->arch);
    while ((tok = strtok_r(NULL, ":", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok)
            return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s': '%s' is not key=value", text, tok);
        *eq = 0;
        kd_spec_kv *kv = NULL;
        for (int i = 0; i < sp->nkv; i++)
            if (!strcmp(sp->kv[i].key, tok)) kv = &sp->kv[i];
        if (!kv) {
            if (!defaults) {
                char keys[256] = "";
                for (int i = 0; i < sp->nkv; i++)
                    snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s",
                             i ? ", " : "", sp->kv[i].key);
                return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s': unknown key '%s' for %s (keys: %s)",
                               text, tok, sp->arch, keys);
            }
            if (sp->nkv == KD_SPEC_KEYS)
                return kd_fail(KD_ERR_INVALID_ARG, "model spec: too many keys");
            kv = &sp->kv[sp->nkv++];
            snprintf(kv->key, sizeof kv->key, "%s", tok);
        }
        kv->n = 0;
        kv->given = !defaults;
        char *vs = NULL;
        for (char *v = strtok_r(eq + 1, ",", &vs); v; v = strtok_r(NULL, ",", &vs)) {
            char *end;
            errno = 0;
            long x = strtol(v, &end, 10);
            if (*end || errno || x <= 0 || x > 100000 || kv->n == KD_SPEC_MAX)
                return kd_fail(KD_ERR_INVALID_ARG,
                               "model spec '%s': bad value '%s' for %s (positive integers, at "
                               "most %d)",
                               text, v, tok, KD_SPEC_MAX);
            kv->vals[kv->n++] = (int)x;
        }
        if (kv->n == 0)
            return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s': no value for %s", text, tok);
    }
    return KD_OK;
}

const int *kd_spec_get(const kd_spec *sp, const char *key, int *n) {
    for (int i = 0; i < sp->nkv; i++)
        if (!strcmp(sp->kv[i].key, key)) {
            if (n) *n = sp->kv[i].n;
            return sp->kv[i].vals;
        }
    if (n) *n = 0;
    return NULL;
}

int kd_spec_int(const kd_spec *sp, const char *key, int def) {
    int n;
    const int *v = kd_spec_get(sp, key, &n);
    return v ? v[0] : def;
}

static void copy_list(const kd_spec *sp, const char *key, int *dst, int *n) {
    const int *v = kd_spec_get(sp, key, n);
    if (v) memcpy(dst, v, (size_t)*n * sizeof(int));
}

/* key's default list fitted to n entries: cut, or extended by its last value. */
static void fit_default(kd_spec *sp, const char *key, int n) {
    for (int i = 0; i < sp->nkv; i++) {
        kd_spec_kv *kv = &sp->kv[i];
        if (strcmp(kv->key, key) || kv->given || kv->n < 1 || n < 1 || n > KD_SPEC_MAX) continue;
        for (int j = kv->n; j < n; j++) kv->vals[j] = kv->vals[kv->n - 1];
        kv->n = n;
    }
}

kd_status kd_spec_parse(const char *defaults, const char *spec, kd_spec *sp) {
    memset(sp, 0, sizeof *sp);
    kd_status s = parse_into(defaults, sp, 1);
    if (!s) s = parse_into(spec, sp, 0);
    if (s) return s;
    int nw = 0;
    const int *w = kd_spec_get(sp, "widths", &nw);
    if (w) {
        fit_default(sp, "enc", nw);
        fit_default(sp, "dec", nw - 1);
    }
    copy_list(sp, "widths", sp->widths, &sp->nwidths);
    copy_list(sp, "enc", sp->enc, &sp->nenc);
    copy_list(sp, "dec", sp->dec, &sp->ndec);
    sp->groups = kd_spec_int(sp, "groups", 1);
    sp->in = kd_spec_int(sp, "in", 4);
    sp->out = kd_spec_int(sp, "out", 3);
    if (sp->nwidths && sp->nwidths < 2)
        return kd_fail(KD_ERR_INVALID_ARG, "model spec '%s': widths needs at least 2 levels", spec);
    return KD_OK;
}

void kd_spec_format(const kd_spec *sp, char *buf, size_t n) {
    size_t u = (size_t)snprintf(buf, n, "%s", sp->arch);
    for (int i = 0; i < sp->nkv && u < n; i++) {
        u += (size_t)snprintf(buf + u, n - u, ":%s=", sp->kv[i].key);
        for (int j = 0; j < sp->kv[i].n && u < n; j++)
            u += (size_t)snprintf(buf + u, n - u, "%s%d", j ? "," : "", sp->kv[i].vals[j]);
    }
}
