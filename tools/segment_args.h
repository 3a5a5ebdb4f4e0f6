/* Options of kdseg segment and annotate: parsed into kd_segment_opts / kd_annotate_opts. */
#ifndef KD_SEGMENT_ARGS_H
#define KD_SEGMENT_ARGS_H

#include "kdseg/kd.h"

typedef struct kd_segment_args {
    const char *models[KD_ENSEMBLE_MAX], *member_out[KD_ENSEMBLE_MAX];
    int nmember_out;
    kd_segment_opts seg;   /* segment */
    kd_annotate_opts ann;  /* annotate */
} kd_segment_args;

/* Parses the command line of `cmd` ("segment" or "annotate") into a: 0 on success, else
 * the exit code (message printed). */
int kd_segment_args_parse(const char *cmd, int argc, char **argv, kd_segment_args *a);

#endif
