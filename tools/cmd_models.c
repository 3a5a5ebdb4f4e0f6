/* kdseg models: the architectures with their default specs and parameter counts. */
#include "cli.h"

static void help(FILE *f) {
    fprintf(f, "usage: kdseg models [--arch SPEC]\n\n"
               "Lists every architecture (student and teachers) with its default spec string and\n"
               "parameter count. With --arch, builds that architecture spec and lists its\n"
               "parameters. A spec names an architecture and, after colons, the keys it changes\n"
               "(the others keep their defaults); train, distill and bench take it as --arch.\n\n"
               "examples:\n"
               "  kdseg models\n"
               "  kdseg models --arch resunet:widths=8,16,32,64\n"
               "  kdseg models --arch unet3d:widths=16,32,64\n");
}

static int run(int argc, char **argv) {
    const char *spec = NULL;
    for (int i = 1; i < argc; i++) {
        if (kd_cli_opt(argc, argv, &i, "--arch", &spec) ||
            kd_cli_old_opt("models", argc, argv, &i, "--spec", "--arch", &spec)) {
            if (!spec) return kd_cli_unknown("models", "--arch (needs a value)");
        } else return kd_cli_unknown("models", argv[i]);
    }
    kd_device *dev = kd_cli_open_device("models");
    if (!dev) return 1;
    int rc = 0;
    if (spec) {
        kd_model *m;
        kd_status s = kd_model_create(dev, spec, 1, &m);
        if (s) rc = kd_cli_error("models", s);
        else {
            printf("%s\n%zu parameters in %d tensors\n", kd_model_spec(m), kd_model_param_count(m),
                   kd_model_param_tensors(m));
            for (int i = 0; i < kd_model_param_tensors(m); i++) {
                int nd, d[5];
                kd_model_param_shape(m, i, &nd, d);
                printf("  %-48s (", kd_model_param_name(m, i));
                for (int k = 0; k < nd; k++) printf("%s%d", k ? ", " : "", d[k]);
                printf(")\n");
            }
            kd_model_free(m);
        }
    } else {
        printf("%-11s %12s  %s\n", "arch", "parameters", "default spec / description");
        for (int i = 0; i < kd_model_arch_count(); i++) {
            kd_model *m;
            kd_status s = kd_model_create(dev, kd_model_arch_default_spec(i), 1, &m);
            if (s) {
                rc = kd_cli_error("models", s);
                break;
            }
            printf("%-11s %12zu  %s\n%26s%s\n", kd_model_arch_name(i), kd_model_param_count(m),
                   kd_model_spec(m), "", kd_model_arch_description(i));
            kd_model_free(m);
        }
    }
    kd_device_free(dev);
    return rc;
}

const kd_command kd_cmd_models = {"models", "list model architectures and parameter counts", run,
                                  help};
