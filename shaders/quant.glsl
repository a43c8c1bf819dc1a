// quant.glsl — reading F16 and quantised (Q8_0, Q4_0; BF16, Q5_0, Q5_1 and the K-quants in kquant.glsl) weights from a uint array `wu` with byte
// arithmetic, so no 8/16-bit storage feature is needed. Q8_0 blocks are 34 bytes (f16 scale d,
// 32 int8), Q4_0 blocks 18 bytes (f16 scale d, 16 bytes of nibbles; element j < 16 is the low
// nibble of byte j, element j + 16 its high nibble; value (q - 8) * d); on the device their
// scales and quant bytes lie apart, aligned (gpu.h). The including shader declares `wu`.
#define QK 32u

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

// Byte and nibble values to float without an integer conversion (a quarter-rate instruction on
// many GPUs): 0x4B000000 | q is the float 2^23 + q, so subtracting 2^23 (plus the offset) gives
// float(q) - offset exactly, the value the conversion would give
const uvec4 BYTE_SHIFT = uvec4(0u, 8u, 16u, 24u);
vec4 i8x4(uint w) { // signed bytes: b ^ 0x80 is b + 128
  return uintBitsToFloat(((uvec4(w) >> BYTE_SHIFT) & 0xffu) ^ 0x4B000080u) - 8388736.0;
}
vec4 nib_lo(uint w) { // low nibbles, minus 8
  return uintBitsToFloat(((uvec4(w) >> BYTE_SHIFT) & 15u) | 0x4B000000u) - 8388616.0;
}
vec4 nib_hi(uint w) { // high nibbles, minus 8
  return uintBitsToFloat(((uvec4(w) >> (BYTE_SHIFT + 4u)) & 15u) | 0x4B000000u) - 8388616.0;
}

#include "kquant.glsl"

// element e of row `row` (rows of row_bytes bytes, K values) of a slice of nrows rows, for
// ks_type `t` (0 F32, 1 F16, 8 Q8_0, 2 Q4_0, 30 BF16, 12 Q4_K, 13 Q5_K, 14 Q6_K, 6 Q5_0, 7 Q5_1).
// Q8_0 and Q4_0 are in the device's split layout (gpu.h): block i = row * nb + b has its quant
// bytes at i * qb (32 or 16) and its f16 scale at nrows * nb * qb + 2 i.
float ld_elem(uint t, uint row, uint row_bytes, uint nrows, uint K, uint e) {
  const uint rowoff = row * row_bytes;
  if (t == 0u) return uintBitsToFloat(wu[(rowoff >> 2) + e]);
  if (t == 1u) return ld_half(rowoff + e * 2u);
  if (t == 30u) return ld_bf16(rowoff + e * 2u);
  if (t == 12u) return q45k_elem(rowoff + (e / QK_K) * Q4_K_BYTES, e % QK_K, false);
  if (t == 13u) return q45k_elem(rowoff + (e / QK_K) * Q5_K_BYTES, e % QK_K, true);
  if (t == 14u) return q6k_elem(rowoff + (e / QK_K) * Q6_K_BYTES, e % QK_K);
  if (t == 6u) return q5_elem(rowoff + (e / QK) * Q5_0_BYTES, e % QK, false);
  if (t == 7u) return q5_elem(rowoff + (e / QK) * Q5_1_BYTES, e % QK, true);
  const uint nb = K / QK, i = row * nb + e / QK, j = e % QK;
  if (t == 8u) {
    int q = bitfieldExtract(int(ld_byte(i * 32u + j)), 0, 8);
    return float(q) * ld_half(nrows * nb * 32u + 2u * i);
  }
  uint byte = ld_byte(i * 16u + (j & 15u));
  uint q = j < 16u ? (byte & 15u) : (byte >> 4);
  return (float(q) - 8.0) * ld_half(nrows * nb * 16u + 2u * i);
}
