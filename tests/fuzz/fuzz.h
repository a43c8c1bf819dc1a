/* fuzz.h — what the libFuzzer targets in tests/fuzz share: the libFuzzer entry points, a memfd
 * that gives the input bytes a file path (kvscope's readers take paths and mmap them), checks
 * that abort with a message (an abort is what libFuzzer and the replay driver count as a
 * finding), and how far an input got (ks_fuzz_depth), which the corpus replay test uses to make
 * sure every seed named valid-* still reaches the deepest level.
 * Include it from exactly one file per fuzz executable (it defines ks_fuzz_depth).
 *
 * Fuzzing (libFuzzer, clang):
 *   CC=clang cmake -S . -B build-fuzz -DKVSCOPE_FUZZ=ON && cmake --build build-fuzz --target fuzz
 *   mkdir -p /tmp/work && build-fuzz/fuzz_gguf /tmp/work tests/fuzz/corpus/gguf -max_total_time=300
 * (new inputs go to the first directory; the checked-in corpus is only read). A crash leaves
 * crash-<sha1> behind: copy it into tests/fuzz/corpus/<target>/ with a name that says what it
 * is, fix the bug, and the <target>_replay ctest keeps it fixed in every build.
 * What it is not: a test framework; each target states its own properties. */
#ifndef KS_FUZZ_H
#define KS_FUZZ_H
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* How far the last input got: 0 rejected at once ... the target's KS_FUZZ_FULL. Set by the
 * target, read by replay_main.c. */
int ks_fuzz_depth;
/* Each target's deepest level, reported by the replay driver next to a valid-* seed. */
extern const int ks_fuzz_full;

#define KS_FUZZ_CHECK(cond, ...)                                                        \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: fuzz property violated: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                     \
      fputc('\n', stderr);                                                              \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

/* The input as a file: one memfd per process, rewritten for every input, named by its
 * /proc/self/fd path, so no disk I/O and nothing left behind. */
static inline const char *ks_fuzz_path(const uint8_t *data, size_t size) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("kvscope-fuzz", MFD_CLOEXEC);
    KS_FUZZ_CHECK(fd >= 0, "memfd_create failed");
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  KS_FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate failed");
  size_t done = 0;
  while (done < size) {
    ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
    KS_FUZZ_CHECK(w > 0, "pwrite to the memfd failed");
    done += (size_t)w;
  }
  return path;
}

/* The block the cache-file target asks for (make_seeds.c writes its seeds with it). */
#define KS_FUZZ_CACHE_FP 0x6b7673636f706531ull   /* model fingerprint */
#define KS_FUZZ_CACHE_HASH 0x1122334455667788ull /* chain hash: the file's name */
#define KS_FUZZ_CACHE_LAYERS 2u
#define KS_FUZZ_CACHE_KV_DIM 8u
#define KS_FUZZ_CACHE_BLOCK 16u

/* Forget the last error so that a failure which records no message is caught. */
static inline void ks_fuzz_clear_error(void) { ks_fail(KS_OK, "%s", ""); }

/* Every failure must say what was wrong (DESIGN.md: every error via ks_fail with a message). */
static inline void ks_fuzz_check_failure(ks_status st, const char *what) {
  KS_FUZZ_CHECK(st != KS_OK, "%s", what);
  KS_FUZZ_CHECK(strcmp(ks_last_error(), "no error recorded") != 0 && ks_last_error()[0] != 0,
                "%s failed (%s) without a message", what, ks_status_name(st));
}

/* p..p+n must lie inside base..base+size: a reader's pointer must never reach past the file it
 * mapped (reads past the end but inside the last page would not fault, so check the bounds). */
static inline void ks_fuzz_check_inside(const void *p, size_t n, const void *base, size_t size,
                                 const char *what) {
  uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
  KS_FUZZ_CHECK(p && a >= b && a - b <= size && n <= size - (a - b),
                "%s: %zu bytes at offset %lld lie outside the %zu-byte file", what, n,
                (long long)(a - b), size);
}

/* Reads every byte so that AddressSanitizer sees any pointer into freed or foreign memory. */
static inline uint32_t ks_fuzz_touch(const void *p, size_t n) {
  const volatile unsigned char *q = p;
  uint32_t s = 0;
  for (size_t i = 0; i < n; i++) s = s * 31u + q[i];
  return s;
}

/* RFC 3629 UTF-8, written out from the grammar (independent of tokenizer.c's validator).
 * Returns n if all n bytes are valid, else the offset of the first byte of the first sequence
 * that is not a valid character. */
static inline size_t ks_fuzz_utf8_bad(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) { i++; continue; }
    else if (c >= 0xC2 && c <= 0xDF) k = 1;
    else if (c == 0xE0) { k = 2; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) k = 2;
    else if (c == 0xED) { k = 2; hi = 0x9F; }
    else if (c == 0xF0) { k = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) k = 3;
    else if (c == 0xF4) { k = 3; hi = 0x8F; }
    else return i;
    if (n - i - 1 < k) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t j = 2; j <= k; j++)
      if (s[i + j] < 0x80 || s[i + j] > 0xBF) return i;
    i += k + 1;
  }
  return n;
}
static inline int ks_fuzz_utf8_ok(const unsigned char *s, size_t n) { return ks_fuzz_utf8_bad(s, n) == n; }

#endif
