/* Options of the commands that train (train, distill): parsed into kd_train_opts. */
#ifndef KD_TRAIN_ARGS_H
#define KD_TRAIN_ARGS_H

#include <stdio.h>

#include "kdseg/kd.h"

typedef struct kd_train_args {
    kd_train_opts o;
    int synthetic, cases; /* --synthetic, --cases */
    /* given on the command line (else, resuming, the checkpoint's) */
    int given_patch, given_batch, given_steps, given_lr, given_seed, given_loss, given_optim;
    /* ... and the other recipe fields (resuming, else the recorded recipe's) */
    int given_recipe, given_wd, given_schedule, given_warmup, given_step_every, given_aug, given_fg,
        given_random, given_class_balance, given_margin, given_val_cases, given_val_every, given_ema;
} kd_train_args;

/* The command's defaults (kd_train_opts_default), progress to stdout, the SIGINT flag. */
void kd_train_args_default(kd_train_args *a);
/* The defaults with the recipe named by a --recipe anywhere in argv (the other options
 * then override it, in any order). 0, or 2 after printing the error. */
int kd_train_args_init(const char *cmd, int argc, char **argv, kd_train_args *a);
/* Parses argv[*i] if it is a training option: 1 handled, 0 not a training option,
 * 2 a bad value (message printed). */
int kd_train_args_parse_one(const char *cmd, int argc, char **argv, int *i, kd_train_args *a);
/* After the last option: --synthetic into a.o; resuming, the options not given take the
 * values OUT/last.kds records (patch, batch, planned steps, learning rate, seed, loss,
 * optimizer, weight average) and, without --recipe, the other settings of the recipe it records (weight
 * decay, schedule, warm-up, augmentation, patch sampling, validation, weight averaging),
 * so that `--out DIR --resume` alone continues the run as it was. */
void kd_train_args_finish(kd_train_args *a);
/* The option list for --help. */
void kd_train_args_help(FILE *f);

#endif
