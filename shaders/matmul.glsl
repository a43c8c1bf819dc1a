// matmul.glsl — y (n_tok, N) = x (n_tok, K) · Wᵀ for one row slice of W, with optional fusions;
// included by matmul_<type>.comp after `#define WTYPE` (0 F32, 1 F16, 8 Q8_0, 2 Q4_0, 30 BF16,
// 12 Q4_K, 13 Q5_K, 14 Q6_K, 6 Q5_0, 7 Q5_1). Built four times (CMakeLists.txt): KS_SUBGROUP=1
// sums lanes with subgroup shuffles, KS_SUBGROUP=0 with shared memory, in the same order; and
// KS_DECODE=1 (one token: NAME_dec) or 0 (prefill tiles).
//
// (Q8_0 and Q4_0 (QSCALE): a unit's 8 products with the integer weights start from 0 and the
// block scale times their sum is added with one fma.)
//
// Work split: a workgroup is NGR row groups of LPR = SG * SPLIT invocations. A group owns R
// weight rows ("slots") and a tile of up to TT tokens. Lane L of a group accumulates, for every
// (slot, token), the units u = L, L + LPR, L + 2 LPR, ... of the row (a unit is 8 elements, the
// last one 4 when K % 8 == 4), one fma per element in element order; then each SG lanes' partials
// are summed by a butterfly (partner lane l ^ m for m = SG/2, ..., 1) and the SPLIT subgroup sums
// added in subgroup order. Every operation is `precise` (no contraction, no reassociation), so an
// output's bits depend only on K, SG and SPLIT (the host picks SPLIT from K alone), never on R,
// TT, U, NGR, the tile or n_tok: the decode pipeline (TT = 1) and the prefill one (TT = 8) give a
// row the same bits, which the prompt cache's bit-for-bit reuse needs. (Under the `prefill`
// policy, where prompts take matmul_cm.glsl and decode steps are never cached, the host picks a
// decode step's SPLIT from the number of rows instead.)
//
// Fusions, chosen by pc.flags:
//   NORM_IN     the input row is RMS-normalised on the fly: the same pass sums x[k]^2 (same lane
//               split and order) and the products with nw[k] * x[k]; after the reduction each
//               product is multiplied by scale = 1 / sqrt(ss / K + eps)
//   EPI_ADD     y += result (the residual add)
//   EPI_SWIGLU  W is [gate; up] with pc.split gate rows: a group's slots are R/2 gate rows and the
//               R/2 up rows of the same outputs; y = silu(gate) * up
//   EPI_ROPE    W is [wq; wk; wv]: a group's slots are R/2 pairs of rows (the pairs RoPE turns
//               together; v in adjacent pairs), each pair rotated as rope_kv.comp does, q written
//               to y (n_tok, qd), k and v into the paged pools at positions step.pos0 + t
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#if KS_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#include "matmul_common.glsl"
// Q8_0 / Q4_0: a unit's products take the integer values (q, or q - 8) and its block scale d
// multiplies their sum once: acc + d * (sum of q x), one fma (fewer instructions per weight)
#define QSCALE (WTYPE == 8 || WTYPE == 2)
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint SG = 32;  // lanes that split one row; power of two
layout(constant_id = 2) const uint SPLIT = 1; // subgroups of SG lanes that share one row
// R weight rows per lane group (even, for SWIGLU), TT tokens per tile, U units a lane loads
// before it sums them (in order). Fixed when the pipeline is built (compiled in, or for decode's
// R and U specialisation constants: the host takes R = 4 for Q8_0 / Q4_0, 2 otherwise, and U =
// 1), so the arrays they size stay in registers: the decode build (one token) and the prefill
// build differ only here.
#if KS_DECODE
layout(constant_id = 3) const uint RDEC = 2u; // decode: weight rows per lane group (even)
layout(constant_id = 4) const uint UDEC = 1u; // decode: units a lane loads before summing them
const uint R = RDEC, TT = 1u, U = UDEC;
#else
const uint R = KS_PREFILL_R, TT = KS_PREFILL_TT, U = 1u;
#endif
const uint NSG = WG / SG;
const uint LPR = SG * SPLIT; // lanes per row
const uint NGR = WG / LPR;   // row groups per workgroup
const uint RT = R * TT;
const uint RT2 = RT + TT; // the dot products and the input rows' sums of squares

shared float xch[WG * RT2];

// acc + a·b over 8 elements, one fma each, in order
float fma8(vec4 a0, vec4 a1, vec4 b0, vec4 b1, float acc) {
  precise float s = acc;
  s = fma(a0.x, b0.x, s);
  s = fma(a0.y, b0.y, s);
  s = fma(a0.z, b0.z, s);
  s = fma(a0.w, b0.w, s);
  s = fma(a1.x, b1.x, s);
  s = fma(a1.y, b1.y, s);
  s = fma(a1.z, b1.z, s);
  s = fma(a1.w, b1.w, s);
  return s;
}

// unit u (elements 8u .. 8u + 7; tail: 4 elements) of the R rows, w0/w1, into the dot products
// of the tile's nt tokens (and, NORM_IN, the input rows' sums of squares)
void acc_unit(uint u, bool tail, bool norm, uint tbase, uint nt, uint k4, vec4 w0[R], vec4 w1[R],
              float d[R], inout float v[RT2]) {
  vec4 na = vec4(1.0), nb = vec4(1.0); // the unit's norm weights
  if (norm) {
    uint no = pc.o_nw / 4u + 2u * u;
    na = nw4[no];
    nb = tail ? vec4(0.0) : nw4[no + 1u];
  }
  [[unroll]] for (uint t = 0u; t < TT; t++) {
    if (t < nt) {
      uint xo = pc.o_x / 4u + (tbase + t) * k4 + 2u * u;
      vec4 a = x4[xo];
      vec4 b = tail ? vec4(0.0) : x4[xo + 1u];
      if (norm) { // sum of squares of x; the product takes nw * x (the scale comes last)
        v[RT + t] = fma8(a, b, a, b, v[RT + t]);
        precise vec4 xa = na * a;
        precise vec4 xb = nb * b;
        a = xa;
        b = xb;
      }
      [[unroll]] for (uint s = 0u; s < R; s++) {
#if QSCALE
        precise float us = fma8(w0[s], w1[s], a, b, 0.0);
        v[s * TT + t] = fma(d[s], us, v[s * TT + t]);
#else
        v[s * TT + t] = fma8(w0[s], w1[s], a, b, v[s * TT + t]);
#endif
      }
    }
  }
}

// Every lane ends with the sum over its row group's LPR lanes of v[i], for every i: a butterfly
// over each SG lanes (partner lid ^ m, m = SG/2 .. 1), then the SPLIT subgroup sums in order.
void reduce(uint lid, bool use_sg, inout float v[RT2]) {
  bool done = false;
#if KS_SUBGROUP
  if (use_sg) {
    for (uint m = SG >> 1; m > 0u; m >>= 1) {
      [[unroll]] for (uint i = 0u; i < RT2; i++) {
        precise float s = v[i] + subgroupShuffleXor(v[i], m);
        v[i] = s;
      }
    }
    done = true;
  }
#endif
  if (!done) {
    for (uint m = SG >> 1; m > 0u; m >>= 1) {
      [[unroll]] for (uint i = 0u; i < RT2; i++) xch[lid * RT2 + i] = v[i];
      barrier();
      [[unroll]] for (uint i = 0u; i < RT2; i++) {
        precise float s = v[i] + xch[(lid ^ m) * RT2 + i];
        v[i] = s;
      }
      barrier();
    }
  }
  if (SPLIT > 1u) {
    const uint sub = lid / SG, first = sub - sub % SPLIT;
    if (lid % SG == 0u) [[unroll]] for (uint i = 0u; i < RT2; i++) xch[sub * RT2 + i] = v[i];
    barrier();
    [[unroll]] for (uint i = 0u; i < RT2; i++) {
      precise float s = xch[first * RT2 + i];
      for (uint p = 1u; p < SPLIT; p++) s = s + xch[(first + p) * RT2 + i];
      v[i] = s;
    }
    barrier();
  }
}

void main() {
  // Lane and group: from the subgroup built-ins when whole groups fit in a subgroup, else from
  // the invocation index (the shared-memory butterfly pairs invocations lid and lid ^ m).
  uint lid = gl_LocalInvocationID.x;
  bool use_sg = false;
#if KS_SUBGROUP
  use_sg = gl_SubgroupSize % SG == 0u;
  if (use_sg) lid = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#endif
  const uint lane = lid % LPR, grp = lid / LPR; // lane within the row group (subgroup-major)
  const bool swiglu = (pc.flags & EPI_SWIGLU) != 0u, rope = (pc.flags & EPI_ROPE) != 0u;
  const uint outs = swiglu || rope ? R / 2u : R; // outputs (rope: pairs) per group
  const uint obase = (gl_WorkGroupID.x * NGR + grp) * outs;
  const uint tbase = gl_WorkGroupID.y * TT;
  const uint nt = min(TT, pc.n_tok - tbase);
  const uint wrows = swiglu ? 2u * pc.rows : pc.rows;
  const uint nun = (pc.K + 7u) >> 3, k4 = pc.K >> 2;
  const bool norm = (pc.flags & NORM_IN) != 0u;

  // v: the R x TT dot products, then (NORM_IN) the TT sums of squares of the input rows
  float v[RT2];
  [[unroll]] for (uint i = 0u; i < RT2; i++) v[i] = 0.0;

  uint wrow[R];
  [[unroll]] for (uint s = 0u; s < R; s++) {
    uint r = swiglu ? (s < outs ? obase + s : pc.rows + obase + s - outs) : obase + s;
    if (rope) {
      uint e0, e1, j;
      rope_pair(min(obase + s / 2u, pc.rows / 2u - 1u), e0, e1, j);
      r = (s & 1u) == 0u ? e0 : e1;
    }
    wrow[s] = min(r, wrows - 1u);
  }

  // U units per pass: every load first (bytes in flight), then the fmas in unit order, so the
  // sums are the same as one unit at a time
  for (uint u0 = lane; u0 < nun; u0 += LPR * U) {
    vec4 w0[U * R], w1[U * R];
    float dq[U * R];
    [[unroll]] for (uint k = 0u; k < U; k++) {
      uint u = min(u0 + k * LPR, nun - 1u);
      [[unroll]] for (uint s = 0u; s < R; s++) {
#if QSCALE
        load_wq(wrow[s], u, w0[k * R + s], w1[k * R + s], dq[k * R + s]);
#else
        load_w(wrow[s], u, w0[k * R + s], w1[k * R + s]);
        dq[k * R + s] = 1.0;
#endif
      }
    }
    [[unroll]] for (uint k = 0u; k < U; k++) {
      const uint u = u0 + k * LPR;
      if (u < nun) {
        vec4 a0[R], a1[R];
        float d[R];
        [[unroll]] for (uint s = 0u; s < R; s++) {
          a0[s] = w0[k * R + s];
          a1[s] = w1[k * R + s];
          d[s] = dq[k * R + s];
        }
        acc_unit(u, 8u * u + 4u == pc.K, norm, tbase, nt, k4, a0, a1, d, v);
      }
    }
  }
  reduce(lid, use_sg, v);
  if (norm) { // RMSNorm's scale, applied to the finished dot products
    [[unroll]] for (uint t = 0u; t < TT; t++) {
      precise float ms = v[RT + t] / float(pc.K) + pc.eps;
      precise float sc = 1.0 / sqrt(ms);
      [[unroll]] for (uint s = 0u; s < R; s++) {
        precise float o = v[s * TT + t] * sc;
        v[s * TT + t] = o;
      }
    }
  }

  if (rope) {
    [[unroll]] for (uint s = 0u; s < outs; s++) {
      [[unroll]] for (uint t = 0u; t < TT; t++) {
        const uint c = obase + s;
        if (t < nt && c < pc.rows / 2u && (s * TT + t) % LPR == lane)
          mm_rope_store(c, tbase + t, v[(2u * s) * TT + t], v[(2u * s + 1u) * TT + t]);
      }
    }
    return;
  }
  [[unroll]] for (uint s = 0u; s < outs; s++) {
    [[unroll]] for (uint t = 0u; t < TT; t++) {
      if (t < nt && obase + s < pc.rows && (s * TT + t) % LPR == lane)
        mm_store(tbase + t, obase + s, v[s * TT + t], swiglu ? v[(s + outs) * TT + t] : 0.0);
    }
  }
}
