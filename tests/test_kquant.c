/* test_kquant.c — the K-quants (Q4_K, Q5_K, Q6_K), Q5_0 and Q5_1 (llama.cpp's fallback for rows
 * that are not a multiple of 256) and in-kernel BF16: CPU decoding against
 * blocks assembled by hand from the format's description, the quantiser's error, and on every
 * Vulkan device the matrix and embedding kernels against the CPU reference, plus op_add_bias and
 * op_rope_scaled (the qwen2 biases and Llama 3 rope scaling).
 *
 * Bounds (max |gpu - ref| / max |ref| over the output; NMSE printed beside it):
 *   embed (every type, one slice or many): bit-identical to ks_dequant_row.
 *   matmul vs ref_matmul (dequantise each row with ks_dequant_row, multiply, f32 sum in index
 *     order): 1e-5. The dequantised weights are the same floats on both sides (the kernels use
 *     ks_dequant_row's expressions), so only the order of the f32 sums differs; and vs the same
 *     dequantised weights multiplied in double precision: 1e-5 as well (both 1e-4 on the
 *     cooperative-matrix kernels, where both references round the operands to f16 too).
 *   batch invariance: 37 tokens at once vs one token at a time, and one slice vs many slices
 *     (KVSCOPE_MAX_BUFFER_RANGE): bit-identical.
 *   add_bias: bit-identical (one f32 add). rope_scaled: 1e-5 (as op_rope), and with no factors
 *     the same bits as op_rope.
 *   quantiser (ks_quant_row then ks_dequant_row, uniform data): NMSE under 0.01 (Q4_K), 0.003
 *     (Q5_K), 0.001 (Q6_K), 0.003 (Q5_0, Q5_1), and per element 0.1 / 0.06 / 0.025 / 0.07 /
 *     0.04 of the block's max |x| (derived at test_quantiser). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "gputest.h"
#include "quant.h"
#include "ref_cpu.h"
#include "testutil.h"

/* ---------------------------------------------------------------- CPU: hand-made blocks */

static void put16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)(v & 0xff);
  p[1] = (unsigned char)(v >> 8);
}

/* Sets the 6-bit scale/min pair of sub-block s in the 12 scale bytes, bit by bit as the format
 * describes: sub-blocks 0-3 keep all 6 bits in bytes s (scale) and s+4 (min); sub-blocks 4-7 keep
 * their low 4 bits in the nibbles of byte s+4 (scale low, min high) and their top 2 bits in the
 * top 2 bits of bytes s-4 (scale) and s (min). */
static void set_scale_min(unsigned char *b, int s, int sc, int m) {
  if (s < 4) {
    b[s] = (unsigned char)((b[s] & 0xc0) | sc);
    b[s + 4] = (unsigned char)((b[s + 4] & 0xc0) | m);
  } else {
    b[s + 4] = (unsigned char)((sc & 15) | ((m & 15) << 4));
    b[s - 4] = (unsigned char)((b[s - 4] & 0x3f) | ((sc >> 4) << 6));
    b[s] = (unsigned char)((b[s] & 0x3f) | ((m >> 4) << 6));
  }
}

static void test_q4k_q5k_hand(int five) {
  const char *tn = five ? "Q5_K" : "Q4_K";
  ks_type t = five ? KS_TYPE_Q5_K : KS_TYPE_Q4_K;
  const size_t bb = five ? 176 : 144;
  CHECK(ks_type_block_bytes(t) == bb && ks_type_block_elems(t) == 256 && ks_type_known(t));
  unsigned char blk[2 * 176];
  float want[512];
  for (int b = 0; b < 2; b++) {
    unsigned char *p = blk + b * bb;
    memset(p, 0, bb);
    /* d = 0.5 or 0.125, dmin = 0.25 or 2: powers of two keep every expected value exact */
    float d = b ? 0.125f : 0.5f, dmin = b ? 2.0f : 0.25f;
    put16(p, ks_f32_to_f16(d));
    put16(p + 2, ks_f32_to_f16(dmin));
    int sc[8], m[8];
    for (int s = 0; s < 8; s++) {
      sc[s] = (int)(ks_randu() % 64);
      m[s] = (int)(ks_randu() % 64);
    }
    sc[5] = 63; /* both top bits set */
    m[6] = 48;
    for (int s = 0; s < 8; s++) set_scale_min(p + 4, s, sc[s], m[s]);
    unsigned char *qh = five ? p + 16 : NULL, *qs = p + (five ? 48 : 16);
    for (int i = 0; i < 128; i++) qs[i] = (unsigned char)ks_randu();
    if (qh)
      for (int i = 0; i < 32; i++) qh[i] = (unsigned char)ks_randu();
    for (int i = 0; i < 256; i++) {
      /* element i: 64-element chunk c, position r in it; the first 32 of a chunk are the low
       * nibbles of its 32 bytes, the next 32 the high nibbles; sub-block 2c + (r >= 32) */
      int c = i / 64, r = i % 64, sub = 2 * c + r / 32;
      int byte = qs[32 * c + r % 32];
      int q = r < 32 ? byte & 15 : byte >> 4;
      if (qh) q += ((qh[r % 32] >> sub) & 1) * 16;
      want[b * 256 + i] = d * sc[sub] * q - dmin * m[sub];
    }
  }
  float got[512];
  ks_dequant_row(t, blk, got, 512);
  int bad = 0;
  for (int i = 0; i < 512; i++) bad += got[i] != want[i];
  CHECK_MSG(bad == 0, "%s: %d of 512 hand-decoded values differ", tn, bad);
  printf("  %-58s %s\n", five ? "Q5_K hand-made blocks" : "Q4_K hand-made blocks",
         bad ? "WRONG" : "exact");
}

static void test_q6k_hand(void) {
  CHECK(ks_type_block_bytes(KS_TYPE_Q6_K) == 210 && ks_type_block_elems(KS_TYPE_Q6_K) == 256 &&
        ks_type_known(KS_TYPE_Q6_K));
  unsigned char blk[420];
  float want[512];
  for (int b = 0; b < 2; b++) {
    unsigned char *p = blk + b * 210;
    for (int i = 0; i < 208; i++) p[i] = (unsigned char)ks_randu();
    float d = b ? 0.0625f : 0.5f;
    put16(p + 208, ks_f32_to_f16(d));
    p[192] = 0x80; /* scale -128 */
    p[193] = 0x7f; /* +127 */
    const unsigned char *ql = p, *qh = p + 128;
    const signed char *sc = (const signed char *)(p + 192);
    for (int i = 0; i < 256; i++) {
      /* halves of 128; in a half, group g of 32: low nibble (g = 0, 1) or high nibble (g = 2, 3)
       * of ql byte 64*half + 32*(g odd) + l; 2 high bits from qh byte 32*half + l at bit 2g;
       * scale per 16 elements: byte 8*half + 2g + l/16 */
      int half = i / 128, g = (i % 128) / 32, l = i % 32;
      int lo = ql[64 * half + 32 * (g % 2) + l];
      lo = g < 2 ? lo % 16 : lo / 16;
      int hi = (qh[32 * half + l] >> (2 * g)) % 4;
      int q = lo + 16 * hi - 32;
      want[b * 256 + i] = d * sc[8 * half + 2 * g + l / 16] * q;
    }
  }
  float got[512];
  ks_dequant_row(KS_TYPE_Q6_K, blk, got, 512);
  int bad = 0;
  for (int i = 0; i < 512; i++) bad += got[i] != want[i];
  CHECK_MSG(bad == 0, "Q6_K: %d of 512 hand-decoded values differ", bad);
  printf("  %-58s %s\n", "Q6_K hand-made blocks", bad ? "WRONG" : "exact");
}

static void test_q5_hand(int has_min) {
  ks_type t = has_min ? KS_TYPE_Q5_1 : KS_TYPE_Q5_0;
  const size_t bb = has_min ? 24 : 22;
  CHECK(ks_type_block_bytes(t) == bb && ks_type_block_elems(t) == 32 && ks_type_known(t));
  unsigned char blk[3 * 24];
  float want[96];
  for (int b = 0; b < 3; b++) { /* three blocks: Q5_0's start at offsets 0, 22, 44 (even) */
    unsigned char *p = blk + b * bb;
    for (size_t i = 0; i < bb; i++) p[i] = (unsigned char)ks_randu();
    float d = b == 1 ? -0.25f : 0.5f, m = b == 2 ? -3.0f : 1.5f;
    put16(p, ks_f32_to_f16(d));
    if (has_min) put16(p + 2, ks_f32_to_f16(m));
    const unsigned char *qh = p + (has_min ? 4 : 2), *qs = qh + 4;
    for (int j = 0; j < 32; j++) {
      /* element j: nibble of byte j % 16 (low for j < 16), fifth bit = bit j of the 32-bit
       * little-endian qh */
      int lo = j < 16 ? qs[j] % 16 : qs[j - 16] / 16;
      int hi = (qh[j / 8] >> (j % 8)) & 1;
      int q = lo + 16 * hi;
      want[b * 32 + j] = has_min ? q * d + m : (q - 16) * d;
    }
  }
  float got[96];
  ks_dequant_row(t, blk, got, 96);
  int bad = 0;
  for (int i = 0; i < 96; i++) bad += got[i] != want[i];
  CHECK_MSG(bad == 0, "%s: %d of 96 hand-decoded values differ", ks_type_name(t), bad);
  printf("  %-58s %s\n", has_min ? "Q5_1 hand-made blocks" : "Q5_0 hand-made blocks",
         bad ? "WRONG" : "exact");
}

/* ks_quant_row then ks_dequant_row, on uniform data (some blocks all positive, some with an
 * outlier, magnitudes 1e-2 .. 1e3): the NMSE, and each element's error over its super-block's
 * max |x| = A. Q4_K/Q5_K with L = 15/31 levels: half a step (range/L/2 <= A/L) + the top code
 * falling short when the 6-bit scale rounds down (L * super-scale/2 = A/63) + the 6-bit min's
 * rounding (A/126): 0.091 A / 0.056 A, bounds 0.1 / 0.06. Q6_K: half a step (A/62) + 31 times
 * half the 8-bit scale step (A/254) = 0.020 A, bound 0.025. Q5_0 (per 32, a = block max |x|):
 * the largest value is code -16 exactly, its opposite would be +16 and clamps to 15, one step
 * (a/16): bound 0.07 a. Q5_1: half a step of range/31 (a/31) + the f16 rounding of the min: bound
 * 0.04 a. (A >= a, so the Q5 bounds hold against A as well.) */
static void test_quantiser(void) {
  enum { N = 8192 };
  static float x[N], y[N];
  static unsigned char q[N];
  const ks_type types[] = {KS_TYPE_Q4_K, KS_TYPE_Q5_K, KS_TYPE_Q6_K, KS_TYPE_Q5_0, KS_TYPE_Q5_1};
  const double nmse_bound[] = {0.01, 0.003, 0.001, 0.003, 0.003};
  const double elem_bound[] = {0.1, 0.06, 0.025, 0.07, 0.04};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(types); ti++) {
    ks_type t = types[ti];
    double worst_nmse = 0, worst_elem = 0;
    for (int rep = 0; rep < 12; rep++) {
      float scale = rep < 6 ? 1.0f : powf(10.0f, (float)(rep - 8)); /* 1e-2 .. 1e3 */
      ks_fill_rand(x, N, scale);
      if (rep % 3 == 1)
        for (int i = 0; i < N; i++) x[i] = fabsf(x[i]) + 0.5f * scale; /* all positive */
      if (rep % 4 == 2) x[ks_randu() % N] *= 6.0f;                        /* an outlier */
      memset(q, 0xa5, sizeof q);
      ks_quant_row(t, x, q, N);
      ks_dequant_row(t, q, y, N);
      double se = 0, sx = 0;
      for (int b = 0; b < N / 256; b++) {
        float amax = 0;
        for (int i = 0; i < 256; i++) amax = fmaxf(amax, fabsf(x[b * 256 + i]));
        for (int i = 0; i < 256; i++) {
          double e = fabs((double)y[b * 256 + i] - x[b * 256 + i]);
          if (e / amax > worst_elem) worst_elem = e / amax;
        }
      }
      for (int i = 0; i < N; i++) {
        se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        sx += (double)x[i] * x[i];
      }
      if (se / sx > worst_nmse) worst_nmse = se / sx;
    }
    char what[96];
    snprintf(what, sizeof what, "%s quantiser round trip", ks_type_name(t));
    printf("  %-58s nmse %.2e (bound %.0e), max err/amax %.3f (bound %.3f)\n", what, worst_nmse,
           nmse_bound[ti], worst_elem, elem_bound[ti]);
    CHECK_MSG(worst_nmse < nmse_bound[ti], "%s: NMSE %g", what, worst_nmse);
    CHECK_MSG(worst_elem < elem_bound[ti], "%s: element error %g of the block max", what,
              worst_elem);
    /* zeros stay zeros */
    float z[512] = {0};
    ks_quant_row(t, z, q, 512);
    ks_dequant_row(t, q, y, 512);
    int nz = 0;
    for (int i = 0; i < 512; i++) nz += y[i] != 0.0f;
    CHECK_MSG(nz == 0, "%s: an all-zero row decodes to %d non-zeros", what, nz);
  }
}

/* ---------------------------------------------------------------- GPU helpers */

static const uint64_t k_offsets[] = {4, 20, 260, 8, 44, 12, 0, 36};
static unsigned g_off_i;

typedef struct {
  ks_buf b;
  uint64_t off, bytes;
} reg; /* `bytes` at byte `off` of a buffer with 64 guard bytes after it */

#define GUARD 64
#define POISON 0x7fc00000u

static void reg_make(ks_gpu *g, reg *r, uint64_t bytes, ks_mem kind) {
  r->off = k_offsets[g_off_i++ % KS_ARRAY_LEN(k_offsets)];
  r->bytes = bytes;
  REQUIRE(gpu_buf_create(g, &r->b, r->off + bytes + GUARD, kind) == KS_OK);
  REQUIRE(gpu_fill_u32(g, &r->b, 0, r->b.size & ~3ull, POISON) == KS_OK);
}
/* matrix inputs start at a multiple of 16 bytes (op_matmul_ex reads rows as vec4) */
static void reg_make16(ks_gpu *g, reg *r, uint64_t bytes, ks_mem kind) {
  r->off = (k_offsets[g_off_i++ % KS_ARRAY_LEN(k_offsets)] + 15) & ~15ull;
  r->bytes = bytes;
  REQUIRE(gpu_buf_create(g, &r->b, r->off + bytes + GUARD, kind) == KS_OK);
  REQUIRE(gpu_fill_u32(g, &r->b, 0, r->b.size & ~3ull, POISON) == KS_OK);
}
static ks_bref reg_at(const reg *r, uint64_t byte) { return ks_ref(&r->b, r->off + byte); }
static void reg_put(ks_gpu *g, reg *r, const void *data) {
  REQUIRE(gpu_upload(g, &r->b, r->off, data, r->bytes) == KS_OK);
}
/* Reads the region; checks the poison around it is intact. */
static void reg_get(ks_gpu *g, reg *r, void *out, const char *what) {
  uint64_t n = r->b.size & ~3ull;
  uint32_t *all = malloc(n);
  REQUIRE(all);
  REQUIRE(gpu_download(g, &r->b, 0, all, n) == KS_OK);
  int bad = 0;
  for (uint64_t i = 0; i < r->off / 4; i++) bad += all[i] != POISON;
  for (uint64_t i = (r->off + r->bytes + 3) / 4; i < n / 4; i++) bad += all[i] != POISON;
  CHECK_MSG(bad == 0, "%s: %d word(s) written outside the output region", what, bad);
  memcpy(out, (char *)all + r->off, r->bytes);
  free(all);
}

static void run(ks_cmd *c, const char *what) {
  ks_status st = gpu_cmd_end(c);
  CHECK_MSG(st == KS_OK, "%s: recording failed: %s", what, ks_last_error());
  if (st != KS_OK) return;
  REQUIRE(gpu_cmd_submit(c) == KS_OK);
  REQUIRE(gpu_cmd_wait(c) == KS_OK);
}

static double compare(const char *what, const float *got, const float *ref, size_t n,
                      double bound) {
  double maxref = 0, maxdiff = 0, se = 0, sr = 0;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(got[i])) {
      bad++;
      continue;
    }
    double d = fabs((double)got[i] - ref[i]);
    maxdiff = fmax(maxdiff, d);
    maxref = fmax(maxref, fabs((double)ref[i]));
    se += d * d;
    sr += (double)ref[i] * ref[i];
  }
  double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
  printf("  %-58s max rel %.2e  nmse %.2e  (bound %.0e)\n", what, rel, sr > 0 ? se / sr : se,
         bound);
  CHECK_MSG(bad == 0, "%s: %zu non-finite outputs", what, bad);
  CHECK_MSG(rel <= bound, "%s: max relative error %.3e over the bound %.0e", what, rel, bound);
  return rel;
}

static float *frand(size_t n, float scale) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  REQUIRE(x);
  ks_fill_rand(x, n, scale);
  return x;
}

/* A host matrix of N rows of K values, stored as `type`. */
static ks_tensor make_weights(ks_type type, int64_t K, int64_t N) {
  size_t rb = ks_type_row_bytes(type, K);
  REQUIRE(rb > 0);
  unsigned char *data = malloc(rb * (size_t)N);
  float *row = malloc((size_t)K * sizeof *row);
  REQUIRE(data && row);
  for (int64_t r = 0; r < N; r++) {
    ks_fill_rand(row, (size_t)K, 1.0f);
    if (r % 5 == 3)
      for (int64_t j = 0; j < K; j++) row[j] += 0.7f; /* blocks with a positive minimum */
    ks_quant_row(type, row, data + (size_t)r * rb, K);
  }
  free(row);
  ks_tensor t = {.type = type, .ne = {K, N}, .data = data, .nbytes = rb * (size_t)N};
  return t;
}

static const ks_type k_types[] = {KS_TYPE_Q4_K, KS_TYPE_Q5_K, KS_TYPE_Q6_K,
                                  KS_TYPE_Q5_0, KS_TYPE_Q5_1, KS_TYPE_BF16};

/* ---------------------------------------------------------------- GPU: matmul */

/* Runs op_matmul over T tokens, and with `single` also one token at a time into a second
 * output. Returns the (T, N) outputs (caller frees). */
static float *gpu_matmul(ks_gpu *g, ks_cmd *c, const ks_tensor *w, const float *x, int T,
                         float **single, int *n_slices) {
  ks_gpu_tensor gt;
  REQUIRE(gpu_tensor_upload(g, &gt, w) == KS_OK);
  CHECK(gt.type == w->type); /* kept as stored: no widened copy */
  if (n_slices) *n_slices = gt.n_slices;
  int64_t K = w->ne[0], N = w->ne[1];
  reg rx, ro, r1;
  reg_make16(g, &rx, (uint64_t)T * K * 4, KS_MEM_DEVICE);
  reg_make(g, &ro, (uint64_t)T * N * 4, KS_MEM_DEVICE);
  reg_put(g, &rx, x);
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_matmul(c, reg_at(&ro, 0), reg_at(&rx, 0), &gt, T);
  if (single) {
    reg_make(g, &r1, (uint64_t)T * N * 4, KS_MEM_DEVICE);
    for (int t = 0; t < T; t++)
      op_matmul(c, reg_at(&r1, (uint64_t)t * N * 4), reg_at(&rx, (uint64_t)t * K * 4), &gt, 1);
  }
  run(c, "matmul");
  float *got = malloc((size_t)T * N * 4);
  REQUIRE(got);
  reg_get(g, &ro, got, "matmul");
  if (single) {
    *single = malloc((size_t)T * N * 4);
    REQUIRE(*single);
    reg_get(g, &r1, *single, "matmul one token at a time");
    gpu_buf_destroy(g, &r1.b);
  }
  gpu_buf_destroy(g, &rx.b);
  gpu_buf_destroy(g, &ro.b);
  gpu_tensor_free(g, &gt);
  return got;
}

static float f16r(float v) { return ks_f16_to_f32(ks_f32_to_f16(v)); }

/* The same dequantised weights multiplied in double precision (operands rounded to f16 first
 * where the device's products run on the cooperative-matrix kernels, as ref_matmul does). */
static void exact_matmul(float *out, const float *x, const ks_tensor *w, int T, int h) {
  int64_t K = w->ne[0], N = w->ne[1];
  size_t rb = ks_type_row_bytes(w->type, K);
  float *row = malloc((size_t)K * sizeof *row);
  REQUIRE(row);
  for (int64_t r = 0; r < N; r++) {
    ks_dequant_row(w->type, (const unsigned char *)w->data + (size_t)r * rb, row, K);
    for (int t = 0; t < T; t++) {
      double s = 0;
      for (int64_t j = 0; j < K; j++) {
        const float xv = x[(size_t)t * K + j];
        s += (double)(h ? f16r(row[j]) : row[j]) * (h ? f16r(xv) : xv);
      }
      out[(size_t)t * N + r] = (float)s;
    }
  }
  free(row);
}

static void test_matmul(ks_gpu *g, ks_cmd *c, ks_gpu *g2, ks_cmd *c2) {
  /* (K, N rows, tokens): K whole super-blocks; N and tokens not multiples of the workgroup's
   * 4 rows / 8 tokens; the last case also checks batch invariance and slicing */
  static const int shapes[][3] = {{256, 7, 1}, {768, 33, 5}, {2560, 515, 37}, {512, 130, 9},
                                  {1280, 37, 37}};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    ks_type type = k_types[ti];
    for (size_t si = 0; si < KS_ARRAY_LEN(shapes); si++) {
      int K = shapes[si][0], N = shapes[si][1], T = shapes[si][2];
      if (type == KS_TYPE_BF16) K -= 4; /* BF16 rows need only be a multiple of 4 */
      if (type == KS_TYPE_Q5_0 || type == KS_TYPE_Q5_1) K += 96; /* multiples of 32, not 256 */
      int last = si == KS_ARRAY_LEN(shapes) - 1;
      ks_tensor w = make_weights(type, K, N);
      float *x = frand((size_t)T * K, 1.0f);
      float *ref = malloc((size_t)T * N * 4), *exact = malloc((size_t)T * N * 4);
      REQUIRE(ref && exact);
      ref_matmul(ref, x, &w, T);
      exact_matmul(exact, x, &w, T, gpu_matmul_coopmat(g, type, K));
      float *single = NULL;
      int ns = 0;
      float *got = gpu_matmul(g, c, &w, x, T, last ? &single : NULL, &ns);
      char what[128];
      snprintf(what, sizeof what, "matmul %s K=%d N=%d n_tok=%d vs ref_matmul",
               ks_type_name(type), K, N, T);
      const double bound = gpu_matmul_coopmat(g, type, K) ? 1e-4 : 1e-5;
      compare(what, got, ref, (size_t)T * N, bound);
      snprintf(what, sizeof what, "matmul %s K=%d N=%d n_tok=%d vs f64 dequant-multiply",
               ks_type_name(type), K, N, T);
      compare(what, got, exact, (size_t)T * N, bound);
      if (single) {
        int same = memcmp(got, single, (size_t)T * N * 4) == 0;
        printf("  %-58s %s\n", "  batch invariance: 37 at once vs one at a time",
               same ? "bit-identical" : "DIFFERENT");
        CHECK_MSG(same, "matmul %s: a row computed alone differs from the same row in a batch",
                  ks_type_name(type));
        free(single);
        int ns2 = 0;
        float *many = gpu_matmul(g2, c2, &w, x, T, NULL, &ns2);
        snprintf(what, sizeof what, "  %d slices vs %d", ns2, ns);
        int same2 = memcmp(got, many, (size_t)T * N * 4) == 0;
        printf("  %-58s %s\n", what, same2 ? "bit-identical" : "DIFFERENT");
        CHECK_MSG(ns == 1 && ns2 > 1, "matmul %s: expected 1 and several slices, got %d and %d",
                  ks_type_name(type), ns, ns2);
        CHECK_MSG(same2, "matmul %s: sliced weights give other bits", ks_type_name(type));
        free(many);
      }
      free(got);
      free(x);
      free(ref);
      free(exact);
      free((void *)w.data);
    }
  }
}

/* ---------------------------------------------------------------- GPU: embed */

static void test_embed(ks_gpu *g, ks_cmd *c, ks_gpu *g2, ks_cmd *c2) {
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++) {
    ks_type type = k_types[ti];
    /* BF16: an odd row length, so every other row starts half-way into a word */
    int dim = type == KS_TYPE_BF16   ? 1023
              : type == KS_TYPE_Q5_0 ? 896 /* Qwen2.5-0.5B's width */
              : type == KS_TYPE_Q5_1 ? 576 /* SmolLM2-135M's */
                                     : 768;
    int vocab = 41, T = 9;
    ks_tensor w = make_weights(type, dim, vocab);
    uint32_t tok[9] = {0, (uint32_t)vocab - 1, 3, 3};
    for (int i = 4; i < T; i++) tok[i] = ks_randu() % (uint32_t)vocab;
    float *ref = malloc((size_t)T * dim * 4), *got = malloc((size_t)T * dim * 4);
    REQUIRE(ref && got);
    for (int t = 0; t < T; t++) ref_embed(ref + (size_t)t * dim, &w, (int)tok[t]);
    for (int sliced = 0; sliced < 2; sliced++) {
      ks_gpu *gg = sliced ? g2 : g;
      ks_cmd *cc = sliced ? c2 : c;
      ks_gpu_tensor gt;
      REQUIRE(gpu_tensor_upload(gg, &gt, &w) == KS_OK);
      reg rt, ro;
      reg_make(gg, &rt, (uint64_t)T * 4, KS_MEM_HOST);
      reg_make(gg, &ro, (uint64_t)T * dim * 4, KS_MEM_DEVICE);
      reg_put(gg, &rt, tok);
      REQUIRE(gpu_cmd_begin(cc) == KS_OK);
      op_embed(cc, reg_at(&ro, 0), &gt, reg_at(&rt, 0), T);
      run(cc, "embed");
      reg_get(gg, &ro, got, "embed");
      char what[96];
      snprintf(what, sizeof what, "embed %s dim=%d vocab=%d n_tok=%d in %d slice(s)",
               ks_type_name(type), dim, vocab, T, gt.n_slices);
      int same = memcmp(got, ref, (size_t)T * dim * 4) == 0;
      printf("  %-58s %s\n", what, same ? "bit-identical" : "DIFFERENT");
      CHECK_MSG(same, "%s: not bit-identical to ks_dequant_row", what);
      CHECK_MSG(sliced ? gt.n_slices > 1 : gt.n_slices == 1, "%s: slice count", what);
      gpu_buf_destroy(gg, &rt.b);
      gpu_buf_destroy(gg, &ro.b);
      gpu_tensor_free(gg, &gt);
    }
    free(ref);
    free(got);
    free((void *)w.data);
  }
}

/* ---------------------------------------------------------------- GPU: bias, scaled rope */

static void test_add_bias(ks_gpu *g, ks_cmd *c) {
  static const int cases[][2] = {{1, 7}, {37, 256}, {5, 1000}, {3, 70001}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    int T = cases[ci][0], n = cases[ci][1];
    size_t tot = (size_t)T * n;
    float *x = frand(tot, 3.0f), *b = frand((size_t)n, 1.0f), *got = malloc(tot * 4);
    REQUIRE(got);
    reg rx, rb;
    reg_make(g, &rx, tot * 4, KS_MEM_DEVICE);
    reg_make(g, &rb, (uint64_t)n * 4, KS_MEM_DEVICE);
    reg_put(g, &rx, x);
    reg_put(g, &rb, b);
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_add_bias(c, reg_at(&rx, 0), reg_at(&rb, 0), T, n);
    run(c, "add_bias");
    reg_get(g, &rx, got, "add_bias");
    for (size_t i = 0; i < tot; i++) x[i] += b[i % (size_t)n];
    char what[96];
    snprintf(what, sizeof what, "add_bias n_tok=%d n=%d", T, n);
    int same = memcmp(got, x, tot * 4) == 0;
    printf("  %-58s %s\n", what, same ? "bit-identical" : "DIFFERENT");
    CHECK_MSG(same, "%s: differs from x[t][i] + b[i]", what);
    gpu_buf_destroy(g, &rx.b);
    gpu_buf_destroy(g, &rb.b);
    free(x);
    free(b);
    free(got);
  }
}

static void test_rope_scaled(ks_gpu *g, ks_cmd *c) {
  static const int cases[][5] = {/* n_tok, heads, head_dim, neox, pos0 */
                                 {1, 2, 64, 0, 0}, {5, 3, 128, 1, 7000}, {37, 4, 64, 0, 100},
                                 {9, 2, 128, 1, 30000}};
  for (size_t ci = 0; ci < KS_ARRAY_LEN(cases); ci++) {
    int T = cases[ci][0], H = cases[ci][1], hd = cases[ci][2], neox = cases[ci][3];
    uint32_t pos0 = (uint32_t)cases[ci][4];
    float base = ci % 2 ? 500000.0f : 10000.0f;
    float factors[64], freq[64];
    for (int i = 0; i < hd / 2; i++) factors[i] = i < hd / 8 ? 1.0f : 1.0f + (float)i * 0.25f;
    ref_rope_freqs(freq, hd, base, factors);
    size_t n = (size_t)T * H * hd;
    float *x = frand(n, 2.0f), *ref = malloc(n * 4), *got = malloc(n * 4),
          *plain = malloc(n * 4), *plain_gpu = malloc(n * 4);
    REQUIRE(ref && got && plain && plain_gpu);
    memcpy(ref, x, n * 4);
    for (int t = 0; t < T; t++)
      ref_rope_table(ref + (size_t)t * H * hd, H, hd, (int)pos0 + t, freq, neox);
    reg rx, rx2, rs;
    reg_make(g, &rx, n * 4, KS_MEM_DEVICE);
    reg_make(g, &rx2, n * 4, KS_MEM_DEVICE);
    reg_make(g, &rs, sizeof(ks_step), KS_MEM_HOST);
    reg_put(g, &rx, x);
    reg_put(g, &rx2, x);
    ks_step step = {.pos0 = pos0};
    reg_put(g, &rs, &step);
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_rope_scaled(c, reg_at(&rx, 0), reg_at(&rs, 0), T, H, hd, base, neox, factors);
    op_rope_scaled(c, reg_at(&rx2, 0), reg_at(&rs, 0), T, H, hd, base, neox, NULL);
    run(c, "rope_scaled");
    reg_get(g, &rx, got, "rope_scaled");
    reg_get(g, &rx2, plain_gpu, "rope_scaled without factors");
    char what[128];
    snprintf(what, sizeof what, "rope_scaled n_tok=%d heads=%d head_dim=%d %s pos0=%u", T, H, hd,
             neox ? "neox" : "norm", pos0);
    compare(what, got, ref, n, 1e-5);
    /* the scaling changes something (else the comparison above proves little) */
    memcpy(plain, x, n * 4);
    for (int t = 0; t < T; t++)
      ref_rope(plain + (size_t)t * H * hd, H, hd, (int)pos0 + t, base, neox);
    if (pos0 + (uint32_t)T > 1)
      CHECK_MSG(memcmp(plain, ref, n * 4) != 0, "%s: the factors changed nothing", what);
    /* and on the CPU, the unscaled table is ref_rope itself */
    float unscaled[64], *via_table = malloc(n * 4);
    REQUIRE(via_table);
    ref_rope_freqs(unscaled, hd, base, NULL);
    memcpy(via_table, x, n * 4);
    for (int t = 0; t < T; t++)
      ref_rope_table(via_table + (size_t)t * H * hd, H, hd, (int)pos0 + t, unscaled, neox);
    CHECK_MSG(memcmp(via_table, plain, n * 4) == 0, "%s: ref_rope_table(unscaled) != ref_rope",
              what);
    free(via_table);
    /* no factors: op_rope's own result, bit for bit */
    REQUIRE(gpu_upload(g, &rx.b, rx.off, x, n * 4) == KS_OK);
    REQUIRE(gpu_cmd_begin(c) == KS_OK);
    op_rope(c, reg_at(&rx, 0), reg_at(&rs, 0), T, H, hd, base, neox);
    run(c, "rope");
    reg_get(g, &rx, got, "rope");
    CHECK_MSG(memcmp(got, plain_gpu, n * 4) == 0, "%s: NULL factors differ from op_rope", what);
    gpu_buf_destroy(g, &rx.b);
    gpu_buf_destroy(g, &rx2.b);
    gpu_buf_destroy(g, &rs.b);
    free(x);
    free(ref);
    free(got);
    free(plain);
    free(plain_gpu);
  }
}

static void test_device(int d) {
  ks_gpu *g = ks_test_gpu(d);
  const ks_gpu_info *I = gpu_info(g);
  printf("== device %d: %s (%s), subgroup %u\n", d, I->name, I->driver, I->subgroup_size);
  setenv("KVSCOPE_MAX_BUFFER_RANGE", "4096", 1); /* a second context with small weight slices */
  ks_gpu *g2 = ks_test_gpu(d);
  unsetenv("KVSCOPE_MAX_BUFFER_RANGE");
  ks_cmd *c, *c2;
  REQUIRE(gpu_cmd_create(g, &c) == KS_OK);
  REQUIRE(gpu_cmd_create(g2, &c2) == KS_OK);
  double t0 = ks_now_sec();
  test_embed(g, c, g2, c2);
  test_matmul(g, c, g2, c2);
  test_add_bias(g, c);
  test_rope_scaled(g, c);
  printf("  device %d: %.1f s\n", d, ks_now_sec() - t0);
  gpu_cmd_destroy(c);
  gpu_cmd_destroy(c2);
  CHECK_MSG(gpu_live_allocations(g) == 0 && gpu_live_allocations(g2) == 0,
            "allocations alive after teardown: %lld, %lld", (long long)gpu_live_allocations(g),
            (long long)gpu_live_allocations(g2));
  gpu_destroy(g2);
  gpu_destroy(g);
}

int main(void) {
  ks_test_seed();
  setenv("KVSCOPE_VALIDATION", "1", 0);
  printf("== CPU\n");
  test_q4k_q5k_hand(0);
  test_q4k_q5k_hand(1);
  test_q6k_hand();
  test_q5_hand(0);
  test_q5_hand(1);
  test_quantiser();
  int n = gpu_count_devices();
  if (n <= 0) {
    const char *req = getenv("KVSCOPE_REQUIRE_GPU");
    if (req && atoi(req)) {
      fprintf(stderr, "no Vulkan device but KVSCOPE_REQUIRE_GPU=1: %s\n", ks_last_error());
      return 1;
    }
    printf("no Vulkan device (%s): GPU checks not run\n", ks_last_error());
    return ks_test_done("test_kquant") ? 1 : 77;
  }
  for (int d = 0; d < n; d++) test_device(d);
  uint64_t msgs = gpu_validation_count();
  printf("validation-layer messages: %llu\n", (unsigned long long)msgs);
  CHECK(msgs == 0);
  return ks_test_done("test_kquant");
}
