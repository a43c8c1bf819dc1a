/* selftest.c — `kvscope selftest` (see selftest.h): each kernel variant run on the device and
 * compared with ref_cpu.c, then the whole default model against the CPU reference, one table
 * row per check. Every region a kernel reads or writes starts OFF bytes into its buffer (not a
 * multiple of any descriptor alignment, the lavapipe trap DESIGN.md describes) and is followed
 * by poisoned guard words, so an op that writes out of place fails its row even when its values
 * are right. Inputs are random from a seeded generator (--seed), so a table can be reproduced.
 *
 * Bounds (max |gpu - ref| / max |ref| over the output unless said otherwise), the same as the
 * unit tests: copy, embed, kv_write, batch invariance, sliced weights: bit-identical; add 1e-7;
 * swiglu, rmsnorm, rope, matmul (every weight type: both sides dequantise exactly, only the
 * summation order differs), attention: 1e-5; attention probabilities: 1e-5 absolute; the model's
 * logits vs the CPU reference: 1e-4 per position; greedy tokens: identical. On a device whose
 * products run on the cooperative-matrix kernels (f16 operands) the reference rounds the product
 * operands to f16 too, and the product bounds are 1e-4, the model's 2e-3.
 *
 * Feature paths: the matrix products have three: subgroup-shuffle sums, the same sums through
 * shared memory (rows of their own), and, where the device has VK_NV_cooperative_matrix, the
 * cooperative-matrix kernels, which then take every product whose rows are a multiple of 32 (the
 * same rows check them; the header line says which path ran). */
#include "selftest.h"
#include "kvscope.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "gguf.h"
#include "quant.h"
#include "ref_cpu.h"
#include "tokenizer.h"

#define OFF 12    /* bytes before every region: breaks any descriptor-offset alignment */
#define GUARD 64  /* poisoned bytes after every region */
#define POISON 0x7fc00000u /* a quiet NaN: a value never written stands out */

typedef struct {
  ks_gpu *g;
  ks_cmd *c;
  const ks_selftest_opts *o;
  ks_selftest_device *d;
  uint64_t rng;
} ctx;

/* ---------------------------------------------------------------- results */

static void add_result(ctx *x, const char *group, const char *name, double err, double bound,
                       int exact, int ok_extra, const char *note) {
  ks_selftest_device *d = x->d;
  if (d->n == d->cap) {
    int cap = d->cap ? 2 * d->cap : 64;
    ks_selftest_result *r = realloc(d->res, (size_t)cap * sizeof *r);
    if (!r) { /* keep what we have; the count of failures still says something went wrong */
      d->n_failed++;
      return;
    }
    d->res = r;
    d->cap = cap;
  }
  ks_selftest_result *r = &d->res[d->n++];
  memset(r, 0, sizeof *r);
  snprintf(r->group, sizeof r->group, "%s", group);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->note, sizeof r->note, "%s", note ? note : "");
  r->err = err;
  r->bound = bound;
  r->exact = exact;
  r->passed = ok_extra && (exact ? err == 0 : err <= bound); /* NaN fails */
  if (!r->passed) d->n_failed++;
}

/* A check that could not run (allocation, submission): a failed row saying why. */
static void infra_fail(ctx *x, const char *group, const char *name) {
  char note[160];
  snprintf(note, sizeof note, "could not run: %s", ks_last_error());
  add_result(x, group, name, NAN, 0, 0, 0, note);
}

static int faulted(const ctx *x, const char *name) {
  return x->o->fault && *x->o->fault && strstr(name, x->o->fault) != NULL;
}

/* Bound of a product against the reference: 1e-5; 1e-4 on the cooperative-matrix kernels, where
 * the reference rounds the operands to f16 too and only the order of the f32 sums (and the odd
 * f16 rounding of a normalised input on a tie) differs. */
static double mm_bound(const ctx *x, ks_type t, int K) {
  return gpu_matmul_coopmat(x->g, t, K) ? 1e-4 : 1e-5;
}
/* The model's logits against the reference: 1e-4; 2e-3 on the cooperative-matrix kernels (a
 * normalised input one f32 ulp away from the reference's can round to the neighbouring f16, and
 * a small model carries that through its layers: about 5e-4 on kvscope-tiny). */
static double model_bound(void) { return ref_f16_products() ? 2e-3 : 1e-4; }

/* Testing the selftest: one value of the GPU result moved by 0.1% of the largest magnitude
 * (plus 1e-3), more than any bound here allows, so the check must FAIL. */
static void inject(const ctx *x, const char *name, float *got, size_t n) {
  if (!faulted(x, name) || n == 0) return;
  float mx = 0;
  for (size_t i = 0; i < n; i++)
    if (fabsf(got[i]) > mx) mx = fabsf(got[i]);
  got[n / 2] += mx * 1e-3f + 1e-3f;
}

static void check_close(ctx *x, const char *group, const char *name, float *got, const float *ref,
                        size_t n, double bound, int absolute, int stray) {
  inject(x, name, got, n);
  double maxref = 0, maxdiff = 0;
  size_t nonfinite = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(got[i])) {
      nonfinite++;
      continue;
    }
    double dd = fabs((double)got[i] - ref[i]);
    if (dd > maxdiff) maxdiff = dd;
    if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
  }
  double err = nonfinite ? INFINITY : absolute || maxref == 0 ? maxdiff : maxdiff / maxref;
  char note[160] = "";
  if (stray) snprintf(note, sizeof note, "wrote %d word(s) outside its output region", stray);
  else if (nonfinite) snprintf(note, sizeof note, "%zu non-finite value(s) (never written?)", nonfinite);
  else if (absolute) snprintf(note, sizeof note, "absolute error");
  add_result(x, group, name, err, bound, 0, stray == 0, note);
}

static void check_exact(ctx *x, const char *group, const char *name, float *got,
                        const float *want, size_t n, int stray, const char *what) {
  inject(x, name, got, n);
  size_t diff = 0;
  for (size_t i = 0; i < n; i++) diff += memcmp(&got[i], &want[i], 4) != 0;
  char note[160] = "";
  if (stray) snprintf(note, sizeof note, "wrote %d word(s) outside its output region", stray);
  else if (diff) snprintf(note, sizeof note, "%zu of %zu values differ from %s", diff, n, what);
  else snprintf(note, sizeof note, "vs %s", what);
  add_result(x, group, name, (double)diff, 0, 1, stray == 0, note);
}

/* ---------------------------------------------------------------- inputs */

static float rnd(ctx *x) { /* xorshift64*, uniform in [-1, 1) */
  x->rng ^= x->rng >> 12;
  x->rng ^= x->rng << 25;
  x->rng ^= x->rng >> 27;
  uint64_t v = x->rng * 2685821657736338717ull;
  return (float)(v >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
static uint32_t rndu(ctx *x) {
  rnd(x);
  return (uint32_t)(x->rng >> 20);
}
static float *frand(ctx *x, size_t n, float scale) {
  float *v = malloc((n ? n : 1) * sizeof *v);
  if (v)
    for (size_t i = 0; i < n; i++) v[i] = rnd(x) * scale;
  return v;
}

/* A host weight matrix: N rows of K random values in [-1, 1), stored as `type`. */
typedef struct {
  ks_tensor t;
  void *data;
} hostw;
static int hostw_make(ctx *x, hostw *w, ks_type type, int64_t K, int64_t N) {
  memset(w, 0, sizeof *w);
  size_t rb = ks_type_row_bytes(type, K);
  w->data = malloc(rb * (size_t)N);
  float *row = frand(x, (size_t)K, 1.0f);
  if (!w->data || !row || rb == 0) {
    free(row);
    free(w->data);
    w->data = NULL;
    ks_fail(KS_ERR_NOMEM, "out of host memory for a %lld x %lld weight", (long long)N, (long long)K);
    return 0;
  }
  for (int64_t r = 0; r < N; r++) {
    for (int64_t k = 0; k < K; k++) row[k] = rnd(x);
    if (type == KS_TYPE_F32) memcpy((char *)w->data + r * rb, row, rb);
    else ks_quant_row(type, row, (char *)w->data + r * rb, K);
  }
  free(row);
  w->t.type = type;
  w->t.ne[0] = K;
  w->t.ne[1] = N;
  w->t.data = w->data;
  w->t.nbytes = rb * (size_t)N;
  return 1;
}

/* ---------------------------------------------------------------- device regions */

typedef struct {
  ks_buf b;
  uint64_t off, bytes;
} reg;

static int reg_new_at(ctx *x, reg *r, uint64_t off, uint64_t bytes, ks_mem kind,
                      const void *init) {
  memset(r, 0, sizeof *r);
  r->off = off;
  r->bytes = bytes;
  uint64_t size = (off + bytes + GUARD + 3) & ~3ull;
  if (gpu_buf_create(x->g, &r->b, size, kind) != KS_OK) return 0;
  if (gpu_fill_u32(x->g, &r->b, 0, size, POISON) != KS_OK) return 0;
  if (init && bytes && gpu_upload(x->g, &r->b, off, init, bytes) != KS_OK) return 0;
  return 1;
}
static int reg_new(ctx *x, reg *r, uint64_t bytes, ks_mem kind, const void *init) {
  return reg_new_at(x, r, OFF, bytes, kind, init);
}
/* Regions the kernels read as vec4 (matrix inputs, K/V pools) start at a multiple of 16. */
static int reg_new16(ctx *x, reg *r, uint64_t bytes, ks_mem kind, const void *init) {
  return reg_new_at(x, r, (OFF + 15) & ~15ull, bytes, kind, init);
}
static ks_bref at(const reg *r, uint64_t byte) { return ks_ref(&r->b, r->off + byte); }
static int reg_put(ctx *x, reg *r, uint64_t byte, const void *p, uint64_t n) {
  return gpu_upload(x->g, &r->b, r->off + byte, p, n) == KS_OK;
}
/* Downloads the region into out; *stray counts guard words that are no longer poison. */
static int reg_get(ctx *x, reg *r, void *out, int *stray) {
  uint64_t size = r->b.size;
  uint32_t *all = malloc(size);
  if (!all) {
    ks_fail(KS_ERR_NOMEM, "out of host memory reading back %llu bytes", (unsigned long long)size);
    return 0;
  }
  if (gpu_download(x->g, &r->b, 0, all, size) != KS_OK) {
    free(all);
    return 0;
  }
  int bad = 0;
  for (uint64_t i = 0; i < r->off / 4; i++) bad += all[i] != POISON;
  for (uint64_t i = (r->off + r->bytes + 3) / 4; i < size / 4; i++) bad += all[i] != POISON;
  if (stray) *stray = bad;
  memcpy(out, (char *)all + r->off, r->bytes);
  free(all);
  return 1;
}
static void reg_free(ctx *x, reg *r) { gpu_buf_destroy(x->g, &r->b); }

static int begin(ctx *x) { return gpu_cmd_begin(x->c) == KS_OK; }
static int finish(ctx *x) {
  return gpu_cmd_end(x->c) == KS_OK && gpu_cmd_submit(x->c) == KS_OK &&
         gpu_cmd_wait(x->c) == KS_OK;
}

/* ---------------------------------------------------------------- elementwise ops */

static const struct {
  const char *cls;
  int n;
} k_lengths[] = {{"tiny", 7}, {"odd", 1003}, {"large", 70001}};

static void check_elementwise(ctx *x) {
  for (size_t si = 0; si < KS_ARRAY_LEN(k_lengths); si++) {
    const int n = k_lengths[si].n;
    const size_t bytes = (size_t)n * 4;
    char name[96];
    float *a = frand(x, n, 4.0f), *b = frand(x, n, 4.0f), *ref = malloc(bytes), *got = malloc(bytes);
    reg ra, rb, ro, rx;
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    memset(&ro, 0, sizeof ro);
    memset(&rx, 0, sizeof rx);
    int st = 0;
    snprintf(name, sizeof name, "copy/add/swiglu %s n=%d", k_lengths[si].cls, n);
    if (!a || !b || !ref || !got) {
      ks_fail(KS_ERR_NOMEM, "out of host memory");
      infra_fail(x, "elementwise", name);
      goto done;
    }
    if (!reg_new(x, &ra, bytes, KS_MEM_DEVICE, a) || !reg_new(x, &rb, bytes, KS_MEM_DEVICE, b) ||
        !reg_new(x, &ro, bytes, KS_MEM_DEVICE, NULL) || !reg_new(x, &rx, bytes, KS_MEM_DEVICE, a)) {
      infra_fail(x, "elementwise", name);
      goto free_regs;
    }
    snprintf(name, sizeof name, "copy %s n=%d", k_lengths[si].cls, n);
    if (!begin(x)) goto infra;
    op_copy(x->c, at(&ro, 0), at(&ra, 0), bytes);
    if (!finish(x) || !reg_get(x, &ro, got, &st)) goto infra;
    check_exact(x, "elementwise", name, got, a, n, st, "the input");

    snprintf(name, sizeof name, "add %s n=%d", k_lengths[si].cls, n);
    for (int i = 0; i < n; i++) ref[i] = a[i] + b[i];
    if (!begin(x)) goto infra;
    op_add(x->c, at(&rx, 0), at(&rb, 0), n);
    if (!finish(x) || !reg_get(x, &rx, got, &st)) goto infra;
    check_close(x, "elementwise", name, got, ref, n, 1e-7, 0, st);

    snprintf(name, sizeof name, "swiglu %s n=%d", k_lengths[si].cls, n);
    ref_swiglu(ref, a, b, n);
    if (!begin(x)) goto infra;
    op_swiglu(x->c, at(&ro, 0), at(&ra, 0), at(&rb, 0), n);
    if (!finish(x) || !reg_get(x, &ro, got, &st)) goto infra;
    check_close(x, "elementwise", name, got, ref, n, 1e-5, 0, st);
    goto free_regs;
  infra:
    infra_fail(x, "elementwise", name);
  free_regs:
    reg_free(x, &ra);
    reg_free(x, &rb);
    reg_free(x, &ro);
    reg_free(x, &rx);
  done:
    free(a);
    free(b);
    free(ref);
    free(got);
  }
}

static void check_rmsnorm(ctx *x) {
  static const struct {
    const char *cls;
    int n_tok, n;
  } cases[] = {{"tiny", 1, 8}, {"odd", 5, 1000}, {"large", 3, 8192}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    const int T = cases[ci].n_tok, n = cases[ci].n;
    const size_t bytes = (size_t)T * n * 4;
    const float eps = 1e-5f;
    char name[96];
    snprintf(name, sizeof name, "rmsnorm %s n_tok=%d n=%d", cases[ci].cls, T, n);
    float *in = frand(x, (size_t)T * n, 3.0f), *w = frand(x, n, 1.0f);
    float *ref = malloc(bytes), *got = malloc(bytes);
    reg rx, rw, ro;
    int st = 0;
    memset(&rx, 0, sizeof rx);
    memset(&rw, 0, sizeof rw);
    memset(&ro, 0, sizeof ro);
    if (!in || !w || !ref || !got) {
      ks_fail(KS_ERR_NOMEM, "out of host memory");
      infra_fail(x, "rmsnorm", name);
    } else if (!reg_new(x, &rx, bytes, KS_MEM_DEVICE, in) ||
               !reg_new(x, &rw, (uint64_t)n * 4, KS_MEM_DEVICE, w) ||
               !reg_new(x, &ro, bytes, KS_MEM_DEVICE, NULL) || !begin(x)) {
      infra_fail(x, "rmsnorm", name);
    } else {
      op_rmsnorm(x->c, at(&ro, 0), at(&rx, 0), at(&rw, 0), T, n, eps);
      if (!finish(x) || !reg_get(x, &ro, got, &st)) {
        infra_fail(x, "rmsnorm", name);
      } else {
        for (int t = 0; t < T; t++) ref_rmsnorm(ref + (size_t)t * n, in + (size_t)t * n, w, n, eps);
        check_close(x, "rmsnorm", name, got, ref, (size_t)T * n, 1e-5, 0, st);
      }
    }
    reg_free(x, &rx);
    reg_free(x, &rw);
    reg_free(x, &ro);
    free(in);
    free(w);
    free(ref);
    free(got);
  }
}

/* ---------------------------------------------------------------- weights: embed, matmul */

/* Every weight type the kernels know (gpu_type_supported filters the list at run time), and
 * row lengths per block size: 1 (float types), 32 (Q8_0, Q4_0), 256 (the K-quants). */
static const ks_type k_types[] = {KS_TYPE_F32,  KS_TYPE_F16,  KS_TYPE_BF16, KS_TYPE_Q8_0,
                                  KS_TYPE_Q4_0, KS_TYPE_Q4_K, KS_TYPE_Q5_K, KS_TYPE_Q6_K};
typedef enum { K_TINY, K_ODD, K_LARGE, K_EMBED } k_class;
static int row_len(ks_type t, k_class c) {
  const int blk = ks_type_block_elems(t);
  static const int by_class[3][4] = {
      /* float, 32-blocks, 256-blocks */
      {8, 32, 256},     /* tiny: one block */
      {200, 224, 768},  /* odd: no multiple of the kernels' 64 x 4 or 8 element sweep */
      {4096, 4096, 4096},
  };
  const int col = blk >= 256 ? 2 : blk >= 32 ? 1 : 0;
  if (c == K_EMBED) return col == 0 ? 72 : col == 1 ? 224 : 512;
  return by_class[c][col];
}

/* Embeds tokens on g (whose context may slice weights differently); *n_slices reports how the
 * table was split. Returns 0 on an infrastructure failure. */
static int run_embed(ctx *x, const hostw *w, const uint32_t *tok, int n_tok, float *out,
                     int *stray, int *n_slices) {
  ks_gpu_tensor gt;
  memset(&gt, 0, sizeof gt);
  reg rt, ro;
  memset(&rt, 0, sizeof rt);
  memset(&ro, 0, sizeof ro);
  int ok = gpu_tensor_upload(x->g, &gt, &w->t) == KS_OK &&
           reg_new(x, &rt, (uint64_t)n_tok * 4, KS_MEM_HOST, tok) &&
           reg_new(x, &ro, (uint64_t)n_tok * w->t.ne[0] * 4, KS_MEM_DEVICE, NULL) && begin(x);
  if (ok) {
    op_embed(x->c, at(&ro, 0), &gt, at(&rt, 0), n_tok);
    ok = finish(x) && reg_get(x, &ro, out, stray);
  }
  if (n_slices) *n_slices = gt.n_slices;
  reg_free(x, &rt);
  reg_free(x, &ro);
  gpu_tensor_free(x->g, &gt);
  return ok;
}

static void check_embed(ctx *x) {
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    const ks_type type = k_types[ti];
    if (!gpu_type_supported(type)) continue;
    const int dim = row_len(type, K_EMBED), vocab = 33, n_tok = 9;
    char name[96];
    snprintf(name, sizeof name, "embed %s dim=%d vocab=%d n_tok=%d", ks_type_name(type), dim,
             vocab, n_tok);
    uint32_t tok[9] = {0, (uint32_t)vocab - 1};
    for (int i = 2; i < n_tok; i++) tok[i] = rndu(x) % (uint32_t)vocab;
    hostw w;
    float *got = malloc((size_t)n_tok * dim * 4), *ref = malloc((size_t)n_tok * dim * 4);
    int st = 0;
    if (!got || !ref || !hostw_make(x, &w, type, dim, vocab)) {
      infra_fail(x, "embed", name);
      free(got);
      free(ref);
      continue;
    }
    if (!run_embed(x, &w, tok, n_tok, got, &st, NULL)) {
      infra_fail(x, "embed", name);
    } else {
      for (int t = 0; t < n_tok; t++) ref_embed(ref + (size_t)t * dim, &w.t, (int)tok[t]);
      check_exact(x, "embed", name, got, ref, (size_t)n_tok * dim, st, "ks_dequant_row");
    }
    free(w.data);
    free(got);
    free(ref);
  }
}

/* out (T, N) = x (T, K) · Wᵀ on the device; with `single`, also each token alone into single. */
static int run_matmul(ctx *x, const hostw *w, const float *in, int T, float *out, float *single,
                      int *stray, int *n_slices) {
  const int64_t K = w->t.ne[0], N = w->t.ne[1];
  ks_gpu_tensor gt;
  memset(&gt, 0, sizeof gt);
  reg rx, ro, r1;
  memset(&rx, 0, sizeof rx);
  memset(&ro, 0, sizeof ro);
  memset(&r1, 0, sizeof r1);
  int ok = gpu_tensor_upload(x->g, &gt, &w->t) == KS_OK &&
           reg_new16(x, &rx, (uint64_t)T * K * 4, KS_MEM_DEVICE, in) &&
           reg_new(x, &ro, (uint64_t)T * N * 4, KS_MEM_DEVICE, NULL) &&
           (!single || reg_new(x, &r1, (uint64_t)T * N * 4, KS_MEM_DEVICE, NULL)) && begin(x);
  if (ok) {
    op_matmul(x->c, at(&ro, 0), at(&rx, 0), &gt, T);
    if (single)
      for (int t = 0; t < T; t++)
        op_matmul(x->c, at(&r1, (uint64_t)t * N * 4), at(&rx, (uint64_t)t * K * 4), &gt, 1);
    int s1 = 0;
    ok = finish(x) && reg_get(x, &ro, out, stray) && (!single || reg_get(x, &r1, single, &s1));
    if (stray) *stray += s1;
  }
  if (n_slices) *n_slices = gt.n_slices;
  reg_free(x, &rx);
  reg_free(x, &ro);
  reg_free(x, &r1);
  gpu_tensor_free(x->g, &gt);
  return ok;
}

static void check_matmul(ctx *x) {
  /* K for float types, K for quantised types (a multiple of 32), rows N, tokens T. The matmul
   * kernel works on tiles of 4 rows x 8 tokens with 64 invocations of 4 (float) or 8 (quantised)
   * elements: "odd" is a multiple of none of them, "large K" loops many times per invocation. */
  static const struct {
    const char *cls;
    k_class k;
    int n, t, invariance;
  } cases[] = {{"tiny", K_TINY, 3, 1, 0},
               {"odd", K_ODD, 33, 13, 0},
               {"large K", K_LARGE, 12, 3, 0},
               {"batch invariance", K_ODD, 33, 37, 1}};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++)
    for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
      const ks_type type = k_types[ti];
      if (!gpu_type_supported(type)) continue;
      const int K = row_len(type, cases[ci].k), N = cases[ci].n, T = cases[ci].t;
      const int inv = cases[ci].invariance;
      char name[96];
      snprintf(name, sizeof name, "matmul %s %s K=%d N=%d T=%d%s", ks_type_name(type),
               cases[ci].cls, K, N, T, inv ? " (batch vs 1 token)" : "");
      hostw w;
      float *in = frand(x, (size_t)T * K, 1.0f), *got = malloc((size_t)T * N * 4);
      float *ref = malloc((size_t)T * N * 4), *single = inv ? malloc((size_t)T * N * 4) : NULL;
      int st = 0;
      if (!in || !got || !ref || (inv && !single) || !hostw_make(x, &w, type, K, N)) {
        infra_fail(x, "matmul", name);
      } else {
        if (!run_matmul(x, &w, in, T, got, single, &st, NULL)) {
          infra_fail(x, "matmul", name);
        } else if (inv) {
          check_exact(x, "matmul", name, single, got, (size_t)T * N, st, "the batched rows");
        } else {
          ref_matmul(ref, in, &w.t, T);
          check_close(x, "matmul", name, got, ref, (size_t)T * N, mm_bound(x, type, K), 0, st);
        }
        free(w.data);
      }
      free(in);
      free(got);
      free(ref);
      free(single);
    }
}

/* The sliced result against the one-slice result; the row fails if nothing was sliced. */
static void sliced_check(ctx *x, const char *name, float *many, const float *one, size_t n,
                         int stray, int n_slices) {
  if (n_slices < 2) {
    add_result(x, "slices", name, 0, 0, 1, 0, "the weights were not split into slices");
    return;
  }
  char what[64];
  snprintf(what, sizeof what, "one slice (here %d slices)", n_slices);
  check_exact(x, "slices", name, many, one, n, stray, what);
}

/* Weights cut into slices of at most 4 KiB (KVSCOPE_MAX_BUFFER_RANGE on a second context of the
 * same device, the path large models take past maxStorageBufferRange) give the same bits as one
 * slice. */
static void check_slices(ctx *x) {
  const char *old = getenv("KVSCOPE_MAX_BUFFER_RANGE");
  char *saved = old ? strdup(old) : NULL;
  setenv("KVSCOPE_MAX_BUFFER_RANGE", "4096", 1);
  ks_gpu *g2 = NULL;
  ks_cmd *c2 = NULL;
  ks_status s = gpu_create(&g2, x->d->index);
  if (saved) setenv("KVSCOPE_MAX_BUFFER_RANGE", saved, 1);
  else unsetenv("KVSCOPE_MAX_BUFFER_RANGE");
  free(saved);
  if (s == KS_OK) s = gpu_cmd_create(g2, &c2);
  if (s != KS_OK) {
    infra_fail(x, "slices", "weights in slices: second context");
    gpu_destroy(g2);
    return;
  }
  ctx x2 = *x;
  x2.g = g2;
  x2.c = c2;
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    const ks_type type = k_types[ti];
    if (!gpu_type_supported(type)) continue;
    const int K = row_len(type, K_ODD), N = 515, T = 5;
    char name[96];
    snprintf(name, sizeof name, "matmul %s K=%d N=%d T=%d, weights in 4 KiB slices",
             ks_type_name(type), K, N, T);
    hostw w;
    float *in = frand(x, (size_t)T * K, 1.0f), *one = malloc((size_t)T * N * 4);
    float *many = malloc((size_t)T * N * 4);
    int st1 = 0, st2 = 0, ns = 0;
    if (!in || !one || !many || !hostw_make(x, &w, type, K, N)) {
      infra_fail(x, "slices", name);
    } else {
      if (!run_matmul(x, &w, in, T, one, NULL, &st1, NULL) ||
          !run_matmul(&x2, &w, in, T, many, NULL, &st2, &ns)) {
        infra_fail(x, "slices", name);
      } else {
        sliced_check(x, name, many, one, (size_t)T * N, st1 + st2, ns);
      }
      uint32_t tok[5] = {0, (uint32_t)N - 1, 7, 300, 511};
      snprintf(name, sizeof name, "embed %s dim=%d vocab=%d, table in 4 KiB slices",
               ks_type_name(type), K, N);
      float *e1 = malloc((size_t)5 * K * 4), *e2 = malloc((size_t)5 * K * 4);
      if (!e1 || !e2 || !run_embed(x, &w, tok, 5, e1, &st1, NULL) ||
          !run_embed(&x2, &w, tok, 5, e2, &st2, &ns)) {
        infra_fail(x, "slices", name);
      } else {
        sliced_check(x, name, e2, e1, (size_t)5 * K, st1 + st2, ns);
      }
      free(e1);
      free(e2);
      free(w.data);
    }
    free(in);
    free(one);
    free(many);
  }
  gpu_cmd_destroy(c2);
  if (gpu_live_allocations(g2) != 0)
    add_result(x, "slices", "device memory freed (sliced context)",
               (double)gpu_live_allocations(g2), 0, 1, 1, "allocations alive after teardown");
  gpu_destroy(g2);
}

/* ---------------------------------------------------------------- fused products */

/* op_matmul_ex's fusions as forward.c uses them: RMSNorm on the input (norm), the residual add
 * (add), the stacked gate|up product with norm and SwiGLU (swiglu). */
enum { FU_NORM, FU_ADD, FU_SWIGLU };
static const char *const k_fu_names[] = {"norm in", "residual add", "norm + gate|up swiglu"};

/* out (T, N): the fused product on x's device; one_by_one: each token alone (decode build). */
static int run_fused(ctx *x, const hostw *w, int mode, const float *in, const float *nw,
                     const float *y0, int T, int one_by_one, float *out, int *stray) {
  const int64_t K = w->t.ne[0], N = mode == FU_SWIGLU ? w->t.ne[1] / 2 : w->t.ne[1];
  ks_gpu_tensor gt;
  memset(&gt, 0, sizeof gt);
  reg rx, rn, ro;
  memset(&rx, 0, sizeof rx);
  memset(&rn, 0, sizeof rn);
  memset(&ro, 0, sizeof ro);
  int ok = gpu_tensor_upload(x->g, &gt, &w->t) == KS_OK &&
           reg_new16(x, &rx, (uint64_t)T * K * 4, KS_MEM_DEVICE, in) &&
           reg_new16(x, &rn, (uint64_t)K * 4, KS_MEM_DEVICE, nw) &&
           reg_new(x, &ro, (uint64_t)T * N * 4, KS_MEM_DEVICE, y0) && begin(x);
  if (ok) {
    ks_matmul_opts o = {.eps = 1e-5f, .add = mode == FU_ADD, .swiglu = mode == FU_SWIGLU};
    if (mode != FU_ADD) o.norm_w = at(&rn, 0);
    if (one_by_one)
      for (int t = 0; t < T; t++)
        op_matmul_ex(x->c, at(&ro, (uint64_t)t * N * 4), at(&rx, (uint64_t)t * K * 4), &gt, 1, &o);
    else
      op_matmul_ex(x->c, at(&ro, 0), at(&rx, 0), &gt, T, &o);
    ok = finish(x) && reg_get(x, &ro, out, stray);
  }
  reg_free(x, &rx);
  reg_free(x, &rn);
  reg_free(x, &ro);
  gpu_tensor_free(x->g, &gt);
  return ok;
}

/* The shared-memory build of the products (KVSCOPE_NO_SUBGROUP=1) on a second context of the
 * same device; NULL when it cannot be made (an infra row says why). */
static int nosg_context(ctx *x, ctx *x2) {
  const char *old = getenv("KVSCOPE_NO_SUBGROUP");
  char *saved = old ? strdup(old) : NULL;
  setenv("KVSCOPE_NO_SUBGROUP", "1", 1);
  *x2 = *x;
  x2->g = NULL;
  x2->c = NULL;
  ks_status s = gpu_create(&x2->g, x->d->index);
  if (saved) setenv("KVSCOPE_NO_SUBGROUP", saved, 1);
  else unsetenv("KVSCOPE_NO_SUBGROUP");
  free(saved);
  if (s == KS_OK) s = gpu_cmd_create(x2->g, &x2->c);
  if (s != KS_OK) {
    infra_fail(x, "fused", "shared-memory sums: second context");
    gpu_destroy(x2->g);
    return 0;
  }
  return 1;
}

static void check_rope_product(ctx *x);

static void check_fused(ctx *x) {
  check_rope_product(x);
  ctx x2;
  const int have_nosg = gpu_matmul_subgroup(x->g) && nosg_context(x, &x2);
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    const ks_type type = k_types[ti];
    if (!gpu_type_supported(type)) continue;
    for (int kc = K_ODD; kc <= K_LARGE; kc++)
      for (int mode = FU_NORM; mode <= FU_SWIGLU; mode++) {
        const int K = row_len(type, (k_class)kc), N = 19, T = 9;
        const int rows = mode == FU_SWIGLU ? 2 * N : N;
        char name[112];
        snprintf(name, sizeof name, "matmul %s %s K=%d N=%d T=%d", ks_type_name(type),
                 k_fu_names[mode], K, N, T);
        hostw w;
        float *in = frand(x, (size_t)T * K, 2.0f), *nw = frand(x, (size_t)K, 1.0f);
        float *y0 = frand(x, (size_t)T * N, 1.0f), *got = malloc((size_t)T * N * 4);
        float *one = malloc((size_t)T * N * 4), *xin = malloc((size_t)T * K * 4);
        float *prod = malloc((size_t)T * rows * 4), *ref = malloc((size_t)T * N * 4);
        float *sh = malloc((size_t)T * N * 4);
        int st = 0, st1 = 0, st2 = 0;
        if (!in || !nw || !y0 || !got || !one || !xin || !prod || !ref || !sh ||
            !hostw_make(x, &w, type, K, rows)) {
          infra_fail(x, "fused", name);
        } else {
          const float *yi = mode == FU_ADD ? y0 : NULL;
          if (!run_fused(x, &w, mode, in, nw, yi, T, 0, got, &st) ||
              !run_fused(x, &w, mode, in, nw, yi, T, 1, one, &st1)) {
            infra_fail(x, "fused", name);
          } else {
            for (int t = 0; t < T; t++) {
              if (mode == FU_ADD) memcpy(xin + (size_t)t * K, in + (size_t)t * K, (size_t)K * 4);
              else ref_rmsnorm(xin + (size_t)t * K, in + (size_t)t * K, nw, K, 1e-5f);
            }
            ref_matmul(prod, xin, &w.t, T);
            for (int t = 0; t < T; t++)
              for (int j = 0; j < N; j++) {
                const float *p = prod + (size_t)t * rows;
                float *r = &ref[(size_t)t * N + j];
                if (mode == FU_ADD) *r = y0[(size_t)t * N + j] + p[j];
                else if (mode == FU_SWIGLU) ref_swiglu(r, &p[j], &p[N + j], 1);
                else *r = p[j];
              }
            char n1[160];
            snprintf(n1, sizeof n1, "%s (batch vs 1 token)", name);
            check_exact(x, "fused", n1, one, got, (size_t)T * N, st1,
                        "the batched rows (decode build, one token at a time)");
            check_close(x, "fused", name, got, ref, (size_t)T * N, mm_bound(x, type, K), 0, st);
            if (have_nosg) {
              char n2[160];
              snprintf(n2, sizeof n2, "%s, shared-memory sums", name);
              if (!run_fused(&x2, &w, mode, in, nw, yi, T, 0, sh, &st2))
                infra_fail(x, "fused", n2);
              else
                check_exact(x, "fused", n2, sh, got, (size_t)T * N, st2, "the subgroup build");
            }
          }
          free(w.data);
        }
        free(in);
        free(nw);
        free(y0);
        free(got);
        free(one);
        free(xin);
        free(prod);
        free(ref);
        free(sh);
      }
  }
  if (have_nosg) {
    gpu_cmd_destroy(x2.c);
    if (gpu_live_allocations(x2.g) != 0)
      add_result(x, "fused", "device memory freed (shared-memory context)",
                 (double)gpu_live_allocations(x2.g), 0, 1, 1, "allocations alive after teardown");
    gpu_destroy(x2.g);
  } else if (!gpu_matmul_subgroup(x->g)) {
    add_result(x, "fused", "shared-memory sums", 0, 0, 1, 1,
               "no subgroup shuffles here: every product above used the shared-memory build");
  }
}

/* The q|k|v product with RoPE and the K/V write as its epilogue (ks_rope_opts), as forward.c
 * runs it for models without biases: against the CPU reference, and the batch against token by
 * token (the decode build), bit for bit. */
static int run_rope_product(ctx *x, const hostw *w, const float *in, const float *nw,
                            const uint32_t *stt, int nb, int T, int H, int KH, int hd, int neox,
                            int one_by_one, float *q, float *k, float *v, int *stray) {
  const int64_t K = w->t.ne[0];
  const int qd = H * hd, kvd = KH * hd;
  const size_t pool = (size_t)nb * KS_KV_BLOCK * kvd;
  const size_t region = (16 + (size_t)nb * 4 + 15) & ~(size_t)15; /* step + table, per token */
  ks_gpu_tensor gt;
  memset(&gt, 0, sizeof gt);
  reg rx, rn, rq, rk, rv, rs;
  memset(&rx, 0, sizeof rx);
  rn = rq = rk = rv = rs = rx;
  float *fill = malloc(pool * 4);
  uint32_t *regions = calloc((size_t)T, region);
  int ok = fill && regions;
  if (ok) {
    for (size_t i = 0; i < pool; i++) fill[i] = -3.0f;
    for (int t = 0; t < T; t++) {
      uint32_t *r = (uint32_t *)((char *)regions + region * (size_t)t);
      memcpy(r, stt, 16 + (size_t)nb * 4);
      r[0] += one_by_one ? (uint32_t)t : 0u;
    }
  }
  ok = ok && gpu_tensor_upload(x->g, &gt, &w->t) == KS_OK &&
       reg_new16(x, &rx, (uint64_t)T * K * 4, KS_MEM_DEVICE, in) &&
       reg_new16(x, &rn, (uint64_t)K * 4, KS_MEM_DEVICE, nw) &&
       reg_new(x, &rq, (uint64_t)T * qd * 4, KS_MEM_DEVICE, NULL) &&
       reg_new16(x, &rk, pool * 4, KS_MEM_DEVICE, fill) &&
       reg_new16(x, &rv, pool * 4, KS_MEM_DEVICE, fill) &&
       reg_new16(x, &rs, region * (size_t)T, KS_MEM_DEVICE, regions) && begin(x);
  if (ok) {
    ks_rope_opts ro = {.kpool = at(&rk, 0), .vpool = at(&rv, 0), .steptab = at(&rs, 0),
                       .n_head = H, .n_kv_head = KH, .head_dim = hd, .neox = neox,
                       .base = 10000.0f};
    ks_matmul_opts o = {.norm_w = at(&rn, 0), .eps = 1e-5f, .rope = &ro};
    if (!one_by_one) {
      op_matmul_ex(x->c, at(&rq, 0), at(&rx, 0), &gt, T, &o);
    } else {
      for (int t = 0; t < T; t++) {
        ro.steptab = at(&rs, region * (size_t)t);
        op_matmul_ex(x->c, at(&rq, (uint64_t)t * qd * 4), at(&rx, (uint64_t)t * K * 4), &gt, 1, &o);
      }
    }
    int s1 = 0, s2 = 0, s3 = 0;
    ok = finish(x) && reg_get(x, &rq, q, &s1) && reg_get(x, &rk, k, &s2) && reg_get(x, &rv, v, &s3);
    *stray = s1 + s2 + s3;
  }
  reg *all[] = {&rx, &rn, &rq, &rk, &rv, &rs};
  for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) reg_free(x, all[i]);
  gpu_tensor_free(x->g, &gt);
  free(fill);
  free(regions);
  return ok;
}

static void check_rope_product(ctx *x) {
  const int H = 4, KH = 2, hd = 32, T = 9, pos0 = 21, qd = H * hd, kvd = KH * hd;
  const int rows = qd + 2 * kvd, nb = (pos0 + T + KS_KV_BLOCK - 1) / KS_KV_BLOCK + 2;
  const size_t pool = (size_t)nb * KS_KV_BLOCK * kvd;
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++)
    for (int neox = 0; neox < 2; neox++) {
      const ks_type type = k_types[ti];
      if (!gpu_type_supported(type)) continue;
      const int K = row_len(type, K_ODD);
      char name[112];
      snprintf(name, sizeof name, "matmul %s q|k|v + rope %s K=%d heads=%d/%d head_dim=%d T=%d",
               ks_type_name(type), neox ? "neox" : "norm", K, H, KH, hd, T);
      hostw w;
      float *in = frand(x, (size_t)T * K, 2.0f), *nw = frand(x, (size_t)K, 1.0f);
      float *xin = malloc((size_t)T * K * 4), *prod = malloc((size_t)T * rows * 4);
      float *q[2] = {malloc((size_t)T * qd * 4), malloc((size_t)T * qd * 4)};
      float *k[2] = {malloc(pool * 4), malloc(pool * 4)}, *v[2] = {malloc(pool * 4), malloc(pool * 4)};
      float *qref = malloc((size_t)T * qd * 4), *kref = malloc(pool * 4), *vref = malloc(pool * 4);
      uint32_t *stt = malloc(16 + (size_t)nb * 4);
      int st[2] = {0, 0};
      if (!in || !nw || !xin || !prod || !q[0] || !q[1] || !k[0] || !k[1] || !v[0] || !v[1] ||
          !qref || !kref || !vref || !stt || !hostw_make(x, &w, type, K, rows)) {
        infra_fail(x, "fused", name);
      } else {
        memset(stt, 0, 16);
        stt[0] = (uint32_t)pos0;
        for (int i = 0; i < nb; i++) stt[4 + i] = (uint32_t)((i * 7 + 3) % nb);
        if (nb % 7 == 0) /* 7 must not divide nb for that to be a permutation */
          for (int i = 0; i < nb; i++) stt[4 + i] = (uint32_t)(nb - 1 - i);
        for (int t = 0; t < T; t++) ref_rmsnorm(xin + (size_t)t * K, in + (size_t)t * K, nw, K, 1e-5f);
        ref_matmul(prod, xin, &w.t, T);
        for (size_t i = 0; i < pool; i++) kref[i] = vref[i] = -3.0f;
        int ok = ref_rope_kv(qref, kref, vref, prod, NULL, T, pos0, stt + 4, KS_KV_BLOCK, H, KH,
                             hd, 10000.0f, neox);
        for (int one = 0; one < 2 && ok; one++)
          ok = run_rope_product(x, &w, in, nw, stt, nb, T, H, KH, hd, neox, one, q[one], k[one],
                                v[one], &st[one]);
        if (!ok) {
          infra_fail(x, "fused", name);
        } else {
          check_close(x, "fused", name, q[0], qref, (size_t)T * qd, mm_bound(x, type, K), 0, st[0]);
          char n2[160];
          snprintf(n2, sizeof n2, "%s: k pool", name);
          check_close(x, "fused", n2, k[0], kref, pool, mm_bound(x, type, K), 0, 0);
          snprintf(n2, sizeof n2, "%s: v pool", name);
          check_close(x, "fused", n2, v[0], vref, pool, mm_bound(x, type, K), 0, 0);
          snprintf(n2, sizeof n2, "%s (batch vs 1 token)", name);
          float *all1 = malloc(((size_t)T * qd + 2 * pool) * 4), *all0 = malloc(((size_t)T * qd + 2 * pool) * 4);
          if (!all0 || !all1) {
            infra_fail(x, "fused", n2);
          } else {
            memcpy(all0, q[0], (size_t)T * qd * 4);
            memcpy(all0 + (size_t)T * qd, k[0], pool * 4);
            memcpy(all0 + (size_t)T * qd + pool, v[0], pool * 4);
            memcpy(all1, q[1], (size_t)T * qd * 4);
            memcpy(all1 + (size_t)T * qd, k[1], pool * 4);
            memcpy(all1 + (size_t)T * qd + pool, v[1], pool * 4);
            check_exact(x, "fused", n2, all1, all0, (size_t)T * qd + 2 * pool, st[1],
                        "the batch (q, k and v pools)");
          }
          free(all0);
          free(all1);
        }
        free(w.data);
      }
      float *fr[] = {in, nw, xin, prod, q[0], q[1], k[0], k[1], v[0], v[1], qref, kref, vref};
      for (size_t i = 0; i < KS_ARRAY_LEN(fr); i++) free(fr[i]);
      free(stt);
    }
}

/* op_rope_kv (bias, RoPE of q and k, q out, k and v into the pools through a scrambled table)
 * against the CPU reference. */
static void check_rope_kv(ctx *x) {
  static const struct {
    const char *cls;
    int n_tok, heads, kv_heads, head_dim, neox, pos0, bias;
  } cases[] = {{"decode", 1, 8, 4, 32, 0, 50, 0},
               {"batch, bias", 9, 6, 2, 64, 1, 3, 1},
               {"far position", 3, 2, 1, 128, 0, 3000, 1}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    const int T = cases[ci].n_tok, H = cases[ci].heads, KH = cases[ci].kv_heads;
    const int hd = cases[ci].head_dim, neox = cases[ci].neox, pos0 = cases[ci].pos0;
    const int qd = H * hd, kvd = KH * hd, width = qd + 2 * kvd;
    const int nb = (pos0 + T + KS_KV_BLOCK - 1) / KS_KV_BLOCK + 3;
    const size_t pool = (size_t)nb * KS_KV_BLOCK * kvd;
    char name[112];
    snprintf(name, sizeof name, "rope_kv %s %s n_tok=%d heads=%d/%d head_dim=%d pos0=%d",
             neox ? "neox" : "norm", cases[ci].cls, T, H, KH, hd, pos0);
    float *qkv = frand(x, (size_t)T * width, 2.0f), *bias = frand(x, (size_t)width, 0.5f);
    float *qref = malloc((size_t)T * qd * 4), *qgot = malloc((size_t)T * qd * 4);
    float *kref = malloc(pool * 4), *vref = malloc(pool * 4), *kgot = malloc(pool * 4);
    float *vgot = malloc(pool * 4);
    uint32_t *perm = malloc((size_t)nb * 4);
    reg rq, rqkv, rk, rv, rt, rs, rb;
    memset(&rq, 0, sizeof rq);
    rqkv = rk = rv = rt = rs = rb = rq;
    ks_step step = {.pos0 = (uint32_t)pos0};
    int ok = qkv && bias && qref && qgot && kref && vref && kgot && vgot && perm;
    if (ok) {
      for (int i = 0; i < nb; i++) perm[i] = (uint32_t)i;
      for (int i = nb - 1; i > 0; i--) {
        int j = (int)(rndu(x) % (uint32_t)(i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
      }
      for (size_t i = 0; i < pool; i++) kref[i] = vref[i] = -3.0f;
      ok = ref_rope_kv(qref, kref, vref, qkv, cases[ci].bias ? bias : NULL, T, pos0, perm,
                       KS_KV_BLOCK, H, KH, hd, 10000.0f, neox) &&
           reg_new(x, &rq, (uint64_t)T * qd * 4, KS_MEM_DEVICE, NULL) &&
           reg_new(x, &rqkv, (uint64_t)T * width * 4, KS_MEM_DEVICE, qkv) &&
           reg_new16(x, &rk, pool * 4, KS_MEM_DEVICE, kref) &&
           reg_new16(x, &rv, pool * 4, KS_MEM_DEVICE, kref) && /* -3 everywhere but new rows */
           reg_new(x, &rt, (uint64_t)nb * 4, KS_MEM_HOST, perm) &&
           reg_new(x, &rs, sizeof step, KS_MEM_HOST, &step) &&
           reg_new(x, &rb, (uint64_t)width * 4, KS_MEM_DEVICE, bias) && begin(x);
    }
    if (ok) {
      /* the pools start as -3 except where the reference wrote: upload -3 over the new rows */
      for (size_t i = 0; i < pool; i++) kgot[i] = -3.0f;
      ok = reg_put(x, &rk, 0, kgot, pool * 4) && reg_put(x, &rv, 0, kgot, pool * 4);
    }
    int s1 = 0, s2 = 0, s3 = 0;
    if (ok) {
      op_rope_kv(x->c, at(&rq, 0), at(&rqkv, 0), at(&rk, 0), at(&rv, 0), at(&rt, 0), at(&rs, 0),
                 cases[ci].bias ? at(&rb, 0) : (ks_bref){NULL, 0}, T, H, KH, hd, 10000.0f, neox,
                 NULL);
      ok = finish(x) && reg_get(x, &rq, qgot, &s1) && reg_get(x, &rk, kgot, &s2) &&
           reg_get(x, &rv, vgot, &s3);
    }
    if (!ok) {
      infra_fail(x, "rope_kv", name);
    } else {
      check_close(x, "rope_kv", name, qgot, qref, (size_t)T * qd, 1e-5, 0, s1);
      char n2[160];
      snprintf(n2, sizeof n2, "%s: k pool", name);
      check_close(x, "rope_kv", n2, kgot, kref, pool, 1e-5, 0, s2);
      snprintf(n2, sizeof n2, "%s: v pool", name);
      check_exact(x, "rope_kv", n2, vgot, vref, pool, s3, "the new rows, others untouched");
    }
    reg *all[] = {&rq, &rqkv, &rk, &rv, &rt, &rs, &rb};
    for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) reg_free(x, all[i]);
    free(qkv);
    free(bias);
    free(qref);
    free(qgot);
    free(kref);
    free(vref);
    free(kgot);
    free(vgot);
    free(perm);
  }
}

/* ---------------------------------------------------------------- rope */

static void check_rope(ctx *x) {
  static const struct {
    const char *cls;
    int n_tok, heads, head_dim, pos0;
  } cases[] = {{"tiny", 1, 1, 8, 0}, {"odd", 5, 3, 72, 17}, {"far position", 2, 2, 128, 30000}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++)
    for (int neox = 0; neox < 2; neox++) {
      const int T = cases[ci].n_tok, H = cases[ci].heads, hd = cases[ci].head_dim;
      const float base = neox ? 500000.0f : 10000.0f;
      const size_t n = (size_t)T * H * hd;
      char name[96];
      snprintf(name, sizeof name, "rope %s %s n_tok=%d heads=%d head_dim=%d pos0=%d",
               neox ? "neox" : "norm", cases[ci].cls, T, H, hd, cases[ci].pos0);
      float *in = frand(x, n, 2.0f), *ref = malloc(n * 4), *got = malloc(n * 4);
      reg rx, rs;
      memset(&rx, 0, sizeof rx);
      memset(&rs, 0, sizeof rs);
      ks_step step = {.pos0 = (uint32_t)cases[ci].pos0};
      int st = 0;
      if (!in || !ref || !got || !reg_new(x, &rx, n * 4, KS_MEM_DEVICE, in) ||
          !reg_new(x, &rs, sizeof step, KS_MEM_HOST, &step) || !begin(x)) {
        infra_fail(x, "rope", name);
      } else {
        op_rope(x->c, at(&rx, 0), at(&rs, 0), T, H, hd, base, neox);
        if (!finish(x) || !reg_get(x, &rx, got, &st)) {
          infra_fail(x, "rope", name);
        } else {
          memcpy(ref, in, n * 4);
          for (int t = 0; t < T; t++)
            ref_rope(ref + (size_t)t * H * hd, H, hd, cases[ci].pos0 + t, base, neox);
          check_close(x, "rope", name, got, ref, n, 1e-5, 0, st);
        }
      }
      reg_free(x, &rx);
      reg_free(x, &rs);
      free(in);
      free(ref);
      free(got);
    }
}

/* ---------------------------------------------------------------- kv_write + attention */

typedef struct {
  const char *cls;
  int n_head, n_kv, head_dim, pos0, n_tok, invariance;
} att_case;

static void attention_case(ctx *x, const att_case *a) {
  const int P = a->pos0 + a->n_tok, T = a->n_tok, kvd = a->n_kv * a->head_dim;
  const int qd = a->n_head * a->head_dim, nb_log = (P + KS_KV_BLOCK - 1) / KS_KV_BLOCK;
  const int n_blocks = nb_log + 3, stride = P + 5;
  char base[64], name[128];
  snprintf(base, sizeof base, "%s heads=%d/%d head_dim=%d pos0=%d n_tok=%d", a->cls, a->n_head,
           a->n_kv, a->head_dim, a->pos0, T);
  const uint64_t pool = (uint64_t)n_blocks * KS_KV_BLOCK * kvd * 4;
  uint32_t *perm = malloc((size_t)n_blocks * 4);
  float *K = frand(x, (size_t)P * kvd, 1.0f), *V = frand(x, (size_t)P * kvd, 1.0f);
  float *q = frand(x, (size_t)T * qd, 1.0f), *ref = malloc((size_t)T * qd * 4);
  float *ref_probs = malloc((size_t)a->n_head * P * 4), *got = malloc((size_t)T * qd * 4);
  float *probs = malloc((size_t)a->n_head * stride * 4), *pk = malloc(pool), *pv = malloc(pool);
  float *want_k = malloc(pool), *want_v = malloc(pool);
  reg rk, rv, rks, rvs, rq, ro, rp, rt, rs;
  reg *all[] = {&rk, &rv, &rks, &rvs, &rq, &ro, &rp, &rt, &rs};
  for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) memset(all[i], 0, sizeof *all[i]);
  snprintf(name, sizeof name, "attention %s", base);
  if (!perm || !K || !V || !q || !ref || !ref_probs || !got || !probs || !pk || !pv || !want_k ||
      !want_v) {
    ks_fail(KS_ERR_NOMEM, "out of host memory");
    infra_fail(x, "attention", name);
    goto done;
  }
  /* a scrambled block table: a random permutation of the pool's blocks */
  for (int i = 0; i < n_blocks; i++) perm[i] = (uint32_t)i;
  for (int i = n_blocks - 1; i > 0; i--) {
    int j = (int)(rndu(x) % (uint32_t)(i + 1));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  ks_step steps[2] = {{.pos0 = 0}, {.pos0 = (uint32_t)a->pos0}};
  if (!reg_new16(x, &rk, pool, KS_MEM_DEVICE, NULL) ||
      !reg_new16(x, &rv, pool, KS_MEM_DEVICE, NULL) ||
      !reg_new(x, &rks, (uint64_t)P * kvd * 4, KS_MEM_DEVICE, K) ||
      !reg_new(x, &rvs, (uint64_t)P * kvd * 4, KS_MEM_DEVICE, V) ||
      !reg_new(x, &rq, (uint64_t)T * qd * 4, KS_MEM_DEVICE, q) ||
      !reg_new(x, &ro, (uint64_t)T * qd * 4, KS_MEM_DEVICE, NULL) ||
      !reg_new(x, &rp, (uint64_t)a->n_head * stride * 4, KS_MEM_HOST, NULL) ||
      !reg_new(x, &rt, (uint64_t)nb_log * 4, KS_MEM_HOST, perm) ||
      !reg_new(x, &rs, sizeof steps, KS_MEM_HOST, steps) || !begin(x)) {
    infra_fail(x, "attention", name);
    goto done;
  }
  /* the cached prefix (positions 0..pos0-1) as an earlier batch, then this batch */
  ks_bref s0 = at(&rs, 0), s1 = at(&rs, sizeof(ks_step));
  const uint64_t pre = (uint64_t)a->pos0 * kvd * 4;
  if (a->pos0 > 0) {
    op_kv_write(x->c, at(&rk, 0), at(&rks, 0), at(&rt, 0), s0, a->pos0, kvd);
    op_kv_write(x->c, at(&rv, 0), at(&rvs, 0), at(&rt, 0), s0, a->pos0, kvd);
  }
  op_kv_write(x->c, at(&rk, 0), at(&rks, pre), at(&rt, 0), s1, T, kvd);
  op_kv_write(x->c, at(&rv, 0), at(&rvs, pre), at(&rt, 0), s1, T, kvd);
  gpu_cmd_barrier(x->c);
  op_attention(x->c, at(&ro, 0), at(&rq, 0), at(&rk, 0), at(&rv, 0), at(&rt, 0), s1, T, a->n_head,
               a->n_kv, a->head_dim, at(&rp, 0), stride);
  int stk = 0, stv = 0, sto = 0, stp = 0;
  if (!finish(x) || !reg_get(x, &rk, pk, &stk) || !reg_get(x, &rv, pv, &stv) ||
      !reg_get(x, &ro, got, &sto) || !reg_get(x, &rp, probs, &stp)) {
    infra_fail(x, "attention", name);
    goto done;
  }

  /* the pools: each position's row where the table puts it, every other row still poison */
  for (uint64_t i = 0; i < pool / 4; i++) {
    memcpy(&want_k[i], &(uint32_t){POISON}, 4);
    memcpy(&want_v[i], &(uint32_t){POISON}, 4);
  }
  for (int j = 0; j < P; j++) {
    size_t row = (size_t)perm[j / KS_KV_BLOCK] * KS_KV_BLOCK + j % KS_KV_BLOCK;
    memcpy(want_k + row * kvd, K + (size_t)j * kvd, (size_t)kvd * 4);
    memcpy(want_v + row * kvd, V + (size_t)j * kvd, (size_t)kvd * 4);
  }
  snprintf(name, sizeof name, "kv_write K %s", base);
  check_exact(x, "attention", name, pk, want_k, pool / 4, stk, "rows at scrambled table slots");
  snprintf(name, sizeof name, "kv_write V %s", base);
  check_exact(x, "attention", name, pv, want_v, pool / 4, stv, "rows at scrambled table slots");

  for (int i = 0; i < T; i++)
    ref_attention(ref + (size_t)i * qd, i == T - 1 ? ref_probs : NULL, q + (size_t)i * qd, K, V,
                  a->pos0 + i + 1, kvd, a->n_head, a->n_kv, a->head_dim);
  snprintf(name, sizeof name, "attention %s", base);
  check_close(x, "attention", name, got, ref, (size_t)T * qd, 1e-5, 0, sto);
  /* probabilities of the last token: positions 0..P-1 of each head row; past P untouched */
  {
    float *gp = malloc((size_t)a->n_head * P * 4);
    int past = 0;
    if (!gp) {
      ks_fail(KS_ERR_NOMEM, "out of host memory");
      infra_fail(x, "attention", name);
      goto done;
    }
    for (int h = 0; h < a->n_head; h++) {
      memcpy(gp + (size_t)h * P, probs + (size_t)h * stride, (size_t)P * 4);
      for (int j = P; j < stride; j++) past += memcmp(&probs[(size_t)h * stride + j], &(uint32_t){POISON}, 4) != 0;
    }
    snprintf(name, sizeof name, "attention probs %s", base);
    check_close(x, "attention", name, gp, ref_probs, (size_t)a->n_head * P, 1e-5, 1, stp + past);
    free(gp);
  }

  if (a->invariance) {
    /* Decode-style: one query row per submission, one recorded command replayed after the host
     * rewrites q and step.pos0; every row must equal the batched row bit for bit. */
    snprintf(name, sizeof name, "attention %s: batch vs replayed split decode", base);
    ks_cmd *c1 = NULL;
    reg rq1, ro1, rp1, rs1, rpart;
    memset(&rpart, 0, sizeof rpart);
    memset(&rq1, 0, sizeof rq1);
    memset(&ro1, 0, sizeof ro1);
    memset(&rp1, 0, sizeof rp1);
    memset(&rs1, 0, sizeof rs1);
    float *rows = malloc((size_t)T * qd * 4);
    int ok = rows && gpu_cmd_create(x->g, &c1) == KS_OK &&
             reg_new(x, &rq1, (uint64_t)qd * 4, KS_MEM_DEVICE, NULL) &&
             reg_new(x, &ro1, (uint64_t)qd * 4, KS_MEM_DEVICE, NULL) &&
             reg_new(x, &rp1, (uint64_t)a->n_head * stride * 4, KS_MEM_HOST, NULL) &&
             reg_new(x, &rs1, sizeof(ks_step), KS_MEM_HOST, NULL) &&
             reg_new(x, &rpart, gpu_attention_part_bytes(a->n_head, a->head_dim, stride),
                     KS_MEM_DEVICE, NULL) &&
             gpu_cmd_begin(c1) == KS_OK;
    int st1 = 0;
    if (ok) { /* each key chunk in its own workgroup, then the fold: decode's path */
      op_attention_ex(c1, at(&ro1, 0), at(&rq1, 0), at(&rk, 0), at(&rv, 0), at(&rt, 0),
                      at(&rs1, 0), 1, a->n_head, a->n_kv, a->head_dim, at(&rp1, 0), stride,
                      at(&rpart, 0), stride);
      ok = gpu_cmd_end(c1) == KS_OK;
    }
    for (int i = 0; ok && i < T; i++) {
      ks_step st = {.pos0 = (uint32_t)(a->pos0 + i)};
      int s = 0;
      ok = reg_put(x, &rs1, 0, &st, sizeof st) &&
           reg_put(x, &rq1, 0, q + (size_t)i * qd, (uint64_t)qd * 4) &&
           gpu_cmd_submit(c1) == KS_OK && gpu_cmd_wait(c1) == KS_OK &&
           reg_get(x, &ro1, rows + (size_t)i * qd, &s);
      st1 += s;
    }
    if (!ok) infra_fail(x, "attention", name);
    else check_exact(x, "attention", name, rows, got, (size_t)T * qd, st1, "the batched rows");
    free(rows);
    reg_free(x, &rq1);
    reg_free(x, &ro1);
    reg_free(x, &rp1);
    reg_free(x, &rs1);
    reg_free(x, &rpart);
    gpu_cmd_destroy(c1);
  }
done:
  for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) reg_free(x, all[i]);
  free(perm);
  free(K);
  free(V);
  free(q);
  free(ref);
  free(ref_probs);
  free(got);
  free(probs);
  free(pk);
  free(pv);
  free(want_k);
  free(want_v);
}

static void check_attention(ctx *x) {
  static const att_case cases[] = {
      {"tiny", 1, 1, 8, 0, 1, 0},
      {"GQA", 8, 4, 32, 50, 5, 0},          /* the default model's heads */
      {"long context", 2, 1, 128, 300, 1, 0}, /* decode over several key chunks */
      {"head_dim 256", 4, 2, 256, 20, 7, 0},
      {"odd", 6, 6, 72, 100, 37, 1},        /* and batch invariance */
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++) attention_case(x, &cases[i]);
}

/* ---------------------------------------------------------------- the whole model */

#define E2E_CTX 128
#define E2E_DECODE 24

static int argmax(const float *v, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (v[i] > v[b]) b = i;
  return b;
}

/* max over positions of (max |a - b| / max |b|) of each (vocab) row */
static double logits_err(const float *a, const float *b, int rows, int V) {
  double worst = 0;
  for (int r = 0; r < rows; r++) {
    double mx = 0, e = 0;
    for (int i = 0; i < V; i++) {
      size_t k = (size_t)r * V + i;
      mx = fmax(mx, fabs(b[k]));
      double d = fabs((double)a[k] - b[k]);
      if (!(d <= e)) e = d; /* NaN propagates */
    }
    double rel = e / fmax(mx, 1e-30);
    if (!(rel <= worst)) worst = rel;
  }
  return worst;
}

/* Logits of every position of seq (n tokens) as a prompt in chunks of `batch` tokens, or with
 * `decode` token by token as decode steps (the recorded decode command buffer replayed). */
static float *model_logits(ctx *x, const ks_model *m, const int *seq, int n, int batch,
                           int decode) {
  ks_forward *f = NULL;
  const size_t V = (size_t)m->cfg.vocab_size;
  float *lg = malloc(sizeof(float) * V * n);
  int ok = lg && forward_create(&f, x->g, m, E2E_CTX, batch, 0) == KS_OK;
  if (ok && !decode) ok = forward_eval(f, seq, n, 0, lg, 1) == KS_OK;
  for (int p = 0; ok && decode && p < n; p++)
    ok = forward_eval(f, &seq[p], 1, p, lg + V * p, 0) == KS_OK;
  if (!ok) {
    free(lg);
    lg = NULL;
  }
  forward_destroy(f);
  return lg;
}

static void check_model(ctx *x) {
  const char *path = x->o->model_path;
  char name[96];
  snprintf(name, sizeof name, "model: load %s", path ? path : "(none)");
  ks_model m;
  if (!path) {
    ks_fail(KS_ERR_ARG, "no model given and the default model was not found; give -m MODEL");
    infra_fail(x, "model", name);
    return;
  }
  if (model_load(&m, path) != KS_OK) {
    infra_fail(x, "model", name);
    model_deinit(&m);
    return;
  }
  const int V = m.cfg.vocab_size;
  /* the prompt: the model's own tokenizer where it has one, else fixed ids */
  int prompt[64], n_prompt = 0;
  ks_tokenizer *tok = NULL;
  if (m.gguf && tokenizer_from_gguf(&tok, m.gguf) == KS_OK) {
    static const char text[] = "Once upon a time, there was a little robot who";
    int *ids = NULL, n = 0;
    if (tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n) == KS_OK)
      for (int i = 0; i < n && n_prompt < 64; i++) prompt[n_prompt++] = ids[i];
    free(ids);
    tokenizer_destroy(tok);
  }
  if (n_prompt == 0)
    for (int i = 0; i < 12; i++) prompt[n_prompt++] = i == 0 ? 1 % V : (i * 37 + 5) % V;
  const int P = n_prompt, D = E2E_DECODE, S = P + D;
  int seq_gpu[64 + E2E_DECODE + 1], seq_cpu[64 + E2E_DECODE + 1];
  float *lg = malloc(sizeof(float) * V * (size_t)S), *lc = malloc(sizeof(float) * V * (size_t)S);
  ks_forward *f = NULL;
  ref_state r;
  int r_ready = 0;
  snprintf(name, sizeof name, "model: prefill logits vs CPU (%d positions)", P);
  {
    const char *slash = strrchr(path, '/');
    snprintf(x->d->model, sizeof x->d->model, "%s", slash ? slash + 1 : path);
  }
  if (!lg || !lc) {
    ks_fail(KS_ERR_NOMEM, "out of host memory");
    infra_fail(x, "model", name);
    goto done;
  }
  if (forward_create(&f, x->g, &m, E2E_CTX, 64, 0) != KS_OK ||
      ref_state_init(&r, &m, E2E_CTX) != KS_OK) {
    infra_fail(x, "model", name);
    goto done;
  }
  r_ready = 1;
  /* prefill: every prompt position's logits, batched on the GPU, one by one on the CPU */
  if (forward_eval(f, prompt, P, 0, lg, 1) != KS_OK) {
    infra_fail(x, "model", name);
    goto done;
  }
  for (int p = 0; p < P; p++)
    memcpy(lc + (size_t)p * V, ref_forward(&r, prompt[p], p), sizeof(float) * V);
  inject(x, name, lg, (size_t)P * V);
  add_result(x, "model", name, logits_err(lg, lc, P, V), model_bound(), 0, 1, "max over positions");

  /* greedy decoding, each side on its own logits; the decode logits compared while the two
   * sequences agree (after a divergence they are different sequences) */
  memcpy(seq_gpu, prompt, sizeof(int) * P);
  memcpy(seq_cpu, prompt, sizeof(int) * P);
  int diff = 0, first_diff = -1;
  double dec_err = 0;
  const float *cur_g = lg + (size_t)(P - 1) * V, *cur_c = lc + (size_t)(P - 1) * V;
  for (int s = 0; s < D; s++) {
    const int pos = P + s;
    seq_gpu[pos] = argmax(cur_g, V);
    seq_cpu[pos] = argmax(cur_c, V);
    if (seq_gpu[pos] != seq_cpu[pos]) {
      diff++;
      if (first_diff < 0) first_diff = s;
    }
    if (s == D - 1) break;
    float *row_g = lg + (size_t)pos * V, *row_c = lc + (size_t)pos * V;
    if (forward_eval(f, &seq_gpu[pos], 1, pos, row_g, 0) != KS_OK) {
      snprintf(name, sizeof name, "model: greedy decode (%d tokens)", D);
      infra_fail(x, "model", name);
      goto done;
    }
    memcpy(row_c, ref_forward(&r, seq_cpu[pos], pos), sizeof(float) * V);
    if (first_diff < 0) dec_err = fmax(dec_err, logits_err(row_g, row_c, 1, V));
    cur_g = row_g;
    cur_c = row_c;
  }
  snprintf(name, sizeof name, "model: decode-step logits vs CPU (%d steps)", D - 1);
  if (faulted(x, name)) dec_err += 1e-3;
  add_result(x, "model", name, dec_err, model_bound(), 0, 1, "replayed decode command buffer");
  snprintf(name, sizeof name, "model: greedy tokens GPU = CPU (%d tokens)", D);
  if (faulted(x, name) && !diff) diff = 1, first_diff = 0;
  {
    char note[160] = "identical";
    if (diff) snprintf(note, sizeof note, "%d token(s) differ, the first at step %d", diff, first_diff);
    add_result(x, "model", name, diff, 0, 1, 1, note);
  }
  forward_destroy(f);
  f = NULL;

  /* batch invariance: the GPU sequence in chunks of 64, 7 and as decode steps: same bits (under
   * gpu_coopmat_mode 3 decode steps use other kernels than prompts: there the third is the
   * prompt in chunks of 1, and the decode steps are held to the model bound above) */
  {
    const int dec = gpu_coopmat_mode(x->g) != 3;
    snprintf(name, sizeof name, "model: logits with batch 64 = 7 = %s (%d positions)",
             dec ? "decode steps" : "1", S);
    float *b64 = model_logits(x, &m, seq_gpu, S, 64, 0), *b7 = model_logits(x, &m, seq_gpu, S, 7, 0);
    float *b1 = model_logits(x, &m, seq_gpu, S, 1, dec);
    if (!b64 || !b7 || !b1) {
      infra_fail(x, "model", name);
    } else {
      inject(x, name, b1, (size_t)S * V);
      size_t d7 = 0, d1 = 0, n = (size_t)S * V;
      for (size_t i = 0; i < n; i++) {
        d7 += memcmp(&b64[i], &b7[i], 4) != 0;
        d1 += memcmp(&b64[i], &b1[i], 4) != 0;
      }
      char note[160];
      snprintf(note, sizeof note, "values differing: batch 7 %zu, batch 1 %zu", d7, d1);
      add_result(x, "model", name, (double)(d7 + d1), 0, 1, 1, note);
    }
    free(b64);
    free(b7);
    free(b1);
  }
done:
  forward_destroy(f);
  if (r_ready) ref_state_deinit(&r);
  free(lg);
  free(lc);
  model_deinit(&m);
}

/* ---------------------------------------------------------------- per device */

static const struct {
  const char *group;
  void (*run)(ctx *);
} k_groups[] = {
    {"elementwise", check_elementwise}, {"rmsnorm", check_rmsnorm}, {"embed", check_embed},
    {"matmul", check_matmul},           {"slices", check_slices},   {"fused", check_fused},
    {"rope", check_rope},               {"rope_kv", check_rope_kv}, {"attention", check_attention},
    {"model", check_model},
};

static int group_selected(const char *only, const char *group) {
  if (!only || !*only) return 1;
  size_t n = strlen(group);
  for (const char *p = only; *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, group, n) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

ks_status selftest_device(int index, const ks_selftest_opts *o, ks_selftest_device *out) {
  memset(out, 0, sizeof *out);
  out->index = index;
  const double t0 = ks_now_sec();
  const uint64_t msgs0 = gpu_validation_count();
  ctx x = {.o = o, .d = out, .rng = o->seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull};
  ks_status st = gpu_create(&x.g, index);
  if (st != KS_OK) return st;
  const ks_gpu_info *I = gpu_info(x.g);
  /* the reference rounds product operands to f16 where this device's kernels do */
  ref_set_f16_products(gpu_coopmat_mode(x.g));
  snprintf(out->name, sizeof out->name, "%s", I->name);
  snprintf(out->driver, sizeof out->driver, "%s", I->driver);
  snprintf(out->features, sizeof out->features,
           "subgroup arithmetic %s, fp16 arithmetic %s, int8 arithmetic %s, cooperative matrix "
           "%s; matrix sums: %s",
           I->subgroup_arith ? "yes" : "no", I->fp16_arith ? "yes" : "no",
           I->int8_arith ? "yes" : "no",
           I->coopmat_nv ? "NV" : I->coopmat_khr ? "KHR" : "no",
           I->coopmat ? "cooperative matrix for rows of a multiple of 32 (f16 operands), else "
                        "subgroup shuffles"
           : gpu_matmul_subgroup(x.g) ? "subgroup shuffles (shared-memory build checked too)"
                                      : "shared memory (no subgroup shuffles)");
  out->api_version = I->api_version;
  out->subgroup_size = I->subgroup_size;
  if ((st = gpu_cmd_create(x.g, &x.c)) != KS_OK) {
    gpu_destroy(x.g);
    return st;
  }
  for (size_t i = 0; i < KS_ARRAY_LEN(k_groups); i++)
    if (group_selected(o->only, k_groups[i].group)) k_groups[i].run(&x);
  gpu_cmd_destroy(x.c);
  /* everything the checks allocated must be gone: a leak here is a leak in a real run */
  int64_t live = gpu_live_allocations(x.g);
  add_result(&x, "device", "device memory: allocations alive after teardown", (double)live, 0, 1,
             1, live ? "buffers or memory not freed" : "every buffer and allocation freed");
  gpu_destroy(x.g);
  if (getenv("KVSCOPE_VALIDATION") && strcmp(getenv("KVSCOPE_VALIDATION"), "0") != 0) {
    uint64_t msgs = gpu_validation_count() - msgs0;
    add_result(&x, "device", "Vulkan validation layer messages", (double)msgs, 0, 1, 1,
               msgs ? "see the messages on stderr" : "KVSCOPE_VALIDATION=1");
  }
  out->seconds = ks_now_sec() - t0;
  return KS_OK;
}

void selftest_device_free(ks_selftest_device *d) {
  if (!d) return;
  free(d->res);
  memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- output */

static void fmt_err(char *buf, size_t cap, const ks_selftest_result *r) {
  if (isnan(r->err)) snprintf(buf, cap, "-");
  else if (r->exact) snprintf(buf, cap, "%.0f diff", r->err);
  else snprintf(buf, cap, "%.2e", r->err);
}

void selftest_print_table(FILE *f, const ks_selftest_device *devs, int n) {
  for (int d = 0; d < n; d++)
    fprintf(f, "device %d: %s (%s), Vulkan %u.%u.%u, subgroup %u\n", devs[d].index, devs[d].name,
            devs[d].driver, VK_API_VERSION_MAJOR(devs[d].api_version),
            VK_API_VERSION_MINOR(devs[d].api_version), VK_API_VERSION_PATCH(devs[d].api_version),
            devs[d].subgroup_size);
  for (int d = 0; d < n; d++) {
    fprintf(f, "device %d features: %s\n", devs[d].index, devs[d].features);
    if (devs[d].model[0]) fprintf(f, "device %d model checks: %s\n", devs[d].index, devs[d].model);
  }
  /* rows: the union of check names in first-seen order (the same list on every device) */
  int total = 0;
  for (int d = 0; d < n; d++) total += devs[d].n;
  const char **names = calloc((size_t)(total ? total : 1), sizeof *names);
  double *bounds = calloc((size_t)(total ? total : 1), sizeof *bounds);
  int *exact = calloc((size_t)(total ? total : 1), sizeof *exact);
  int rows = 0;
  if (!names || !bounds || !exact) {
    fprintf(f, "(out of memory printing the table)\n");
    free(names);
    free(bounds);
    free(exact);
    return;
  }
  for (int d = 0; d < n; d++)
    for (int i = 0; i < devs[d].n; i++) {
      int k = 0;
      while (k < rows && strcmp(names[k], devs[d].res[i].name) != 0) k++;
      if (k == rows) {
        names[rows] = devs[d].res[i].name;
        bounds[rows] = devs[d].res[i].bound;
        exact[rows] = devs[d].res[i].exact;
        rows++;
      }
    }
  int w = 5;
  for (int k = 0; k < rows; k++) w = KS_MAX(w, (int)strlen(names[k]));
  fprintf(f, "\n%-*s %-9s", w, "check", "bound");
  for (int d = 0; d < n; d++) fprintf(f, " | dev %-2d error   result", devs[d].index);
  fprintf(f, "\n");
  for (int k = 0; k < rows; k++) {
    char b[32];
    if (exact[k]) snprintf(b, sizeof b, "exact");
    else snprintf(b, sizeof b, "%.0e", bounds[k]);
    fprintf(f, "%-*s %-9s", w, names[k], b);
    const char *note = NULL;
    for (int d = 0; d < n; d++) {
      const ks_selftest_result *r = NULL;
      for (int i = 0; i < devs[d].n && !r; i++)
        if (strcmp(devs[d].res[i].name, names[k]) == 0) r = &devs[d].res[i];
      if (!r) {
        fprintf(f, " | %-9s %-6s", "-", "n/a");
        continue;
      }
      char e[32];
      fmt_err(e, sizeof e, r);
      fprintf(f, " | %-9s %-6s", e, r->passed ? "ok" : "FAIL");
      if (!r->passed && r->note[0]) note = r->note;
    }
    if (note) fprintf(f, "  <- %s", note);
    fprintf(f, "\n");
  }
  fprintf(f, "\n");
  for (int d = 0; d < n; d++)
    fprintf(f, "device %d: %d of %d checks passed (%.1f s)%s\n", devs[d].index,
            devs[d].n - devs[d].n_failed, devs[d].n, devs[d].seconds,
            devs[d].n_failed ? "  FAILED" : "");
  free(names);
  free(bounds);
  free(exact);
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

static void json_num(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.6g", v);
  else fprintf(f, "null");
}

void selftest_print_json(FILE *f, const ks_selftest_device *devs, int n, uint64_t seed) {
  int all = 1;
  for (int d = 0; d < n; d++) all &= devs[d].n_failed == 0 && devs[d].n > 0;
  fprintf(f, "{\"passed\": %s, \"seed\": %llu, \"devices\": [", all ? "true" : "false",
          (unsigned long long)seed);
  for (int d = 0; d < n; d++) {
    const ks_selftest_device *D = &devs[d];
    fprintf(f, "%s\n {\"index\": %d, \"name\": ", d ? "," : "", D->index);
    json_str(f, D->name);
    fprintf(f, ", \"driver\": ");
    json_str(f, D->driver);
    fprintf(f, ", \"model\": ");
    json_str(f, D->model);
    fprintf(f, ", \"features\": ");
    json_str(f, D->features);
    fprintf(f, ", \"vulkan\": \"%u.%u.%u\", \"subgroup_size\": %u, \"seconds\": %.2f, "
               "\"checks\": %d, \"failed\": %d, \"results\": [",
            VK_API_VERSION_MAJOR(D->api_version), VK_API_VERSION_MINOR(D->api_version),
            VK_API_VERSION_PATCH(D->api_version), D->subgroup_size, D->seconds, D->n, D->n_failed);
    for (int i = 0; i < D->n; i++) {
      const ks_selftest_result *r = &D->res[i];
      fprintf(f, "%s\n  {\"group\": ", i ? "," : "");
      json_str(f, r->group);
      fprintf(f, ", \"check\": ");
      json_str(f, r->name);
      fprintf(f, ", \"error\": ");
      json_num(f, r->err);
      fprintf(f, ", \"bound\": ");
      json_num(f, r->bound);
      fprintf(f, ", \"exact\": %s, \"passed\": %s, \"note\": ", r->exact ? "true" : "false",
              r->passed ? "true" : "false");
      json_str(f, r->note);
      fputc('}', f);
    }
    fprintf(f, "]}");
  }
  fprintf(f, "\n]}\n");
}

/* ---------------------------------------------------------------- command line */


/* The shipped model: beside the binary (build/kvscope -> ../models), the source tree, ./models. */

static void selftest_help(FILE *f) {
  fprintf(f,
    "Usage: kvscope selftest [--device N] [--json] [-m MODEL] [--only GROUPS] [--seed S]\n"
    "Runs every GPU kernel variant against the CPU reference on every Vulkan device (or device N),\n"
    "then the whole model (default: the shipped kvscope-tiny.gguf) against the CPU reference, and\n"
    "prints one row per check with the error found and its bound. Exit status 0 only if every\n"
    "check passed on every device.\n"
    "  --device N        only Vulkan device N ('kvscope devices' lists them)\n"
    "  --json            one JSON object instead of the table\n"
    "  -m, --model PATH  the model for the end-to-end checks\n"
    "  --only GROUPS     comma-separated subset of: elementwise, rmsnorm, embed, matmul, slices,\n"
    "                    rope, attention, model\n"
    "  --seed S          seed of the random inputs (default 1)\n"
    "  --inject-fault P  testing the selftest itself: checks whose name contains P get a wrong GPU\n"
    "                    value and must FAIL\n"
    "Environment: KVSCOPE_VALIDATION=1 adds a row counting Vulkan validation-layer messages.\n");
}

int selftest_main(int argc, char **argv) {
  ks_selftest_opts o = {.seed = 1};
  int device = -1, json = 0;
  const char *model = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = !strcmp(a, "--device") || !strcmp(a, "-m") || !strcmp(a, "--model") ||
                !strcmp(a, "--only") || !strcmp(a, "--seed") || !strcmp(a, "--inject-fault");
    if (takes && !v) {
      fprintf(stderr, "kvscope selftest: %s needs a value\nTry 'kvscope selftest --help'.\n", a);
      return 2;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      selftest_help(stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = 1;
    } else if (!strcmp(a, "--device") || !strcmp(a, "--seed")) {
      char *end;
      errno = 0;
      unsigned long long n = strtoull(v, &end, 10);
      if (errno || *end || end == v || v[0] == '-' || (a[2] == 'd' && n > INT_MAX)) {
        fprintf(stderr, "kvscope selftest: bad %s '%s' (a non-negative integer)\n", a, v);
        return 2;
      }
      if (a[2] == 'd') device = (int)n;
      else o.seed = n;
      i++;
    } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
      model = v;
      i++;
    } else if (!strcmp(a, "--only")) {
      for (const char *p = v; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int known = 0;
        for (size_t g = 0; g < KS_ARRAY_LEN(k_groups); g++)
          known |= strlen(k_groups[g].group) == len && !strncmp(p, k_groups[g].group, len);
        if (!known) {
          fprintf(stderr, "kvscope selftest: unknown group '%.*s' in --only (elementwise, rmsnorm, "
                          "embed, matmul, slices, rope, attention, model)\n", (int)len, p);
          return 2;
        }
        if (!e) break;
        p = e + 1;
      }
      o.only = v;
      i++;
    } else if (!strcmp(a, "--inject-fault")) {
      o.fault = v;
      i++;
    } else {
      fprintf(stderr, "kvscope selftest: unknown option '%s'\nTry 'kvscope selftest --help'.\n", a);
      return 2;
    }
  }
  o.model_path = model ? model : ks_default_model_path();

  int n_dev = gpu_count_devices();
  if (n_dev <= 0) {
    fprintf(stderr, "kvscope selftest: no Vulkan device to test: %s\n",
            n_dev < 0 ? ks_last_error()
                      : "install a Vulkan driver (Debian: mesa-vulkan-drivers provides lavapipe)");
    return 1;
  }
  if (device >= n_dev) {
    fprintf(stderr, "kvscope selftest: device %d does not exist: %d Vulkan device%s present "
                    "(0..%d; 'kvscope devices' lists them)\n", device, n_dev, n_dev == 1 ? "" : "s",
            n_dev - 1);
    return 1;
  }
  const int first = device >= 0 ? device : 0, count = device >= 0 ? 1 : n_dev;
  ks_selftest_device *devs = calloc((size_t)count, sizeof *devs);
  if (!devs) {
    fprintf(stderr, "kvscope selftest: out of memory\n");
    return 1;
  }
  int failed = 0;
  for (int k = 0; k < count; k++) {
    ks_status st = selftest_device(first + k, &o, &devs[k]);
    if (st != KS_OK) {
      fprintf(stderr, "kvscope selftest: device %d: cannot be tested: %s\n", first + k,
              ks_last_error());
      failed = 1;
      continue;
    }
    fprintf(stderr, "kvscope selftest: device %d (%s): %d checks, %d failed, %.1f s\n", first + k,
            devs[k].name, devs[k].n, devs[k].n_failed, devs[k].seconds);
    for (int i = 0; i < devs[k].n; i++) {
      const ks_selftest_result *r = &devs[k].res[i];
      if (r->passed) continue;
      char e[32], b[32];
      fmt_err(e, sizeof e, r);
      if (r->exact) snprintf(b, sizeof b, "exact");
      else snprintf(b, sizeof b, "%.0e", r->bound);
      fprintf(stderr, "kvscope selftest: device %d: FAIL %s: error %s (bound %s)%s%s\n", first + k,
              r->name, e, b, r->note[0] ? ": " : "", r->note);
    }
    if (devs[k].n_failed) failed = 1;
  }
  if (json) selftest_print_json(stdout, devs, count, o.seed);
  else selftest_print_table(stdout, devs, count);
  for (int k = 0; k < count; k++) selftest_device_free(&devs[k]);
  free(devs);
  return failed ? 1 : 0;
}
