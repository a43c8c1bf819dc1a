// matmul_common.glsl — what the two matrix kernels share (matmul.glsl, the portable one, and
// matmul_cm.glsl, the cooperative-matrix one): push constants, bindings, the weight-row reader
// load_w for every weight type, the RoPE pair numbering and the output epilogues. The including
// shader defines WTYPE first.
#define NORM_IN 1u
#define EPI_ADD 2u
#define EPI_SWIGLU 4u
#define EPI_ROPE 8u
#define KV_BLOCK 16u

layout(push_constant) uniform PC {
  uint o_out, o_x, o_w, o_nw; // word offsets of bindings 0-7 (o_w is 0: slices are bound at 0)
  uint o_k, o_v, o_st, o_f;
  uint K, N;                  // row length; out row stride
  uint row0, rows;            // this slice: first output row, rows of the slice (SWIGLU: gate rows)
  uint n_tok, row_bytes;      // tokens; bytes of one weight row (quantised types)
  uint flags;
  float eps;
  uint qd, kvd, head_dim, neox; // EPI_ROPE
} pc;
layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer X { vec4 x4[]; };
layout(binding = 3) readonly buffer NW { vec4 nw4[]; };
layout(binding = 4) writeonly buffer KP { float kp[]; };
layout(binding = 5) writeonly buffer VP { float vp[]; };
layout(binding = 6) readonly buffer ST { uint st[]; }; // ks_step (4 words), then the block table
layout(binding = 7) readonly buffer F { float freq[]; };

// EPI_ROPE: the two rows (columns of q|k|v) of pair c, as rope_kv.comp numbers them
void rope_pair(uint c, out uint e0, out uint e1, out uint j) {
  const uint half_dim = pc.head_dim / 2u;
  j = 0u;
  if (c >= (pc.qd + pc.kvd) / 2u) {
    e0 = pc.qd + pc.kvd + 2u * (c - (pc.qd + pc.kvd) / 2u);
    e1 = e0 + 1u;
  } else {
    uint hc = c < pc.qd / 2u ? c : c - pc.qd / 2u;
    uint base = (c < pc.qd / 2u ? 0u : pc.qd) + (hc / half_dim) * pc.head_dim;
    j = hc % half_dim;
    e0 = pc.neox != 0u ? base + j : base + 2u * j;
    e1 = pc.neox != 0u ? e0 + half_dim : e0 + 1u;
  }
}

#if WTYPE == 0
layout(binding = 2) readonly buffer W { vec4 wf4[]; };
#elif WTYPE == 1 || WTYPE == 30
layout(binding = 2) readonly buffer W { uvec2 w2[]; };
layout(binding = 2) readonly buffer W8 { uvec4 w8[]; };
#else
layout(binding = 2) readonly buffer W { uint wu[]; };
#include "quant.glsl"
#endif

vec4 h4(uvec2 h) { return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y)); }
vec4 b4(uvec2 b) { // bf16 is the top half of an f32
  return vec4(uintBitsToFloat(b.x << 16), uintBitsToFloat(b.x & 0xffff0000u),
              uintBitsToFloat(b.y << 16), uintBitsToFloat(b.y & 0xffff0000u));
}

#if WTYPE == 8 || WTYPE == 2
// Q8_0 / Q4_0 in the device's split layout (gpu.h): block i = row * nb + b of the slice's wrows
// rows has its QB quant bytes at i * QB and its f16 scale at wrows * nb * QB + 2 i
#if WTYPE == 8
const uint QB = 32u;
#else
const uint QB = 16u;
#endif
uint q_wrows() { return (pc.flags & EPI_SWIGLU) != 0u ? 2u * pc.rows : pc.rows; }
// the index of block b of weight row `row`
uint q_block(uint row, uint b) { return row * (pc.K >> 5) + b; }
// unit u (8 values) of weight row `row`: the byte offsets of its scale and of its 8 quant bytes
// (a multiple of 8)
void q_unit_at(uint row, uint u, out uint base, out uint qo) {
  const uint i = q_block(row, u >> 2);
  base = q_wrows() * (pc.K >> 5) * QB + 2u * i;
#if WTYPE == 8
  qo = i * 32u + (u & 3u) * 8u;
#else
  qo = i * 16u + (u & 1u) * 8u;
#endif
}
// its 8 values from the scale d and the quant bytes q
void q_unit(float d, uvec2 q, uint u, out vec4 w0, out vec4 w1) {
#if WTYPE == 8
  w0 = i8x4(q.x) * d;
  w1 = i8x4(q.y) * d;
#else
  if ((u & 2u) == 0u) {
    w0 = nib_lo(q.x) * d;
    w1 = nib_lo(q.y) * d;
  } else {
    w0 = nib_hi(q.x) * d;
    w1 = nib_hi(q.y) * d;
  }
#endif
}
#endif

#if WTYPE == 8 || WTYPE == 2
// unit u of weight row `row` as integer values (q, or q - 8) and the block's scale d: load_w's
// values are w * d
void load_wq(uint row, uint u, out vec4 w0, out vec4 w1, out float d) {
  uint base, qo;
  q_unit_at(row, u, base, qo);
  d = ld_half(base);
  q_unit(1.0, uvec2(wu[qo >> 2], wu[(qo >> 2) + 1u]), u, w0, w1);
}
#endif

// unit u (elements 8u .. 8u + 7) of weight row `row` of the slice; w1 = 0 for a 4-element tail
void load_w(uint row, uint u, out vec4 w0, out vec4 w1) {
  const bool tail = 8u * u + 4u == pc.K;
#if WTYPE == 0
  uint i = row * (pc.K >> 2) + 2u * u;
  w0 = wf4[i];
  w1 = tail ? vec4(0.0) : wf4[i + 1u];
#elif WTYPE == 1 || WTYPE == 30
  uvec2 a, b;
  if ((pc.K & 7u) == 0u) {
    uvec4 q = w8[row * (pc.K >> 3) + u];
    a = q.xy;
    b = q.zw;
  } else {
    uint i = row * (pc.K >> 2) + 2u * u;
    a = w2[i];
    b = tail ? uvec2(0u) : w2[i + 1u];
  }
#if WTYPE == 1
  w0 = h4(a);
  w1 = h4(b);
#else
  w0 = b4(a);
  w1 = b4(b);
#endif
#elif WTYPE == 12 || WTYPE == 13
  q45k_unit(row * pc.row_bytes, u, WTYPE == 13, w0, w1);
#elif WTYPE == 14
  q6k_unit(row * pc.row_bytes, u, w0, w1);
#elif WTYPE == 6 || WTYPE == 7
  q5_unit(row * pc.row_bytes, u, WTYPE == 7, w0, w1);
#else
  float d; // the integer values times the scale: the same products as q_unit(d, ...)
  load_wq(row, u, w0, w1, d);
  w0 *= d;
  w1 *= d;
#endif
}


// the epilogue of one output (row o of the slice, token t): plain, EPI_ADD or EPI_SWIGLU (a is
// the gate's dot product, b the up one's)
void mm_store(uint t, uint o, float a, float b) {
  const uint yi = pc.o_out + t * pc.N + pc.row0 + o;
  if ((pc.flags & EPI_SWIGLU) != 0u) {
    precise float v = a * (1.0 / (1.0 + exp(-a))) * b;
    y[yi] = v;
  } else if ((pc.flags & EPI_ADD) != 0u) {
    precise float v = y[yi] + a;
    y[yi] = v;
  } else {
    y[yi] = a;
  }
}

// EPI_ROPE's epilogue of pair c for token t (position step.pos0 + t): q and k pairs turned, v
// pairs copied; q to y, k and v into the paged pools
void mm_rope_store(uint c, uint t, float x0, float x1) {
  uint e0, e1, j;
  rope_pair(c, e0, e1, j);
  const uint pos = st[pc.o_st] + t;
  if (e0 < pc.qd + pc.kvd) {
    precise float val = float(pos) * freq[pc.o_f + j];
    precise float kk = round(val * 0.15915494309189535);
    precise float rr = (val - kk * 6.28125) - kk * 0.0019353071795864769;
    float cs = cos(rr), sn = sin(rr);
    precise float y0 = x0 * cs - x1 * sn;
    precise float y1 = x0 * sn + x1 * cs;
    x0 = y0;
    x1 = y1;
  }
  const uint prow = st[pc.o_st + 4u + pos / KV_BLOCK] * KV_BLOCK + pos % KV_BLOCK;
  if (e0 < pc.qd) {
    y[pc.o_out + t * pc.qd + e0] = x0;
    y[pc.o_out + t * pc.qd + e1] = x1;
  } else if (e0 < pc.qd + pc.kvd) {
    kp[pc.o_k + prow * pc.kvd + e0 - pc.qd] = x0;
    kp[pc.o_k + prow * pc.kvd + e1 - pc.qd] = x1;
  } else {
    vp[pc.o_v + prow * pc.kvd + e0 - pc.qd - pc.kvd] = x0;
    vp[pc.o_v + prow * pc.kvd + e1 - pc.qd - pc.kvd] = x1;
  }
}
