/* kdseg selftest: the student against a PyTorch golden file on the chosen device. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kdseg/train.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg selftest [--golden FILE] [--device SEL]\n\n"
            "Builds the ResUNet student at the widths of a PyTorch golden file (format in\n"
            "shared/reference/README.md), runs forward, the paper's loss, backward and one\n"
            "AMSGrad step on the device, and compares every tensor with PyTorch's. Prints the\n"
            "largest error per group and PASS or FAIL (exit 1). Use it to validate a new GPU\n"
            "or driver. Default FILE: ../shared/reference/resunet-c8-n1-32.kdgold.\n");
}

static int run(int argc, char **argv) {
    const char *golden = "../shared/reference/resunet-c8-n1-32.kdgold";
    for (int i = 1; i < argc; i++) {
        if (kd_cli_opt(argc, argv, &i, "--golden", &golden)) {
            if (!golden) return kd_cli_unknown("selftest", "--golden (needs a file)");
        } else return kd_cli_unknown("selftest", argv[i]);
    }
    kd_device *dev = kd_cli_open_device("selftest");
    if (!dev) return 1;
    kd_selftest_report r;
    kd_status s = kd_selftest_golden(dev, golden, &r);
    if (s) {
        kd_device_free(dev);
        return kd_cli_error("selftest", s);
    }
    printf("device   %s\n", kd_device_name(dev));
    printf("golden   %s (batch %d, %dx%dx%d)\n", golden, r.batch, r.depth, r.height, r.width);
    printf("model    %s\n", r.spec);
    printf("%-28s %12s %12s  %s\n", "group", "max error", "tolerance", "");
    printf("%-28s %12.3e %12.1e  %s\n", "output (rel. to max)", r.out_err, KD_SELFTEST_TOL_REL,
           r.out_err <= KD_SELFTEST_TOL_REL ? "ok" : "FAIL");
    printf("%-28s %12.3e %12.1e  %s (%.6f vs %.6f)\n", "loss (relative)", r.loss_err,
           KD_SELFTEST_TOL_REL, r.loss_err <= KD_SELFTEST_TOL_REL ? "ok" : "FAIL",
           (double)r.loss_got, (double)r.loss_ref);
    printf("%-28s %12.3e %12.1e  %s (worst: %s)\n", "gradients (rel. to max)", r.grad_err,
           KD_SELFTEST_TOL_REL, r.grad_err <= KD_SELFTEST_TOL_REL ? "ok" : "FAIL", r.grad_worst);
    printf("%-28s %12.3e %12.1e  %s\n", "params after step (abs)", r.step_err,
           KD_SELFTEST_TOL_STEP, r.step_err <= KD_SELFTEST_TOL_STEP ? "ok" : "FAIL");
    printf("%-28s %12.3f %12.1f  %s\n", "  where |g| tiny (in lr)", r.step_err_tiny, 2.0,
           r.step_err_tiny <= 2.0 ? "ok" : "FAIL");
    printf("%s\n", r.pass ? "PASS" : "FAIL");
    kd_device_free(dev);
    return r.pass ? 0 : 1;
}

const kd_command kd_cmd_selftest = {"selftest", "check the student against a PyTorch golden file",
                                    run, help};
