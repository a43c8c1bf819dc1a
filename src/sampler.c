/* sampler.c — next-token choice from logits: greedy argmax, or temperature → top-k → softmax →
 * top-p → min-p → renormalise → one draw from a seeded xorshift64* generator. Pure host code over
 * one logits row; it keeps no history (no repetition penalties) and never touches K/V.
 *
 * Candidates are ordered by the *unscaled* logit (then by id), so top-k = 1 or a tiny top-p picks
 * exactly the greedy token even where dividing by a temperature would round two logits together.
 * Only top-p needs a full sort; otherwise the draw walks the candidates in id order (top-k uses a
 * selection, then sorts just its k), which is just as deterministic. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  float logit; /* unscaled */
  int id;
  float p;     /* probability after the filters so far */
} cand_t;

void sampling_default(ks_sampling *p) {
  p->temp = 0.8f;
  p->top_k = 40;
  p->top_p = 0.95f;
  p->min_p = 0.05f;
  p->seed = 42;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static double rng_uniform(uint64_t *s) { /* [0, 1) with 53 bits */
  return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

ks_status sampler_init(ks_sampler *s, int vocab, const ks_sampling *p) {
  memset(s, 0, sizeof *s);
  if (vocab <= 0) return ks_fail(KS_ERR_ARG, "sampler: vocabulary size %d", vocab);
  if (isnan(p->temp) || isnan(p->top_p) || isnan(p->min_p) || p->top_k < 0)
    return ks_fail(KS_ERR_ARG, "sampler: bad settings (temp %g, top_k %d, top_p %g, min_p %g)",
                   (double)p->temp, p->top_k, (double)p->top_p, (double)p->min_p);
  s->p = *p;
  s->vocab = vocab;
  uint64_t x = p->seed;
  s->rng = splitmix64(&x);
  if (!s->rng) s->rng = 0x9E3779B97F4A7C15ull; /* xorshift must not start at 0 */
  s->scratch = malloc((size_t)vocab * sizeof(cand_t));
  if (!s->scratch) return ks_fail(KS_ERR_NOMEM, "sampler: out of memory for %d candidates", vocab);
  return KS_OK;
}

void sampler_deinit(ks_sampler *s) {
  if (!s) return;
  free(s->scratch);
  s->scratch = NULL;
}

/* Lowest id among the maxima; NaN never wins; all-NaN gives 0. */
static int argmax(const float *x, int n) {
  int best = -1;
  for (int i = 0; i < n; i++) {
    if (isnan(x[i])) continue;
    if (best < 0 || x[i] > x[best]) best = i;
  }
  return best < 0 ? 0 : best;
}

/* Higher logit first, then lower id: a strict total order, so results never depend on qsort. */
static int cand_before(const cand_t *a, const cand_t *b) {
  return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}
static int cand_cmp(const void *pa, const void *pb) {
  const cand_t *a = pa, *b = pb;
  return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

/* Moves the k best candidates into c[0..k) (unordered): quickselect, O(n) expected. */
static void select_top(cand_t *c, int n, int k) {
  int lo = 0, hi = n - 1;
  uint64_t r = 0x243F6A8885A308D3ull; /* fixed pivot sequence: deterministic */
  while (lo < hi) {
    int pi = lo + (int)(rng_next(&r) % (uint64_t)(hi - lo + 1));
    cand_t pivot = c[pi];
    c[pi] = c[hi];
    c[hi] = pivot;
    int st = lo;
    for (int i = lo; i < hi; i++) {
      if (cand_before(&c[i], &pivot)) {
        cand_t tmp = c[i];
        c[i] = c[st];
        c[st] = tmp;
        st++;
      }
    }
    c[hi] = c[st];
    c[st] = pivot;
    if (st == k - 1 || st == k) return;
    if (st < k) lo = st + 1;
    else hi = st - 1;
  }
}

int sampler_sample(ks_sampler *s, const float *logits) {
  int n = s->vocab;
  const ks_sampling *p = &s->p;
  if (!(p->temp > 0.0f)) return argmax(logits, n);

  cand_t *c = s->scratch;
  int m = 0, best = -1;
  for (int i = 0; i < n; i++) {
    if (isnan(logits[i]) || logits[i] == -INFINITY) continue; /* probability 0 */
    c[m].logit = logits[i];
    c[m].id = i;
    if (best < 0 || cand_before(&c[m], &c[best])) best = m;
    m++;
  }
  if (m == 0) return argmax(logits, n);
  if (c[best].logit == INFINITY) return c[best].id; /* lowest id among +inf: certain */
  float mx = c[best].logit;

  int sorted = 0;
  if (p->top_k > 0 && p->top_k < m) {
    select_top(c, m, p->top_k);
    m = p->top_k;
    qsort(c, (size_t)m, sizeof *c, cand_cmp); /* k is small */
    sorted = 1;
  }
  if (p->top_p < 1.0f && !sorted) { /* only top-p needs the full order: O(V log V) */
    qsort(c, (size_t)m, sizeof *c, cand_cmp);
    sorted = 1;
  }

  double sum = 0.0;
  for (int i = 0; i < m; i++) {
    double e = exp(((double)c[i].logit - mx) / p->temp);
    c[i].p = (float)e;
    sum += e;
  }
  for (int i = 0; i < m; i++) c[i].p = (float)(c[i].p / sum);

  if (p->top_p < 1.0f) { /* smallest prefix whose mass reaches top_p, at least one token */
    double cum = 0.0;
    int keep = m;
    for (int i = 0; i < m; i++) {
      cum += c[i].p;
      if (cum >= p->top_p) {
        keep = i + 1;
        break;
      }
    }
    m = keep;
  }
  if (p->min_p > 0.0f) { /* relative to the best token, which always stays */
    float thr = (float)(p->min_p * (1.0 / sum)); /* the best token's probability is 1 / sum */
    int w = 0;
    for (int i = 0; i < m; i++)
      if (c[i].p >= thr || c[i].logit == mx) c[w++] = c[i];
    m = w;
  }

  double total = 0.0;
  for (int i = 0; i < m; i++) total += c[i].p;
  double r = rng_uniform(&s->rng) * total;
  double cum = 0.0;
  for (int i = 0; i < m; i++) {
    cum += c[i].p;
    if (r < cum) return c[i].id;
  }
  for (int i = m - 1; i > 0; i--) /* rounding left r at the very top */
    if (c[i].p > 0.0f) return c[i].id;
  return c[0].id;
}
