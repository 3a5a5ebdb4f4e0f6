/* A small JSON reader for the dataset descriptions of the data layer (nnU-Net's and the
 * Decathlon's dataset.json): the whole text into a tree, strict RFC 8259 syntax, with
 * the line and column of the first error. Not a public API. */
#ifndef KD_JSON_INTERNAL_H
#define KD_JSON_INTERNAL_H

#include <stddef.h>

#include "kdseg/status.h"

typedef enum kd_json_type {
    KD_JSON_NULL,
    KD_JSON_BOOL,
    KD_JSON_NUMBER,
    KD_JSON_STRING,
    KD_JSON_ARRAY,
    KD_JSON_OBJECT
} kd_json_type;

typedef struct kd_json {
    kd_json_type type;
    double number;          /* NUMBER; BOOL: 0 or 1 */
    char *string;           /* STRING: UTF-8, NUL-terminated (an embedded \u0000 ends it) */
    int n;                  /* ARRAY, OBJECT: entries */
    char **keys;            /* OBJECT: n keys, in file order */
    struct kd_json *items;  /* ARRAY, OBJECT: n values */
} kd_json;

/* Deepest nesting accepted (a hostile file cannot exhaust the stack). */
#define KD_JSON_MAX_DEPTH 64
/* Largest file kd_json_read reads. */
#define KD_JSON_MAX_BYTES (64 << 20)

/* Parses text[0..len) into *out (owned: kd_json_free). KD_ERR_FORMAT "WHAT: line L,
 * column C: PROBLEM" on bad syntax, what naming the source (a file path). */
kd_status kd_json_parse(const char *text, size_t len, const char *what, kd_json **out);
/* Reads and parses a file. */
kd_status kd_json_read(const char *path, kd_json **out);
void kd_json_free(kd_json *v); /* NULL ok */

/* The value of key in an object (the last one when repeated), or NULL. */
const kd_json *kd_json_get(const kd_json *obj, const char *key);
/* A number that is an integer in [lo, hi]: 1 and *out, else 0. */
int kd_json_int(const kd_json *v, long lo, long hi, long *out);
/* Short text of a value for messages ("[1, 2, 3]", "\"T1\"", "{...}") into buf[n]. */
void kd_json_brief(const kd_json *v, char *buf, size_t n);

#endif
