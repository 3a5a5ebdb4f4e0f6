/* kdseg devices: list platforms and devices; --build times the start-up builds. */
#include <string.h>

#include "cli.h"
#include "kdseg/tune.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg devices [--build]\n\n"
            "Lists every OpenCL platform and device with its type, compute units, memory,\n"
            "OpenCL C version and fp16/fp64 support, marks the one kdseg would choose (*),\n"
            "and shows the program cache's folder and state, and which conv tuning entry\n"
            "applies to the chosen device (its name in the user table written by\n"
            "`kdseg tune`, else its vendor and type, else the built-in default).\n\n"
            "  --build   also build every kernel program for the chosen device and print the\n"
            "            time taken and how many programs came from the cache\n\n"
            "The global --device SEL (P:D, or part of the device or platform name) chooses\n"
            "another device for any command.\n\n"
            "examples:\n"
            "  kdseg devices\n"
            "  kdseg devices --build\n"
            "  kdseg --device 0:0 devices\n");
}

static int run(int argc, char **argv) {
    int build = 0;
    for (int i = 1; i < argc; i++) {
        if (kd_cli_flag(argv, i, "--build")) build = 1;
        else return kd_cli_unknown("devices", argv[i]);
    }
    kd_status s = kd_device_list(stdout, kd_cli_device);
    if (s) return kd_cli_error("devices", s);
    kd_dev_ident id;
    if ((s = kd_device_ident_chosen(kd_cli_device, &id))) return kd_cli_error("devices", s);
    kd_conv_tune_describe(stdout, &id);
    if (build) {
        kd_device *d = kd_cli_open_device("devices");
        if (!d) return 1;
        printf("built %d programs for %s in %.3f s (%d from the cache)\n",
               kd_device_program_count(d), kd_device_name(d), kd_device_build_seconds(d),
               kd_device_cache_hits(d));
        kd_device_free(d);
    }
    return 0;
}

const kd_command kd_cmd_devices = {"devices", "list OpenCL devices and build the kernels", run,
                                   help};
