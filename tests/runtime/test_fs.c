/* Host-only tests of kdseg/fs.h and the message rules of kdseg/status.h (no device):
 * checked path composition, messages that keep their reason, output-folder locks
 * between processes, and (src/data) datasets by real path and atomic phantom cohorts. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kdtest.h"
#include "kdseg/data.h"
#include "kdseg/fs.h"

/* n times c, with room for a few more characters (strcat) */
static char *repeat(char c, size_t n) {
    char *s = malloc(n + 8);
    if (s) {
        memset(s, c, n);
        s[n] = 0;
    }
    return s;
}

/* kd_path_printf fits or refuses, never cuts: the exact result when it fits, an empty
 * string and "path too long" with the length and the limit when it does not (the
 * buffer's or KD_PATH_MAX, whichever is smaller); kd_path_check_output leaves room for
 * a temporary name.
 * Catches: a truncated path returned as a success, an off-by-one at the limit. */
static int path_printf(void) {
    char small[16], big[2 * KD_PATH_MAX];
    KD_CHECK_OK(kd_path_printf(small, sizeof small, "%s/%s", "abc", "0123456789a")); /* 15 chars */
    KD_CHECK(!strcmp(small, "abc/0123456789a"), "%s", small);
    kd_status s = kd_path_printf(small, sizeof small, "%s/%s", "abc", "0123456789ab"); /* 16 */
    KD_CHECK(s == KD_ERR_INVALID_ARG && small[0] == 0, "16 characters in 16 bytes: %d '%s'", s, small);
    KD_CHECK(strstr(kd_last_error(), "path too long: abc/0123456789ab (16 characters; at most 15)"), "%s",
             kd_last_error());
    char *name = repeat('n', KD_PATH_MAX - 5);
    KD_CHECK_OK(kd_path_join(big, sizeof big, "abc", name)); /* 4095: the limit */
    KD_CHECK(strlen(big) == KD_PATH_MAX - 1, "length %zu", strlen(big));
    name[0] = 'N';
    strcat(name, "x");
    s = kd_path_join(big, sizeof big, "abc", name); /* 4096, in a larger buffer */
    KD_CHECK(s == KD_ERR_INVALID_ARG && big[0] == 0, "KD_PATH_MAX not enforced");
    KD_CHECK(strstr(kd_last_error(), "(4096 characters; at most 4095)") &&
             strstr(kd_last_error(), "characters...]"), "%s", kd_last_error());
    free(name);
    size_t room = KD_PATH_MAX - 1 - KD_TMP_SUFFIX_MAX - 4; /* "abc/" */
    name = repeat('o', room);
    KD_CHECK_OK(kd_path_check_output("abc", name));
    strcat(name, "o");
    KD_CHECK(kd_path_check_output("abc", name) == KD_ERR_INVALID_ARG &&
             strstr(kd_last_error(), "leaves room for the temporary name"), "%s", kd_last_error());
    free(name);
    return 0;
}

/* Messages keep their reason: a 5000-character path in a message is shortened in its
 * middle (its start and its file name stay), the text after it stays whole; context
 * added by kd_fail_context keeps the inner reason; a message of many short words
 * longer than KD_MESSAGE_MAX keeps its start and its end.
 * Catches: vsnprintf into a fixed buffer (the reason cut off), an overflow of g_msg. */
static int message_keeps_reason(void) {
    char *dir = repeat('d', 5000);
    kd_fail(KD_ERR_IO, "/start/%s/file.nii.gz: cannot open: No space left on device", dir);
    const char *m = kd_last_error();
    KD_CHECK(strlen(m) < KD_MESSAGE_MAX && strlen(m) < 1200, "length %zu", strlen(m));
    KD_CHECK(!strncmp(m, "/start/ddd", 10) && strstr(m, "ddd/file.nii.gz: cannot open: No space left on device") &&
             strstr(m, "[...4"), "%s", m);
    kd_fail_context(KD_ERR_IO, "case %s", "KDPhantom_000");
    m = kd_last_error();
    KD_CHECK(!strncmp(m, "case KDPhantom_000: /start/", 27) && strstr(m, "No space left on device"), "%s", m);
    /* many short words: the middle of the whole goes */
    size_t n = 3 * KD_MESSAGE_MAX;
    char *words = malloc(n + 1);
    for (size_t i = 0; i < n; i++) words[i] = i % 8 == 7 ? ' ' : 'w';
    words[n] = 0;
    kd_fail(KD_ERR_IO, "BEGIN %s END", words);
    m = kd_last_error();
    KD_CHECK(strlen(m) < KD_MESSAGE_MAX && !strncmp(m, "BEGIN ", 6) && !strcmp(m + strlen(m) - 4, " END") &&
             strstr(m, "characters...]"), "head/tail of a long message: %.40s...%s", m, m + strlen(m) - 20);
    free(words);
    free(dir);
    return 0;
}

/* Runs fn in a child process; its exit status. */
static int in_child(int (*fn)(const char *), const char *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(fn(arg));
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* In a child: 0 when dir is refused as held by our parent (by pid), 1 otherwise. */
static int refused_by_parent(const char *dir) {
    kd_outdir *o = NULL;
    char pid[32];
    snprintf(pid, sizeof pid, "(pid %ld)", (long)getppid());
    kd_status s = kd_outdir_open(dir, NULL, &o);
    kd_outdir_close(o);
    if (s != KD_ERR_BUSY || !strstr(kd_last_error(), pid) || !strstr(kd_last_error(), dir)) {
        fprintf(stderr, "child: status %d: %s\n", s, kd_last_error());
        return 1;
    }
    return 0;
}

/* In a child: 0 when dir opens. */
static int opens(const char *dir) {
    kd_outdir *o = NULL;
    kd_status s = kd_outdir_open(dir, NULL, &o);
    kd_outdir_close(o);
    if (s) fprintf(stderr, "child: %s\n", kd_last_error());
    return s != KD_OK;
}

/* The pid recorded in dir/.kdseg.lock (0: blank). */
static long recorded(const char *dir) {
    char p[2048], b[64] = "";
    snprintf(p, sizeof p, "%s/.kdseg.lock", dir);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t got = fread(b, 1, sizeof b - 1, f);
    fclose(f);
    b[got] = 0;
    return strtol(b, NULL, 10);
}

/* One writer per folder: a folder held by this process is refused to another process
 * (KD_ERR_BUSY naming the folder and our pid) and to a second kd_outdir of this process;
 * the lock file records the holder's pid and is blanked on close; after close, and after
 * a holder is killed with SIGKILL, the folder opens. kd_outdir_open creates the folder
 * and refuses a path that does not fit before creating anything.
 * Catches: no lock, a lock not dropped by a killed holder, a pid not recorded. */
static int outdir_lock(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/a/b/out", kd_test_tmpdir());
    kd_outdir *o = NULL, *o2 = NULL;
    KD_CHECK_OK(kd_outdir_open(dir, "train.csv", &o));
    KD_CHECK(!strcmp(kd_outdir_path(o), dir), "path");
    KD_CHECK(recorded(dir) == (long)getpid(), "recorded pid %ld", recorded(dir));
    KD_CHECK(kd_outdir_open(dir, NULL, &o2) == KD_ERR_BUSY && !o2 &&
             strstr(kd_last_error(), "this process is already writing"), "%s", kd_last_error());
    KD_CHECK(in_child(refused_by_parent, dir) == 0, "another process was not refused");
    kd_outdir_close(o);
    KD_CHECK(recorded(dir) == 0, "the pid was not blanked on close");
    KD_CHECK(in_child(opens, dir) == 0, "the folder did not open after close");
    /* a holder killed */
    int fd[2];
    KD_CHECK(pipe(fd) == 0, "pipe");
    pid_t h = fork();
    if (h == 0) {
        kd_outdir *c = NULL;
        char ok = kd_outdir_open(dir, NULL, &c) ? 'n' : 'y';
        if (write(fd[1], &ok, 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c = 0;
    KD_CHECK(read(fd[0], &c, 1) == 1 && c == 'y', "the holder did not open the folder");
    KD_CHECK(kd_outdir_open(dir, NULL, &o2) == KD_ERR_BUSY, "not refused while held");
    kill(h, SIGKILL);
    waitpid(h, NULL, 0);
    KD_CHECK_OK(kd_outdir_open(dir, NULL, &o2));
    kd_outdir_close(o2);
    close(fd[0]);
    close(fd[1]);
    /* too long: refused before the folder exists */
    char *longname = repeat('x', KD_PATH_MAX);
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/never", kd_test_tmpdir());
    KD_CHECK(kd_outdir_open(sub, longname, &o) == KD_ERR_INVALID_ARG && !o, "a longest name too long");
    struct stat st;
    KD_CHECK(stat(sub, &st) != 0, "the folder was created anyway");
    free(longname);
    return 0;
}

/* A run that fails before writing anything leaves nothing: kd_outdir_discard removes the
 * folders kd_outdir_open created (and only those, and only while they hold nothing but
 * the lock file); a folder that existed stays. An --out naming a file is refused at
 * once, saying so.
 * Catches: empty output folders left by failed starts, a user's folder removed. */
static int outdir_discard(void) {
    char top[1024], dir[1024], p[1100];
    struct stat st;
    snprintf(top, sizeof top, "%s/new", kd_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/x/y/", top);
    kd_outdir *o = NULL;
    KD_CHECK_OK(kd_outdir_open(dir, NULL, &o));
    KD_CHECK(kd_outdir_created(o), "created");
    kd_outdir_discard(o);
    KD_CHECK(stat(top, &st) != 0, "the created folders were left behind");
    /* an existing folder stays, lock file and all */
    snprintf(dir, sizeof dir, "%s/mine", kd_test_tmpdir());
    KD_CHECK(mkdir(dir, 0755) == 0, "mkdir");
    KD_CHECK_OK(kd_outdir_open(dir, NULL, &o));
    KD_CHECK(!kd_outdir_created(o), "not created");
    kd_outdir_discard(o);
    KD_CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), "an existing folder was removed");
    KD_CHECK_OK(kd_outdir_open(dir, NULL, &o)); /* and opens again */
    kd_outdir_close(o);
    /* created, but something else was written into it: stays */
    snprintf(dir, sizeof dir, "%s/used", kd_test_tmpdir());
    KD_CHECK_OK(kd_outdir_open(dir, NULL, &o));
    snprintf(p, sizeof p, "%s/train.csv", dir);
    FILE *f = fopen(p, "w");
    KD_CHECK(f && fclose(f) == 0, "write");
    kd_outdir_discard(o);
    KD_CHECK(stat(p, &st) == 0, "a folder with a file in it was removed");
    /* a file as the output folder */
    snprintf(p, sizeof p, "%s/used/train.csv", kd_test_tmpdir());
    KD_CHECK(kd_outdir_open(p, NULL, &o) == KD_ERR_IO && !o && strstr(kd_last_error(), "is a file, not a folder"),
             "%s", kd_last_error());
    return 0;
}

static int write_cohort(const char *dir, int cases, int first, kd_layout l, int unlabeled) {
    kd_phantom_opts o;
    memset(&o, 0, sizeof o);
    o.cases = cases;
    o.size[0] = o.size[1] = o.size[2] = 16;
    o.seed = 3;
    o.first_index = first;
    o.layout = l;
    o.unlabeled = unlabeled;
    KD_CHECK_OK(kd_phantom_write_cohort(dir, &o));
    return 0;
}

/* Entries of dir whose name contains ".tmp". */
static int temps_in(const char *dir) {
    DIR *dp = opendir(dir);
    int n = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) n += strstr(e->d_name, ".tmp") != NULL;
    if (dp) closedir(dp);
    return n;
}

/* Cases by real path: a cohort of 3 with a self-loop and a parent loop opens with 3
 * cases of distinct identities; a case folder linked under another folder name is
 * the same case; kd_dataset_check_disjoint refuses one index on both sides and a case
 * reached through links from another dataset; two image files for one modality and
 * two cases of one name are errors naming both.
 * Catches: discovery by path (cases counted once per route), a split that shares a case. */
static int dataset_links(void) {
    char d[1024], p[2048], q[2048];
    snprintf(d, sizeof d, "%s/d", kd_test_tmpdir());
    if (write_cohort(d, 3, 0, KD_LAYOUT_BRATS2018, 0)) return 1;
    snprintf(p, sizeof p, "%s/HGG", d);
    KD_CHECK(symlink(".", p) == 0, "link");
    snprintf(p, sizeof p, "%s/again", d);
    KD_CHECK(symlink("../d", p) == 0, "link");
    kd_dataset *ds;
    KD_CHECK_OK(kd_dataset_open(d, NULL, &ds));
    KD_CHECK(kd_dataset_count(ds) == 3, "%d cases", kd_dataset_count(ds));
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            KD_CHECK(strcmp(kd_dataset_case_id(ds, i), kd_dataset_case_id(ds, j)), "ids %d %d", i, j);
    int a[1] = {2}, b[2] = {0, 2};
    KD_CHECK(kd_dataset_check_disjoint(ds, a, 1, "validation", ds, b, 1, "training") == KD_OK, "disjoint");
    KD_CHECK(kd_dataset_check_disjoint(ds, a, 1, "validation", ds, b, 2, "training") == KD_ERR_INVALID_ARG &&
             strstr(kd_last_error(), "validation case KDPhantom_002"), "%s", kd_last_error());
    /* another dataset whose only case is case 2's images, linked */
    snprintf(p, sizeof p, "%s/u/KDPhantom_002", kd_test_tmpdir());
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && for m in t1 t1ce t2 flair; do ln -s '%s/KDPhantom_002/KDPhantom_002_'$m.nii.gz '%s'/; done",
             p, d, p);
    KD_CHECK(system(cmd) == 0, "links");
    snprintf(q, sizeof q, "%s/u", kd_test_tmpdir());
    kd_dataset *u;
    KD_CHECK_OK(kd_dataset_open(q, NULL, &u));
    int z[1] = {0};
    KD_CHECK(kd_dataset_check_disjoint(ds, a, 1, "validation", u, z, 1, "unlabeled") == KD_ERR_INVALID_ARG,
             "a case reached through linked files was not recognised");
    kd_dataset_free(u);
    kd_dataset_free(ds);
    /* two files for one modality */
    snprintf(p, sizeof p, "%s/KDPhantom_001/KDPhantom_001_t2.nii", d);
    FILE *f = fopen(p, "w");
    KD_CHECK(f && fclose(f) == 0, "touch");
    KD_CHECK(kd_dataset_open(d, NULL, &ds) == KD_ERR_FORMAT && strstr(kd_last_error(), "two files for one image") &&
             strstr(kd_last_error(), "KDPhantom_001_t2.nii.gz and"), "%s", kd_last_error());
    remove(p);
    /* two cases of one name */
    snprintf(p, sizeof p, "%s/o", kd_test_tmpdir());
    if (write_cohort(p, 1, 1, KD_LAYOUT_BRATS2018, 0)) return 1;
    snprintf(cmd, sizeof cmd, "mkdir '%s/LGG' && mv '%s/KDPhantom_001' '%s/LGG/'", d, p, d);
    KD_CHECK(system(cmd) == 0, "mv");
    KD_CHECK(kd_dataset_open(d, NULL, &ds) == KD_ERR_FORMAT && strstr(kd_last_error(), "two cases named KDPhantom_001"),
             "%s", kd_last_error());
    return 0;
}

/* Phantom cohorts are whole or absent: a new cohort leaves no temporary folder and
 * passes kd_phantom_check_cohort; a file removed, a wrong count or a wrong size fail it
 * by name; cases added to an existing cohort (first_index) are whole case folders; the
 * same for MSD (labels, images, dataset.json).
 * Catches: cohorts written in place, a check that accepts a partial cohort. */
static int phantom_cohort(void) {
    char d[1024], p[2048], parent[1024];
    snprintf(parent, sizeof parent, "%s/ph", kd_test_tmpdir());
    snprintf(d, sizeof d, "%s/cohort", parent);
    if (write_cohort(d, 3, 0, KD_LAYOUT_BRATS2018, 0)) return 1;
    KD_CHECK(temps_in(parent) == 0 && temps_in(d) == 0, "temporary folders left");
    kd_phantom_opts o;
    memset(&o, 0, sizeof o);
    o.cases = 3;
    o.size[0] = o.size[1] = o.size[2] = 16;
    o.layout = KD_LAYOUT_BRATS2018;
    KD_CHECK_OK(kd_phantom_check_cohort(d, &o));
    o.cases = 2;
    KD_CHECK(kd_phantom_check_cohort(d, &o) == KD_ERR_FORMAT && strstr(kd_last_error(), "holds 3 cases, not the 2"),
             "%s", kd_last_error());
    o.cases = 3;
    o.size[0] = 32;
    KD_CHECK(kd_phantom_check_cohort(d, &o) == KD_ERR_FORMAT && strstr(kd_last_error(), "16x16x16, not the 32x16x16"),
             "%s", kd_last_error());
    o.size[0] = 16;
    /* two more cases into the existing cohort */
    if (write_cohort(d, 2, 3, KD_LAYOUT_BRATS2018, 0)) return 1;
    KD_CHECK(temps_in(d) == 0, "temporary case folders left");
    o.cases = 5;
    KD_CHECK_OK(kd_phantom_check_cohort(d, &o));
    snprintf(p, sizeof p, "%s/KDPhantom_004/KDPhantom_004_seg.nii.gz", d);
    KD_CHECK(remove(p) == 0, "remove");
    KD_CHECK(kd_phantom_check_cohort(d, &o) == KD_ERR_FORMAT && strstr(kd_last_error(), "KDPhantom_004_seg.nii.gz is missing"),
             "%s", kd_last_error());
    /* MSD */
    snprintf(d, sizeof d, "%s/msd", parent);
    if (write_cohort(d, 2, 0, KD_LAYOUT_MSD, 0)) return 1;
    o.cases = 2;
    o.layout = KD_LAYOUT_MSD;
    KD_CHECK_OK(kd_phantom_check_cohort(d, &o));
    snprintf(p, sizeof p, "%s/dataset.json", d);
    struct stat st;
    KD_CHECK(stat(p, &st) == 0 && temps_in(parent) == 0, "dataset.json");
    snprintf(p, sizeof p, "%s/labelsTr/KDPH_001.nii.gz", d);
    KD_CHECK(remove(p) == 0, "remove");
    KD_CHECK(kd_phantom_check_cohort(d, &o) == KD_ERR_FORMAT, "a missing MSD label was accepted");
    return 0;
}

/* The file's whole text in buf[n] (empty when it cannot be read). */
static const char *text_of(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
    return buf;
}

/* Run as its own process (atomic_file starts it with KDSEG_FAULT=full:1, which the library
 * reads once per process, and the path in KDTEST_ATOMIC_PATH): the atomic write of the
 * path fails on the full disk with the reason, and the file keeps its text "new". Skips
 * when started without them (a run of every case). */
static int atomic_full_disk(void) {
    const char *path = getenv("KDTEST_ATOMIC_PATH"), *fault = getenv("KDSEG_FAULT");
    if (!path || !fault || strcmp(fault, "full:1")) return KD_TEST_SKIP;
    kd_atomic_file a;
    KD_CHECK_OK(kd_atomic_open(&a, path, "w"));
    for (int i = 0; i < 20000; i++) fprintf(a.f, "line %d of a long file\n", i);
    kd_status s = kd_atomic_close(&a, KD_OK);
    KD_CHECK(s == KD_ERR_IO && strstr(kd_last_error(), "No space left") && strstr(kd_last_error(), path),
             "full disk: %s: %s", kd_status_string(s), kd_last_error());
    char buf[64];
    KD_CHECK(!strcmp(text_of(path, buf, sizeof buf), "new\n"), "kept on the full disk: '%s'", buf);
    return 0;
}

/* The case atomic_full_disk in a new process of this program, with the fault set. */
static int run_full_disk(const char *path) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("KDSEG_FAULT", "full:1", 1);
        setenv("KDTEST_ATOMIC_PATH", path, 1);
        execl("/proc/self/exe", "test_fs", "atomic_full_disk", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* kd_atomic_open/close: a complete write replaces the file; a writer's own error, a
 * full disk or a path too long leave it as it was, with no temporary file behind.
 * Catches: a writer that renames a file it failed to write, or leaves its temporary. */
static int atomic_file(void) {
    char dir[1024], path[1100], buf[64];
    snprintf(dir, sizeof dir, "%s/atomic", kd_test_tmpdir());
    KD_CHECK_OK(kd_mkdirs(dir));
    snprintf(path, sizeof path, "%s/x.txt", dir);
    kd_atomic_file a;
    KD_CHECK_OK(kd_atomic_open(&a, path, "w"));
    fputs("new\n", a.f);
    KD_CHECK(temps_in(dir) == 1, "the temporary file is written first");
    KD_CHECK_OK(kd_atomic_close(&a, KD_OK));
    KD_CHECK(!strcmp(text_of(path, buf, sizeof buf), "new\n"), "replaced: '%s'", buf);
    KD_CHECK(temps_in(dir) == 0, "no temporary left");

    KD_CHECK_OK(kd_atomic_open(&a, path, "w"));
    fputs("half", a.f);
    kd_status s = kd_atomic_close(&a, kd_fail(KD_ERR_FORMAT, "the writer's own error"));
    KD_CHECK(s == KD_ERR_FORMAT, "the writer's status comes back: %s", kd_status_string(s));
    KD_CHECK(!strcmp(text_of(path, buf, sizeof buf), "new\n"), "kept after the writer's error: '%s'", buf);
    KD_CHECK(temps_in(dir) == 0, "no temporary left after the writer's error");

    KD_CHECK(run_full_disk(path) == 0, "full disk");
    KD_CHECK(temps_in(dir) == 0, "no temporary left after the full disk");

    char *long_name = repeat('n', KD_PATH_MAX);
    KD_CHECK(long_name != NULL, "memory");
    s = kd_atomic_open(&a, long_name, "w");
    free(long_name);
    KD_CHECK(s == KD_ERR_INVALID_ARG && a.f == NULL, "a path too long is refused: %s", kd_status_string(s));
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"path_printf", path_printf},     {"message_keeps_reason", message_keeps_reason},
        {"outdir_lock", outdir_lock},     {"dataset_links", dataset_links},
        {"phantom_cohort", phantom_cohort}, {"outdir_discard", outdir_discard},
        {"atomic_file", atomic_file},     {"atomic_full_disk", atomic_full_disk},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
