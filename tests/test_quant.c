/* test_quant.c — element types: names and sizes, f16/bf16 conversion (every f16 value, the
 * rounding edge cases, and the compiler's own _Float16 as an independent oracle where it has
 * one), hand-computed Q8_0 / Q4_0 blocks byte for byte (the published GGML block layouts and
 * rounding rules), and error bounds of quantise + dequantise. */
#include <math.h>
#include <string.h>

#include "common.h"
#include "quant.h"
#include "testutil.h"

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_types(void) {
  CHECK(ks_type_known(KS_TYPE_F32) && ks_type_known(KS_TYPE_F16) && ks_type_known(KS_TYPE_BF16));
  CHECK(ks_type_known(KS_TYPE_Q8_0) && ks_type_known(KS_TYPE_Q4_0));
  CHECK(!ks_type_known(10) && !ks_type_known(99) && !ks_type_known(4)); /* Q2_K: no kernel */
  CHECK(ks_type_layout_known(12) && !ks_type_layout_known(99) && !ks_type_layout_known(4));
  CHECK(!strcmp(ks_type_name(KS_TYPE_F32), "F32"));
  CHECK(!strcmp(ks_type_name(KS_TYPE_F16), "F16"));
  CHECK(!strcmp(ks_type_name(KS_TYPE_BF16), "BF16"));
  CHECK(!strcmp(ks_type_name(KS_TYPE_Q8_0), "Q8_0"));
  CHECK(!strcmp(ks_type_name(KS_TYPE_Q4_0), "Q4_0"));
  CHECK(!strcmp(ks_type_name(12), "Q4_K"));
  CHECK(!strcmp(ks_type_name(99), "type 99"));
  CHECK(!strcmp(ks_type_name(12345), "type 12345"));
  CHECK(ks_type_block_elems(KS_TYPE_F32) == 1 && ks_type_block_bytes(KS_TYPE_F32) == 4);
  CHECK(ks_type_block_elems(KS_TYPE_F16) == 1 && ks_type_block_bytes(KS_TYPE_F16) == 2);
  CHECK(ks_type_block_elems(KS_TYPE_BF16) == 1 && ks_type_block_bytes(KS_TYPE_BF16) == 2);
  CHECK(ks_type_block_elems(KS_TYPE_Q8_0) == 32 && ks_type_block_bytes(KS_TYPE_Q8_0) == 34);
  CHECK(ks_type_block_elems(KS_TYPE_Q4_0) == 32 && ks_type_block_bytes(KS_TYPE_Q4_0) == 18);
  CHECK(ks_type_row_bytes(KS_TYPE_F32, 7) == 28);
  CHECK(ks_type_row_bytes(KS_TYPE_F16, 3) == 6);
  CHECK(ks_type_row_bytes(KS_TYPE_Q8_0, 64) == 68);
  CHECK(ks_type_row_bytes(KS_TYPE_Q4_0, 96) == 54);
  CHECK(ks_type_row_bytes(KS_TYPE_Q4_0, 33) == 0);
  CHECK(ks_type_row_bytes(KS_TYPE_Q8_0, 31) == 0);
  CHECK(ks_type_row_bytes((ks_type)12, 512) == 288); /* Q4_K: 144 bytes per 256 */
  CHECK(ks_type_row_bytes((ks_type)99, 32) == 0);
}

static void test_f16_known(void) {
  static const struct {
    float f;
    uint16_t h;
  } cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.5f, 0x3800},
      {0.1f, 0x2e66},
      {65504.0f, 0x7bff},                 /* largest finite */
      {65519.99f, 0x7bff},                /* just under the half-way point */
      {65520.0f, 0x7c00},                 /* half-way: ties to even = inf */
      {1e10f, 0x7c00},
      {-1e10f, 0xfc00},
      {0x1p-14f, 0x0400},                 /* smallest normal */
      {0x1p-24f, 0x0001},                 /* smallest subnormal */
      {0x1p-25f, 0x0000},                 /* half of it: ties to even = 0 */
      {0x1.0002p-25f, 0x0001},            /* just above half: rounds up */
      {-0x1p-24f, 0x8001},
      {0x1.8p-24f, 0x0002},               /* 1.5 ulp: tie to even 2 */
      {0x1.4p-23f, 0x0002},               /* 2.5 ulp: tie to even 2 */
      {0x1.cp-23f, 0x0004},               /* 3.5 ulp: tie to even 4 */
      {0x1p-14f - 0x1p-25f, 0x0400},      /* 1023.5 ulp: ties to the normal 0x400 */
      {0x1.ff8p-15f - 0x1p-25f, 0x03fe},  /* 1022.5 ulp: tie to even 1022 */
      {0x1.ff8p-15f + 0x1p-26f, 0x03ff},  /* 1023.25 ulp: down */
      {1.0f + 0x1p-11f, 0x3c00},          /* tie, even mantissa below */
      {1.0f + 0x3p-11f, 0x3c02},          /* tie, odd mantissa below: up */
      {1.0f + 0x1.02p-11f, 0x3c01},       /* just above the tie */
      {1e-30f, 0x0000},
      {-1e-30f, 0x8000},
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++) {
    uint16_t h = ks_f32_to_f16(cases[i].f);
    CHECK_MSG(h == cases[i].h, "f16(%a) = 0x%04x, expected 0x%04x", cases[i].f, h, cases[i].h);
  }
  CHECK(ks_f32_to_f16(INFINITY) == 0x7c00);
  CHECK(ks_f32_to_f16(-INFINITY) == 0xfc00);
  uint16_t hn = ks_f32_to_f16(NAN);
  CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
  /* a signalling nan whose payload sits only in the low bits must not become inf */
  uint16_t hs = ks_f32_to_f16(from_bits(0x7f800001));
  CHECK((hs & 0x7c00) == 0x7c00 && (hs & 0x3ff) != 0);
  CHECK(ks_f16_to_f32(0x3c00) == 1.0f);
  CHECK(ks_f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(ks_f16_to_f32(0x03ff) == 0x1.ff8p-15f);
  CHECK(ks_f16_to_f32(0x7bff) == 65504.0f);
  CHECK(isinf(ks_f16_to_f32(0x7c00)) && ks_f16_to_f32(0x7c00) > 0);
  CHECK(isinf(ks_f16_to_f32(0xfc00)) && ks_f16_to_f32(0xfc00) < 0);
  CHECK(isnan(ks_f16_to_f32(0x7e00)) && isnan(ks_f16_to_f32(0x7c01)));
  CHECK(bits(ks_f16_to_f32(0x8000)) == 0x80000000u);
}

static void test_f16_all(void) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = ks_f16_to_f32((uint16_t)h);
    uint16_t back = ks_f32_to_f16(f);
    int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    if (is_nan ? !isnan(f) || (back & 0x7c00) != 0x7c00 || !(back & 0x3ff) : back != h) bad++;
#ifdef __FLT16_MAX__
    if (!is_nan) {
      _Float16 x;
      uint16_t hh = (uint16_t)h;
      memcpy(&x, &hh, 2);
      if (bits((float)x) != bits(f)) bad++;
    }
#endif
  }
  CHECK_MSG(bad == 0, "%d of the 65536 f16 values do not round-trip", bad);
#ifdef __FLT16_MAX__
  /* random f32 over the whole range vs the compiler's conversion (round to nearest even) */
  int mism = 0;
  for (int i = 0; i < 2000000; i++) {
    float f = from_bits(ks_randu());
    if (i & 1) f = from_bits((ks_randu() & 0x87ffffffu) | 0x30000000u); /* near f16 range */
    if (isnan(f)) continue;
    _Float16 x = (_Float16)f;
    uint16_t ref;
    memcpy(&ref, &x, 2);
    if (ks_f32_to_f16(f) != ref && mism++ < 5)
      fprintf(stderr, "f16(%a) = 0x%04x, compiler says 0x%04x\n", f, ks_f32_to_f16(f), ref);
  }
  CHECK_MSG(mism == 0, "%d conversions differ from _Float16", mism);
#else
  printf("note: compiler has no _Float16; skipped the independent f16 oracle\n");
#endif
}

static void test_bf16(void) {
  float src[] = {1.0f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -2.5f, INFINITY, 0.0f, 3.0e38f};
  uint16_t h[KS_ARRAY_LEN(src)];
  ks_quant_row(KS_TYPE_BF16, src, h, KS_ARRAY_LEN(src));
  CHECK(h[0] == 0x3f80);
  CHECK(h[1] == 0x3f80); /* tie to even */
  CHECK(h[2] == 0x3f82); /* tie, odd below: up */
  CHECK(h[3] == 0xc020);
  CHECK(h[4] == 0x7f80);
  CHECK(h[5] == 0x0000);
  CHECK(h[6] == 0x7f62); /* 3e38 = 0x7f61b1e6 rounds up */
  float back[KS_ARRAY_LEN(src)];
  ks_dequant_row(KS_TYPE_BF16, h, back, KS_ARRAY_LEN(src));
  CHECK(back[0] == 1.0f && back[3] == -2.5f && isinf(back[4]));
  float nan_in = NAN;
  uint16_t hn;
  ks_quant_row(KS_TYPE_BF16, &nan_in, &hn, 1);
  CHECK(isnan(ks_bf16_to_f32(hn)));
  CHECK(ks_bf16_to_f32(0x4049) == from_bits(0x40490000));
}

static void test_q8_0_block(void) {
  /* block 0: amax 127 -> d = 1 exactly, q = x; block 1: amax 63.5 -> d = 0.5, q = 2x */
  float x[64];
  for (int j = 0; j < 32; j++) x[j] = (float)((j * 37) % 255 - 127);
  x[5] = 127.0f;
  for (int j = 0; j < 32; j++) x[32 + j] = 0.5f * (float)(j * 4 - 64);
  x[40] = -63.5f;
  unsigned char q[68];
  memset(q, 0xcc, sizeof q);
  ks_quant_row(KS_TYPE_Q8_0, x, q, 64);
  CHECK(q[0] == 0x00 && q[1] == 0x3c); /* f16 1.0, little endian */
  for (int j = 0; j < 32; j++) CHECK((int8_t)q[2 + j] == (int)x[j]);
  CHECK(q[34] == 0x00 && q[35] == 0x38); /* f16 0.5 */
  for (int j = 0; j < 32; j++) CHECK((int8_t)q[36 + j] == (int)(2 * x[32 + j]));
  float y[64];
  ks_dequant_row(KS_TYPE_Q8_0, q, y, 64);
  for (int j = 0; j < 64; j++) CHECK(y[j] == x[j]);
  /* an all-zero block: d = 0, q = 0 */
  float z[32] = {0};
  ks_quant_row(KS_TYPE_Q8_0, z, q, 32);
  for (int j = 0; j < 34; j++) CHECK(q[j] == 0);
}

static void test_q4_0_block(void) {
  /* max |x| is -4 (negative): d = -4 / -8 = 0.5, id = 2, q = x*2 + 8.5 truncated */
  float x[32];
  for (int j = 0; j < 16; j++) x[j] = 0.5f * (float)(j - 8);      /* q = j */
  for (int j = 0; j < 16; j++) x[16 + j] = 0.5f * (float)(7 - j); /* q = 15 - j */
  unsigned char q[18];
  ks_quant_row(KS_TYPE_Q4_0, x, q, 32);
  CHECK(q[0] == 0x00 && q[1] == 0x38); /* d = 0.5 */
  for (int j = 0; j < 16; j++)
    CHECK_MSG(q[2 + j] == (unsigned char)(j | (15 - j) << 4), "byte %d = 0x%02x", j, q[2 + j]);
  float y[32];
  ks_dequant_row(KS_TYPE_Q4_0, q, y, 32);
  for (int j = 0; j < 32; j++) CHECK(y[j] == x[j]);
  /* max is +4: d = -0.5; x = 4 -> q 0; x = -3.5 -> 15.5 -> 15; x = -4 would clamp to 15 too */
  float p[32] = {0};
  p[0] = 4.0f;
  p[1] = -3.5f;
  p[17] = 1.0f; /* q = -2 + 8.5 -> 6 */
  ks_quant_row(KS_TYPE_Q4_0, p, q, 32);
  CHECK(q[0] == 0x00 && q[1] == 0xb8); /* d = -0.5 */
  CHECK(q[2] == (0 | 8 << 4));         /* element 0 low; element 16 (0.0) high -> 8 */
  CHECK(q[3] == (15 | 6 << 4));        /* element 1 low; element 17 high */
  for (int j = 2; j < 16; j++) CHECK(q[2 + j] == 0x88);
}


static void test_error_bounds(void) {
  enum { N = 4096 };
  static float x[N], y[N];
  static unsigned char q[N * 4];
  for (int rep = 0; rep < 20; rep++) {
    float scale = rep < 10 ? 1.0f : powf(10.0f, (float)(rep - 15)); /* 1e-5 .. 1e4 */
    ks_fill_rand(x, N, scale);
    if (rep % 3 == 0) x[ks_randu() % N] *= 7.0f; /* an outlier in some block */

    ks_quant_row(KS_TYPE_Q8_0, x, q, N);
    ks_dequant_row(KS_TYPE_Q8_0, q, y, N);
    double err2 = 0, sig2 = 0;
    for (int b = 0; b < N / 32; b++) {
      float amax = 0;
      for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
      /* half a step, plus 127 times the f16 rounding error of the scale (large when the
       * scale is an f16 subnormal: ggml's format, not a kvscope choice) */
      float d = amax / 127.0f, d16 = ks_f16_to_f32(ks_f32_to_f16(d));
      float bound = (d / 2 + 127 * fabsf(d - d16)) * 1.001f + 1e-30f;
      for (int j = 0; j < 32; j++) {
        float e = fabsf(y[b * 32 + j] - x[b * 32 + j]);
        if (e > bound) {
          CHECK_MSG(0, "Q8_0 error %g > %g at %d (scale %g)", e, bound, b * 32 + j, scale);
          break;
        }
      }
    }
    for (int i = 0; i < N; i++) err2 += (y[i] - x[i]) * (double)(y[i] - x[i]), sig2 += x[i] * (double)x[i];
    /* normalised MSE where the scales are normal f16 numbers */
    if (scale >= 0.01f) CHECK_MSG(err2 / sig2 < 1e-4, "Q8_0 normalised MSE %g", err2 / sig2);

    ks_quant_row(KS_TYPE_Q4_0, x, q, N);
    ks_dequant_row(KS_TYPE_Q4_0, q, y, N);
    err2 = 0;
    for (int b = 0; b < N / 32; b++) {
      float amax = 0;
      for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
      /* a step is amax/8; the top code (+8 steps on the max's far side) clamps to +7 steps */
      float d = amax / 8.0f, d16 = ks_f16_to_f32(ks_f32_to_f16(d));
      float bound = (d + 8 * fabsf(d - d16)) * 1.001f + 1e-30f;
      for (int j = 0; j < 32; j++) {
        float e = fabsf(y[b * 32 + j] - x[b * 32 + j]);
        if (e > bound) {
          CHECK_MSG(0, "Q4_0 error %g > %g at %d (scale %g)", e, bound, b * 32 + j, scale);
          break;
        }
      }
    }
    for (int i = 0; i < N; i++) err2 += (y[i] - x[i]) * (double)(y[i] - x[i]);
    if (scale >= 0.01f) CHECK_MSG(err2 / sig2 < 0.02, "Q4_0 normalised MSE %g", err2 / sig2);

    uint16_t h[N];
    ks_quant_row(KS_TYPE_F16, x, h, N);
    ks_dequant_row(KS_TYPE_F16, h, y, N);
    for (int i = 0; i < N; i++) {
      if (fabsf(x[i]) < 1e-4f) continue; /* subnormal range: absolute error instead */
      if (fabsf(y[i] - x[i]) > fabsf(x[i]) * 0x1p-11f) {
        CHECK_MSG(0, "F16 relative error at %d: %g vs %g", i, y[i], x[i]);
        break;
      }
    }
    ks_quant_row(KS_TYPE_BF16, x, h, N);
    ks_dequant_row(KS_TYPE_BF16, h, y, N);
    for (int i = 0; i < N; i++) {
      if (fabsf(y[i] - x[i]) > fabsf(x[i]) * 0x1p-8f) {
        CHECK_MSG(0, "BF16 relative error at %d: %g vs %g", i, y[i], x[i]);
        break;
      }
    }
    ks_quant_row(KS_TYPE_F32, x, q, N);
    CHECK(!memcmp(q, x, sizeof x));
  }
}

int main(void) {
  ks_test_seed();
  test_types();
  test_f16_known();
  test_f16_all();
  test_bf16();
  test_q8_0_block();
  test_q4_0_block();
  test_error_bounds();
  return ks_test_done("test_quant");
}
