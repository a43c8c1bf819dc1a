/* testutil.h — check macros with file:line, explicit skips, paths to shared assets, random data.
 * A test that cannot run prints why and exits 77 (ctest reports it as skipped, never passed). */
#ifndef KS_TESTUTIL_H
#define KS_TESTUTIL_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern int ks_test_failures;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
      ks_test_failures++;                                                              \
    }                                                                                  \
  } while (0)
#define CHECK_MSG(cond, ...)                                                           \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);          \
      fprintf(stderr, __VA_ARGS__);                                                    \
      fputc('\n', stderr);                                                             \
      ks_test_failures++;                                                              \
    }                                                                                  \
  } while (0)
/* Fatal: stop the test now. */
#define REQUIRE(cond)                                                                  \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);        \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

/* Prints "SKIP: reason" and exits 77. */
void ks_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Returns 0 if all checks passed, else prints the count and returns 1. Use as main's return. */
int ks_test_done(const char *name);

/* Path of a file under ../shared (KS_SHARED_DIR, overridable with KVSCOPE_SHARED); skips the
 * test with a clear message when it is absent. Returns a static buffer per call slot (4). */
const char *ks_shared_file(const char *rel);
/* Scratch directory for this test under the build tree (created fresh). */
const char *ks_test_tmpdir(const char *test_name);

/* Deterministic-per-run but fresh random data: seeded from time unless KS_TEST_SEED is set;
 * the seed is printed so a failure can be replayed. */
void ks_test_seed(void);
float ks_randf(void);      /* uniform in [-1, 1) */
uint32_t ks_randu(void);
void ks_fill_rand(float *x, size_t n, float scale);


/* The stories260K reference outputs in ../shared/models/reference (see its README):
 * greedy_once.tokens -> prompt ids and the whole fed sequence; logits_once_first8.txt -> the
 * logits (n_pos, vocab) after each of the first positions. Arrays are malloc'd. Skips if absent. */
typedef struct {
  int *prompt, n_prompt;
  int *all, n_all;
  float *logits; /* (n_logit_pos, vocab) */
  int n_logit_pos, vocab;
} ks_ref_once;
void ks_read_ref_once(ks_ref_once *r, int vocab);
void ks_ref_once_free(ks_ref_once *r);
/* max |a-b| / max |b| over n values */
double ks_max_rel_err(const float *a, const float *b, size_t n);

#endif
