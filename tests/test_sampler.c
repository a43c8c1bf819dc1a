/* test_sampler.c — greedy argmax (ties, NaN), seeded determinism, top-k / top-p / min-p filters,
 * and the temperature-1 distribution against softmax with a chi-square bound. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "testutil.h"

static ks_sampling params(float temp, int top_k, float top_p, float min_p, uint64_t seed) {
  ks_sampling p = {temp, top_k, top_p, min_p, seed};
  return p;
}

static int sample_once(const float *logits, int n, ks_sampling p) {
  ks_sampler s;
  REQUIRE(sampler_init(&s, n, &p) == KS_OK);
  int id = sampler_sample(&s, logits);
  sampler_deinit(&s);
  return id;
}

static int argmax_ref(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

static void test_greedy(void) {
  float a[] = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
  CHECK(sample_once(a, 5, params(0, 0, 1, 0, 1)) == 1); /* tie: lowest id */
  CHECK(sample_once(a, 5, params(-1, 40, 0.9f, 0.1f, 1)) == 1);
  float b[] = {NAN, -3.0f, NAN, 5.0f, 5.0f};
  CHECK(sample_once(b, 5, params(0, 0, 1, 0, 1)) == 3);
  float c[] = {-INFINITY, -INFINITY, -1e30f};
  CHECK(sample_once(c, 3, params(0, 0, 1, 0, 1)) == 2);
  float d[] = {NAN, NAN};
  int r = sample_once(d, 2, params(0, 0, 1, 0, 1));
  CHECK(r >= 0 && r < 2);
  float e[] = {1.0f, INFINITY, INFINITY};
  CHECK(sample_once(e, 3, params(0, 0, 1, 0, 1)) == 1);
  CHECK(sample_once(e, 3, params(1, 0, 1, 0, 7)) == 1); /* +inf is certain when sampling too */
  /* Sampling never returns NaN or -inf entries. */
  float f[] = {NAN, 0.0f, -INFINITY, 0.0f};
  ks_sampling p = params(1, 0, 1, 0, 3);
  ks_sampler s;
  REQUIRE(sampler_init(&s, 4, &p) == KS_OK);
  for (int i = 0; i < 200; i++) {
    int id = sampler_sample(&s, f);
    CHECK(id == 1 || id == 3);
  }
  sampler_deinit(&s);
}

static void run_seq(const float *logits, int n, ks_sampling p, int *out, int len) {
  ks_sampler s;
  REQUIRE(sampler_init(&s, n, &p) == KS_OK);
  for (int i = 0; i < len; i++) out[i] = sampler_sample(&s, logits);
  sampler_deinit(&s);
}

static void test_determinism(void) {
  enum { V = 1000, L = 64 };
  float *lg = malloc(V * sizeof *lg);
  REQUIRE(lg);
  ks_fill_rand(lg, V, 3.0f);
  int a[L], b[L], c[L];
  ks_sampling p = params(1.0f, 0, 1.0f, 0.0f, 1234);
  run_seq(lg, V, p, a, L);
  run_seq(lg, V, p, b, L);
  CHECK(memcmp(a, b, sizeof a) == 0);
  p.seed = 1235;
  run_seq(lg, V, p, c, L);
  CHECK(memcmp(a, c, sizeof a) != 0);
  /* Defaults too (top-k 40, top-p 0.95, min-p 0.05). */
  sampling_default(&p);
  CHECK(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f && p.seed == 42);
  run_seq(lg, V, p, a, L);
  run_seq(lg, V, p, b, L);
  CHECK(memcmp(a, b, sizeof a) == 0);
  free(lg);
}

static void test_filters(void) {
  enum { V = 5000 };
  float *lg = malloc(V * sizeof *lg);
  REQUIRE(lg);
  for (int round = 0; round < 20; round++) {
    ks_fill_rand(lg, V, 4.0f);
    if (round & 1) lg[ks_randu() % V] = lg[argmax_ref(lg, V)]; /* a tie at the top */
    int g = 0;
    for (int i = 1; i < V; i++)
      if (lg[i] > lg[g]) g = i;
    CHECK(sample_once(lg, V, params(0, 0, 1, 0, 1)) == g);
    for (uint64_t seed = 1; seed < 6; seed++) {
      CHECK(sample_once(lg, V, params(1.5f, 1, 1, 0, seed)) == g);      /* top-k = 1 */
      CHECK(sample_once(lg, V, params(1.5f, 0, 1e-6f, 0, seed)) == g);  /* tiny top-p */
      CHECK(sample_once(lg, V, params(1.5f, 0, 0.0f, 0, seed)) == g);   /* top-p 0 keeps one */
      int id = sample_once(lg, V, params(2.0f, 50, 1, 1.0f, seed)); /* min-p 1: only the max */
      CHECK(lg[id] == lg[g]);
    }
  }

  /* top-k: only the k best ever come out. */
  for (int i = 0; i < V; i++) lg[i] = (float)(i % 97) * 0.01f;
  ks_sampling p = params(5.0f, 10, 1, 0, 99);
  ks_sampler s;
  REQUIRE(sampler_init(&s, V, &p) == KS_OK);
  for (int i = 0; i < 2000; i++) {
    int id = sampler_sample(&s, lg);
    /* the ten largest values are 0.96 at ids 96, 193, ... (lowest ids win the ties) */
    CHECK(id % 97 == 96 && id / 97 < 10);
  }
  sampler_deinit(&s);

  /* min-p: probabilities 0.5, 0.3, 0.15, 0.05: min_p 0.2 drops what is < 0.1. */
  float m[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
  p = params(1.0f, 0, 1.0f, 0.2f, 5);
  int cnt[4] = {0};
  REQUIRE(sampler_init(&s, 4, &p) == KS_OK);
  for (int i = 0; i < 20000; i++) cnt[sampler_sample(&s, m)]++;
  sampler_deinit(&s);
  CHECK(cnt[3] == 0 && cnt[0] > 0 && cnt[1] > 0 && cnt[2] > 0);
  /* min_p 0.5 keeps 0.5 and 0.3 only. */
  p.min_p = 0.5f;
  memset(cnt, 0, sizeof cnt);
  REQUIRE(sampler_init(&s, 4, &p) == KS_OK);
  for (int i = 0; i < 20000; i++) cnt[sampler_sample(&s, m)]++;
  sampler_deinit(&s);
  CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[0] > cnt[1] && cnt[1] > 0);
  /* top-p 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it. */
  p = params(1.0f, 0, 0.7f, 0, 6);
  memset(cnt, 0, sizeof cnt);
  REQUIRE(sampler_init(&s, 4, &p) == KS_OK);
  for (int i = 0; i < 20000; i++) cnt[sampler_sample(&s, m)]++;
  sampler_deinit(&s);
  CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[0] > 0 && cnt[1] > 0);
  /* Renormalised after filtering: 0.5 / 0.8 = 0.625 of the draws. */
  double frac = cnt[0] / 20000.0;
  CHECK_MSG(fabs(frac - 0.625) < 0.02, "top-p renormalised share %.4f", frac);
  free(lg);

  /* Bad settings are refused. */
  p = params(NAN, 0, 1, 0, 1);
  CHECK(sampler_init(&s, 4, &p) == KS_ERR_ARG);
  sampler_deinit(&s);
  p = params(1, -1, 1, 0, 1);
  CHECK(sampler_init(&s, 4, &p) == KS_ERR_ARG);
  sampler_deinit(&s);
  p = params(1, 0, 1, 0, 1);
  CHECK(sampler_init(&s, 0, &p) == KS_ERR_ARG);
  sampler_deinit(&s);
}

/* Pearson chi-square of temp-1 (and temp-2) sampling against softmax(logits / temp). With 7
 * degrees of freedom the 99.99th percentile is about 29.9: a correct sampler fails this once in
 * ten thousand runs (for a fixed seed, never). */
static void test_distribution(void) {
  enum { V = 8, N = 200000 };
  float lg[V] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, -1.5f, 1.2f, 0.7f};
  const float temps[] = {1.0f, 2.0f, 0.5f};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(temps); ti++) {
    float temp = temps[ti];
    double pr[V], z = 0;
    for (int i = 0; i < V; i++) z += pr[i] = exp(lg[i] / temp);
    for (int i = 0; i < V; i++) pr[i] /= z;
    ks_sampling p = params(temp, 0, 1.0f, 0.0f, 0xC0FFEE + ti);
    ks_sampler s;
    REQUIRE(sampler_init(&s, V, &p) == KS_OK);
    long cnt[V] = {0};
    for (int i = 0; i < N; i++) {
      int id = sampler_sample(&s, lg);
      REQUIRE(id >= 0 && id < V);
      cnt[id]++;
    }
    sampler_deinit(&s);
    double chi2 = 0;
    for (int i = 0; i < V; i++) {
      double e = pr[i] * N;
      chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
    }
    printf("temp %.1f: chi-square %.2f (7 dof, bound 29.9)\n", (double)temp, chi2);
    CHECK_MSG(chi2 < 29.9, "temp %.1f: chi-square %.2f", (double)temp, chi2);
  }
}

/* Large vocabularies: top-k uses selection, not a full sort; time it loosely. */
static void test_speed(void) {
  enum { V = 128000 };
  float *lg = malloc(V * sizeof *lg);
  REQUIRE(lg);
  ks_fill_rand(lg, V, 5.0f);
  ks_sampling p;
  sampling_default(&p);
  ks_sampler s;
  REQUIRE(sampler_init(&s, V, &p) == KS_OK);
  double t0 = ks_now_sec();
  for (int i = 0; i < 100; i++) (void)sampler_sample(&s, lg);
  double dt = (ks_now_sec() - t0) / 100;
  sampler_deinit(&s);
  printf("default sampling over %d logits: %.3f ms\n", V, dt * 1e3);
  CHECK_MSG(dt < 0.05, "%.3f ms per sample", dt * 1e3);
  free(lg);
}

int main(void) {
  ks_test_seed();
  test_greedy();
  test_determinism();
  test_filters();
  test_distribution();
  test_speed();
  return ks_test_done("test_sampler");
}
