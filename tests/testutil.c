/* testutil.c — see testutil.h. */
#include "testutil.h"

#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ks_test_failures = 0;

void ks_test_skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stdout, "SKIP: ");
  vfprintf(stdout, fmt, ap);
  fprintf(stdout, "\n");
  va_end(ap);
  fflush(stdout);
  exit(77);
}

int ks_test_done(const char *name) {
  if (ks_test_failures) {
    fprintf(stderr, "%s: %d check(s) FAILED\n", name, ks_test_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

const char *ks_shared_file(const char *rel) {
  static char bufs[4][4096];
  static int slot = 0;
  char *b = bufs[slot++ & 3];
  const char *dir = getenv("KVSCOPE_SHARED");
  if (!dir) dir = KS_SHARED_DIR;
  snprintf(b, 4096, "%s/%s", dir, rel);
  if (access(b, R_OK) != 0)
    ks_test_skip("shared asset %s is absent (expected beside the checkout in ../shared, or set "
                 "KVSCOPE_SHARED)", b);
  return b;
}

const char *ks_test_tmpdir(const char *test_name) {
  static char b[4096];
  snprintf(b, sizeof b, "%s/test-tmp/%s", KS_BINARY_DIR, test_name);
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", b, b);
  if (system(cmd) != 0) {
    fprintf(stderr, "cannot create %s\n", b);
    exit(1);
  }
  return b;
}

static uint64_t g_rng;
void ks_test_seed(void) {
  const char *e = getenv("KS_TEST_SEED");
  g_rng = e ? strtoull(e, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
  if (!g_rng) g_rng = 1;
  printf("random seed: KS_TEST_SEED=%llu\n", (unsigned long long)g_rng);
}
uint32_t ks_randu(void) {
  if (!g_rng) g_rng = 88172645463325252ull;
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng >> 32);
}
float ks_randf(void) { return (ks_randu() >> 8) * (2.0f / 16777216.0f) - 1.0f; }
void ks_fill_rand(float *x, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) x[i] = ks_randf() * scale;
}

#include <math.h>
static int read_id_line(FILE *f, const char *label, int with_count, int **ids) {
  char word[64];
  if (fscanf(f, "%63s", word) != 1 || strcmp(word, label) != 0) return -1;
  int n = -1;
  if (with_count && fscanf(f, "%d", &n) != 1) return -1;
  int cap = 256, k = 0;
  *ids = malloc(sizeof(int) * cap);
  for (;;) {
    int ch;
    while ((ch = fgetc(f)) == ' ' || ch == '\t') {}
    if (ch == '\n' || ch == EOF) break;
    ungetc(ch, f);
    if (k == cap) *ids = realloc(*ids, sizeof(int) * (cap *= 2));
    if (fscanf(f, "%d", &(*ids)[k]) != 1) return -1;
    k++;
  }
  if (with_count && n != k) return -1;
  return k;
}

void ks_read_ref_once(ks_ref_once *r, int vocab) {
  memset(r, 0, sizeof *r);
  const char *tp = ks_shared_file("models/reference/greedy_once.tokens");
  FILE *f = fopen(tp, "r");
  REQUIRE(f);
  r->n_prompt = read_id_line(f, "prompt_tokens", 1, &r->prompt);
  r->n_all = read_id_line(f, "all_tokens", 0, &r->all);
  fclose(f);
  REQUIRE(r->n_prompt > 0 && r->n_all > 0);
  const char *lp = ks_shared_file("models/reference/logits_once_first8.txt");
  f = fopen(lp, "r");
  REQUIRE(f);
  int *lprompt = NULL;
  int nl = read_id_line(f, "prompt_tokens", 1, &lprompt);
  REQUIRE(nl == r->n_prompt);
  free(lprompt);
  r->vocab = vocab;
  r->logits = malloc(sizeof(float) * vocab * 64);
  char w1[16], w2[16], w3[16];
  int p, t;
  while (r->n_logit_pos < 64 && fscanf(f, "%15s %d %15s %d %15s", w1, &p, w2, &t, w3) == 5) {
    REQUIRE(strcmp(w1, "pos") == 0 && p == r->n_logit_pos);
    for (int i = 0; i < vocab; i++)
      REQUIRE(fscanf(f, "%f", &r->logits[(size_t)r->n_logit_pos * vocab + i]) == 1);
    r->n_logit_pos++;
  }
  fclose(f);
  REQUIRE(r->n_logit_pos > 0);
}

void ks_ref_once_free(ks_ref_once *r) {
  free(r->prompt);
  free(r->all);
  free(r->logits);
  memset(r, 0, sizeof *r);
}

double ks_max_rel_err(const float *a, const float *b, size_t n) {
  double mx = 0, err = 0;
  for (size_t i = 0; i < n; i++) {
    mx = fmax(mx, fabs(b[i]));
    double e = fabs((double)a[i] - b[i]);
    if (!(e <= err)) err = e; /* NaN propagates as a failure */
  }
  return err / fmax(mx, 1e-30);
}
