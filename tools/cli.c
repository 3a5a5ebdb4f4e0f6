/* Option parsing helpers shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

const char *kd_cli_device = NULL;

kd_dist *kd_cli_dist = NULL;

int kd_cli_error(const char *cmd, kd_status s) {
    const char *msg = kd_last_error();
    fprintf(stderr, "kdseg %s: %s%s%s%s\n", cmd, kd_log_prefix(), kd_status_string(s), msg[0] ? ": " : "",
            msg);
    return s == KD_ERR_INVALID_ARG ? 2 : 1;
}

int kd_cli_parsed(const char *cmd, kd_status s, int r) {
    if (s) {
        kd_cli_error(cmd, s);
        return 2;
    }
    return r ? 2 : 1;
}

kd_device *kd_cli_open_device(const char *cmd) {
    kd_device *d = NULL;
    const char *sel = kd_cli_device;
    const char *env = getenv("KDSEG_DEVICE");
    char nth[32];
    kd_status s = KD_OK;
    /* the ranks of a job on one machine take its devices in turn, unless one is named */
    if (kd_dist_size(kd_cli_dist) > 1 && !(sel && *sel) && !(env && *env)) {
        s = kd_device_selector_nth(kd_dist_local_rank(kd_cli_dist), nth, sizeof nth);
        sel = nth;
    }
    if (!s) s = kd_device_open(sel, &d);
    if (s) {
        kd_cli_error(cmd, s);
        return NULL;
    }
    kd_log(KD_LOG_INFO, "device: %s", kd_device_name(d));
    return d;
}

int kd_cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(val ? val : "", &end, 10);
    if (!val || !*val || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "kdseg %s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo,
                hi, val ? val : "");
        return 2;
    }
    *out = (int)v;
    return 0;
}

int kd_cli_float(const char *cmd, const char *opt, const char *val, double lo, double hi,
                 double *out) {
    char *end;
    errno = 0;
    double v = strtod(val ? val : "", &end);
    if (!val || !*val || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "kdseg %s: %s expects a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi,
                val ? val : "");
        return 2;
    }
    *out = v;
    return 0;
}

int kd_cli_dims3(const char *cmd, const char *opt, const char *val, int lo, int hi, int out[3]) {
    int n = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", val ? val : "");
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",x", &save); tok; tok = strtok_r(NULL, ",x", &save)) {
        if (n == 3 || kd_cli_int(cmd, opt, tok, lo, hi, &out[n])) {
            if (n == 3) fprintf(stderr, "kdseg %s: %s expects D,H,W, got '%s'\n", cmd, opt, val);
            return 2;
        }
        n++;
    }
    if (n == 1) out[1] = out[2] = out[0];
    else if (n != 3) {
        fprintf(stderr, "kdseg %s: %s expects D,H,W or one number, got '%s'\n", cmd, opt,
                val ? val : "");
        return 2;
    }
    return 0;
}

int kd_cli_cube(const char *cmd, const char *opt, const char *val, int lo, int hi, int *out) {
    int d[3];
    if (kd_cli_dims3(cmd, opt, val, lo, hi, d)) return 2;
    if (d[0] != d[1] || d[1] != d[2]) {
        fprintf(stderr, "kdseg %s: %s takes a cube here: N or N,N,N, got '%s'\n", cmd, opt, val);
        return 2;
    }
    *out = d[0];
    return 0;
}

int kd_cli_tta(const char *cmd, const char *val, int *out) {
    if (val && !strcmp(val, "1")) {
        kd_cli_note_renamed(cmd, "--tta 1", "--tta none");
        val = "none";
    }
    if (val && !strcmp(val, "none")) *out = 0;
    else if (val && !strcmp(val, "4")) *out = 4;
    else if (val && !strcmp(val, "8")) *out = 8;
    else {
        fprintf(stderr, "kdseg %s: --tta expects none, 4 or 8, got '%s'\n", cmd, val ? val : "");
        return 2;
    }
    return 0;
}

int kd_cli_opt(int argc, char **argv, int *i, const char *name, const char **val) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n)) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n]) return 0;
    if (*i + 1 >= argc) {
        *val = NULL;
        return 1;
    }
    *val = argv[++*i];
    return 1;
}

int kd_cli_flag(char **argv, int i, const char *name) { return !strcmp(argv[i], name); }

int kd_cli_quiet = 0;

void kd_cli_note_renamed(const char *cmd, const char *old, const char *now) {
    if (!kd_cli_quiet) fprintf(stderr, "kdseg %s: note: %s is now %s; the old spelling still works\n", cmd, old, now);
}

int kd_cli_old_opt(const char *cmd, int argc, char **argv, int *i, const char *old, const char *now,
                   const char **val) {
    if (!kd_cli_opt(argc, argv, i, old, val)) return 0;
    kd_cli_note_renamed(cmd, old, now);
    return 1;
}

int kd_cli_old_flag(const char *cmd, char **argv, int i, const char *old, const char *now) {
    if (!kd_cli_flag(argv, i, old)) return 0;
    kd_cli_note_renamed(cmd, old, now);
    return 1;
}

int kd_cli_unknown(const char *cmd, const char *arg) {
    fprintf(stderr, "kdseg %s: unknown option or argument '%s' (see kdseg %s --help)\n", cmd, arg,
            cmd);
    return 2;
}

void kd_cli_progress(void *ctx, const char *line) {
    (void)ctx;
    printf("%s%s\n", kd_log_prefix(), line);
    fflush(stdout);
}

volatile int kd_cli_stop = 0;

static void on_signal(int sig) {
    if (kd_cli_stop && sig == SIGINT) _exit(130);
    kd_cli_stop = 1;
}

void kd_cli_install_stop_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
