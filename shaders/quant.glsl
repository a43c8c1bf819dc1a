// quant.glsl — reading F16 and quantised (Q8_0, Q4_0; BF16, Q5_0, Q5_1 and the K-quants in kquant.glsl) weights from a uint array `wu` with byte
// arithmetic, so no 8/16-bit storage feature is needed. Q8_0 blocks are 34 bytes (f16 scale d,
// 32 int8), Q4_0 blocks 18 bytes (f16 scale d, 16 bytes of nibbles; element j < 16 is the low
// nibble of byte j, element j + 16 its high nibble; value (q - 8) * d): neither is 4-byte
// aligned, so a block's bytes start at any even offset. The including shader declares `wu`.
#define QK 32u
#define Q8_0_BYTES 34u
#define Q4_0_BYTES 18u

// f16 at an even byte offset
float ld_half(uint byteoff) {
  uint w = wu[byteoff >> 2];
  return unpackHalf2x16((byteoff & 2u) != 0u ? (w >> 16) : w).x;
}
// 8 bytes at an even byte offset, as two little-endian words
uvec2 ld8(uint byteoff) {
  uint i = byteoff >> 2;
  uint w0 = wu[i], w1 = wu[i + 1u];
  if ((byteoff & 2u) != 0u) {
    uint w2 = wu[i + 2u];
    return uvec2((w0 >> 16) | (w1 << 16), (w1 >> 16) | (w2 << 16));
  }
  return uvec2(w0, w1);
}
// one byte at any offset
uint ld_byte(uint byteoff) { return (wu[byteoff >> 2] >> ((byteoff & 3u) * 8u)) & 0xffu; }

vec4 i8x4(uint w) {
  int s = int(w);
  return vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8),
              bitfieldExtract(s, 24, 8));
}
vec4 nib_lo(uint w) {
  return vec4(float(w & 15u), float((w >> 8) & 15u), float((w >> 16) & 15u),
              float((w >> 24) & 15u)) - 8.0;
}
vec4 nib_hi(uint w) {
  return vec4(float((w >> 4) & 15u), float((w >> 12) & 15u), float((w >> 20) & 15u),
              float(w >> 28)) - 8.0;
}

#include "kquant.glsl"

// element e of a row starting at byte rowoff, for ks_type `t` (0 F32, 1 F16, 8 Q8_0, 2 Q4_0,
// 30 BF16, 12 Q4_K, 13 Q5_K, 14 Q6_K, 6 Q5_0, 7 Q5_1)
float ld_elem(uint t, uint rowoff, uint e) {
  if (t == 0u) return uintBitsToFloat(wu[(rowoff >> 2) + e]);
  if (t == 1u) return ld_half(rowoff + e * 2u);
  if (t == 30u) return ld_bf16(rowoff + e * 2u);
  if (t == 12u) return q45k_elem(rowoff + (e / QK_K) * Q4_K_BYTES, e % QK_K, false);
  if (t == 13u) return q45k_elem(rowoff + (e / QK_K) * Q5_K_BYTES, e % QK_K, true);
  if (t == 14u) return q6k_elem(rowoff + (e / QK_K) * Q6_K_BYTES, e % QK_K);
  if (t == 6u) return q5_elem(rowoff + (e / QK) * Q5_0_BYTES, e % QK, false);
  if (t == 7u) return q5_elem(rowoff + (e / QK) * Q5_1_BYTES, e % QK, true);
  uint b = e / QK, j = e % QK;
  if (t == 8u) {
    uint base = rowoff + b * Q8_0_BYTES;
    int q = bitfieldExtract(int(ld_byte(base + 2u + j)), 0, 8);
    return float(q) * ld_half(base);
  }
  uint base = rowoff + b * Q4_0_BYTES;
  uint byte = ld_byte(base + 2u + (j & 15u));
  uint q = j < 16u ? (byte & 15u) : (byte >> 4);
  return (float(q) - 8.0) * ld_half(base);
}
