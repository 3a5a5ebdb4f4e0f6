/* The kdseg command: global options, then one subcommand per job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kdseg_config.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kdseg [--device SEL] [-v|-vv|-q] COMMAND [options]\n"
            "       kdseg --help | --version | COMMAND --help\n\n"
            "Brain-tumour segmentation by knowledge distillation on OpenCL devices.\n\n"
            "commands:\n");
    for (int i = 0; i < kd_command_count; i++)
        fprintf(f, "  %-14s %s\n", kd_commands[i]->name, kd_commands[i]->summary);
    fprintf(f,
            "\nglobal options (before or after the command):\n"
            "  --device SEL   OpenCL device: P:D (platform:device) or part of its name\n"
            "                 (default: $KDSEG_DEVICE, else GPU, accelerator, CPU)\n"
            "  -v, --verbose  more logging (-vv: debug)\n"
            "  -q, --quiet    errors and results only: no progress, banners or notes\n"
            "  --ranks-from-mpi  join an MPI job even where the environment does not say so\n"
            "                 (started by mpirun, srun or mpiexec it is detected): train,\n"
            "                 distill, annotate and segment then share the work over the\n"
            "                 ranks (README: Many devices, many machines)\n\n"
            "environment: KDSEG_DEVICE, KDSEG_CACHE=0, KDSEG_CL_DIR, KDSEG_PROFILE=1,\n"
            "  KDSEG_MEM_LIMIT, KDSEG_CONV=direct|gemm, KDSEG_LOG, KDSEG_DIST_TIMEOUT, XDG_CACHE_HOME\n");
}

/* The commands that share their work over the ranks of an MPI job. */
static int distributed(const char *cmd) {
    static const char *const names[] = {"train", "distill", "annotate", "segment"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
        if (!strcmp(cmd, names[k])) return 1;
    return 0;
}

/* Runs a command as a rank of the job (of one rank without MPI). At the end every rank
 * meets the others: when all arrive (all done, or all failed alike, e.g. on a bad option)
 * each leaves with its own exit status; a rank that failed alone waits a few seconds and
 * then ends every rank (MPI_Abort), so that none waits for it. */
static int run_ranked(const kd_command *c, int argc, char **argv, int ranks_from_mpi) {
    kd_status s = kd_dist_open(ranks_from_mpi ? KD_DIST_MPI : KD_DIST_AUTO, &kd_cli_dist);
    if (s) return kd_cli_error(c->name, s);
    int ranks = kd_dist_size(kd_cli_dist), r;
    if (ranks > 1) {
        char prefix[48];
        snprintf(prefix, sizeof prefix, "[rank %d/%d] ", kd_dist_rank(kd_cli_dist), ranks);
        kd_log_set_prefix(prefix);
        char host[256] = "?";
        gethostname(host, sizeof host - 1);
        kd_log(KD_LOG_INFO, "pid %ld on %s, %d of %d ranks on this machine; MPI: %s", (long)getpid(), host,
               kd_dist_local_rank(kd_cli_dist) + 1, kd_dist_local_size(kd_cli_dist), kd_dist_library());
    }
    if (ranks > 1 && !distributed(c->name)) {
        fprintf(stderr, "kdseg %s: %sruns as one process: start it without mpirun (train, distill, "
                        "annotate and segment share their work over the ranks of an MPI job)\n",
                c->name, kd_log_prefix());
        r = 2;
    } else {
        r = c->run(argc, argv);
    }
    if (ranks > 1 && kd_dist_end(kd_cli_dist, r ? 5.0 : 0.0)) {
        if (!r) kd_cli_error(c->name, KD_ERR_PEER);
        kd_dist_abort(kd_cli_dist, r ? r : 1); /* does not return */
    }
    kd_dist_free(kd_cli_dist);
    kd_cli_dist = NULL;
    return r;
}

/* -v, -vv, --verbose, -q, --quiet: sets the log level; 1 when arg is one of them. */
static int verbosity(const char *arg) {
    if (!strcmp(arg, "-v") || !strcmp(arg, "--verbose")) kd_log_set_level(KD_LOG_INFO);
    else if (!strcmp(arg, "-vv")) kd_log_set_level(KD_LOG_DEBUG);
    else if (!strcmp(arg, "-q") || !strcmp(arg, "--quiet")) {
        kd_log_set_level(KD_LOG_ERROR);
        kd_cli_quiet = 1;
    } else
        return 0;
    return 1;
}

int main(int argc, char **argv) {
    /* lines reach a redirected file as they are printed, in order with stderr's */
    setvbuf(stdout, NULL, _IOLBF, 0);
    int i = 1, ranks_from_mpi = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("kdseg %s\n", KDSEG_VERSION);
            return 0;
        } else if (kd_cli_opt(argc, argv, &i, "--device", &v)) {
            if (!v) {
                fprintf(stderr, "kdseg: --device needs a value\n");
                return 2;
            }
            kd_cli_device = v;
        } else if (!strcmp(argv[i], "--ranks-from-mpi")) {
            ranks_from_mpi = 1;
        } else if (verbosity(argv[i])) {
            continue;
        } else {
            fprintf(stderr, "kdseg: unknown option '%s' (see kdseg --help)\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (int c = 0; c < kd_command_count; c++) {
        if (strcmp(argv[i], kd_commands[c]->name)) continue;
        for (int j = i + 1; j < argc; j++)
            if (!strcmp(argv[j], "--help") || !strcmp(argv[j], "-h")) {
                kd_commands[c]->help(stdout);
                return 0;
            }
        /* the global options may also follow the command; verbosity first, so that notes
         * printed while the command parses its options know of a later -q */
        for (int j = i + 1; j < argc; j++)
            if (!strcmp(argv[j], "--device")) j++;
            else verbosity(argv[j]);
        int n = 0;
        char **args = malloc((size_t)(argc - i + 1) * sizeof *args);
        if (!args) return 1;
        for (int j = i; j < argc; j++) {
            const char *v;
            if (j > i && verbosity(argv[j])) continue;
            if (j > i && kd_cli_opt(argc, argv, &j, "--device", &v)) {
                if (!v) {
                    fprintf(stderr, "kdseg: --device needs a value\n");
                    free(args);
                    return 2;
                }
                kd_cli_device = v;
                continue;
            }
            args[n++] = argv[j];
        }
        args[n] = NULL;
        int r = run_ranked(kd_commands[c], n, args, ranks_from_mpi);
        free(args);
        return r;
    }
    fprintf(stderr, "kdseg: unknown command '%s' (see kdseg --help)\n", argv[i]);
    return 2;
}
