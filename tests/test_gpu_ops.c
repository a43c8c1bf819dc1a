/* test_gpu_ops.c — every GPU op against the CPU reference (ref_cpu.c), on every Vulkan device
 * present: fresh random inputs each run (seed printed), shapes that are not multiples of the
 * workgroup sizes, buffers bound at byte offsets that are not multiples of the descriptor
 * alignment, outputs poisoned before each run and the poison around each output checked
 * afterwards (nothing written out of place), every weight type (F32, F16, Q8_0, Q4_0, BF16; the K-quants are in test_kquant).
 *
 * Error bounds (max |gpu - ref| / max |ref| over the output; NMSE printed beside it):
 *   copy, embed, kv_write: exact (bit-identical)        add: 1e-7 (one rounding, same op)
 *   swiglu, rmsnorm: 1e-5   matmul (any type): 1e-5 (1e-4 on the cooperative-matrix kernels,
 *   against a reference that rounds their operands to f16)   rope: 1e-5   attention: 1e-5
 *   attention probs rows: 1e-5 absolute.
 * Quantised weights are dequantised exactly on both sides, so their bound is the f32 one:
 * only the summation order differs.
 * Also: batch invariance (matmul and attention: 37 tokens at once vs one token at a time with
 * the decode step replayed from a rewritten step buffer, memcmp equal), weights split into
 * several slices (KVSCOPE_MAX_BUFFER_RANGE) giving the same bits as one slice, attention
 * through a scrambled block table, descriptor-pool growth, bad-shape errors, no allocation
 * left after teardown, and zero validation-layer messages (the layer is enabled here unless
 * KVSCOPE_VALIDATION is set to 0). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "gputest.h"
#include "quant.h"
#include "ref_cpu.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

static const uint64_t k_offsets[] = {4, 20, 260, 8, 44, 12, 0, 36};
static unsigned g_off_i;
static uint64_t next_off(void) { return k_offsets[g_off_i++ % KS_ARRAY_LEN(k_offsets)]; }

#define POISON_NAN 0x7fc00000u
#define POISON_BEEF 0xdeadbeefu
#define GUARD 64

/* A test region: `bytes` at offset `off` of a buffer with GUARD poisoned bytes after it. */
typedef struct {
  ks_buf b;
  uint64_t off, bytes;
  uint32_t poison;
} tb;

static void tb_make(ks_gpu *g, tb *t, uint64_t bytes, ks_mem kind) {
  memset(t, 0, sizeof *t);
  t->off = next_off();
  t->bytes = bytes;
  REQUIRE(gpu_buf_create(g, &t->b, t->off + bytes + GUARD, kind) == KS_OK);
}
/* The same with the offset rounded up to 16 bytes: the matrix kernels read their input rows as
 * vec4 (op_matmul_ex's contract). */
static void tb_make16(ks_gpu *g, tb *t, uint64_t bytes, ks_mem kind) {
  memset(t, 0, sizeof *t);
  t->off = (next_off() + 15) & ~15ull;
  t->bytes = bytes;
  REQUIRE(gpu_buf_create(g, &t->b, t->off + bytes + GUARD, kind) == KS_OK);
}
static ks_bref tb_ref(const tb *t) { return ks_ref(&t->b, t->off); }
static ks_bref tb_at(const tb *t, uint64_t byte) { return ks_ref(&t->b, t->off + byte); }
static void tb_put(ks_gpu *g, tb *t, const void *data) {
  REQUIRE(gpu_upload(g, &t->b, t->off, data, t->bytes) == KS_OK);
}
static void tb_poison(ks_gpu *g, tb *t, uint32_t word) {
  t->poison = word;
  REQUIRE(gpu_fill_u32(g, &t->b, 0, t->b.size & ~3ull, word) == KS_OK);
}
/* Downloads the region and checks that the poison before and after it is intact. */
static void tb_get(ks_gpu *g, tb *t, void *out, const char *what) {
  uint64_t n = t->b.size & ~3ull;
  uint32_t *all = malloc(n);
  REQUIRE(all);
  REQUIRE(gpu_download(g, &t->b, 0, all, n) == KS_OK);
  int bad = 0;
  for (uint64_t i = 0; i < t->off / 4; i++) bad += all[i] != t->poison;
  for (uint64_t i = (t->off + t->bytes + 3) / 4; i < n / 4; i++) bad += all[i] != t->poison;
  CHECK_MSG(bad == 0, "%s: %d word(s) written outside the output region", what, bad);
  memcpy(out, (char *)all + t->off, t->bytes);
  free(all);
}
static void tb_free(ks_gpu *g, tb *t) { gpu_buf_destroy(g, &t->b); }

static void run_cmd(ks_cmd *c, const char *what) {
  ks_status st = gpu_cmd_end(c);
  CHECK_MSG(st == KS_OK, "%s: recording failed: %s", what, ks_last_error());
  if (st != KS_OK) return;
  REQUIRE(gpu_cmd_submit(c) == KS_OK);
  REQUIRE(gpu_cmd_wait(c) == KS_OK);
}

/* Prints max relative error (vs the reference's max magnitude) and NMSE; checks the first. */
static double compare(const char *what, const float *got, const float *ref, size_t n,
                      double bound) {
  double maxref = 0, maxdiff = 0, se = 0, sr = 0;
  size_t nonfinite = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(got[i])) {
      nonfinite++;
      continue;
    }
    double d = fabs((double)got[i] - ref[i]);
    if (d > maxdiff) maxdiff = d;
    if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    se += d * d;
    sr += (double)ref[i] * ref[i];
  }
  double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
  double nmse = sr > 0 ? se / sr : se;
  printf("  %-58s max rel %.2e  nmse %.2e  (bound %.0e)\n", what, rel, nmse, bound);
  CHECK_MSG(nonfinite == 0, "%s: %zu non-finite outputs (poison left or NaN)", what, nonfinite);
  CHECK_MSG(rel <= bound, "%s: max relative error %.3e over the bound %.0e", what, rel, bound);
  return rel;
}

static float *frand(size_t n, float scale) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  REQUIRE(x);
  ks_fill_rand(x, n, scale);
  return x;
}

/* A host weight matrix of N rows of K random values in [-1, 1), stored as `type`. */
typedef struct {
  ks_tensor t;
  void *data;
} hw;
static void hw_make(hw *w, ks_type type, int64_t K, int64_t N) {
  size_t rb = ks_type_row_bytes(type, K);
  REQUIRE(rb > 0);
  w->data = malloc(rb * (size_t)N);
  float *row = malloc((size_t)K * sizeof *row);
  REQUIRE(w->data && row);
  for (int64_t r = 0; r < N; r++) {
    ks_fill_rand(row, (size_t)K, 1.0f);
    if (type == KS_TYPE_F32) memcpy((char *)w->data + r * rb, row, rb);
    else ks_quant_row(type, row, (char *)w->data + r * rb, K);
  }
  free(row);
  memset(&w->t, 0, sizeof w->t);
  w->t.type = type;
  w->t.ne[0] = K;
  w->t.ne[1] = N;
  w->t.data = w->data;
  w->t.nbytes = rb * (size_t)N;
}
static void hw_free(hw *w) { free(w->data); }

static const ks_type k_types[] = {KS_TYPE_F32, KS_TYPE_F16, KS_TYPE_Q8_0, KS_TYPE_Q4_0, KS_TYPE_BF16};

/* ---------------------------------------------------------------- elementwise */

static void test_elementwise(ks_gpu *g, ks_cmd *c) {
  static const int sizes[] = {1, 7, 1000, 70001};
  for (size_t si = 0; si < KS_ARRAY_LEN(sizes); si++) {
    int n = sizes[si];
    size_t bytes = (size_t)n * 4;
    float *a = frand(n, 4.0f), *b = frand(n, 4.0f), *ref = malloc(bytes), *got = malloc(bytes);
    REQUIRE(ref && got);
    char what[96];
    tb ta, tbb, to;
    tb_make(g, &ta, bytes, KS_MEM_DEVICE);
    tb_make(g, &tbb, bytes, KS_MEM_DEVICE);
    tb_make(g, &to, bytes, KS_MEM_DEVICE);
    tb_put(g, &ta, a);
    tb_put(g, &tbb, b);

    /* copy: exact */
    tb_poison(g, &to, POISON_BEEF);
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_copy(c, tb_ref(&to), tb_ref(&ta), bytes);
    run_cmd(c, "copy");
    tb_get(g, &to, got, "copy");
    snprintf(what, sizeof what, "copy n=%d", n);
    CHECK_MSG(memcmp(got, a, bytes) == 0, "%s: not bit-identical", what);
    printf("  %-58s exact\n", what);
    if (bytes % 16 == 0) { /* 16-byte aligned regions take the uvec4 copy */
      tb a16, o16;
      tb_make16(g, &a16, bytes, KS_MEM_DEVICE);
      tb_make16(g, &o16, bytes, KS_MEM_DEVICE);
      tb_poison(g, &o16, POISON_BEEF);
      tb_put(g, &a16, a);
      REQUIRE(gpu_cmd_begin(c) == KS_OK);
      op_copy(c, tb_ref(&o16), tb_ref(&a16), bytes);
      run_cmd(c, "copy4");
      tb_get(g, &o16, got, "copy4");
      snprintf(what, sizeof what, "copy n=%d, 16-byte words", n);
      CHECK_MSG(memcmp(got, a, bytes) == 0, "%s: not bit-identical", what);
      printf("  %-58s exact\n", what);
      tb_free(g, &a16);
      tb_free(g, &o16);
    }

    /* swiglu, out separate and out aliasing gate */
    for (int alias = 0; alias < 2; alias++) {
      ref_swiglu(ref, a, b, n);
      tb *out = alias ? &ta : &to;
      if (!alias) tb_poison(g, &to, POISON_NAN);
      REQUIRE(gpu_cmd_begin(c) == KS_OK);
      op_swiglu(c, tb_ref(out), tb_ref(&ta), tb_ref(&tbb), n);
      run_cmd(c, "swiglu");
      if (alias) REQUIRE(gpu_download(g, &ta.b, ta.off, got, bytes) == KS_OK);
      else tb_get(g, &to, got, "swiglu");
      snprintf(what, sizeof what, "swiglu n=%d%s", n, alias ? " (out = gate)" : "");
      compare(what, got, ref, n, 1e-5);
    }
    tb_put(g, &ta, a);

    /* add: x += y */
    for (int i = 0; i < n; i++) ref[i] = a[i] + b[i];
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_add(c, tb_ref(&ta), tb_ref(&tbb), n);
    run_cmd(c, "add");
    REQUIRE(gpu_download(g, &ta.b, ta.off, got, bytes) == KS_OK);
    snprintf(what, sizeof what, "add n=%d", n);
    compare(what, got, ref, n, 1e-7);

    tb_free(g, &ta);
    tb_free(g, &tbb);
    tb_free(g, &to);
    free(a);
    free(b);
    free(ref);
    free(got);
  }
}

/* ---------------------------------------------------------------- rmsnorm */

static void test_rmsnorm(ks_gpu *g, ks_cmd *c) {
  static const int toks[] = {1, 5, 37};
  static const int dims[] = {7, 200, 1000};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(toks); ti++)
    for (size_t di = 0; di < KS_ARRAY_LEN(dims); di++) {
      int T = toks[ti], n = dims[di];
      size_t bytes = (size_t)T * n * 4;
      float *x = frand((size_t)T * n, 3.0f), *w = frand(n, 1.0f);
      float *ref = malloc(bytes), *got = malloc(bytes);
      REQUIRE(ref && got);
      const float eps = 1e-5f;
      for (int t = 0; t < T; t++) ref_rmsnorm(ref + (size_t)t * n, x + (size_t)t * n, w, n, eps);
      tb tx, tw, to;
      tb_make(g, &tx, bytes, KS_MEM_DEVICE);
      tb_make(g, &tw, (size_t)n * 4, KS_MEM_DEVICE);
      tb_make(g, &to, bytes, KS_MEM_DEVICE);
      tb_put(g, &tx, x);
      tb_put(g, &tw, w);
      for (int inplace = 0; inplace < 2; inplace++) {
        tb *out = inplace ? &tx : &to;
        if (!inplace) tb_poison(g, &to, POISON_NAN);
        REQUIRE(gpu_cmd_begin(c) == KS_OK);
        op_rmsnorm(c, tb_ref(out), tb_ref(&tx), tb_ref(&tw), T, n, eps);
        run_cmd(c, "rmsnorm");
        if (inplace) REQUIRE(gpu_download(g, &tx.b, tx.off, got, bytes) == KS_OK);
        else tb_get(g, &to, got, "rmsnorm");
        char what[96];
        snprintf(what, sizeof what, "rmsnorm n_tok=%d n=%d%s", T, n, inplace ? " (in place)" : "");
        compare(what, got, ref, (size_t)T * n, 1e-5);
      }
      tb_free(g, &tx);
      tb_free(g, &tw);
      tb_free(g, &to);
      free(x);
      free(w);
      free(ref);
      free(got);
    }
}

/* ---------------------------------------------------------------- embed */

/* Runs op_embed on the device; returns the (n_tok, dim) rows (caller frees). */
static float *gpu_embed_run(ks_gpu *g, ks_cmd *c, const hw *w, const uint32_t *tok, int n_tok,
                            int *n_slices) {
  ks_gpu_tensor gt;
  REQUIRE(gpu_tensor_upload(g, &gt, &w->t) == KS_OK);
  if (n_slices) *n_slices = gt.n_slices;
  size_t bytes = (size_t)n_tok * w->t.ne[0] * 4;
  tb tt, to;
  tb_make(g, &tt, (size_t)n_tok * 4, KS_MEM_HOST);
  tb_make(g, &to, bytes, KS_MEM_DEVICE);
  tb_put(g, &tt, tok);
  tb_poison(g, &to, POISON_NAN);
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_embed(c, tb_ref(&to), &gt, tb_ref(&tt), n_tok);
  run_cmd(c, "embed");
  float *got = malloc(bytes);
  REQUIRE(got);
  tb_get(g, &to, got, "embed");
  tb_free(g, &tt);
  tb_free(g, &to);
  gpu_tensor_free(g, &gt);
  return got;
}

static void check_embed(const char *what, const hw *w, const uint32_t *tok, int n_tok,
                        const float *got) {
  int dim = (int)w->t.ne[0];
  float *ref = malloc((size_t)n_tok * dim * 4);
  REQUIRE(ref);
  for (int t = 0; t < n_tok; t++) ref_embed(ref + (size_t)t * dim, &w->t, (int)tok[t]);
  int same = memcmp(ref, got, (size_t)n_tok * dim * 4) == 0;
  compare(what, got, ref, (size_t)n_tok * dim, 0.0);
  CHECK_MSG(same, "%s: not bit-identical to ks_dequant_row", what);
  free(ref);
}

static void embed_case(ks_gpu *g, ks_cmd *c, ks_type type, int dim, int vocab, int n_tok,
                       uint32_t *tok) {
  hw w;
  hw_make(&w, type, dim, vocab);
  float *got = gpu_embed_run(g, c, &w, tok, n_tok, NULL);
  char what[96];
  snprintf(what, sizeof what, "embed %s dim=%d vocab=%d n_tok=%d", ks_type_name(type), dim, vocab,
           n_tok);
  check_embed(what, &w, tok, n_tok, got);
  free(got);
  hw_free(&w);
}

static void test_embed(ks_gpu *g, ks_cmd *c) {
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    ks_type type = k_types[ti];
    int quant = type == KS_TYPE_Q8_0 || type == KS_TYPE_Q4_0;
    int dim = quant ? 224 : 72, vocab = 33, n_tok = 9;
    uint32_t tok[9] = {0, (uint32_t)vocab - 1};
    for (int i = 2; i < n_tok; i++) tok[i] = ks_randu() % vocab;
    embed_case(g, c, type, dim, vocab, n_tok, tok);
    if (!quant) {
      tok[0] = 5;
      embed_case(g, c, type, 7, vocab, 1, tok); /* odd row length */
    }
  }
}

/* ---------------------------------------------------------------- matmul */

/* Runs op_matmul; with `single`, also each token alone (n_tok = 1 dispatches into a second
 * output) and returns that too. */
static float *gpu_matmul_run(ks_gpu *g, ks_cmd *c, const hw *w, const float *x, int n_tok,
                             float **single, int *n_slices) {
  ks_gpu_tensor gt;
  REQUIRE(gpu_tensor_upload(g, &gt, &w->t) == KS_OK);
  if (n_slices) *n_slices = gt.n_slices;
  int64_t K = w->t.ne[0], N = w->t.ne[1];
  size_t xb = (size_t)n_tok * K * 4, ob = (size_t)n_tok * N * 4;
  tb tx, to, t1;
  tb_make16(g, &tx, xb, KS_MEM_DEVICE);
  tb_make(g, &to, ob, KS_MEM_DEVICE);
  tb_put(g, &tx, x);
  tb_poison(g, &to, POISON_NAN);
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_matmul(c, tb_ref(&to), tb_ref(&tx), &gt, n_tok);
  if (single) {
    tb_make(g, &t1, ob, KS_MEM_DEVICE);
    tb_poison(g, &t1, POISON_BEEF);
    for (int t = 0; t < n_tok; t++)
      op_matmul(c, tb_at(&t1, (uint64_t)t * N * 4), tb_at(&tx, (uint64_t)t * K * 4), &gt, 1);
  }
  run_cmd(c, "matmul");
  float *got = malloc(ob);
  REQUIRE(got);
  tb_get(g, &to, got, "matmul");
  if (single) {
    *single = malloc(ob);
    REQUIRE(*single);
    tb_get(g, &t1, *single, "matmul one token at a time");
    tb_free(g, &t1);
  }
  tb_free(g, &tx);
  tb_free(g, &to);
  gpu_tensor_free(g, &gt);
  return got;
}

/* Bound of a product against the reference: on the cooperative-matrix kernels the reference
 * rounds the operands to f16 too (ks_test_gpu), and only the order of the f32 sums and the odd
 * f16 rounding of a normalised input that lands on a tie differ. */
static double mm_bound(const ks_gpu *g, ks_type t, int K) {
  return gpu_matmul_coopmat(g, t, K) ? 1e-4 : 1e-5;
}

/* op_mma_peak (kvscope bench's matrix-unit rate): subgroup s of the grid ends with
 * 28 + 8 * iters * (s % 7) / 512 in each of its 128 floats, exactly (every partial sum is a
 * multiple of 1/512 far below 2^24 / 512); on a device without cooperative matrices the op
 * must fail with KS_ERR_UNSUPPORTED instead. */
static void test_mma_peak(ks_gpu *g, ks_cmd *c) {
  const uint32_t groups = 5, iters = 37;
  tb to;
  tb_make16(g, &to, (uint64_t)groups * 4 * 128 * 4, KS_MEM_DEVICE);
  tb_poison(g, &to, POISON_NAN);
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_mma_peak(c, tb_ref(&to), groups, iters);
  ks_status st = gpu_cmd_end(c);
  if (!gpu_info(g)->coopmat) {
    CHECK_MSG(st == KS_ERR_UNSUPPORTED, "op_mma_peak without cooperative matrices: status %d", st);
    printf("  %-58s %s\n", "mma_peak (no cooperative matrices here)", "refused, as it must be");
    tb_free(g, &to);
    return;
  }
  REQUIRE(st == KS_OK);
  REQUIRE(gpu_cmd_submit(c) == KS_OK && gpu_cmd_wait(c) == KS_OK);
  float *got = malloc((size_t)groups * 4 * 128 * 4);
  REQUIRE(got);
  tb_get(g, &to, got, "mma_peak");
  size_t bad = 0;
  for (uint32_t s = 0; s < groups * 4; s++)
    for (int i = 0; i < 128; i++)
      bad += got[s * 128 + i] != 28.0f + 8.0f * iters * (float)(s % 7) / 512.0f;
  printf("  %-58s %s\n", "mma_peak: every subgroup's sums", bad ? "WRONG" : "exact");
  CHECK_MSG(bad == 0, "op_mma_peak: %zu of %u values wrong", bad, groups * 512);
  free(got);
  tb_free(g, &to);
}

static void test_matmul(ks_gpu *g, ks_cmd *c) {
  /* (K for float types, K for quantised types, rows N, tokens, batch invariance) */
  /* K = 172 and 2052: rows whose last 8-element unit has only 4 (matmul.glsl's tail); K a
   * multiple of 32 takes the cooperative-matrix kernels where the device has them: 768 has 8
   * slices of 96 (chunks of 64 cut at slice ends), N = 45, 70 a last partial tile */
  static const int shapes[][5] = {{72, 96, 7, 1, 0},       {200, 224, 33, 5, 0},
                                  {1000, 1056, 515, 37, 0}, {72, 96, 515, 5, 0},
                                  {1000, 1056, 7, 37, 0},   {200, 224, 33, 1, 0},
                                  {172, 160, 19, 9, 0},     {2052, 2048, 70, 3, 0},
                                  {4100, 4096, 9, 2, 0},    {2048, 2048, 45, 5, 0},
                                  {768, 768, 19, 9, 0},     {96, 128, 70, 37, 1},
                                  {200, 224, 33, 37, 1}};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    ks_type type = k_types[ti];
    int quant = type == KS_TYPE_Q8_0 || type == KS_TYPE_Q4_0;
    for (size_t si = 0; si < KS_ARRAY_LEN(shapes); si++) {
      int K = shapes[si][quant ? 1 : 0], N = shapes[si][2], T = shapes[si][3];
      int invariance = shapes[si][4];
      hw w;
      hw_make(&w, type, K, N);
      float *x = frand((size_t)T * K, 1.0f), *ref = malloc((size_t)T * N * 4);
      REQUIRE(ref);
      ref_matmul(ref, x, &w.t, T);
      float *single = NULL;
      float *got = gpu_matmul_run(g, c, &w, x, T, invariance ? &single : NULL, NULL);
      char what[96];
      snprintf(what, sizeof what, "matmul %s K=%d N=%d n_tok=%d", ks_type_name(type), K, N, T);
      compare(what, got, ref, (size_t)T * N, mm_bound(g, type, K));
      if (single) {
        int same = memcmp(got, single, (size_t)T * N * 4) == 0;
        printf("  %-58s %s\n", "  batch invariance: 37 at once vs one at a time",
               same ? "bit-identical" : "DIFFERENT");
        CHECK_MSG(same, "matmul %s: a row computed alone differs from the same row in a batch",
                  ks_type_name(type));
        free(single);
      }
      free(got);
      free(x);
      free(ref);
      hw_free(&w);
    }
  }
}

/* Weights split into several slices (g2 has a small KVSCOPE_MAX_BUFFER_RANGE): same bits as one
 * slice on the same device, and within the bound of the reference. */
static void test_slices(ks_gpu *g, ks_cmd *c, ks_gpu *g2, ks_cmd *c2) {
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    ks_type type = k_types[ti];
    int quant = type == KS_TYPE_Q8_0 || type == KS_TYPE_Q4_0;
    int K = quant ? 224 : 200, N = 37, T = 6;
    hw w;
    hw_make(&w, type, K, N);
    float *x = frand((size_t)T * K, 1.0f), *ref = malloc((size_t)T * N * 4);
    REQUIRE(ref);
    ref_matmul(ref, x, &w.t, T);
    int ns1 = 0, ns2 = 0;
    float *one = gpu_matmul_run(g, c, &w, x, T, NULL, &ns1);
    float *many = gpu_matmul_run(g2, c2, &w, x, T, NULL, &ns2);
    char what[96];
    snprintf(what, sizeof what, "matmul %s K=%d N=%d n_tok=%d in %d slices", ks_type_name(type),
             K, N, T, ns2);
    compare(what, many, ref, (size_t)T * N, mm_bound(g, type, K));
    CHECK_MSG(ns1 == 1 && ns2 > 1, "%s: expected 1 and several slices, got %d and %d", what, ns1,
              ns2);
    CHECK_MSG(memcmp(one, many, (size_t)T * N * 4) == 0, "%s: differs from the one-slice result",
              what);
    free(one);
    free(many);

    uint32_t tok[7] = {0, (uint32_t)N - 1, 5, 17, 36, 18, 19};
    int es = 0;
    float *emb = gpu_embed_run(g2, c2, &w, tok, 7, &es);
    snprintf(what, sizeof what, "embed %s dim=%d vocab=%d in %d slices", ks_type_name(type), K, N,
             es);
    check_embed(what, &w, tok, 7, emb);
    CHECK_MSG(es > 1, "%s: expected several slices", what);
    free(emb);
    free(x);
    free(ref);
    hw_free(&w);
  }
}

/* ---------------------------------------------------------------- rope */

static void test_rope(ks_gpu *g, ks_cmd *c) {
  static const int cases[][5] = {/* n_tok, n_heads, head_dim, neox, pos0 */
                                 {1, 1, 8, 0, 0},    {5, 3, 8, 1, 17},    {37, 2, 64, 0, 3},
                                 {5, 4, 128, 1, 4000}, {1, 2, 256, 0, 30000}, {37, 1, 64, 1, 500}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    int T = cases[ci][0], H = cases[ci][1], hd = cases[ci][2], neox = cases[ci][3];
    uint32_t pos0 = (uint32_t)cases[ci][4];
    float base = ci % 2 ? 500000.0f : 10000.0f;
    size_t n = (size_t)T * H * hd;
    float *x = frand(n, 2.0f), *ref = malloc(n * 4), *got = malloc(n * 4);
    REQUIRE(ref && got);
    memcpy(ref, x, n * 4);
    for (int t = 0; t < T; t++) ref_rope(ref + (size_t)t * H * hd, H, hd, (int)pos0 + t, base, neox);
    tb tx, ts;
    tb_make(g, &tx, n * 4, KS_MEM_DEVICE);
    tb_make(g, &ts, sizeof(ks_step), KS_MEM_HOST);
    tb_poison(g, &tx, POISON_NAN);
    tb_put(g, &tx, x);
    ks_step step = {.pos0 = pos0};
    tb_put(g, &ts, &step);
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_rope(c, tb_ref(&tx), tb_ref(&ts), T, H, hd, base, neox);
    run_cmd(c, "rope");
    tb_get(g, &tx, got, "rope");
    char what[96];
    snprintf(what, sizeof what, "rope n_tok=%d heads=%d head_dim=%d %s pos0=%u base=%g", T, H, hd,
             neox ? "neox" : "norm", pos0, base);
    compare(what, got, ref, n, 1e-5);
    tb_free(g, &tx);
    tb_free(g, &ts);
    free(x);
    free(ref);
    free(got);
  }
}

/* ---------------------------------------------------------------- fused products */

/* op_matmul_ex's fusions against the CPU reference: RMSNorm on the input, residual add, the
 * stacked gate|up product with SwiGLU (normalised input, as forward.c uses it), and a row
 * stride wider than the output. Each runs over T tokens at once and token by token (decode
 * pipeline): the bits must agree. When g_nosg (a context with KVSCOPE_NO_SUBGROUP=1, or NULL)
 * is given, the shared-memory variant must give the same bits as the subgroup one. */
enum { FUSE_NORM, FUSE_ADD, FUSE_SWIGLU, FUSE_STRIDE };
static const char *const k_fuse_names[] = {"norm in", "residual add", "norm + gate|up swiglu",
                                           "output stride"};

static float *fused_run(ks_gpu *g, ks_cmd *c, int mode, const ks_gpu_tensor *gt, int K, int N,
                        int T, const float *x, const float *nw, const float *y0, int one_by_one) {
  const int width = mode == FUSE_STRIDE ? N + 5 : N;
  size_t ob = (size_t)T * width * 4;
  tb tx, tn, to;
  tb_make16(g, &tx, (size_t)T * K * 4, KS_MEM_DEVICE);
  tb_make16(g, &tn, (size_t)K * 4, KS_MEM_DEVICE);
  tb_make(g, &to, ob, KS_MEM_DEVICE);
  tb_poison(g, &to, POISON_BEEF);
  tb_put(g, &tx, x);
  tb_put(g, &tn, nw);
  float *init = malloc(ob), *got = malloc(ob);
  REQUIRE(init && got);
  for (size_t i = 0; i < (size_t)T * width; i++) init[i] = y0 ? y0[i] : -7.0f;
  tb_put(g, &to, init);
  ks_matmul_opts o = {.eps = 1e-5f};
  if (mode == FUSE_NORM || mode == FUSE_SWIGLU) o.norm_w = tb_ref(&tn);
  if (mode == FUSE_ADD) o.add = 1;
  if (mode == FUSE_SWIGLU) o.swiglu = 1;
  if (mode == FUSE_STRIDE) o.out_stride = (uint32_t)width;
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  if (one_by_one) {
    for (int t = 0; t < T; t++)
      op_matmul_ex(c, tb_at(&to, (uint64_t)t * width * 4), tb_at(&tx, (uint64_t)t * K * 4), gt,
                   1, &o);
  } else {
    op_matmul_ex(c, tb_ref(&to), tb_ref(&tx), gt, T, &o);
  }
  run_cmd(c, "fused matmul");
  tb_get(g, &to, got, "fused matmul");
  tb_free(g, &tx);
  tb_free(g, &tn);
  tb_free(g, &to);
  free(init);
  return got;
}

static void test_matmul_fused(ks_gpu *g, ks_cmd *c, ks_gpu *g_nosg, ks_cmd *c_nosg) {
  static const ks_type types[] = {KS_TYPE_F32, KS_TYPE_F16, KS_TYPE_Q8_0, KS_TYPE_Q4_0};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(types); ti++) {
    ks_type type = types[ti];
    /* row lengths that take one, two and four subgroups per row (matmul.glsl's SPLIT) */
    static const int Ks[] = {172, 2052, 288, 4096};
    const int K = Ks[ti], N = 21, T = 11;
    for (int mode = FUSE_NORM; mode <= FUSE_STRIDE; mode++) {
      int rows = mode == FUSE_SWIGLU ? 2 * N : N;
      hw w;
      hw_make(&w, type, K, rows);
      ks_gpu_tensor gt, gt2;
      REQUIRE(gpu_tensor_upload(g, &gt, &w.t) == KS_OK);
      float *x = frand((size_t)T * K, 2.0f), *nw = frand((size_t)K, 1.0f);
      float *y0 = frand((size_t)T * N, 1.0f);
      const int width = mode == FUSE_STRIDE ? N + 5 : N;
      /* reference */
      float *xin = malloc((size_t)T * K * 4), *prod = malloc((size_t)T * rows * 4);
      float *ref = malloc((size_t)T * width * 4);
      REQUIRE(xin && prod && ref);
      for (int t = 0; t < T; t++) {
        if (mode == FUSE_NORM || mode == FUSE_SWIGLU)
          ref_rmsnorm(xin + (size_t)t * K, x + (size_t)t * K, nw, K, 1e-5f);
        else
          memcpy(xin + (size_t)t * K, x + (size_t)t * K, (size_t)K * 4);
      }
      ref_matmul(prod, xin, &w.t, T);
      float *yinit = mode == FUSE_ADD ? y0 : NULL;
      for (int t = 0; t < T; t++)
        for (int j = 0; j < width; j++) {
          float *r = &ref[(size_t)t * width + j];
          const float *p = prod + (size_t)t * rows;
          if (j >= N) *r = -7.0f; /* the stride's gap is left alone */
          else if (mode == FUSE_ADD) *r = y0[(size_t)t * N + j] + p[j];
          else if (mode == FUSE_SWIGLU) ref_swiglu(r, &p[j], &p[N + j], 1);
          else *r = p[j];
        }
      float *got = fused_run(g, c, mode, &gt, K, N, T, x, nw, yinit, 0);
      float *one = fused_run(g, c, mode, &gt, K, N, T, x, nw, yinit, 1);
      char what[96];
      snprintf(what, sizeof what, "matmul %s %s K=%d N=%d n_tok=%d", ks_type_name(type),
               k_fuse_names[mode], K, N, T);
      compare(what, got, ref, (size_t)T * width, mm_bound(g, type, K));
      int same = memcmp(got, one, (size_t)T * width * 4) == 0;
      printf("  %-58s %s\n", "  batch of 11 vs token by token", same ? "bit-identical" : "DIFFERENT");
      CHECK_MSG(same, "%s: a row computed alone differs from the same row in a batch", what);
      if (g_nosg) {
        REQUIRE(gpu_tensor_upload(g_nosg, &gt2, &w.t) == KS_OK);
        float *sh = fused_run(g_nosg, c_nosg, mode, &gt2, K, N, T, x, nw, yinit, 0);
        int same2 = memcmp(got, sh, (size_t)T * width * 4) == 0;
        printf("  %-58s %s\n", "  shared-memory sums vs subgroup shuffles",
               same2 ? "bit-identical" : "DIFFERENT");
        CHECK_MSG(same2, "%s: the _nosg kernel's bits differ from the subgroup kernel's", what);
        free(sh);
        gpu_tensor_free(g_nosg, &gt2);
      }
      free(got);
      free(one);
      free(x);
      free(nw);
      free(y0);
      free(xin);
      free(prod);
      free(ref);
      gpu_tensor_free(g, &gt);
      hw_free(&w);
    }
  }
  /* the stacked upload: [a; b] gives a's rows then b's; parts that differ are refused */
  hw a, b;
  hw_make(&a, KS_TYPE_F16, 64, 5);
  hw_make(&b, KS_TYPE_F16, 64, 3);
  const ks_tensor *parts[2] = {&a.t, &b.t};
  ks_gpu_tensor st;
  REQUIRE(gpu_tensor_upload_concat(g, &st, parts, 2) == KS_OK);
  CHECK(st.n_slices == 1 && st.ne[1] == 8 && st.ne[0] == 64);
  size_t rb = ks_type_row_bytes(KS_TYPE_F16, 64);
  unsigned char *back = malloc(8 * rb);
  REQUIRE(back);
  REQUIRE(gpu_download(g, &st.slices[0], 0, back, 8 * rb) == KS_OK);
  CHECK(memcmp(back, a.data, 5 * rb) == 0 && memcmp(back + 5 * rb, b.data, 3 * rb) == 0);
  free(back);
  gpu_tensor_free(g, &st);
  hw c2;
  hw_make(&c2, KS_TYPE_Q8_0, 64, 3);
  const ks_tensor *mixed[2] = {&a.t, &c2.t};
  CHECK(gpu_tensor_upload_concat(g, &st, mixed, 2) == KS_ERR_UNSUPPORTED && st.n_slices == 0);
  printf("  %-58s %s\n", "stacked upload [a; b], mixed types refused", "ok");
  hw_free(&a);
  hw_free(&b);
  hw_free(&c2);
  /* Q8_0 / Q4_0 on the device (gpu.h): quant bytes of block i = row * nb + b at i * qb, its
   * scale at rows * nb * qb + 2 i; stacked parts as one tensor of all their rows */
  const ks_type split_types[] = {KS_TYPE_Q8_0, KS_TYPE_Q4_0};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(split_types); ti++) {
    const ks_type ty = split_types[ti];
    hw p0, p1;
    hw_make(&p0, ty, 96, 5);
    hw_make(&p1, ty, 96, 2);
    const ks_tensor *sp[2] = {&p0.t, &p1.t};
    REQUIRE(gpu_tensor_upload_concat(g, &st, sp, 2) == KS_OK);
    const size_t srb = ks_type_row_bytes(ty, 96), bb = ks_type_block_bytes(ty), qb = bb - 2;
    const size_t nb = 3, rows = 7;
    unsigned char *dev = malloc(rows * srb), *host = malloc(rows * srb);
    REQUIRE(dev && host);
    memcpy(host, p0.data, 5 * srb);
    memcpy(host + 5 * srb, p1.data, 2 * srb);
    REQUIRE(gpu_download(g, &st.slices[0], 0, dev, rows * srb) == KS_OK);
    int bad = 0;
    for (size_t i = 0; i < rows * nb; i++) {
      bad += memcmp(dev + i * qb, host + i * bb + 2, qb) != 0;
      bad += memcmp(dev + rows * nb * qb + 2 * i, host + i * bb, 2) != 0;
    }
    char what[96];
    snprintf(what, sizeof what, "%s device layout: quant bytes, then scales", ks_type_name(ty));
    printf("  %-58s %s\n", what, bad ? "WRONG" : "ok");
    CHECK_MSG(bad == 0, "%s: %d blocks out of place", what, bad);
    free(dev);
    free(host);
    gpu_tensor_free(g, &st);
    hw_free(&p0);
    hw_free(&p1);
  }
}

/* op_matmul_ex's q|k|v epilogue (ks_rope_opts): RMSNorm in, the stacked product, RoPE of q and
 * k pairs, q out and k, v written into the pools through a scrambled block table; against the
 * CPU reference, and the batch against token by token (decode build) bit for bit. */
static void test_matmul_rope(ks_gpu *g, ks_cmd *c) {
  static const struct {
    ks_type type;
    int K, heads, kv_heads, head_dim, neox, pos0, T;
  } cases[] = {{KS_TYPE_F16, 256, 4, 2, 32, 0, 5, 9},
               {KS_TYPE_Q8_0, 2048, 2, 1, 64, 1, 30, 3},
               {KS_TYPE_F32, 172, 3, 3, 8, 1, 0, 17},
               /* on the cooperative-matrix kernels: neox pairs in evenly spaced tiles (direct
                * F16 loads), and heads too short for that (staged tiles) */
               {KS_TYPE_F16, 512, 4, 2, 32, 1, 7, 5},
               {KS_TYPE_F16, 128, 4, 4, 16, 1, 3, 33}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    const int K = cases[ci].K, H = cases[ci].heads, KH = cases[ci].kv_heads;
    const int hd = cases[ci].head_dim, neox = cases[ci].neox, pos0 = cases[ci].pos0;
    const int T = cases[ci].T, qd = H * hd, kvd = KH * hd, rows = qd + 2 * kvd;
    const int nb = (pos0 + T + KS_KV_BLOCK - 1) / KS_KV_BLOCK + 2;
    const size_t pool = (size_t)nb * KS_KV_BLOCK * kvd;
    hw w;
    hw_make(&w, cases[ci].type, K, rows);
    ks_gpu_tensor gt;
    REQUIRE(gpu_tensor_upload(g, &gt, &w.t) == KS_OK);
    float *x = frand((size_t)T * K, 2.0f), *nw = frand((size_t)K, 1.0f);
    float *xin = malloc((size_t)T * K * 4), *prod = malloc((size_t)T * rows * 4);
    float *qref = malloc((size_t)T * qd * 4), *kref = malloc(pool * 4), *vref = malloc(pool * 4);
    uint32_t *stt = malloc(16 + (size_t)nb * 4);
    REQUIRE(xin && prod && qref && kref && vref && stt);
    ks_step step = {.pos0 = (uint32_t)pos0};
    memcpy(stt, &step, 16);
    for (int i = 0; i < nb; i++) stt[4 + i] = (uint32_t)((nb - 1 - i + 1) % nb);
    for (int t = 0; t < T; t++) ref_rmsnorm(xin + (size_t)t * K, x + (size_t)t * K, nw, K, 1e-5f);
    ref_matmul(prod, xin, &w.t, T);
    for (size_t i = 0; i < pool; i++) kref[i] = vref[i] = -3.0f;
    REQUIRE(ref_rope_kv(qref, kref, vref, prod, NULL, T, pos0, stt + 4, KS_KV_BLOCK, H, KH, hd,
                        10000.0f, neox));
    float *qgot[2], *kgot[2], *vgot[2];
    for (int one = 0; one < 2; one++) {
      tb tx, tn, tq, tk, tv, ts;
      tb_make16(g, &tx, (size_t)T * K * 4, KS_MEM_DEVICE);
      tb_make16(g, &tn, (size_t)K * 4, KS_MEM_DEVICE);
      tb_make(g, &tq, (size_t)T * qd * 4, KS_MEM_DEVICE);
      tb_make16(g, &tk, pool * 4, KS_MEM_DEVICE);
      tb_make16(g, &tv, pool * 4, KS_MEM_DEVICE);
      /* one step + table region per token (token t alone runs at pos0 + t), 16-byte aligned */
      const size_t region = (16 + (size_t)nb * 4 + 15) & ~(size_t)15;
      tb_make16(g, &ts, region * (size_t)T, KS_MEM_DEVICE);
      tb_poison(g, &tq, POISON_NAN);
      tb_put(g, &tx, x);
      tb_put(g, &tn, nw);
      float *fill = malloc(pool * 4);
      uint32_t *regions = calloc((size_t)T, region);
      REQUIRE(fill && regions);
      for (size_t i = 0; i < pool; i++) fill[i] = -3.0f;
      tb_poison(g, &tk, POISON_NAN);
      tb_poison(g, &tv, POISON_NAN);
      tb_put(g, &tk, fill);
      tb_put(g, &tv, fill);
      free(fill);
      for (int t = 0; t < T; t++) {
        uint32_t *r = (uint32_t *)((char *)regions + region * (size_t)t);
        memcpy(r, stt, 16 + (size_t)nb * 4);
        r[0] = (uint32_t)(pos0 + (one ? t : 0));
      }
      tb_put(g, &ts, regions);
      free(regions);
      ks_rope_opts ro = {.kpool = tb_ref(&tk), .vpool = tb_ref(&tv), .steptab = tb_ref(&ts),
                         .n_head = H, .n_kv_head = KH, .head_dim = hd, .neox = neox,
                         .base = 10000.0f};
      ks_matmul_opts o = {.norm_w = tb_ref(&tn), .eps = 1e-5f, .rope = &ro};
      REQUIRE(gpu_cmd_begin(c) == KS_OK);
      if (!one) {
        op_matmul_ex(c, tb_ref(&tq), tb_ref(&tx), &gt, T, &o);
      } else { /* token by token through the decode build */
        for (int t = 0; t < T; t++) {
          ro.steptab = tb_at(&ts, region * (size_t)t);
          op_matmul_ex(c, tb_at(&tq, (uint64_t)t * qd * 4), tb_at(&tx, (uint64_t)t * K * 4), &gt,
                       1, &o);
        }
      }
      run_cmd(c, "matmul q|k|v + rope");
      qgot[one] = malloc((size_t)T * qd * 4);
      kgot[one] = malloc(pool * 4);
      vgot[one] = malloc(pool * 4);
      REQUIRE(qgot[one] && kgot[one] && vgot[one]);
      tb_get(g, &tq, qgot[one], "rope product q");
      tb_get(g, &tk, kgot[one], "rope product k");
      tb_get(g, &tv, vgot[one], "rope product v");
      tb *all[] = {&tx, &tn, &tq, &tk, &tv, &ts};
      for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) tb_free(g, all[i]);
    }
    char what[112];
    snprintf(what, sizeof what, "matmul %s q|k|v + rope K=%d heads=%d/%d hd=%d %s pos0=%d T=%d",
             ks_type_name(cases[ci].type), K, H, KH, hd, neox ? "neox" : "norm", pos0, T);
    compare(what, qgot[0], qref, (size_t)T * qd, mm_bound(g, cases[ci].type, K));
    compare("  k rows in the pool (others untouched)", kgot[0], kref, pool, mm_bound(g, cases[ci].type, K));
    compare("  v rows in the pool (others untouched)", vgot[0], vref, pool, mm_bound(g, cases[ci].type, K));
    int same = memcmp(qgot[0], qgot[1], (size_t)T * qd * 4) == 0 &&
               memcmp(kgot[0], kgot[1], pool * 4) == 0 && memcmp(vgot[0], vgot[1], pool * 4) == 0;
    printf("  %-58s %s\n", "  batch vs token by token (q, k and v pools)",
           same ? "bit-identical" : "DIFFERENT");
    CHECK_MSG(same, "%s: a token computed alone differs from the batch", what);
    for (int one = 0; one < 2; one++) {
      free(qgot[one]);
      free(kgot[one]);
      free(vgot[one]);
    }
    free(x);
    free(nw);
    free(xin);
    free(prod);
    free(qref);
    free(kref);
    free(vref);
    free(stt);
    gpu_tensor_free(g, &gt);
    hw_free(&w);
  }
}

/* op_rope_kv against the CPU reference: bias, RoPE of q and k, q to its buffer, k and v into the
 * paged pools through a scrambled block table; other pool rows untouched. */
static void test_rope_kv(ks_gpu *g, ks_cmd *c) {
  static const int cases[][6] = {/* n_tok, heads, kv heads, head_dim, neox, pos0 */
                                 {1, 4, 2, 8, 0, 37},
                                 {9, 8, 4, 16, 1, 3},
                                 {37, 2, 2, 64, 0, 0},
                                 {5, 6, 3, 128, 1, 100}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    const int T = cases[ci][0], H = cases[ci][1], KH = cases[ci][2], hd = cases[ci][3];
    const int neox = cases[ci][4], pos0 = cases[ci][5], has_bias = ci % 2 == 1;
    const int qd = H * hd, kvd = KH * hd, width = qd + 2 * kvd;
    const float base = 10000.0f;
    const int nb = (pos0 + T + KS_KV_BLOCK - 1) / KS_KV_BLOCK + 2; /* pool blocks */
    float *qkv = frand((size_t)T * width, 2.0f), *bias = frand((size_t)width, 0.5f);
    uint32_t *table = malloc((size_t)nb * 4);
    REQUIRE(table);
    for (int i = 0; i < nb; i++) table[i] = (uint32_t)((nb - 1 - i + 2) % nb); /* a permutation */
    const size_t pool = (size_t)nb * KS_KV_BLOCK * kvd;
    float *kref = malloc(pool * 4), *vref = malloc(pool * 4), *qref = malloc((size_t)T * qd * 4);
    float *kgot = malloc(pool * 4), *vgot = malloc(pool * 4), *qgot = malloc((size_t)T * qd * 4);
    REQUIRE(kref && vref && qref && kgot && vgot && qgot);
    for (size_t i = 0; i < pool; i++) kref[i] = vref[i] = -3.0f;
    REQUIRE(ref_rope_kv(qref, kref, vref, qkv, has_bias ? bias : NULL, T, pos0, table,
                        KS_KV_BLOCK, H, KH, hd, base, neox));
    tb tq, tqkv, tk, tv, ttab, tst, tbias;
    tb_make(g, &tq, (size_t)T * qd * 4, KS_MEM_DEVICE);
    tb_make(g, &tqkv, (size_t)T * width * 4, KS_MEM_DEVICE);
    tb_make(g, &tk, pool * 4, KS_MEM_DEVICE);
    tb_make(g, &tv, pool * 4, KS_MEM_DEVICE);
    tb_make(g, &ttab, (size_t)nb * 4, KS_MEM_HOST);
    tb_make(g, &tst, sizeof(ks_step), KS_MEM_HOST);
    tb_make(g, &tbias, (size_t)width * 4, KS_MEM_DEVICE);
    tb_poison(g, &tq, POISON_NAN);
    tb_poison(g, &tk, POISON_NAN);
    tb_poison(g, &tv, POISON_NAN);
    float *fill = malloc(pool * 4);
    REQUIRE(fill);
    for (size_t i = 0; i < pool; i++) fill[i] = -3.0f;
    tb_put(g, &tk, fill);
    tb_put(g, &tv, fill);
    free(fill);
    tb_put(g, &tqkv, qkv);
    tb_put(g, &ttab, table);
    ks_step step = {.pos0 = (uint32_t)pos0};
    tb_put(g, &tst, &step);
    tb_put(g, &tbias, bias);
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_rope_kv(c, tb_ref(&tq), tb_ref(&tqkv), tb_ref(&tk), tb_ref(&tv), tb_ref(&ttab),
               tb_ref(&tst), has_bias ? tb_ref(&tbias) : (ks_bref){NULL, 0}, T, H, KH, hd, base,
               neox, NULL);
    run_cmd(c, "rope_kv");
    tb_get(g, &tq, qgot, "rope_kv q");
    tb_get(g, &tk, kgot, "rope_kv k pool");
    tb_get(g, &tv, vgot, "rope_kv v pool");
    char what[112];
    snprintf(what, sizeof what, "rope_kv n_tok=%d heads=%d/%d head_dim=%d %s pos0=%d%s", T, H, KH,
             hd, neox ? "neox" : "norm", pos0, has_bias ? " bias" : "");
    compare(what, qgot, qref, (size_t)T * qd, 1e-5);
    compare("  k rows in the pool (others untouched)", kgot, kref, pool, 1e-5);
    int vsame = memcmp(vgot, vref, pool * 4) == 0;
    printf("  %-58s %s\n", "  v rows in the pool (others untouched)", vsame ? "exact" : "DIFFERENT");
    CHECK_MSG(vsame, "%s: v pool differs", what);
    tb *all[] = {&tq, &tqkv, &tk, &tv, &ttab, &tst, &tbias};
    for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) tb_free(g, all[i]);
    free(qkv);
    free(bias);
    free(table);
    free(kref);
    free(vref);
    free(qref);
    free(kgot);
    free(vgot);
    free(qgot);
  }
}

/* ---------------------------------------------------------------- kv_write + attention */

static void test_attention(ks_gpu *g, ks_cmd *c, int n_head, int n_kv, int hd, int pos0, int T,
                           int invariance) {
  const int P = pos0 + T, kvd = n_kv * hd, qd = n_head * hd;
  const int nb_log = (P + KS_KV_BLOCK - 1) / KS_KV_BLOCK, n_blocks = nb_log + 3;
  const int stride = P + 5;
  /* scrambled block table: a random permutation of the pool's blocks */
  uint32_t *perm = malloc((size_t)n_blocks * 4);
  REQUIRE(perm);
  for (int i = 0; i < n_blocks; i++) perm[i] = (uint32_t)i;
  for (int i = n_blocks - 1; i > 0; i--) {
    int j = (int)(ks_randu() % (uint32_t)(i + 1));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  float *K = frand((size_t)P * kvd, 1.0f), *V = frand((size_t)P * kvd, 1.0f);
  float *q = frand((size_t)T * qd, 1.0f);
  float *ref = malloc((size_t)T * qd * 4), *ref_probs = malloc((size_t)n_head * P * 4);
  float *got = malloc((size_t)T * qd * 4), *probs = malloc((size_t)n_head * stride * 4);
  REQUIRE(ref && ref_probs && got && probs);
  for (int i = 0; i < T; i++)
    ref_attention(ref + (size_t)i * qd, i == T - 1 ? ref_probs : NULL, q + (size_t)i * qd, K, V,
                  pos0 + i + 1, kvd, n_head, n_kv, hd);

  const uint64_t pool = (uint64_t)n_blocks * KS_KV_BLOCK * kvd * 4;
  tb tk, tv, tks, tvs, tq, to, tp, ttab, tst;
  tb_make16(g, &tk, pool, KS_MEM_DEVICE);
  tb_make16(g, &tv, pool, KS_MEM_DEVICE);
  tb_make(g, &tks, (size_t)P * kvd * 4, KS_MEM_DEVICE);
  tb_make(g, &tvs, (size_t)P * kvd * 4, KS_MEM_DEVICE);
  tb_make(g, &tq, (size_t)T * qd * 4, KS_MEM_DEVICE);
  tb_make(g, &to, (size_t)T * qd * 4, KS_MEM_DEVICE);
  tb_make(g, &tp, (size_t)n_head * stride * 4, KS_MEM_HOST);
  tb_make(g, &ttab, (size_t)nb_log * 4, KS_MEM_HOST);
  tb_make(g, &tst, 2 * sizeof(ks_step), KS_MEM_HOST);
  tb_poison(g, &tk, POISON_NAN);
  tb_poison(g, &tv, POISON_NAN);
  tb_poison(g, &to, POISON_NAN);
  tb_poison(g, &tp, POISON_BEEF);
  tb_put(g, &tks, K);
  tb_put(g, &tvs, V);
  tb_put(g, &tq, q);
  tb_put(g, &ttab, perm);
  ks_step steps[2] = {{.pos0 = 0}, {.pos0 = (uint32_t)pos0}};
  tb_put(g, &tst, steps);

  /* the cached prefix (positions 0..pos0-1), then this batch's rows at step.pos0 */
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  ks_bref s0 = tb_ref(&tst), s1 = tb_at(&tst, sizeof(ks_step));
  op_kv_write(c, tb_ref(&tk), tb_ref(&tks), tb_ref(&ttab), s0, pos0, kvd);
  op_kv_write(c, tb_ref(&tv), tb_ref(&tvs), tb_ref(&ttab), s0, pos0, kvd);
  op_kv_write(c, tb_ref(&tk), tb_at(&tks, (uint64_t)pos0 * kvd * 4), tb_ref(&ttab), s1, T, kvd);
  op_kv_write(c, tb_ref(&tv), tb_at(&tvs, (uint64_t)pos0 * kvd * 4), tb_ref(&ttab), s1, T, kvd);
  gpu_cmd_barrier(c);
  op_attention(c, tb_ref(&to), tb_ref(&tq), tb_ref(&tk), tb_ref(&tv), tb_ref(&ttab), s1, T, n_head,
               n_kv, hd, tb_ref(&tp), stride);
  run_cmd(c, "kv_write + attention");

  /* the pools: each position's row where the table puts it, every other row still poison */
  float *pk = malloc(pool), *pv = malloc(pool);
  REQUIRE(pk && pv);
  tb_get(g, &tk, pk, "kv_write K");
  tb_get(g, &tv, pv, "kv_write V");
  int bad = 0, stray = 0;
  char *used = calloc((size_t)n_blocks * KS_KV_BLOCK, 1);
  REQUIRE(used);
  for (int j = 0; j < P; j++) {
    size_t row = (size_t)perm[j / KS_KV_BLOCK] * KS_KV_BLOCK + j % KS_KV_BLOCK;
    used[row] = 1;
    bad += memcmp(pk + row * kvd, K + (size_t)j * kvd, (size_t)kvd * 4) != 0;
    bad += memcmp(pv + row * kvd, V + (size_t)j * kvd, (size_t)kvd * 4) != 0;
  }
  for (size_t row = 0; row < (size_t)n_blocks * KS_KV_BLOCK; row++)
    if (!used[row])
      for (int e = 0; e < kvd; e++) {
        uint32_t wk, wv;
        memcpy(&wk, pk + row * kvd + e, 4);
        memcpy(&wv, pv + row * kvd + e, 4);
        stray += (wk != POISON_NAN) + (wv != POISON_NAN);
      }
  char what[128];
  snprintf(what, sizeof what, "kv_write kv_dim=%d positions=%d (scrambled table)", kvd, P);
  printf("  %-58s %s\n", what, bad || stray ? "WRONG" : "exact");
  CHECK_MSG(bad == 0 && stray == 0, "%s: %d rows wrong, %d stray words", what, bad, stray);
  free(used);
  free(pk);
  free(pv);

  tb_get(g, &to, got, "attention");
  tb_get(g, &tp, probs, "attention probs");
  snprintf(what, sizeof what, "attention heads=%d/%d head_dim=%d pos0=%d n_tok=%d", n_head, n_kv,
           hd, pos0, T);
  compare(what, got, ref, (size_t)T * qd, 1e-5);
  double pmax = 0;
  int pstray = 0;
  for (int h = 0; h < n_head; h++) {
    for (int j = 0; j < P; j++) {
      double d = fabs((double)probs[(size_t)h * stride + j] - ref_probs[(size_t)h * P + j]);
      if (!(d <= pmax)) pmax = d; /* NaN propagates */
    }
    for (int j = P; j < stride; j++) {
      uint32_t wv;
      memcpy(&wv, &probs[(size_t)h * stride + j], 4);
      pstray += wv != POISON_BEEF;
    }
  }
  printf("  %-58s max abs %.2e  (bound 1e-05)\n", "  probs of the last token", pmax);
  CHECK_MSG(pmax <= 1e-5, "%s: probs differ from ref_attention by %.3e", what, pmax);
  CHECK_MSG(pstray == 0, "%s: %d probs written past position p", what, pstray);

  if (invariance) {
    /* Decode-style: one query row per submission, the recorded command replayed after the host
     * rewrites q and step.pos0. Every row must equal the batched row bit for bit. */
    ks_cmd *c1;
    REQUIRE(gpu_cmd_create(g, &c1) == KS_OK);
    tb tq1, to1, tp1, ts1, tpart;
    tb_make(g, &tpart, gpu_attention_part_bytes(n_head, hd, stride), KS_MEM_DEVICE);
    tb_make(g, &tq1, (size_t)qd * 4, KS_MEM_DEVICE);
    tb_make(g, &to1, (size_t)qd * 4, KS_MEM_DEVICE);
    tb_make(g, &tp1, (size_t)n_head * stride * 4, KS_MEM_HOST);
    tb_make(g, &ts1, sizeof(ks_step), KS_MEM_HOST);
    tb_poison(g, &tp1, POISON_BEEF);
    REQUIRE(gpu_cmd_begin(c1) == KS_OK);
    /* split over the context (one workgroup per 64-key chunk, then a fold) */
    op_attention_ex(c1, tb_ref(&to1), tb_ref(&tq1), tb_ref(&tk), tb_ref(&tv), tb_ref(&ttab),
                    tb_ref(&ts1), 1, n_head, n_kv, hd, tb_ref(&tp1), stride, tb_ref(&tpart),
                    stride);
    REQUIRE(gpu_cmd_end(c1) == KS_OK);
    float *row = malloc((size_t)qd * 4), *probs1 = malloc((size_t)n_head * stride * 4);
    REQUIRE(row && probs1);
    int diff = 0;
    for (int i = 0; i < T; i++) {
      ks_step st = {.pos0 = (uint32_t)(pos0 + i)};
      tb_put(g, &ts1, &st);
      REQUIRE(gpu_upload(g, &tq1.b, tq1.off, q + (size_t)i * qd, (size_t)qd * 4) == KS_OK);
      tb_poison(g, &to1, POISON_NAN);
      REQUIRE(gpu_cmd_submit(c1) == KS_OK);
      REQUIRE(gpu_cmd_wait(c1) == KS_OK);
      tb_get(g, &to1, row, "attention one token");
      diff += memcmp(row, got + (size_t)i * qd, (size_t)qd * 4) != 0;
    }
    tb_get(g, &tp1, probs1, "attention one token probs");
    int pdiff = memcmp(probs1, probs, (size_t)n_head * stride * 4) != 0;
    printf("  %-58s %s\n", "  batch invariance: batch vs replayed split decode steps",
           diff || pdiff ? "DIFFERENT" : "bit-identical");
    CHECK_MSG(diff == 0 && pdiff == 0, "%s: %d rows (probs: %d) differ between batch and replay",
              what, diff, pdiff);
    free(row);
    free(probs1);
    tb_free(g, &tq1);
    tb_free(g, &to1);
    tb_free(g, &tp1);
    tb_free(g, &ts1);
    tb_free(g, &tpart);
    gpu_cmd_destroy(c1);
  }

  tb *all[] = {&tk, &tv, &tks, &tvs, &tq, &to, &tp, &ttab, &tst};
  for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) tb_free(g, all[i]);
  free(perm);
  free(K);
  free(V);
  free(q);
  free(ref);
  free(ref_probs);
  free(got);
  free(probs);
}

/* ---------------------------------------------------------------- plumbing */

/* More dispatches than one descriptor pool holds (256 sets), replayed twice. */
static void test_many_dispatches(ks_gpu *g, ks_cmd *c) {
  const int n = 37, reps = 700;
  float *y = malloc(n * 4), *x = calloc(n, 4), *got = malloc(n * 4), *ref = malloc(n * 4);
  REQUIRE(y && x && got && ref);
  for (int i = 0; i < n; i++) y[i] = (float)(i % 5) - 2.0f; /* small integers: sums are exact */
  tb tx, ty;
  tb_make(g, &tx, n * 4, KS_MEM_DEVICE);
  tb_make(g, &ty, n * 4, KS_MEM_DEVICE);
  tb_put(g, &tx, x);
  tb_put(g, &ty, y);
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  int ts0 = gpu_cmd_timestamp(c);
  for (int r = 0; r < reps; r++) {
    op_add(c, tb_ref(&tx), tb_ref(&ty), n);
    gpu_cmd_barrier(c);
  }
  int ts1 = gpu_cmd_timestamp(c);
  REQUIRE(gpu_cmd_end(c) == KS_OK);
  for (int sub = 1; sub <= 2; sub++) {
    REQUIRE(gpu_cmd_submit(c) == KS_OK);
    REQUIRE(gpu_cmd_wait(c) == KS_OK);
    REQUIRE(gpu_download(g, &tx.b, tx.off, got, n * 4) == KS_OK);
    for (int i = 0; i < n; i++) ref[i] = y[i] * reps * sub;
    char what[96];
    snprintf(what, sizeof what, "%d dispatches in one command buffer, submission %d", reps, sub);
    compare(what, got, ref, n, 0.0);
  }
  if (gpu_info(g)->timestamps) {
    double ns[2] = {0, 0};
    CHECK(ts0 == 0 && ts1 == 1);
    CHECK(gpu_cmd_timestamps(c, ns, 2) == KS_OK);
    printf("  %-58s %.3f ms\n", "  GPU time of those dispatches (timestamps)", ns[1] / 1e6);
    CHECK(ns[1] >= 0);
  }
  tb_free(g, &tx);
  tb_free(g, &ty);
  free(x);
  free(y);
  free(got);
  free(ref);
}

/* Bad shapes and ranges are reported by gpu_cmd_end with a message, not executed. */
static void test_errors(ks_gpu *g, ks_cmd *c, int n_dev) {
  ks_gpu *none = NULL;
  ks_status st = gpu_create(&none, n_dev);
  CHECK(st == KS_ERR_ARG && none == NULL);
  CHECK_MSG(strstr(ks_last_error(), "present") != NULL, "message: %s", ks_last_error());
  printf("  %-58s %s\n", "device index out of range:", ks_last_error());

  tb tx;
  tb_make(g, &tx, 64, KS_MEM_DEVICE);
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_add(c, tb_ref(&tx), tb_ref(&tx), 1000); /* 4000 bytes of a 64-byte region */
  st = gpu_cmd_end(c);
  CHECK(st == KS_ERR_ARG);
  printf("  %-58s %s\n", "region outside its buffer:", ks_last_error());
  CHECK(gpu_cmd_submit(c) != KS_OK);

  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_attention(c, tb_ref(&tx), tb_ref(&tx), tb_ref(&tx), tb_ref(&tx), tb_ref(&tx), tb_ref(&tx), 1,
               3, 2, 8, ks_ref(NULL, 0), 0);
  CHECK(gpu_cmd_end(c) == KS_ERR_UNSUPPORTED);
  printf("  %-58s %s\n", "n_head not a multiple of n_kv_head:", ks_last_error());

  /* the same command buffer still works after a failed recording */
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_copy(c, tb_ref(&tx), tb_at(&tx, 32), 32);
  CHECK(gpu_cmd_end(c) == KS_OK);
  CHECK(gpu_cmd_submit(c) == KS_OK && gpu_cmd_wait(c) == KS_OK);
  tb_free(g, &tx);

  hw w;
  hw_make(&w, KS_TYPE_F32, 8, 2);
  w.t.type = (ks_type)10; /* Q2_K: no kernel */
  ks_gpu_tensor gt;
  CHECK(gpu_tensor_upload(g, &gt, &w.t) == KS_ERR_UNSUPPORTED);
  printf("  %-58s %s\n", "unsupported weight type:", ks_last_error());
  hw_free(&w);
}

static void test_device(int d, int n_dev) {
  ks_gpu *g = ks_test_gpu(d);
  const ks_gpu_info *I = gpu_info(g);
  printf("== device %d: %s (%s), subgroup %u, storage offset alignment %llu, robust access %s\n", d,
         I->name, I->driver, I->subgroup_size, (unsigned long long)I->min_storage_align,
         I->robust_access ? "on" : "off");
  /* a second context on the same device whose weights are cut into small slices */
  setenv("KVSCOPE_MAX_BUFFER_RANGE", "4096", 1);
  ks_gpu *g2 = ks_test_gpu(d);
  unsetenv("KVSCOPE_MAX_BUFFER_RANGE");
  /* and one whose matrix kernels sum through shared memory instead of subgroup shuffles */
  setenv("KVSCOPE_NO_SUBGROUP", "1", 1);
  ks_gpu *g3 = ks_test_gpu(d);
  unsetenv("KVSCOPE_NO_SUBGROUP");
  ks_cmd *c, *c2, *c3;
  REQUIRE(gpu_cmd_create(g, &c) == KS_OK);
  REQUIRE(gpu_cmd_create(g2, &c2) == KS_OK);
  REQUIRE(gpu_cmd_create(g3, &c3) == KS_OK);
  CHECK(!gpu_matmul_subgroup(g3));
  /* the cache's numerics tag: one per device, the same for both builds (same bits) */
  CHECK(gpu_numerics_id(g) == gpu_numerics_id(g2) && gpu_numerics_id(g) == gpu_numerics_id(g3));
  if (!gpu_matmul_subgroup(g))
    printf("  (no subgroup shuffles on this device: both contexts use the shared-memory sums)\n");

  double t0 = ks_now_sec();
  test_elementwise(g, c);
  test_rmsnorm(g, c);
  test_embed(g, c);
  test_matmul(g, c);
  test_slices(g, c, g2, c2);
  test_matmul_fused(g, c, g3, c3);
  test_matmul_rope(g, c);
  test_mma_peak(g, c);
  test_rope(g, c);
  test_rope_kv(g, c);
  /* heads/kv heads/head_dim, pos0, n_tok: stories260K-like GQA, bigger heads, head_dim 256,
   * decode over several 64-key chunks, and a batch of 37 checked against replayed decode */
  test_attention(g, c, 8, 4, 8, 0, 37, 1);
  test_attention(g, c, 8, 2, 64, 50, 5, 0);
  test_attention(g, c, 2, 1, 128, 130, 1, 0);
  test_attention(g, c, 4, 2, 256, 20, 7, 0);
  test_attention(g, c, 6, 6, 72, 100, 37, 1);
  test_many_dispatches(g, c);
  test_errors(g, c, n_dev);
  printf("  device %d: %.1f s\n", d, ks_now_sec() - t0);

  gpu_cmd_destroy(c);
  gpu_cmd_destroy(c2);
  gpu_cmd_destroy(c3);
  CHECK_MSG(gpu_live_allocations(g3) == 0, "%lld allocations alive after teardown (no subgroup)",
            (long long)gpu_live_allocations(g3));
  gpu_destroy(g3);
  CHECK_MSG(gpu_live_allocations(g) == 0, "%lld allocations alive after teardown",
            (long long)gpu_live_allocations(g));
  CHECK_MSG(gpu_live_allocations(g2) == 0, "%lld allocations alive after teardown (sliced)",
            (long long)gpu_live_allocations(g2));
  gpu_destroy(g2);
  gpu_destroy(g);
}

int main(void) {
  ks_test_seed();
  /* Validation on by default here: a message from the layer fails the test. */
  setenv("KVSCOPE_VALIDATION", "1", 0);
  int n = gpu_count_devices();
  if (n <= 0) {
    const char *req = getenv("KVSCOPE_REQUIRE_GPU");
    if (req && atoi(req)) {
      fprintf(stderr, "no Vulkan device but KVSCOPE_REQUIRE_GPU=1: %s\n", ks_last_error());
      return 1;
    }
    ks_test_skip("no Vulkan device: %s", ks_last_error());
  }
  for (int d = 0; d < n; d++) test_device(d, n);
  uint64_t msgs = gpu_validation_count();
  printf("validation-layer messages: %llu\n", (unsigned long long)msgs);
  CHECK(msgs == 0);
  return ks_test_done("test_gpu_ops");
}
