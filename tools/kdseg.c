/* The kdseg command: global options, then one subcommand per job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            "  -q, --quiet    errors and results only: no progress, banners or notes\n\n"
            "environment: KDSEG_DEVICE, KDSEG_CACHE=0, KDSEG_CL_DIR, KDSEG_PROFILE=1,\n"
            "  KDSEG_MEM_LIMIT, KDSEG_CONV=direct|gemm, KDSEG_LOG, XDG_CACHE_HOME\n");
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
    int i = 1;
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
        int r = kd_commands[c]->run(n, args);
        free(args);
        return r;
    }
    fprintf(stderr, "kdseg: unknown command '%s' (see kdseg --help)\n", argv[i]);
    return 2;
}
