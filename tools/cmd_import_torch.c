/* kdseg import-torch: PyTorch state-dict tensors (golden tensor-file format) into a
 * checkpoint. */
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg import-torch --tensors FILE --arch SPEC --out CKPT.kds [--prefix P]\n\n"
            "Reads a tensor file (the KDGOLD01 format of shared/reference/README.md) holding\n"
            "a PyTorch state dict, names as in model.state_dict() (optionally behind a prefix\n"
            "such as 'param/'), and writes a kdseg checkpoint of the architecture SPEC (see\n"
            "kdseg models). Every parameter must be present with its PyTorch shape. Export\n"
            "from PyTorch with tools/bench/export_state_dict.py.\n\n"
            "examples:\n"
            "  kdseg import-torch --tensors resunet.kdgold --prefix param/ \\\n"
            "      --arch resunet:widths=8,16,24,32:enc=1,1,1,1 --out imported.kds\n"
            "  kdseg segment --checkpoint imported.kds --dataset BraTS2021_Training --out seg-imported\n");
}

static int run(int argc, char **argv) {
    const char *in = NULL, *spec = NULL, *out = NULL, *prefix = "";
    for (int i = 1; i < argc; i++) {
        if (kd_cli_opt(argc, argv, &i, "--tensors", &in) || kd_cli_opt(argc, argv, &i, "--arch", &spec) ||
            kd_cli_old_opt("import-torch", argc, argv, &i, "--spec", "--arch", &spec) ||
            kd_cli_opt(argc, argv, &i, "--out", &out) || kd_cli_opt(argc, argv, &i, "--prefix", &prefix))
            continue; /* a missing value leaves the option NULL: caught below */
        return kd_cli_unknown("import-torch", argv[i]);
    }
    if (!in || !spec || !out || !prefix) {
        fprintf(stderr, "kdseg import-torch: --tensors, --arch and --out need values (and --prefix, "
                        "when given)\n");
        return 2;
    }
    kd_tensorfile *tf = NULL;
    kd_status s = kd_tensorfile_read(in, &tf);
    if (s) return kd_cli_error("import-torch", s);
    kd_device *dev = kd_cli_open_device("import-torch");
    if (!dev) {
        kd_tensorfile_free(tf);
        return 1;
    }
    kd_model *m = NULL;
    s = kd_model_create(dev, spec, 1, &m);
    if (!s) s = kd_model_load_state_dict(m, tf, prefix, in);
    kd_ckpt_meta meta;
    kd_ckpt_meta_init(&meta);
    snprintf(meta.mode, sizeof meta.mode, "imported");
    if (!s) s = kd_checkpoint_save(out, m, NULL, &meta);
    int rc = s ? kd_cli_error("import-torch", s) : 0;
    if (!s) printf("wrote %s: %s, %zu parameters\n", out, kd_model_spec(m), kd_model_param_count(m));
    kd_model_free(m);
    kd_device_free(dev);
    kd_tensorfile_free(tf);
    return rc;
}

const kd_command kd_cmd_import_torch = {"import-torch",
                                        "convert a PyTorch state dict into a checkpoint", run, help};
