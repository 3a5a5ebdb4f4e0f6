/* The core room: temporary names, mkdir -p, the RNG's seeding step. Host only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kdtest.h"

/* Catches: a temporary name the stale sweep would not recognise (a writer's leftovers
 * never removed), one that names another process, two writers of one file in this
 * process getting the same name, a name silently cut short. */
static int tmp_names(void) {
    char a[256], b[256], small[24];
    KD_CHECK_OK(kd_tmp_name("/some/dir/last.kds", a, sizeof a));
    KD_CHECK_OK(kd_tmp_name("/some/dir/last.kds", b, sizeof b));
    KD_CHECK(strcmp(a, b) != 0, "two names alike: %s", a);
    KD_CHECK(!strncmp(a, "/some/dir/last.kds.tmp-", 23), "not next to the final file: %s", a);
    pid_t pid = 0;
    KD_CHECK(kd_tmp_name_parse(strrchr(a, '/') + 1, &pid) == 1, "sweep misses %s", a);
    KD_CHECK(pid == getpid(), "pid %ld, not ours", (long)pid);
    /* the older schemes' leftovers are still recognised */
    KD_CHECK(kd_tmp_name_parse("a.kds.tmp123", &pid) && pid == 123, "FINAL.tmpPID");
    KD_CHECK(kd_tmp_name_parse("m.csv.tmp.77", &pid) && pid == 77, "FINAL.tmp.PID");
    KD_CHECK(!kd_tmp_name_parse("notes.tmp", &pid), "a look-alike");
    KD_CHECK(kd_tmp_name("/a/long/folder/name/last.kds", small, sizeof small) ==
                 KD_ERR_INVALID_ARG, "a name that does not fit is an error");
    KD_CHECK(strstr(kd_last_error(), "too long") != NULL, "message: %s", kd_last_error());
    return 0;
}

/* Catches: a mkdir -p that stops at the first missing level, refuses existing folders,
 * or reports success for a path under a file. */
static int mkdirs(void) {
    char p[1024], f[1024], under[1100];
    snprintf(p, sizeof p, "%s/a/b//c/", kd_test_tmpdir());
    KD_CHECK_OK(kd_mkdirs(p));
    KD_CHECK_OK(kd_mkdirs(p)); /* again: exists */
    struct stat st;
    KD_CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s not made", p);
    snprintf(f, sizeof f, "%s/afile", kd_test_tmpdir());
    FILE *fp = fopen(f, "w");
    KD_CHECK(fp && fclose(fp) == 0, "file");
    KD_CHECK(kd_mkdirs(f) == KD_ERR_IO, "a file is not a folder");
    snprintf(under, sizeof under, "%s/sub", f);
    KD_CHECK(kd_mkdirs(under) == KD_ERR_IO, "a folder under a file");
    KD_CHECK(strstr(kd_last_error(), "cannot create folder") != NULL, "message: %s",
             kd_last_error());
    KD_CHECK(kd_mkdirs("") == KD_ERR_INVALID_ARG, "empty name");
    return 0;
}

/* Catches: a change of the seeding function every stream and the models' initial
 * weights derive from (checkpoints and demo results would silently change). The values
 * are splitmix64's published first outputs for seed 1234567. */
static int splitmix(void) {
    uint64_t s = 1234567;
    static const uint64_t want[3] = {6457827717110365317ULL, 3203168211198807973ULL,
                                     9817491932198370423ULL};
    for (int i = 0; i < 3; i++) {
        uint64_t v = kd_splitmix64(&s);
        KD_CHECK(v == want[i], "output %d: %llu", i, (unsigned long long)v);
    }
    kd_rng a = kd_rng_make(5, 0, 0, 0), b = kd_rng_make(5, 0, 0, 0);
    for (int i = 0; i < 100; i++) KD_CHECK(kd_rng_u32(&a) == kd_rng_u32(&b), "repeatable");
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"tmp_names", tmp_names},
        {"mkdirs", mkdirs},
        {"splitmix", splitmix},
    };
    return kd_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
