/* Shared pieces of the kdseg command: option parsing helpers and the command table. */
#ifndef KD_CLI_H
#define KD_CLI_H

#include <stdio.h>

#include "kdseg/kdseg.h"

typedef struct kd_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    void (*help)(FILE *f);
} kd_command;

extern const kd_command *const kd_commands[];
extern const kd_command kd_cmd_study; /* kdseg demo --study runs it */
extern const int kd_command_count;

/* Global options, parsed before the command. */
extern const char *kd_cli_device; /* --device or NULL */
/* The distributed job this process is a rank of (kdseg/dist.h): one rank unless started
 * by an MPI launcher (or --ranks-from-mpi). Set up by main before the command runs. */
extern kd_dist *kd_cli_dist;

/* Print "kdseg CMD: <message>" from kd_last_error and return the exit code. */
int kd_cli_error(const char *cmd, kd_status s);
/* Open the device chosen by --device / KDSEG_DEVICE; prints the error. */
kd_device *kd_cli_open_device(const char *cmd);

/* Parse helpers: return 0 on success, print an error naming the option otherwise. */
int kd_cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, int *out);
int kd_cli_float(const char *cmd, const char *opt, const char *val, double lo, double hi,
                 double *out);
/* "D,H,W" or a single number for all three. */
int kd_cli_dims3(const char *cmd, const char *opt, const char *val, int lo, int hi, int out[3]);
/* The same forms where only a cube is possible: "N" or "N,N,N". */
int kd_cli_cube(const char *cmd, const char *opt, const char *val, int lo, int hi, int *out);
/* --tta none|4|8 (test-time flips: 0 none, 4, 8); "1" is an old spelling of none. */
int kd_cli_tta(const char *cmd, const char *val, int *out);

/* -q/--quiet was given (before or after the command): errors and the command's results
 * only, no progress, banners or notes. */
extern int kd_cli_quiet;

/* An old spelling of an option, kept working: as kd_cli_opt / kd_cli_flag for `old`, and
 * when it matches, a one-line note on stderr naming the current spelling `now` (not with
 * -q). */
int kd_cli_old_opt(const char *cmd, int argc, char **argv, int *i, const char *old, const char *now,
                   const char **val);
int kd_cli_old_flag(const char *cmd, char **argv, int i, const char *old, const char *now);
/* "kdseg CMD: note: OLD is now NOW; the old spelling still works" (not with -q). */
void kd_cli_note_renamed(const char *cmd, const char *old, const char *now);

/* Is argv[i] the option `name`? Takes its value from "--name=v" or argv[i+1]. */
int kd_cli_opt(int argc, char **argv, int *i, const char *name, const char **val);
int kd_cli_flag(char **argv, int i, const char *name);

/* What an option parser returns once an option matched: 1 parsed; 2 when the library call
 * failed (s, printed as kd_cli_error does) or a parse helper did (r nonzero, already printed). */
int kd_cli_parsed(const char *cmd, kd_status s, int r);

/* Progress lines of the library's workflow calls: to stdout, one per line, flushed. */
void kd_cli_progress(void *ctx, const char *line);

/* Set by SIGINT/SIGTERM once kd_cli_install_stop_handler ran (a second SIGINT ends the
 * process): the `stop` flag the commands give the library. */
extern volatile int kd_cli_stop;
void kd_cli_install_stop_handler(void);

/* "unknown option" error for the command. Returns 2. */
int kd_cli_unknown(const char *cmd, const char *arg);

#endif
