/* kdseg selftest: the student against a PyTorch golden file on the chosen device. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kdseg/train.h"

/* The golden file installed with kdseg (meson install puts it in DATADIR/kdseg). */
#define KD_GOLDEN_NAME "resunet-w8-16-24-32-b2-16x24x32.kdgold"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg selftest [--golden FILE] [--device SEL]\n\n"
            "Builds the ResUNet student at the widths of a PyTorch golden file (format in\n"
            "shared/reference/README.md), runs forward, the paper's loss, backward and one\n"
            "AMSGrad step on the device, and compares every tensor with PyTorch's float64\n"
            "results. Each tensor is judged within a fixed tolerance, or, where the file holds\n"
            "PyTorch's own float32 results (fp32/ tensors) and their error is larger, within\n"
            "twice that error. Prints the worst error per group and PASS or FAIL (exit 1).\n"
            "Use it to validate a new GPU or driver.\n\n"
            "Default FILE: $KDSEG_GOLDEN, else the golden file installed with kdseg\n"
            "(PREFIX/share/kdseg/" KD_GOLDEN_NAME
            ", found next to the program,\n"
            "then in the configured prefix, then in the source tree of a build).\n\n"
            "examples:\n"
            "  kdseg selftest\n"
            "  kdseg selftest --golden resunet.kdgold\n"
            "  kdseg --device 0:0 selftest\n");
}

static int readable(const char *p) {
    return access(p, R_OK) == 0;
}

/* The default golden file: next to the program (a relocated install), the configured
 * prefix, the source tree (an uninstalled build). */
static const char *default_golden(char *buf, size_t n) {
    const char *env = getenv("KDSEG_GOLDEN");
    if (env && *env) return env;
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0; /* PREFIX/bin */
            snprintf(buf, n, "%s/../share/kdseg/%s", exe, KD_GOLDEN_NAME);
            if (readable(buf)) return buf;
        }
    }
    snprintf(buf, n, "%s/%s", KD_DATADIR, KD_GOLDEN_NAME);
    if (readable(buf)) return buf;
    snprintf(buf, n, "%s/tests/golden/%s", KD_SOURCE_DIR, KD_GOLDEN_NAME);
    if (readable(buf)) return buf;
    snprintf(buf, n, "%s/%s", KD_DATADIR, KD_GOLDEN_NAME); /* named in the error */
    return buf;
}

static const char *verdict(double err, double tol, double fixed) {
    if (err > tol) return "FAIL";
    return tol > fixed ? "ok (2x PyTorch fp32 error)" : "ok";
}

static int run(int argc, char **argv) {
    char def[4096];
    const char *golden = NULL;
    for (int i = 1; i < argc; i++) {
        if (kd_cli_opt(argc, argv, &i, "--golden", &golden)) {
            if (!golden) return kd_cli_unknown("selftest", "--golden (needs a file)");
        } else return kd_cli_unknown("selftest", argv[i]);
    }
    if (!golden) golden = default_golden(def, sizeof def);
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
    if (r.fp32_tensors)
        printf("judged   against PyTorch's float64 results; %d tensors carry PyTorch's float32 "
               "results, %d tolerances set by them\n",
               r.fp32_tensors, r.fp32_loosened);
    else
        printf("judged   against PyTorch's float64 results, fixed tolerances (no fp32/ tensors)\n");
    printf("%-28s %12s %12s  %s\n", "group", "max error", "tolerance", "");
    printf("%-28s %12.3e %12.3e  %s\n", "output (rel. to max)", r.out_err, r.out_tol,
           verdict(r.out_err, r.out_tol, KD_SELFTEST_TOL_REL));
    printf("%-28s %12.3e %12.3e  %s (%.6f vs %.6f)\n", "loss (relative)", r.loss_err, r.loss_tol,
           verdict(r.loss_err, r.loss_tol, KD_SELFTEST_TOL_REL), (double)r.loss_got,
           (double)r.loss_ref);
    printf("%-28s %12.3e %12.3e  %s (worst: %s)\n", "gradients (rel. to max)", r.grad_err,
           r.grad_tol, verdict(r.grad_err, r.grad_tol, KD_SELFTEST_TOL_REL), r.grad_worst);
    printf("%-28s %12.3e %12.3e  %s\n", "params after step (abs)", r.step_err, r.step_tol,
           verdict(r.step_err, r.step_tol, KD_SELFTEST_TOL_STEP));
    printf("%-28s %12.3f %12.3f  %s\n", "  where |g| tiny (in lr)", r.step_err_tiny,
           r.step_tiny_tol, verdict(r.step_err_tiny, r.step_tiny_tol, KD_SELFTEST_TOL_TINY_LR));
    printf("%s\n", r.pass ? "PASS" : "FAIL");
    kd_device_free(dev);
    return r.pass ? 0 : 1;
}

const kd_command kd_cmd_selftest = {"selftest", "check the student against a PyTorch golden file",
                                    run, help};
