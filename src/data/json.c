/* The JSON reader of the data layer: recursive descent over the whole text, one tree. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_internal.h"
#include "kdseg/status.h"

typedef struct parser {
    const char *p, *end, *start;
    const char *what;
    kd_status err; /* set once, at the first error */
} parser;

static kd_status perr(parser *ps, const char *problem) {
    if (ps->err) return ps->err;
    int line = 1, col = 1;
    for (const char *q = ps->start; q < ps->p && q < ps->end; q++) {
        if (*q == '\n') line++, col = 1;
        else col++;
    }
    ps->err = kd_fail(KD_ERR_FORMAT, "%s: line %d, column %d: %s", ps->what, line, col, problem);
    return ps->err;
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static void kd_json_free_inner(kd_json *v) {
    if (!v) return;
    free(v->string);
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        if (v->items) kd_json_free_inner(&v->items[i]);
    }
    free(v->keys);
    free(v->items);
    memset(v, 0, sizeof *v);
}

void kd_json_free(kd_json *v) {
    kd_json_free_inner(v);
    free(v);
}

static int hex4(const char *s, unsigned *out) {
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') x |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') x |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = x;
    return 1;
}

static size_t put_utf8(char *d, unsigned cp) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at ps->p (the opening quote) into a fresh buffer; escapes decoded. The
 * decoded text is never longer than the source. */
static kd_status parse_string(parser *ps, char **out) {
    ps->p++;
    const char *s = ps->p;
    while (s < ps->end && *s != '"') s += *s == '\\' && s + 1 < ps->end ? 2 : 1;
    if (s >= ps->end) return perr(ps, "unterminated string");
    char *d = malloc((size_t)(s - ps->p) + 1);
    if (!d) return ps->err = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: JSON string", ps->what);
    size_t k = 0;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            free(d);
            return perr(ps, "control character in a string");
        }
        if (c != '\\') {
            d[k++] = (char)c;
            ps->p++;
            continue;
        }
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': d[k++] = '"'; break;
        case '\\': d[k++] = '\\'; break;
        case '/': d[k++] = '/'; break;
        case 'b': d[k++] = '\b'; break;
        case 'f': d[k++] = '\f'; break;
        case 'n': d[k++] = '\n'; break;
        case 'r': d[k++] = '\r'; break;
        case 't': d[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (ps->end - ps->p < 4 || !hex4(ps->p, &cp)) {
                free(d);
                return perr(ps, "bad \\u escape");
            }
            ps->p += 4;
            if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair: both halves, 12 bytes in */
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                    !hex4(ps->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    free(d);
                    return perr(ps, "unpaired surrogate in a \\u escape");
                }
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                free(d);
                return perr(ps, "unpaired surrogate in a \\u escape");
            }
            k += put_utf8(d + k, cp);
            break;
        }
        default:
            free(d);
            ps->p--;
            return perr(ps, "unknown escape in a string");
        }
    }
    ps->p++;
    d[k] = 0;
    *out = d;
    return KD_OK;
}

static kd_status parse_number(parser *ps, kd_json *v) {
    const char *s = ps->p;
    if (s < ps->end && *s == '-') s++;
    if (s >= ps->end || *s < '0' || *s > '9') return perr(ps, "expected a value");
    if (*s == '0') s++;
    else
        while (s < ps->end && *s >= '0' && *s <= '9') s++;
    if (s < ps->end && *s == '.') {
        s++;
        if (s >= ps->end || *s < '0' || *s > '9') return perr(ps, "expected digits after '.'");
        while (s < ps->end && *s >= '0' && *s <= '9') s++;
    }
    if (s < ps->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < ps->end && (*s == '+' || *s == '-')) s++;
        if (s >= ps->end || *s < '0' || *s > '9') return perr(ps, "expected an exponent");
        while (s < ps->end && *s >= '0' && *s <= '9') s++;
    }
    char buf[64];
    size_t len = (size_t)(s - ps->p);
    if (len >= sizeof buf) return perr(ps, "number too long");
    memcpy(buf, ps->p, len);
    buf[len] = 0;
    v->type = KD_JSON_NUMBER;
    v->number = strtod(buf, NULL);
    ps->p = s;
    return KD_OK;
}

static int word(parser *ps, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n)) return 0;
    ps->p += n;
    return 1;
}

static kd_status parse_value(parser *ps, kd_json *v, int depth);

/* Appends a zeroed entry to an array or object; its index in *at. */
static kd_status grow(parser *ps, kd_json *v, int *cap, int with_keys, int *at) {
    if (v->n == *cap) {
        int c = *cap ? *cap * 2 : 4;
        kd_json *items = realloc(v->items, (size_t)c * sizeof *items);
        if (items) v->items = items;
        char **keys = with_keys && items ? realloc(v->keys, (size_t)c * sizeof *keys) : NULL;
        if (keys) v->keys = keys;
        if (!items || (with_keys && !keys))
            return ps->err = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: JSON of %d entries", ps->what, c);
        *cap = c;
    }
    memset(&v->items[v->n], 0, sizeof v->items[0]);
    if (with_keys) v->keys[v->n] = NULL;
    *at = v->n++;
    return KD_OK;
}

static kd_status parse_container(parser *ps, kd_json *v, int depth, int object) {
    if (depth >= KD_JSON_MAX_DEPTH) return perr(ps, "nested too deeply");
    char close = object ? '}' : ']';
    v->type = object ? KD_JSON_OBJECT : KD_JSON_ARRAY;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return KD_OK;
    }
    int cap = 0;
    for (;;) {
        int at = 0;
        skip_ws(ps);
        if (object && (ps->p >= ps->end || *ps->p != '"')) return perr(ps, "expected a key string");
        if (grow(ps, v, &cap, object, &at)) return ps->err;
        if (object) {
            if (parse_string(ps, &v->keys[at])) return ps->err;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return perr(ps, "expected ':' after a key");
            ps->p++;
        }
        if (parse_value(ps, &v->items[at], depth + 1)) return ps->err;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return KD_OK;
        }
        return perr(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static kd_status parse_value(parser *ps, kd_json *v, int depth) {
    skip_ws(ps);
    if (ps->p >= ps->end) return perr(ps, "unexpected end of the text");
    switch (*ps->p) {
    case '{':
        return parse_container(ps, v, depth, 1);
    case '[':
        return parse_container(ps, v, depth, 0);
    case '"':
        v->type = KD_JSON_STRING;
        return parse_string(ps, &v->string);
    case 't':
    case 'f':
    case 'n':
        if (word(ps, "true") || word(ps, "false")) {
            v->type = KD_JSON_BOOL;
            v->number = ps->p[-1] == 'e' && ps->p[-2] == 'u'; /* tr"ue", not fal"se" */
            return KD_OK;
        }
        if (word(ps, "null")) {
            v->type = KD_JSON_NULL;
            return KD_OK;
        }
        return perr(ps, "expected a value");
    default:
        return parse_number(ps, v);
    }
}

kd_status kd_json_parse(const char *text, size_t len, const char *what, kd_json **out) {
    *out = NULL;
    parser ps = {text, text + len, text, what ? what : "JSON", KD_OK};
    kd_json *v = calloc(1, sizeof *v);
    if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", ps.what);
    /* a UTF-8 byte order mark, as some editors write it */
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) ps.p += 3;
    kd_status s = parse_value(&ps, v, 0);
    if (!s) {
        skip_ws(&ps);
        if (ps.p < ps.end) s = perr(&ps, "text after the value");
    }
    if (s) {
        kd_json_free(v);
        return s;
    }
    *out = v;
    return KD_OK;
}

kd_status kd_json_read(const char *path, kd_json **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    kd_status s = KD_OK;
    for (;;) {
        if (n == cap) {
            if (cap >= KD_JSON_MAX_BYTES) {
                s = kd_fail(KD_ERR_FORMAT, "%s: larger than %d MiB: not a dataset description",
                            path, KD_JSON_MAX_BYTES >> 20);
                break;
            }
            cap = cap ? cap * 2 : 65536;
            char *b = realloc(buf, cap);
            if (!b) {
                s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
                break;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) s = kd_fail(KD_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!s) s = kd_json_parse(buf, n, path, out);
    free(buf);
    return s;
}

const kd_json *kd_json_get(const kd_json *obj, const char *key) {
    if (!obj || obj->type != KD_JSON_OBJECT) return NULL;
    for (int i = obj->n - 1; i >= 0; i--)
        if (!strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}

int kd_json_int(const kd_json *v, long lo, long hi, long *out) {
    if (!v || v->type != KD_JSON_NUMBER || !isfinite(v->number) || v->number != floor(v->number) ||
        v->number < (double)lo || v->number > (double)hi)
        return 0;
    *out = (long)v->number;
    return 1;
}

static void brief(const kd_json *v, char *buf, size_t n, int depth) {
    if (n == 0) return;
    buf[0] = 0;
    switch (v->type) {
    case KD_JSON_NULL:
        snprintf(buf, n, "null");
        return;
    case KD_JSON_BOOL:
        snprintf(buf, n, "%s", v->number ? "true" : "false");
        return;
    case KD_JSON_NUMBER:
        snprintf(buf, n, "%g", v->number);
        return;
    case KD_JSON_STRING:
        snprintf(buf, n, "\"%.60s\"", v->string);
        return;
    case KD_JSON_OBJECT:
        snprintf(buf, n, "{...}");
        return;
    case KD_JSON_ARRAY:
        if (depth > 0) {
            snprintf(buf, n, "[...]");
            return;
        }
        snprintf(buf, n, "[");
        for (int i = 0; i < v->n; i++) {
            size_t len = strlen(buf);
            if (len + 8 >= n || i == 8) {
                snprintf(buf + len, n - len, "%s...", i ? ", " : "");
                break;
            }
            char item[64];
            brief(&v->items[i], item, sizeof item, depth + 1);
            snprintf(buf + len, n - len, "%s%s", i ? ", " : "", item);
        }
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "]");
        return;
    }
}

void kd_json_brief(const kd_json *v, char *buf, size_t n) { brief(v, buf, n, 0); }
