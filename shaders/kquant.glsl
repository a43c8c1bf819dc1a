// kquant.glsl — reading BF16, Q5_0, Q5_1 and the GGML K-quants (Q4_K, Q5_K, Q6_K: super-blocks
// of 256 elements; layouts in src/quant.h) from the uint array `wu` with byte arithmetic, so no
// 8/16-bit storage feature is needed. Included by quant.glsl (after ld_half, ld8, ld_byte). Each
// value is the CPU reference's float expression (quant.c): d*sc and dmin*m first, then
// (d*sc)*q - dmin*m for Q4_K/Q5_K, (d*sc)*q for Q6_K, (q-16)*d for Q5_0 and q*d + m for Q5_1,
// `precise` so the compiler keeps that order; embed is bit-identical to ks_dequant_row.
// Alignment: Q4_K, Q5_K and Q5_1 blocks are 144, 176 and 24 bytes, so with 4-byte aligned rows
// every block starts on a word; Q6_K (210) and Q5_0 (22) blocks start on any even byte (ld8 and
// ld_half handle that). Word reads never pass the word holding a block's last byte.
#define QK_K 256u
#define Q4_K_BYTES 144u
#define Q5_K_BYTES 176u
#define Q6_K_BYTES 210u
#define Q5_0_BYTES 22u
#define Q5_1_BYTES 24u

// bf16 at an even byte offset: the top half of an f32
float ld_bf16(uint byteoff) {
  uint w = wu[byteoff >> 2];
  return uintBitsToFloat((byteoff & 2u) != 0u ? (w & 0xffff0000u) : (w << 16));
}

// (d * sc, dmin * m) of sub-block j (0..7) of the Q4_K/Q5_K block at byte `blk` (a word
// boundary): d, dmin are the block's first word; the 12 scale bytes are its next three words.
vec2 k_dm(uint blk, uint j) {
  uint wi = blk >> 2;
  vec2 dd = unpackHalf2x16(wu[wi]);
  uint s = (j & 3u) * 8u;
  uint w0 = wu[wi + 1u], w1 = wu[wi + 2u];
  uint sc, m;
  if (j < 4u) {
    sc = (w0 >> s) & 63u;
    m = (w1 >> s) & 63u;
  } else {
    uint c = (wu[wi + 3u] >> s) & 255u;
    sc = (c & 15u) | (((w0 >> (s + 6u)) & 3u) << 4);
    m = (c >> 4) | (((w1 >> (s + 6u)) & 3u) << 4);
  }
  precise vec2 r = dd * vec2(float(sc), float(m));
  return r;
}

// element i (< 256) of the Q4_K (qh 0) or Q5_K (qh 1) block at byte blk
float q45k_elem(uint blk, uint i, bool has_qh) {
  uint j = i >> 6, l = i & 63u, hi = l >> 5;
  vec2 dm = k_dm(blk, 2u * j + hi);
  uint byte = ld_byte(blk + (has_qh ? 48u : 16u) + 32u * j + (l & 31u));
  uint q = hi == 0u ? (byte & 15u) : (byte >> 4);
  if (has_qh) q |= ((ld_byte(blk + 16u + (l & 31u)) >> (2u * j + hi)) & 1u) << 4;
  precise float y = dm.x * float(q) - dm.y;
  return y;
}

// element i (< 256) of the Q6_K block at byte blk
float q6k_elem(uint blk, uint i) {
  uint h = i >> 7, g = (i >> 5) & 3u, l = i & 31u;
  uint lo = ld_byte(blk + 64u * h + 32u * (g & 1u) + l);
  lo = g < 2u ? (lo & 15u) : (lo >> 4);
  uint hi = (ld_byte(blk + 128u + 32u * h + l) >> (2u * g)) & 3u;
  int sc = bitfieldExtract(int(ld_byte(blk + 192u + 8u * h + 2u * g + (l >> 4))), 0, 8);
  precise float ds = ld_half(blk + 208u) * float(sc);
  precise float y = ds * float(int(lo | (hi << 4)) - 32);
  return y;
}

// Matrix units: 8 consecutive elements (unit u of a row starting at byte rowoff) as two vec4.
// A unit never crosses a sub-block (32 or 16 elements), so it has one scale.

// the four bytes of w, each shifted right by sh and masked
vec4 bytes4(uint w, uint sh, uint mask) {
  return vec4(float((w >> sh) & mask), float((w >> (sh + 8u)) & mask),
              float((w >> (sh + 16u)) & mask), float((w >> (sh + 24u)) & mask));
}

void q45k_unit(uint rowoff, uint u, bool has_qh, out vec4 w0, out vec4 w1) {
  uint blk = rowoff + (u >> 5) * (has_qh ? Q5_K_BYTES : Q4_K_BYTES);
  uint e = (u & 31u) * 8u, j = e >> 6, l = e & 63u, hi = l >> 5;
  vec2 dm = k_dm(blk, 2u * j + hi);
  uint qi = (blk + (has_qh ? 48u : 16u) + 32u * j + (l & 31u)) >> 2;
  uint sh = hi * 4u;
  vec4 q0 = bytes4(wu[qi], sh, 15u), q1 = bytes4(wu[qi + 1u], sh, 15u);
  if (has_qh) {
    uint hq = (blk + 16u + (l & 31u)) >> 2, bit = 2u * j + hi;
    q0 += 16.0 * bytes4(wu[hq], bit, 1u);
    q1 += 16.0 * bytes4(wu[hq + 1u], bit, 1u);
  }
  precise vec4 r0 = dm.x * q0 - dm.y;
  precise vec4 r1 = dm.x * q1 - dm.y;
  w0 = r0;
  w1 = r1;
}

void q6k_unit(uint rowoff, uint u, out vec4 w0, out vec4 w1) {
  uint blk = rowoff + (u >> 5) * Q6_K_BYTES;
  uint e = (u & 31u) * 8u, h = e >> 7, g = (e >> 5) & 3u, l = e & 31u;
  uvec2 lo = ld8(blk + 64u * h + 32u * (g & 1u) + l);
  uvec2 hb = ld8(blk + 128u + 32u * h + l);
  uint sh = g < 2u ? 0u : 4u;
  vec4 q0 = bytes4(lo.x, sh, 15u) + 16.0 * bytes4(hb.x, 2u * g, 3u) - 32.0;
  vec4 q1 = bytes4(lo.y, sh, 15u) + 16.0 * bytes4(hb.y, 2u * g, 3u) - 32.0;
  int sc = bitfieldExtract(int(ld_byte(blk + 192u + 8u * h + 2u * g + (l >> 4))), 0, 8);
  precise float ds = ld_half(blk + 208u) * float(sc);
  precise vec4 r0 = ds * q0;
  precise vec4 r1 = ds * q1;
  w0 = r0;
  w1 = r1;
}

// element j (< 32) of the Q5_0 (has_min false) or Q5_1 block at byte blk
float q5_elem(uint blk, uint j, bool has_min) {
  uint h = blk + (has_min ? 4u : 2u);
  uint qh = ld8(h).x; // the 32 fifth bits, at an even offset
  uint byte = ld_byte(h + 4u + (j & 15u));
  uint q = (j < 16u ? (byte & 15u) : (byte >> 4)) | (((qh >> j) & 1u) << 4);
  float d = ld_half(blk);
  if (has_min) {
    precise float y = float(q) * d + ld_half(blk + 2u);
    return y;
  }
  precise float y = float(int(q) - 16) * d;
  return y;
}

// unit u (8 elements) of a Q5_0/Q5_1 row: block u/4; units 0, 1 are elements 0-7, 8-15 (low
// nibbles of bytes 0-7, 8-15), units 2, 3 elements 16-23, 24-31 (high nibbles of the same bytes)
void q5_unit(uint rowoff, uint u, bool has_min, out vec4 w0, out vec4 w1) {
  uint blk = rowoff + (u >> 2) * (has_min ? Q5_1_BYTES : Q5_0_BYTES);
  uint s = u & 3u, h = blk + (has_min ? 4u : 2u);
  uint hb = ld8(h).x >> ((s & 2u) * 8u + (s & 1u) * 8u); // fifth bits of these 8 elements
  uvec2 q = ld8(h + 4u + (s & 1u) * 8u);
  uint sh = (s & 2u) * 2u; // 0: low nibbles, 4: high
  vec4 q0 = bytes4(q.x, sh, 15u) + 16.0 * vec4(float(hb & 1u), float((hb >> 1) & 1u),
                                               float((hb >> 2) & 1u), float((hb >> 3) & 1u));
  vec4 q1 = bytes4(q.y, sh, 15u) + 16.0 * vec4(float((hb >> 4) & 1u), float((hb >> 5) & 1u),
                                               float((hb >> 6) & 1u), float((hb >> 7) & 1u));
  float d = ld_half(blk);
  if (has_min) {
    float m = ld_half(blk + 2u);
    precise vec4 r0 = q0 * d + m;
    precise vec4 r1 = q1 * d + m;
    w0 = r0;
    w1 = r1;
  } else {
    precise vec4 r0 = (q0 - 16.0) * d;
    precise vec4 r1 = (q1 - 16.0) * d;
    w0 = r0;
    w1 = r1;
  }
}
