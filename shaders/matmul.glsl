// matmul.glsl — out (n_tok, N) = x (n_tok, K) · Wᵀ for one row slice of W; included by
// matmul_<type>.comp after `#define WTYPE` (0 F32, 1 F16, 8 Q8_0, 2 Q4_0, 30 BF16, 12 Q4_K,
// 13 Q5_K, 14 Q6_K, 6 Q5_0, 7 Q5_1).
//
// Batch invariance: a workgroup owns R weight rows and a tile of up to TT tokens. Invocation
// `lid` accumulates, for every (row, token) of the tile, the units u = lid, lid + WG, ... of the
// row (a unit is 4 elements for float types, 8 for quantised ones), each unit as a fixed dot
// expression; then the WG partials of each (row, token) are summed in index order by one
// invocation. That order depends only on K and WG (fixed per device), never on n_tok or on the
// token's place in the tile, so decode (n_tok = 1) and prefill give the same bits per row.
// Each loaded weight unit is reused for every token of the tile (prefill reads W once per TT
// tokens); F32/F16 weights are read as vec4 / 4 halves.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define R 4u
#define TT 8u

layout(push_constant) uniform PC {
  uint o_out, o_x, o_w;   // word offsets (o_w is 0: slices are bound at offset 0)
  uint K, N;              // row length; out row stride (all rows of W)
  uint row0, rows;        // this slice: first row of W, number of rows
  uint n_tok, row_bytes;  // tokens; bytes of one weight row (quantised types)
} pc;
layout(binding = 0) writeonly buffer Out { float y[]; };
layout(binding = 1) readonly buffer X { float x[]; };

#if WTYPE == 0
#define UNIT 4u
layout(binding = 2) readonly buffer W { vec4 w4[]; };
#elif WTYPE == 1 || WTYPE == 30
#define UNIT 4u
layout(binding = 2) readonly buffer W { uvec2 w2[]; };
#else
#define UNIT 8u
layout(binding = 2) readonly buffer W { uint wu[]; };
#include "quant.glsl"
#endif
#define NV (UNIT / 4u)

shared float red[R * TT][WG + 1u];

// weight unit u of slice row `row`, as NV vec4
void load_w(uint row, uint u, out vec4 w[NV]) {
#if WTYPE == 0
  w[0] = w4[row * (pc.K >> 2) + u];
#elif WTYPE == 1
  uvec2 h = w2[row * (pc.K >> 2) + u];
  w[0] = vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
#elif WTYPE == 30
  uvec2 b = w2[row * (pc.K >> 2) + u]; // bf16 is the top half of an f32
  w[0] = vec4(uintBitsToFloat(b.x << 16), uintBitsToFloat(b.x & 0xffff0000u),
              uintBitsToFloat(b.y << 16), uintBitsToFloat(b.y & 0xffff0000u));
#elif WTYPE == 12 || WTYPE == 13
  q45k_unit(row * pc.row_bytes, u, WTYPE == 13, w[0], w[1]);
#elif WTYPE == 14
  q6k_unit(row * pc.row_bytes, u, w[0], w[1]);
#elif WTYPE == 6 || WTYPE == 7
  q5_unit(row * pc.row_bytes, u, WTYPE == 7, w[0], w[1]);
#elif WTYPE == 8
  uint base = row * pc.row_bytes + (u >> 2) * Q8_0_BYTES;
  float d = ld_half(base);
  uvec2 q = ld8(base + 2u + (u & 3u) * 8u);
  w[0] = i8x4(q.x) * d;
  w[1] = i8x4(q.y) * d;
#else
  uint base = row * pc.row_bytes + (u >> 2) * Q4_0_BYTES;
  float d = ld_half(base);
  uvec2 q = ld8(base + 2u + (u & 1u) * 8u);
  if ((u & 2u) == 0u) {
    w[0] = nib_lo(q.x) * d;
    w[1] = nib_lo(q.y) * d;
  } else {
    w[0] = nib_hi(q.x) * d;
    w[1] = nib_hi(q.y) * d;
  }
#endif
}

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint rbase = gl_WorkGroupID.x * R;
  const uint tbase = gl_WorkGroupID.y * TT;
  const uint nt = min(TT, pc.n_tok - tbase);
  float acc[R][TT];
  [[unroll]] for (uint r = 0u; r < R; r++)
    [[unroll]] for (uint t = 0u; t < TT; t++) acc[r][t] = 0.0;

  const uint nunits = pc.K / UNIT;
  for (uint u = lid; u < nunits; u += WG) {
    vec4 w[R][NV];
    [[unroll]] for (uint r = 0u; r < R; r++) load_w(min(rbase + r, pc.rows - 1u), u, w[r]);
    [[unroll]] for (uint t = 0u; t < TT; t++) {
      if (t < nt) {
        uint xo = pc.o_x + (tbase + t) * pc.K + u * UNIT;
        vec4 xv[NV];
        [[unroll]] for (uint v = 0u; v < NV; v++)
          xv[v] = vec4(x[xo + 4u * v], x[xo + 4u * v + 1u], x[xo + 4u * v + 2u], x[xo + 4u * v + 3u]);
        [[unroll]] for (uint r = 0u; r < R; r++) {
#if WTYPE == 0 || WTYPE == 1 || WTYPE == 30
          acc[r][t] += dot(w[r][0], xv[0]);
#else
          acc[r][t] += dot(w[r][0], xv[0]) + dot(w[r][1], xv[1]);
#endif
        }
      }
    }
  }
  [[unroll]] for (uint t = 0u; t < TT; t++)
    if (t < nt)
      [[unroll]] for (uint r = 0u; r < R; r++) red[r * TT + t][lid] = acc[r][t];
  barrier();
  for (uint v = lid; v < R * TT; v += WG) {
    uint r = v / TT, t = v % TT;
    if (t < nt && rbase + r < pc.rows) {
      float s = 0.0;
      for (uint j = 0u; j < WG; j++) s += red[v][j];
      y[pc.o_out + (tbase + t) * pc.N + pc.row0 + rbase + r] = s;
    }
  }
}
