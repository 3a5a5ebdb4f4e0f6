/* The on-disk program cache: its folder ($XDG_CACHE_HOME/kdseg, else ~/.cache/kdseg),
 * the keys, entries read (a corrupt or stale one is rebuilt, never trusted) and written
 * through a temporary file and a rename. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kdseg/fs.h"
#include "rt_internal.h"

uint64_t kd_hash64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    if (!h) h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The longest cache folder: its files' names (program binaries, conv choices, the
 * tuning table) and their temporary names then fit the buffers that compose them. */
#define CACHE_DIR_MAX 900

/* The folder in dir[KD_PATH_MAX]; its full length (longer than CACHE_DIR_MAX: unusable,
 * kd_device_open refuses it). */
static size_t cache_dir_into(char *dir) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int n = x && *x ? snprintf(dir, KD_PATH_MAX, "%s/kdseg", x)
                    : snprintf(dir, KD_PATH_MAX, "%s/.cache/kdseg", (h && *h) ? h : "/tmp");
    return n < 0 ? KD_PATH_MAX : (size_t)n;
}

const char *kd_cache_dir(void) {
    static _Thread_local char dir[KD_PATH_MAX];
    cache_dir_into(dir);
    return dir;
}

kd_status kd_rt_cache_dir_check(void) {
    char dir[KD_PATH_MAX];
    size_t n = cache_dir_into(dir);
    if (n <= CACHE_DIR_MAX) return KD_OK;
    return kd_fail(KD_ERR_INVALID_ARG, "path too long: the cache folder %s%s (%zu characters; at most "
                   "%d): set XDG_CACHE_HOME to a shorter folder", dir, n >= KD_PATH_MAX ? "..." : "",
                   n, CACHE_DIR_MAX);
}

int kd_rt_cache_enabled(void) {
    const char *e = getenv("KDSEG_CACHE");
    return !(e && !strcmp(e, "0"));
}

#define CACHE_MAGIC "KDPCACHE"

void kd_rt_cache_path(char *out, size_t n, const char *file, uint64_t key) {
    char stem[128];
    snprintf(stem, sizeof stem, "%s", file);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = 0;
    snprintf(out, n, "%s/%s-%016llx.bin", kd_cache_dir(), stem, (unsigned long long)key);
}

unsigned char *kd_rt_cache_read(const char *path, uint64_t key, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[8];
    uint64_t k = 0, n = 0;
    uint32_t crc = 0;
    unsigned char *bin = NULL;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, CACHE_MAGIC, 8) ||
        fread(&k, 8, 1, f) != 1 || k != key || fread(&n, 8, 1, f) != 1 ||
        fread(&crc, 4, 1, f) != 1 || n == 0 || n > ((uint64_t)1 << 31))
        goto bad;
    bin = malloc(n);
    if (!bin || fread(bin, 1, n, f) != n) goto bad;
    if ((uint32_t)crc32(0L, bin, (uInt)n) != crc) goto bad;
    fclose(f);
    *size = n;
    return bin;
bad:
    kd_log(KD_LOG_INFO, "program cache entry %s is corrupt or stale; rebuilding", path);
    free(bin);
    fclose(f);
    return NULL;
}

void kd_rt_cache_write(const char *path, uint64_t key, const unsigned char *bin, size_t n) {
    char tmp[1300];
    /* a cache that cannot be written is only slower: warn, never fail */
    if (kd_mkdirs(kd_cache_dir()) || kd_tmp_name(path, tmp, sizeof tmp)) {
        kd_log(KD_LOG_WARN, "cannot write program cache %s: %s", path, kd_last_error());
        return;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        kd_log(KD_LOG_WARN, "cannot write program cache %s: %s", tmp, strerror(errno));
        return;
    }
    uint64_t n64 = n;
    uint32_t crc = (uint32_t)crc32(0L, bin, (uInt)n);
    int ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&key, 8, 1, f) == 1 &&
             fwrite(&n64, 8, 1, f) == 1 && fwrite(&crc, 4, 1, f) == 1 &&
             fwrite(bin, 1, n, f) == n;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        kd_log(KD_LOG_WARN, "cannot write program cache %s", path);
        remove(tmp);
    }
}

