// matmul_cm.glsl — the matrix kernel of matmul.glsl on the matrix units (VK_NV_cooperative_matrix):
// y (n_tok, N) = x (n_tok, K) · Wᵀ with the same fusions (NORM_IN, EPI_ADD, EPI_SWIGLU, EPI_ROPE)
// and the same bindings and push constants. Included by matmul_<type>.comp when KS_COOPMAT=1;
// KS_DECODE=1 builds the one-token kernel (NAME_cm_dec), 0 the prefill one (NAME_cm).
//
// Shapes: A = 16 weight rows x 16 k (f16), B = 16 k x 8 tokens (f16), C = 16 x 8 (f32). A
// subgroup owns 32 weight rows ("slots", two A tiles). F16 weights whose tile rows are evenly
// spaced are loaded straight from the weight buffer; other tiles (other types, a last partial
// tile, uneven RoPE pairs) are read by load_w (every weight type, f32 values) and rounded to f16
// in shared memory. The input row (RMS-normalised first under NORM_IN: (x * nw) * scale, scale
// from the row's sum of squares in a fixed order) is rounded to f16 the same way (cm_input.glsl):
// by the decode kernel itself, and for the prefill kernel once per product by cm_xprep.comp,
// whose output the host binds in place of x. The f16 values are the same either way, so neither
// the direct loads nor where the input is rounded change a bit.
//
// Bits: K is cut into S slices of K / S (S from K alone, host side; S = 1 in the "prefill" policy,
// where every prompt, one token included, takes the prefill kernel). An output's slice sum is the
// chain of 16-deep products C = A·B + C over the slice's k steps in order, from C = 0; the slices
// are then added in order, ((p0 + p1) + p2) + ... in f32. The decode kernel gives each slice to
// its own subgroup (parallelism for one token) and adds the partials through shared memory; the
// prefill kernel walks all slices in one subgroup and adds them as it goes. Either way an
// output's value depends only on its own input row, its weights, K and S, never on the batch, so
// prefill and decode give a row the same bits (the prompt cache's bit-for-bit reuse).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "matmul_common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128; // decode: 32 * S; prefill: NSG * 32
layout(constant_id = 1) const uint S = 1;    // slices of K
layout(constant_id = 2) const uint STAGE = 0; // decode: 1 every tile through shared memory (tuning)
// prefill, F16: 1 loads each subgroup's A tiles straight from the weights, a chunk ahead, instead
// of staging them (the host sets it where every tile's 16 rows are evenly spaced and whole)
layout(constant_id = 3) const uint DIRECT = 0;

#define A_T fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define B_T fcoopmatNV<16, gl_ScopeSubgroup, 16, 8>
#define C_T fcoopmatNV<32, gl_ScopeSubgroup, 16, 8>

const uint MT = 2u;       // 16-row A tiles per subgroup
const uint RM = 16u * MT; // slots per subgroup
#if KS_DECODE
const uint KC = 32u;      // k per staged weight chunk
const uint NSG = 8u;      // subgroups: S of them, one slice each (sized for the largest S)
const uint TN = 1u;       // one 8-token tile (token 0 real)
// the whole input row, f16, then 128 zero halves the B tiles read past it (host: K <= KS_CM_KMAX)
shared uvec4 Xs[KS_CM_KMAX / 8u + 16u];
shared float scd;
#elif WTYPE == 8 || WTYPE == 2 // Q8_0 / Q4_0: their own tile (the host mirrors it, cm_tile)
const uint KC = KS_CM_KC_Q;
const uint NSG = KS_CM_NSG_Q;
const uint TN = KS_CM_TN_Q;
#else
const uint KC = KS_CM_KC;   // k per staged chunk
const uint NSG = KS_CM_NSG; // subgroups: different rows, the same tokens, all slices each
const uint TN = KS_CM_TN;   // 8-token tiles
#endif
#if !KS_DECODE
const uint XST4 = KC / 8u + 1u;
shared uvec4 Xs[TN * 8u * XST4];
// the input as cm_xprep.comp wrote it (normalised, f16), bound where x is
layout(binding = 1) readonly buffer XH { uvec4 xh[]; };
#endif
const uint AST4 = KC / 8u + 1u; // uvec4s (8 halves each) per staged weight row, one of padding
// staged weights; after the last chunk each subgroup's own part holds its 16 x 8 f32 results
shared uvec4 As[NSG * RM * AST4];
#if KS_DECODE
shared uint srow[RM]; // one group of slots for the whole workgroup
shared uint sdir[MT]; // per tile: row spacing of a direct-load tile, 0 for a staged one
#else
shared uint srow[NSG * RM]; // each subgroup's own slots
#endif

#include "cm_input.glsl"

// weight row of slot s (0 .. RM - 1) of the output group starting at obase: plain rows; or the
// first RM / 2 slots the gate rows (EPI_SWIGLU) / first rows of RoPE pairs (EPI_ROPE) and the
// last RM / 2 the matching up rows / second rows
uint slot_row(uint obase, uint s) {
  const bool swiglu = (pc.flags & EPI_SWIGLU) != 0u, rope = (pc.flags & EPI_ROPE) != 0u;
  const uint outs = swiglu || rope ? RM / 2u : RM;
  const uint o = s % outs;
  uint r = obase + s;
  if (swiglu) r = s < outs ? obase + o : pc.rows + obase + o;
  if (rope) {
    uint e0, e1, j;
    rope_pair(min(obase + o, pc.rows / 2u - 1u), e0, e1, j);
    r = s < outs ? e0 : e1;
  }
  return min(r, (swiglu ? 2u * pc.rows : pc.rows) - 1u);
}

// slot rows of this subgroup's group (srow[sb ..]) and, in the decode kernel, per tile whether
// its rows are evenly spaced inside the slice (direct loads; F16 only): by lanes 0 .. RM - 1
void setup_rows(uint sb, uint obase) {
  const uint lane = gl_SubgroupInvocationID;
  if (lane < RM) srow[sb + lane] = slot_row(obase, lane);
  subgroupMemoryBarrierShared();
  subgroupBarrier();
#if KS_DECODE
  if (lane < MT) {
    uint d = 0u;
#if WTYPE == 1
    const uint wrows = (pc.flags & EPI_SWIGLU) != 0u ? 2u * pc.rows : pc.rows;
    const uint r0 = srow[sb + 16u * lane], r1 = srow[sb + 16u * lane + 1u];
    d = r1 > r0 ? r1 - r0 : 0u;
    for (uint i = 2u; i < 16u && d != 0u; i++)
      if (srow[sb + 16u * lane + i] != r0 + i * d) d = 0u;
    if (r0 + 15u * d >= wrows || STAGE != 0u) d = 0u;
#endif
    sdir[lane] = d;
  }
  subgroupMemoryBarrierShared();
  subgroupBarrier();
#endif
}

// stages the units (8 elements) k0 / 8 .. (k0 + kc) / 8 - 1 of the 16 rows of tile m (slots
// srow[sb + 16 m ..]) into As rows ab + 16 m .., as f16; all loads first, then the stores
void stage_tile(uint sb, uint ab, uint m, uint k0, uint kc) {
  const uint lane = gl_SubgroupInvocationID, upr = kc / 8u, n = 16u * upr;
  vec4 w0[KC / 16u], w1[KC / 16u]; // 16 rows x KC / 8 units over 32 lanes
  [[unroll]] for (uint j = 0u; j < KC / 16u; j++) {
    const uint i = lane + 32u * j;
    if (i < n) load_w(srow[sb + 16u * m + i / upr], (k0 >> 3) + i % upr, w0[j], w1[j]);
  }
  [[unroll]] for (uint j = 0u; j < KC / 16u; j++) {
    const uint i = lane + 32u * j;
    if (i < n) As[(ab + 16u * m + i / upr) * AST4 + i % upr] = h8(w0[j], w1[j]);
  }
}

// unit u (8 values) of weight row `row`, as f16: F16 rows copied as they are, other types read
// by load_w and rounded
uvec4 fetch_w(uint row, uint u) {
#if WTYPE == 1
  if ((pc.K & 7u) == 0u) return w8[row * (pc.K >> 3) + u];
#endif
  vec4 w0, w1;
  load_w(row, u, w0, w1);
  return h8(w0, w1);
}

#if WTYPE == 8 || WTYPE == 2
// Q8_0 / Q4_0 unit u of weight row `row` in two steps, so the prefetch only loads: raw_w the
// words that hold it (x: the block's f16 scale, y z: its 8 quant bytes), cook_w the f16 values
// load_w would give (its q_unit_at and q_unit)
uvec4 raw_w(uint row, uint u) {
  uint base, qo;
  q_unit_at(row, u, base, qo);
  return uvec4(wu[base >> 2], wu[qo >> 2], wu[(qo >> 2) + 1u], 0u);
}
uvec4 cook_w(uint row, uint u, uvec4 r) {
  uint base, qo;
  q_unit_at(row, u, base, qo);
  const float d = unpackHalf2x16((base & 2u) != 0u ? (r.x >> 16) : r.x).x;
  vec4 w0, w1;
  q_unit(d, r.yz, u, w0, w1);
  return h8(w0, w1);
}
#endif

#if KS_DECODE
// decode: A tile m for k step k (a multiple of 16) of this subgroup: straight from the weights when the
// tile is direct, else from the staged chunk (k - k0 into it)
void load_a(inout A_T a, uint ab, uint m, uint k, uint k0) {
#if WTYPE == 1
  const uint d = sdir[m];
  if (d != 0u && (pc.K & 7u) == 0u) {
    const uint rs = pc.K >> 3; // uvec4s per weight row
    coopMatLoadNV(a, w8, srow[16u * m] * rs + (k >> 3), d * rs, false);
    return;
  }
#endif
  coopMatLoadNV(a, As, (ab + 16u * m) * AST4 + ((k - k0) >> 3), AST4, false);
}
#endif

// the epilogue of output o of the group at obase for token t; a and b are the slot values
// (b the paired slot's under EPI_SWIGLU / EPI_ROPE)
void finish(uint obase, uint o, uint t, float a, float b) {
  const bool rope = (pc.flags & EPI_ROPE) != 0u;
  const uint nout = rope ? pc.rows / 2u : pc.rows;
  if (t >= pc.n_tok || obase + o >= nout) return;
  if (rope)
    mm_rope_store(obase + o, t, a, b);
  else
    mm_store(t, obase + o, a, b);
}

// result (slot s, token column n) of the 16 x 8 f32 tiles stored row-major at As[base ..]
float res(uint base, uint s, uint n) {
  const uint e = (s % 16u) * 8u + n;
  return uintBitsToFloat(As[base + (s / 16u) * 32u + e / 4u][e % 4u]);
}

void main() {
  const uint sub = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  const bool paired = (pc.flags & (EPI_SWIGLU | EPI_ROPE)) != 0u;
  const uint outs = paired ? RM / 2u : RM;
  const uint SL = pc.K / S; // slice length, a multiple of 32 (host)
  const uint ab = sub * RM;  // this subgroup's As rows
#if KS_DECODE
  // one group of outs outputs, its 32 slots shared by all subgroups; subgroup `sub` (< S) takes
  // slice sub. The input row is staged whole, once.
  const uint obase = gl_WorkGroupID.x * outs;
  if (sub == 0u) {
    setup_rows(0u, obase);
    const float sc = (pc.flags & NORM_IN) != 0u ? row_scale(0u) : 1.0;
    if (lane == 0u) scd = sc;
  }
  barrier();
  for (uint i = gl_LocalInvocationID.x; i < pc.K / 8u + 16u; i += WG)
    Xs[i] = i < pc.K / 8u ? x_in8(0u, i, scd) : uvec4(0u);
  barrier();
  C_T acc[MT];
  [[unroll]] for (uint m = 0u; m < MT; m++) acc[m] = C_T(0.0);
  const uint kb = sub * SL, ke = kb + SL;
  // B for k step k: column n starts 16 n halves further; column 0 is the token, the others are
  // whatever follows (results nobody reads)
  if (sdir[0] != 0u && sdir[1] != 0u) { // both tiles straight from the weights: 8 steps' loads first
    for (uint k0 = kb; k0 < ke; k0 += 128u) {
      A_T a[8u * MT];
      [[unroll]] for (uint j = 0u; j < 8u; j++)
        if (k0 + 16u * j < ke)
          [[unroll]] for (uint m = 0u; m < MT; m++) load_a(a[j * MT + m], 0u, m, k0 + 16u * j, 0u);
      [[unroll]] for (uint j = 0u; j < 8u; j++) {
        if (k0 + 16u * j < ke) {
          B_T b;
          coopMatLoadNV(b, Xs, (k0 + 16u * j) >> 3, 2u, true);
          [[unroll]] for (uint m = 0u; m < MT; m++) acc[m] = coopMatMulAddNV(a[j * MT + m], b, acc[m]);
        }
      }
    }
  } else {
    for (uint k0 = kb; k0 < ke; k0 += KC) {
      const uint kc = min(KC, ke - k0);
      [[unroll]] for (uint m = 0u; m < MT; m++)
        if (sdir[m] == 0u) stage_tile(0u, ab, m, k0, kc);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      for (uint kk = 0u; kk < kc; kk += 16u) {
        B_T b;
        coopMatLoadNV(b, Xs, (k0 + kk) >> 3, 2u, true);
        [[unroll]] for (uint m = 0u; m < MT; m++) {
          A_T a;
          load_a(a, ab, m, k0 + kk, k0);
          acc[m] = coopMatMulAddNV(a, b, acc[m]);
        }
      }
      subgroupMemoryBarrierShared();
      subgroupBarrier();
    }
  }
  [[unroll]] for (uint m = 0u; m < MT; m++)
    coopMatStoreNV(acc[m], As, ab * AST4 + 32u * m, 2u, false); // element (m, n) at 8 m + n
  barrier();
  for (uint o = gl_LocalInvocationID.x; o < outs; o += WG) {
    precise float a = res(0u, o, 0u);
    for (uint p = 1u; p < S; p++) a = a + res(p * RM * AST4, o, 0u);
    precise float b = 0.0;
    if (paired) {
      b = res(0u, o + outs, 0u);
      for (uint p = 1u; p < S; p++) b = b + res(p * RM * AST4, o + outs, 0u);
    }
    finish(obase, o, 0u, a, b);
  }
#else
  // token tiles along x, row blocks along y: a row block's tiles (the same weights) run together
  const uint obase = (gl_WorkGroupID.y * NSG + sub) * outs;
  const uint tbase = gl_WorkGroupID.x * TN * 8u;
  setup_rows(sub * RM, obase);
  barrier();
  C_T acc[MT * TN], total[MT * TN]; // total: set when the first slice ends (none live before)
  [[unroll]] for (uint i = 0u; i < MT * TN; i++) acc[i] = C_T(0.0);
  // The next chunk's input and weights are loaded into registers while this chunk is
  // multiplied: XU uvec4s of the input per invocation (staged in shared memory for all
  // subgroups); the weights (each subgroup's own 32 rows) as WU units per lane, F16 as they are
  // and Q8_0 / Q4_0 as raw words decoded when staged (so the prefetch does not wait for its
  // loads), or (DIRECT, F16 tiles of evenly spaced rows) as the chunk's A tiles themselves, with
  // no staging. Other weight types are read and rounded when staged.
  const uint WU = RM * (KC / 8u) / 32u;
#if WTYPE == 1
#define PREFETCH_W (DIRECT == 0u)
#define RAW_W fetch_w
#elif WTYPE == 8 || WTYPE == 2
#define PREFETCH_W true
#define RAW_W raw_w
#else
#define PREFETCH_W false
#define RAW_W fetch_w
#endif
  const uint XU = (TN * 8u * (KC / 8u) + WG - 1u) / WG;
  uvec4 wr[WU], xr[XU];
  uint k0 = 0u, kc = min(KC, SL);
  #define FETCH(k, n)                                                                            \
    {                                                                                            \
      const uint upr = (n) / 8u, per = 16u * upr;                                                \
      if (PREFETCH_W)                                                                            \
        [[unroll]] for (uint j = 0u; j < WU; j++) {                                              \
          const uint i = lane + 32u * j, m = i / per, r = (i % per) / upr, u = i % upr;          \
          if (i < MT * per) wr[j] = RAW_W(srow[sub * RM + 16u * m + r], ((k) >> 3) + u);         \
        }                                                                                        \
      [[unroll]] for (uint q = 0u; q < XU; q++) {                                                \
        const uint i = gl_LocalInvocationID.x + q * WG, t = i / (KC / 8u), u = i % (KC / 8u);   \
        xr[q] = uvec4(0u);                                                                       \
        if (i < TN * 8u * (KC / 8u) && tbase + t < pc.n_tok && u < upr)                          \
          xr[q] = xh[pc.o_x / 4u + (tbase + t) * (pc.K >> 3) + ((k) >> 3) + u];                  \
      }                                                                                          \
    }
  // DIRECT: the A tiles of a chunk (MT per 16 k), loaded into an while the chunk before is
  // multiplied with ac
  const uint KS = KC / 16u;
  A_T ac[MT * KS], an[MT * KS];
#if WTYPE == 1
  const uint rs = pc.K >> 3; // uvec4s per weight row
  #define DLOAD(k, n)                                                                            \
    if (DIRECT != 0u)                                                                            \
      [[unroll]] for (uint j = 0u; j < KS; j++)                                                  \
        if (16u * j < (n))                                                                       \
          [[unroll]] for (uint m = 0u; m < MT; m++)                                              \
            coopMatLoadNV(an[j * MT + m], w8, srow[sub * RM + 16u * m] * rs + (((k) + 16u * j) >> 3), rs, false);
#else
  #define DLOAD(k, n)
#endif
  FETCH(k0, kc)
  DLOAD(k0, kc)
  while (k0 < pc.K) {
    const uint se = (k0 / SL + 1u) * SL; // end of the slice: chunks never straddle one
    {
      const uint upr = kc / 8u, per = 16u * upr;
      if (PREFETCH_W) {
        [[unroll]] for (uint j = 0u; j < WU; j++) {
          const uint i = lane + 32u * j, m = i / per, r = (i % per) / upr, u = i % upr;
#if WTYPE == 8 || WTYPE == 2
          if (i < MT * per) As[(ab + 16u * m + r) * AST4 + u] = cook_w(srow[sub * RM + 16u * m + r], (k0 >> 3) + u, wr[j]);
#else
          if (i < MT * per) As[(ab + 16u * m + r) * AST4 + u] = wr[j];
#endif
        }
      } else if (DIRECT == 0u) {
        [[unroll]] for (uint m = 0u; m < MT; m++) stage_tile(sub * RM, ab, m, k0, kc);
      }
      [[unroll]] for (uint q = 0u; q < XU; q++) {
        const uint i = gl_LocalInvocationID.x + q * WG, t = i / (KC / 8u), u = i % (KC / 8u);
        if (i < TN * 8u * (KC / 8u)) Xs[t * XST4 + u] = xr[q];
      }
    }
    if (DIRECT != 0u) [[unroll]] for (uint i = 0u; i < MT * KS; i++) ac[i] = an[i];
    barrier();
    const uint k1 = k0 + kc, kc1 = min(KC, (k1 / SL + 1u) * SL - k1);
    if (k1 < pc.K) {
      FETCH(k1, kc1)
      DLOAD(k1, kc1)
    }
    [[unroll]] for (uint kk = 0u; kk < KC; kk += 16u) {
      if (kk >= kc) break;
      A_T a[MT];
      [[unroll]] for (uint m = 0u; m < MT; m++) {
        if (DIRECT != 0u)
          a[m] = ac[(kk / 16u) * MT + m];
        else
          coopMatLoadNV(a[m], As, (ab + 16u * m) * AST4 + (kk >> 3), AST4, false);
      }
      [[unroll]] for (uint n = 0u; n < TN; n++) {
        B_T b;
        coopMatLoadNV(b, Xs, 8u * n * XST4 + (kk >> 3), XST4, true);
        [[unroll]] for (uint m = 0u; m < MT; m++)
          acc[m * TN + n] = coopMatMulAddNV(a[m], b, acc[m * TN + n]);
      }
    }
    barrier();
    k0 = k1;
    if (S > 1u && k0 == se) { // a slice ends: add it to the slices before, in order
      const bool first = k0 == SL;
      [[unroll]] for (uint i = 0u; i < MT * TN; i++) {
        if (first)
          total[i] = acc[i];
        else
          total[i] = total[i] + acc[i];
        acc[i] = C_T(0.0);
      }
    }
    kc = kc1;
  }
  #undef FETCH
  #undef DLOAD
  // one slice: the chain itself is the result (no running total is kept through the loop)
  if (S == 1u) [[unroll]] for (uint i = 0u; i < MT * TN; i++) total[i] = acc[i];
  for (uint n = 0u; n < TN; n++) {
    [[unroll]] for (uint m = 0u; m < MT; m++)
      coopMatStoreNV(total[m * TN + n], As, ab * AST4 + 32u * m, 2u, false);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint i = lane; i < outs * 8u; i += 32u) {
      const uint o = i / 8u, tn = i % 8u;
      finish(obase, o, tbase + 8u * n + tn, res(ab * AST4, o, tn),
             paired ? res(ab * AST4, o + outs, tn) : 0.0);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
  }
#endif
}
