/* libFuzzer target: the JSON reader and the interpretation of an nnU-Net dataset.json's
 * labels on arbitrary bytes (a dataset.json is a user's file). Any crash, ASan or UBSan
 * report or leak fails the run; a label table that is accepted must be one the data
 * layer can use: background 0, every value's regions nested (0, WT, WT+TC,
 * WT+TC+ET), and the values written for edema, core and enhancing tumour reading back
 * as those regions. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "data/dataset_internal.h"
#include "data/json_internal.h"

static void walk(const kd_json *v, int depth) {
    char buf[128];
    kd_json_brief(v, buf, sizeof buf);
    if (depth > KD_JSON_MAX_DEPTH) abort();
    for (int i = 0; (v->type == KD_JSON_ARRAY || v->type == KD_JSON_OBJECT) && i < v->n; i++)
        walk(&v->items[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kd_json *root = NULL;
    if (kd_json_parse((const char *)data, size, "fuzz", &root) == KD_OK) {
        walk(root, 0);
        kd_json_free(root);
    }
    kd_label_table t;
    if (kd_nnunet_labels_parse((const char *)data, size, &t) != KD_OK) return 0;
    if (t.regions[0] != 0) abort();
    for (int v = 0; v < 256; v++) {
        int r = t.regions[v];
        if (r != -1 && r != 0 && r != 1 && r != 3 && r != 7) abort();
    }
    if (t.regions[t.edema] != 1 || t.regions[t.core] != 3 || t.regions[t.enhancing] != 7) abort();
    return 0;
}
