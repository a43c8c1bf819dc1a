/* quant.c — element types: names, block sizes, and the CPU reference conversions to and from
 * f32. The quantisers reproduce ggml's *_ref routines bit for bit (same scale, same rounding),
 * so a file kvscope writes matches what llama.cpp's quantiser would write. Not fast: the GPU
 * kernels dequantise on the fly; this is their oracle and the converter's workhorse. */
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
    [3] = {"Q4_1", 32, 20, 0},     [6] = {"Q5_0", 32, 22, 0},     [7] = {"Q5_1", 32, 24, 0},
    [8] = {"Q8_0", 32, 34, 1},     [9] = {"Q8_1", 32, 36, 0},     [10] = {"Q2_K", 256, 84, 0},
    [11] = {"Q3_K", 256, 110, 0},  [12] = {"Q4_K", 256, 144, 0},  [13] = {"Q5_K", 256, 176, 0},
    [14] = {"Q6_K", 256, 210, 0},  [15] = {"Q8_K", 256, 292, 0},  [16] = {"IQ2_XXS", 256, 66, 0},
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

void ks_dequant_row(ks_type t, const void *src, float *dst, int64_t n) {
  const unsigned char *s = src;
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
