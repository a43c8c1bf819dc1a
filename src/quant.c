/* quant.c — element types: names, block sizes, and the CPU reference conversions to and from
 * f32. The quantisers of F16, BF16, Q8_0 and Q4_0 reproduce ggml's *_ref routines bit for bit
 * (same scale, same rounding), so a file kvscope writes matches what llama.cpp's quantiser would
 * write. The Q5_0, Q5_1 and K-quant quantisers are kvscope's own simpler ones (valid blocks, not
 * the bytes llama.cpp's searching quantisers choose); their dequantisers follow the formats
 * exactly, with ggml's float expressions, since they are the oracle of the GPU kernels. Not fast:
 * the GPU kernels dequantise on the fly; this is their oracle and the converter's workhorse. */
#include "quant.h"

#include "common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Every GGML type whose block layout is fixed and known, so the GGUF reader can check a
 * tensor's byte size even when kvscope cannot compute with it (it then reports the type by
 * name instead of calling the file corrupt). Types ggml removed (4, 5, 31-33, 36-38) are absent. */
typedef struct {
  const char *name;
  int block_elems;
  int block_bytes;
  int computable; /* kvscope has kernels for it */
} type_info;

static const type_info k_types[] = {
    [0] = {"F32", 1, 4, 1},        [1] = {"F16", 1, 2, 1},        [2] = {"Q4_0", 32, 18, 1},
    [3] = {"Q4_1", 32, 20, 0},     [6] = {"Q5_0", 32, 22, 1},     [7] = {"Q5_1", 32, 24, 1},
    [8] = {"Q8_0", 32, 34, 1},     [9] = {"Q8_1", 32, 36, 0},     [10] = {"Q2_K", 256, 84, 0},
    [11] = {"Q3_K", 256, 110, 0},  [12] = {"Q4_K", 256, 144, 1},  [13] = {"Q5_K", 256, 176, 1},
    [14] = {"Q6_K", 256, 210, 1},  [15] = {"Q8_K", 256, 292, 0},  [16] = {"IQ2_XXS", 256, 66, 0},
    [17] = {"IQ2_XS", 256, 74, 0}, [18] = {"IQ3_XXS", 256, 98, 0}, [19] = {"IQ1_S", 256, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},  [21] = {"IQ3_S", 256, 110, 0}, [22] = {"IQ2_S", 256, 82, 0},
    [23] = {"IQ4_XS", 256, 136, 0}, [24] = {"I8", 1, 1, 0},        [25] = {"I16", 1, 2, 0},
    [26] = {"I32", 1, 4, 0},       [27] = {"I64", 1, 8, 0},       [28] = {"F64", 1, 8, 0},
    [29] = {"IQ1_M", 256, 56, 0},  [30] = {"BF16", 1, 2, 1},      [34] = {"TQ1_0", 256, 54, 0},
    [35] = {"TQ2_0", 256, 66, 0},  [39] = {"MXFP4", 32, 17, 0},
};

static const type_info *info(uint32_t type) {
  if (type >= KS_ARRAY_LEN(k_types) || !k_types[type].name) return NULL;
  return &k_types[type];
}

int ks_type_known(uint32_t type) {
  const type_info *ti = info(type);
  return ti && ti->computable;
}

int ks_type_layout_known(uint32_t type) { return info(type) != NULL; }

const char *ks_type_name(uint32_t type) {
  const type_info *ti = info(type);
  if (ti) return ti->name;
  /* a few slots so two unknown names can appear in one message */
  static _Thread_local char bufs[4][24];
  static _Thread_local unsigned slot;
  char *b = bufs[slot++ & 3];
  snprintf(b, sizeof bufs[0], "type %u", type);
  return b;
}

int ks_type_block_elems(ks_type t) {
  const type_info *ti = info((uint32_t)t);
  return ti ? ti->block_elems : 0;
}

size_t ks_type_block_bytes(ks_type t) {
  const type_info *ti = info((uint32_t)t);
  return ti ? (size_t)ti->block_bytes : 0;
}

size_t ks_type_row_bytes(ks_type t, int64_t n) {
  const type_info *ti = info((uint32_t)t);
  if (!ti || n < 0 || n % ti->block_elems) return 0;
  uint64_t blocks = (uint64_t)n / (uint64_t)ti->block_elems;
  if (blocks > SIZE_MAX / (uint64_t)ti->block_bytes) return 0;
  return (size_t)(blocks * (uint64_t)ti->block_bytes);
}

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float ks_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000 | (man << 13)); /* inf, nan (payload kept) */
  if (exp == 0) {
    /* zero or subnormal: man * 2^-24, exact in f32 */
    float v = (float)man * 0x1p-24f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t ks_f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000) /* nan: keep the top payload bits, force quiet so it stays a nan */
    return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);
  if (ax >= 0x477ff000) return sign | 0x7c00; /* >= 65520 rounds (to even) to inf */
  if (ax < 0x38800000) {                      /* below 2^-14: f16 subnormal or zero */
    if (ax <= 0x33000000) return sign;        /* <= 2^-25 (half the smallest subnormal): 0 */
    uint32_t e = ax >> 23;                    /* 102..112 */
    uint32_t mant = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* value * 2^24 = mant >> shift */
    uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1))) m++; /* may carry into the smallest normal: right */
    return sign | (uint16_t)m;
  }
  uint32_t h = (ax - 0x38000000) >> 13; /* rebias exponent 127 -> 15 */
  uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
  return sign | (uint16_t)h;
}

float ks_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ggml_compute_fp32_to_bf16: round to nearest even, nan kept quiet. */
static uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64);
  return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)(v & 0xff);
  p[1] = (unsigned char)(v >> 8);
}

/* ---------------------------------------------------------------- K-quants */

/* 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of a Q4_K/Q5_K block. */
static void k_scale_min(const unsigned char *b, int j, int *sc, int *m) {
  if (j < 4) {
    *sc = b[j] & 63;
    *m = b[j + 4] & 63;
  } else {
    *sc = (b[j + 4] & 15) | ((b[j - 4] >> 6) << 4);
    *m = (b[j + 4] >> 4) | ((b[j] >> 6) << 4);
  }
}

/* Q4_K (qh == NULL) and Q5_K: one super-block. The products d*sc and dmin*m are exact in f32
 * (11-bit by 6-bit), and so is (d*sc)*q, so the one rounding is the subtraction: a GPU that
 * fuses it into an fma still gives the same bits. */
static void dequant_q45_k(const unsigned char *blk, const unsigned char *qh,
                          const unsigned char *qs, float *y) {
  const float d = ks_f16_to_f32(rd16(blk)), dmin = ks_f16_to_f32(rd16(blk + 2));
  for (int j = 0; j < 4; j++) { /* 64 elements: two sub-blocks sharing 32 bytes of nibbles */
    for (int half = 0; half < 2; half++) {
      int sc, m;
      k_scale_min(blk + 4, 2 * j + half, &sc, &m);
      const float d1 = d * (float)sc, m1 = dmin * (float)m;
      for (int l = 0; l < 32; l++) {
        int q = half ? qs[32 * j + l] >> 4 : qs[32 * j + l] & 15;
        if (qh && (qh[l] >> (2 * j + half)) & 1) q += 16;
        y[64 * j + 32 * half + l] = d1 * (float)q - m1;
      }
    }
  }
}

static void dequant_q6_k(const unsigned char *blk, float *y) {
  const unsigned char *ql = blk, *qh = blk + 128;
  const signed char *sc = (const signed char *)(blk + 192);
  const float d = ks_f16_to_f32(rd16(blk + 208));
  for (int h = 0; h < 2; h++)
    for (int g = 0; g < 4; g++)
      for (int l = 0; l < 32; l++) {
        int lo = ql[64 * h + 32 * (g & 1) + l];
        lo = g < 2 ? lo & 15 : lo >> 4;
        int hi = (qh[32 * h + l] >> (2 * g)) & 3;
        /* ggml's order: (d * scale) * q, evaluated left to right */
        y[128 * h + 32 * g + l] = d * (float)sc[8 * h + 2 * g + l / 16] * (float)((lo | hi << 4) - 32);
      }
}

static int nearest(float v, int lo, int hi) {
  if (!(v == v)) return lo < 0 && hi > 0 ? 0 : lo; /* nan */
  if (v <= (float)lo) return lo;
  if (v >= (float)hi) return hi;
  return (int)lrintf(v);
}

/* Packs eight 6-bit scales and mins into the 12-byte layout k_scale_min reads. */
static void k_pack_scales(unsigned char *b, const int *sc, const int *m) {
  for (int j = 0; j < 4; j++) {
    b[j] = (unsigned char)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    b[j + 4] = (unsigned char)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    b[j + 8] = (unsigned char)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

/* Q4_K (levels 15) or Q5_K (levels 31), one super-block: each 32-element sub-block's range
 * [min(x, 0), max(x)] becomes scale (range / levels) and min; those are quantised to 6 bits
 * against the largest of each, then every value is rounded against the scale and min as they
 * decode (the f16 super-scales included), so the error is at most about half a step plus the
 * 6-bit rounding of the sub-block's min. */
static void quant_q45_k(const float *x, unsigned char *blk, int levels) {
  float scale[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
  for (int s = 0; s < 8; s++) {
    float lo = 0.0f, hi = -INFINITY;
    for (int l = 0; l < 32; l++) {
      float v = x[32 * s + l];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (!(hi >= lo)) hi = lo; /* nan */
    scale[s] = (hi - lo) / (float)levels;
    mins[s] = -lo;
    if (scale[s] > max_scale) max_scale = scale[s];
    if (mins[s] > max_min) max_min = mins[s];
  }
  const uint16_t dh = ks_f32_to_f16(max_scale / 63.0f), mh = ks_f32_to_f16(max_min / 63.0f);
  const float d = ks_f16_to_f32(dh), dmin = ks_f16_to_f32(mh);
  int sc[8], m[8];
  for (int s = 0; s < 8; s++) {
    sc[s] = d > 0.0f ? nearest(scale[s] / d, 0, 63) : 0;
    m[s] = dmin > 0.0f ? nearest(mins[s] / dmin, 0, 63) : 0;
  }
  wr16(blk, dh);
  wr16(blk + 2, mh);
  k_pack_scales(blk + 4, sc, m);
  unsigned char *qh = levels == 31 ? blk + 16 : NULL, *qs = blk + (levels == 31 ? 48 : 16);
  if (qh) memset(qh, 0, 32);
  for (int j = 0; j < 4; j++)
    for (int l = 0; l < 32; l++) {
      int q[2];
      for (int half = 0; half < 2; half++) {
        const int s = 2 * j + half;
        const float d1 = d * (float)sc[s], m1 = dmin * (float)m[s];
        q[half] = d1 > 0.0f ? nearest((x[32 * s + l] + m1) / d1, 0, levels) : 0;
        if (qh && q[half] > 15) qh[l] |= (unsigned char)(1u << s);
      }
      qs[32 * j + l] = (unsigned char)((q[0] & 15) | ((q[1] & 15) << 4));
    }
}

/* Q6_K, one super-block: each 16-element group's scale is max|x| / 31 (so the codes -31..31
 * cover it), quantised to int8 against the largest, values rounded against the decoded scale. */
static void quant_q6_k(const float *x, unsigned char *blk) {
  float scale[16], max_scale = 0.0f;
  for (int s = 0; s < 16; s++) {
    float amax = 0.0f;
    for (int l = 0; l < 16; l++) amax = fmaxf(amax, fabsf(x[16 * s + l]));
    scale[s] = amax / 31.0f;
    if (scale[s] > max_scale) max_scale = scale[s];
  }
  const uint16_t dh = ks_f32_to_f16(max_scale / 127.0f);
  const float d = ks_f16_to_f32(dh);
  int sc[16];
  for (int s = 0; s < 16; s++) sc[s] = d > 0.0f ? nearest(scale[s] / d, 0, 127) : 0;
  unsigned char *ql = blk, *qh = blk + 128;
  memset(blk, 0, 192);
  for (int s = 0; s < 16; s++) blk[192 + s] = (unsigned char)(signed char)sc[s];
  wr16(blk + 208, dh);
  for (int i = 0; i < 256; i++) {
    const int s = i / 16, h = i / 128, g = (i % 128) / 32, l = i % 32;
    const float ds = d * (float)sc[s];
    const int q = (ds > 0.0f ? nearest(x[i] / ds, -32, 31) : 0) + 32;
    ql[64 * h + 32 * (g & 1) + l] |= (unsigned char)(g < 2 ? q & 15 : (q & 15) << 4);
    qh[32 * h + l] |= (unsigned char)((q >> 4) << (2 * g));
  }
}

/* ---------------------------------------------------------------- Q5_0, Q5_1 */

/* One block of 32; m_ptr NULL for Q5_0 (x = (q - 16) * d), else Q5_1 (x = q * d + m). Both
 * products are exact in f32 (11-bit by 5-bit), so only the Q5_1 add rounds. */
static void dequant_q5(const unsigned char *blk, int has_min, float *y) {
  const float d = ks_f16_to_f32(rd16(blk));
  const float m = has_min ? ks_f16_to_f32(rd16(blk + 2)) : 0.0f;
  const unsigned char *h = blk + (has_min ? 4 : 2), *qs = h + 4;
  const uint32_t qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                      (uint32_t)h[3] << 24;
  for (int j = 0; j < 32; j++) {
    int q = (j < 16 ? qs[j] & 15 : qs[j - 16] >> 4) | (int)((qh >> j) & 1) << 4;
    y[j] = has_min ? (float)q * d + m : (float)(q - 16) * d;
  }
}

/* Q5_0: the value of largest magnitude maps to code 0 (-16 d), like ggml's Q4_0/Q5_0, so the
 * scale's sign carries it; Q5_1: [min, max] over 31 steps. Values rounded against the scale
 * (and min) as they decode. */
static void quant_q5(const float *x, unsigned char *blk, int has_min) {
  float d, m = 0.0f;
  if (has_min) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < 32; j++) {
      lo = fminf(lo, x[j]);
      hi = fmaxf(hi, x[j]);
    }
    if (!(hi >= lo)) lo = hi = 0.0f; /* all nan */
    wr16(blk, ks_f32_to_f16((hi - lo) / 31.0f));
    wr16(blk + 2, ks_f32_to_f16(lo));
    d = ks_f16_to_f32(rd16(blk));
    m = ks_f16_to_f32(rd16(blk + 2));
  } else {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
      if (fabsf(x[j]) > amax) {
        amax = fabsf(x[j]);
        max = x[j];
      }
    wr16(blk, ks_f32_to_f16(max / -16.0f));
    d = ks_f16_to_f32(rd16(blk));
  }
  unsigned char *h = blk + (has_min ? 4 : 2), *qs = h + 4;
  uint32_t qh = 0;
  memset(qs, 0, 16);
  for (int j = 0; j < 32; j++) {
    int q = d != 0.0f ? (has_min ? nearest((x[j] - m) / d, 0, 31) : nearest(x[j] / d, -16, 15) + 16)
                      : (has_min ? 0 : 16);
    qs[j & 15] |= (unsigned char)((q & 15) << (j < 16 ? 0 : 4));
    qh |= (uint32_t)(q >> 4) << j;
  }
  for (int k = 0; k < 4; k++) h[k] = (unsigned char)(qh >> (8 * k));
}

/* 1 (and done) if t is Q5_0, Q5_1 or a K-quant. */
static int dequant_k(ks_type t, const unsigned char *s, float *dst, int64_t n) {
  if (t == KS_TYPE_Q5_0 || t == KS_TYPE_Q5_1) {
    const size_t bb = ks_type_block_bytes(t);
    for (int64_t b = 0; b < n / 32; b++) dequant_q5(s + b * bb, t == KS_TYPE_Q5_1, dst + b * 32);
    return 1;
  }
  if (t != KS_TYPE_Q4_K && t != KS_TYPE_Q5_K && t != KS_TYPE_Q6_K) return 0;
  const size_t bb = ks_type_block_bytes(t);
  for (int64_t b = 0; b < n / KS_QK_K; b++, s += bb) {
    float *y = dst + b * KS_QK_K;
    if (t == KS_TYPE_Q4_K) dequant_q45_k(s, NULL, s + 16, y);
    else if (t == KS_TYPE_Q5_K) dequant_q45_k(s, s + 16, s + 48, y);
    else dequant_q6_k(s, y);
  }
  return 1;
}

static int quant_k(ks_type t, const float *src, unsigned char *o, int64_t n) {
  if (t == KS_TYPE_Q5_0 || t == KS_TYPE_Q5_1) {
    const size_t bb = ks_type_block_bytes(t);
    for (int64_t b = 0; b < n / 32; b++) quant_q5(src + b * 32, o + b * bb, t == KS_TYPE_Q5_1);
    return 1;
  }
  if (t != KS_TYPE_Q4_K && t != KS_TYPE_Q5_K && t != KS_TYPE_Q6_K) return 0;
  const size_t bb = ks_type_block_bytes(t);
  for (int64_t b = 0; b < n / KS_QK_K; b++, o += bb) {
    const float *x = src + b * KS_QK_K;
    if (t == KS_TYPE_Q6_K) quant_q6_k(x, o);
    else quant_q45_k(x, o, t == KS_TYPE_Q4_K ? 15 : 31);
  }
  return 1;
}

/* ---------------------------------------------------------------- conversions */

void ks_dequant_row(ks_type t, const void *src, float *dst, int64_t n) {
  const unsigned char *s = src;
  if (dequant_k(t, s, dst, n)) return;
  switch (t) {
  case KS_TYPE_F32: memcpy(dst, src, (size_t)n * 4); return;
  case KS_TYPE_F16:
    for (int64_t i = 0; i < n; i++) dst[i] = ks_f16_to_f32(rd16(s + 2 * i));
    return;
  case KS_TYPE_BF16:
    for (int64_t i = 0; i < n; i++) dst[i] = ks_bf16_to_f32(rd16(s + 2 * i));
    return;
  case KS_TYPE_Q8_0:
    for (int64_t b = 0; b < n / KS_QK8_0; b++, s += 2 + KS_QK8_0) {
      float d = ks_f16_to_f32(rd16(s));
      for (int j = 0; j < KS_QK8_0; j++) dst[b * KS_QK8_0 + j] = (float)(int8_t)s[2 + j] * d;
    }
    return;
  case KS_TYPE_Q4_0:
    for (int64_t b = 0; b < n / KS_QK4_0; b++, s += 2 + KS_QK4_0 / 2) {
      float d = ks_f16_to_f32(rd16(s));
      float *y = dst + b * KS_QK4_0;
      for (int j = 0; j < KS_QK4_0 / 2; j++) {
        y[j] = (float)((s[2 + j] & 0x0f) - 8) * d;
        y[j + KS_QK4_0 / 2] = (float)((s[2 + j] >> 4) - 8) * d;
      }
    }
    return;
  }
  /* not a type kvscope computes with: callers check ks_type_known first */
  memset(dst, 0, (size_t)n * sizeof *dst);
}

void ks_quant_row(ks_type t, const float *src, void *dst, int64_t n) {
  unsigned char *o = dst;
  if (quant_k(t, src, o, n)) return;
  switch (t) {
  case KS_TYPE_F32: memcpy(dst, src, (size_t)n * 4); return;
  case KS_TYPE_F16:
    for (int64_t i = 0; i < n; i++) wr16(o + 2 * i, ks_f32_to_f16(src[i]));
    return;
  case KS_TYPE_BF16:
    for (int64_t i = 0; i < n; i++) wr16(o + 2 * i, f32_to_bf16(src[i]));
    return;
  case KS_TYPE_Q8_0: /* quantize_row_q8_0_ref */
    for (int64_t b = 0; b < n / KS_QK8_0; b++, o += 2 + KS_QK8_0) {
      const float *x = src + b * KS_QK8_0;
      float amax = 0.0f;
      for (int j = 0; j < KS_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      wr16(o, ks_f32_to_f16(d));
      for (int j = 0; j < KS_QK8_0; j++) {
        float q = roundf(x[j] * id);
        /* |q| <= 127 for finite input; the guards only keep nan/inf from being UB */
        int qi = q >= 127.0f ? 127 : q <= -127.0f ? -127 : q == q ? (int)q : 0;
        o[2 + j] = (unsigned char)(int8_t)qi;
      }
    }
    return;
  case KS_TYPE_Q4_0: /* quantize_row_q4_0_ref */
    for (int64_t b = 0; b < n / KS_QK4_0; b++, o += 2 + KS_QK4_0 / 2) {
      const float *x = src + b * KS_QK4_0;
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < KS_QK4_0; j++) {
        if (amax < fabsf(x[j])) {
          amax = fabsf(x[j]);
          max = x[j];
        }
      }
      const float d = max / -8.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      wr16(o, ks_f32_to_f16(d));
      for (int j = 0; j < KS_QK4_0 / 2; j++) {
        /* ggml: MIN(15, (int8_t)(x*id + 8.5f)); the value is in [0.5, 16.5] for finite input,
         * where truncation to int is the same as to int8 */
        float v0 = x[j] * id + 8.5f, v1 = x[j + KS_QK4_0 / 2] * id + 8.5f;
        int q0 = v0 >= 15.0f ? 15 : v0 >= 0.0f ? (int)v0 : 0;
        int q1 = v1 >= 15.0f ? 15 : v1 >= 0.0f ? (int)v1 : 0;
        o[2 + j] = (unsigned char)(q0 | (q1 << 4));
      }
    }
    return;
  }
  memset(dst, 0, ks_type_row_bytes(t, n));
}
