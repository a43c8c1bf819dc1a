#version 450
#extension GL_EXT_control_flow_attributes : require
// attention — causal attention of query row i (position p = step.pos0 + i) over the cached
// positions 0..p of the paged K/V pool; GQA: query head h reads KV head h / (n_head / n_kv_head).
//
// Keys are taken in chunks of WG (chunk c holds keys c*WG .. c*WG + WG - 1). A chunk's partial
// (m_c, l_c, acc_c) is computed from scratch: invocation lid scores key c*WG + lid (a dot over
// the head in dimension order, K read as vec4 in batches of KB so the loads overlap); m_c is the
// chunk's max, l_c the sum of exp(s - m_c) by a halving tree over the WG slots (fixed pairs);
// P·V cuts the head into vec4s, one per lane of a lane group (head_dim / 4 lanes), the G groups
// take keys g, g + G, ... in order and their partials are added in group order. The partials
// are then folded in chunk order: M' = max(M, m_c), L' = L e^(M - M') + l_c e^(m_c - M'),
// likewise the output. Three phases:
//   0  decode, split over the context: workgroup (h, 0, c) writes chunk c's partial to `part`
//   1  decode: workgroup (h) folds the partials of the chunks up to p and writes the output
//   2  one workgroup per (h, TR consecutive rows) computes and folds its chunks itself (prompts;
//      the rows share every K and V load, each with its own scores, trees and sums)
// Phases 0+1 and phase 2 run the same arithmetic in the same order for each row, so a row's bits
// never depend on n_tok, on the rows beside it or on the path. With has_probs, the last query
// row also writes its normalised softmax row exp(s - M) / L, recomputed after the final M and L
// are known.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define KV_BLOCK 16u
#define MAX_HD 256u // the host checks head_dim <= 256, head_dim % 4 == 0, WG >= 64
// loads in flight before their products (the order of sums does not depend on them): K vec4s of
// a score, V rows of a lane group
layout(constant_id = 1) const uint KB = 16;
layout(constant_id = 2) const uint VB = 8;
// query rows of one head per workgroup in phase 2 (they share every K/V load): 2 for prompts, 1
// for one token (the host's choice; each row's arithmetic is the same either way)
layout(constant_id = 3) const uint TR = 2;

layout(push_constant) uniform PC {
  uint o_out, o_q, o_k, o_v, o_table, o_step, o_probs, o_part;
  uint n_tok, n_head, group, head_dim, kv_dim, probs_stride, has_probs;
  float sqrt_hd; // sqrt(head_dim), computed on the host: scores are dot / sqrt_hd
  uint phase, n_chunk_max; // phases 0/1: chunks per head in `part`
} pc;
layout(binding = 0) writeonly buffer Out { float o[]; };
layout(binding = 1) readonly buffer Q { float q[]; };
layout(binding = 2) readonly buffer K { vec4 kc4[]; };
layout(binding = 3) readonly buffer V { vec4 vc4[]; };
layout(binding = 4) readonly buffer Table { uint table[]; };
layout(binding = 5) readonly buffer Step { uint step[]; };
layout(binding = 6) writeonly buffer Probs { float probs[]; };
layout(binding = 7) buffer Part { float part[]; }; // per (head, chunk): m, l, then head_dim

shared vec4 qs[TR * MAX_HD / 4u];
shared float sc[TR * WG];   // exp(s - m_c) of the chunk's keys, per row
shared float red[TR * WG];  // the max and sum trees, per row
shared uint rowof[WG];      // physical pool row of each key of the chunk
shared vec4 pv_part[TR * WG]; // P·V partials of the lane groups, per row

uint phys_row(uint j) { return table[pc.o_table + j / KV_BLOCK] * KV_BLOCK + j % KV_BLOCK; }

// the score of row r's query (qs) against the key at pool row `row`, for the nr rows in use
void scores(uint row, uint kvoff4, uint nr, out float s[TR]) {
  const uint n4 = pc.head_dim >> 2;
  const uint ko = (pc.o_k >> 2) + row * (pc.kv_dim >> 2) + kvoff4;
  precise float acc[TR];
  [[unroll]] for (uint r = 0u; r < TR; r++) acc[r] = 0.0;
  for (uint d0 = 0u; d0 < n4; d0 += KB) {
    vec4 kk[KB];
    [[unroll]] for (uint j = 0u; j < KB; j++) kk[j] = d0 + j < n4 ? kc4[ko + d0 + j] : vec4(0.0);
    [[unroll]] for (uint r = 0u; r < TR; r++) {
      if (r < nr) {
        precise float t = acc[r];
        [[unroll]] for (uint j = 0u; j < KB; j++) {
          if (d0 + j < n4) {
            vec4 qv = qs[r * (MAX_HD / 4u) + d0 + j];
            t = fma(qv.x, kk[j].x, t);
            t = fma(qv.y, kk[j].y, t);
            t = fma(qv.z, kk[j].z, t);
            t = fma(qv.w, kk[j].w, t);
          }
        }
        acc[r] = t;
      }
    }
  }
  [[unroll]] for (uint r = 0u; r < TR; r++) {
    precise float t = acc[r] / pc.sqrt_hd; // precise: never fused into what follows
    s[r] = t;
  }
}

// The partials of the chunk starting at key c0 for rows r < nr (row r at position p0 + r,
// c0 <= p0): m and l for every lane, acc for the lanes of group 0 (dims 4 dl .. 4 dl + 3). Each
// row's arithmetic is the same whatever nr (one row for decode, up to TR for prompts), so a row's
// bits never depend on the batch. Every invocation must call it (barriers).
void chunk_partial(uint c0, uint p0, uint nr, uint kvoff4, out float m_c[TR], out float l_c[TR],
                   out vec4 acc_c[TR]) {
  const uint lid = gl_LocalInvocationID.x, n4 = pc.head_dim >> 2;
  const uint G = WG / n4, grp = lid / n4, dl = lid % n4, vrow = pc.kv_dim >> 2;
  const float NEG_INF = uintBitsToFloat(0xff800000u);
  const uint j = c0 + lid, plast = p0 + nr - 1u;
  float s[TR];
  [[unroll]] for (uint r = 0u; r < TR; r++) s[r] = NEG_INF;
  if (j <= plast) {
    uint row = phys_row(j);
    rowof[lid] = row;
    float t[TR];
    scores(row, kvoff4, nr, t);
    [[unroll]] for (uint r = 0u; r < TR; r++) if (r < nr && j <= p0 + r) s[r] = t[r];
  }
  // per row: the chunk max and sum by halving trees over the WG slots (lane i takes i + off)
  [[unroll]] for (uint r = 0u; r < TR; r++) red[r * WG + lid] = s[r];
  barrier();
  for (uint off = WG >> 1; off > 0u; off >>= 1) {
    if (lid < off)
      [[unroll]] for (uint r = 0u; r < TR; r++)
        if (r < nr) red[r * WG + lid] = max(red[r * WG + lid], red[r * WG + lid + off]);
    barrier();
  }
  float mc[TR];
  [[unroll]] for (uint r = 0u; r < TR; r++) mc[r] = red[r * WG];
  barrier();
  [[unroll]] for (uint r = 0u; r < TR; r++) {
    precise float d = s[r] - mc[r];
    const float e = r < nr && j <= p0 + r ? exp(d) : 0.0;
    sc[r * WG + lid] = e;
    red[r * WG + lid] = e;
  }
  barrier();
  for (uint off = WG >> 1; off > 0u; off >>= 1) {
    if (lid < off) {
      [[unroll]] for (uint r = 0u; r < TR; r++) {
        if (r < nr) {
          precise float t = red[r * WG + lid] + red[r * WG + lid + off];
          red[r * WG + lid] = t;
        }
      }
    }
    barrier();
  }
  [[unroll]] for (uint r = 0u; r < TR; r++) l_c[r] = red[r * WG];
  // P·V: the lane groups take keys g, g + G, ... in order (a V row read once for all rows)
  const uint nkmax = min(WG, plast + 1u - c0);
  if (grp < G) {
    precise vec4 pv[TR];
    [[unroll]] for (uint r = 0u; r < TR; r++) pv[r] = vec4(0.0);
    for (uint k0 = grp; k0 < nkmax; k0 += VB * G) {
      vec4 vv[VB];
      [[unroll]] for (uint b = 0u; b < VB; b++) {
        uint k = k0 + b * G;
        vv[b] = k < nkmax ? vc4[(pc.o_v >> 2) + rowof[k] * vrow + kvoff4 + dl] : vec4(0.0);
      }
      [[unroll]] for (uint r = 0u; r < TR; r++) {
        if (r < nr && c0 <= p0 + r) {
          const uint nk = min(WG, p0 + r + 1u - c0);
          [[unroll]] for (uint b = 0u; b < VB; b++) {
            uint k = k0 + b * G;
            if (k < nk) pv[r] = fma(vec4(sc[r * WG + k]), vv[b], pv[r]);
          }
        }
      }
    }
    [[unroll]] for (uint r = 0u; r < TR; r++) pv_part[r * WG + lid] = pv[r];
  }
  barrier();
  [[unroll]] for (uint r = 0u; r < TR; r++) {
    acc_c[r] = vec4(0.0);
    if (grp == 0u && r < nr && c0 <= p0 + r) {
      precise vec4 sum = pv_part[r * WG + dl];
      for (uint g = 1u; g < G; g++) sum = sum + pv_part[r * WG + g * n4 + dl];
      acc_c[r] = sum;
    }
  }
  [[unroll]] for (uint r = 0u; r < TR; r++) m_c[r] = mc[r];
  barrier(); // sc, rowof and pv_part are reused by the next chunk
}

// (M, L, ACC) <- the fold of one more chunk partial
void fold(inout float M, inout float L, inout vec4 ACC, float m_c, float l_c, vec4 acc_c) {
  float mn = max(M, m_c);
  precise float da = M - mn, db = m_c - mn;
  float a = exp(da), b = exp(db);
  precise float nl = L * a + l_c * b;
  precise vec4 nacc = ACC * a + acc_c * b;
  M = mn;
  L = nl;
  ACC = nacc;
}

// row i's query (head h) into qs slot r
void load_q(uint r, uint i, uint h) {
  const uint lid = gl_LocalInvocationID.x, hd = pc.head_dim, n4 = hd >> 2;
  const uint qo = pc.o_q + i * pc.n_head * hd + h * hd;
  for (uint d = lid; d < n4; d += WG)
    qs[r * (MAX_HD / 4u) + d] =
        vec4(q[qo + 4u * d], q[qo + 4u * d + 1u], q[qo + 4u * d + 2u], q[qo + 4u * d + 3u]);
}

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint h = gl_WorkGroupID.x;
  const uint hd = pc.head_dim, n4 = hd >> 2, dl = lid % n4;
  const bool lead = lid < n4; // lane group 0: holds the output dims
  // phase 2: rows i0 .. i0 + nr - 1; phases 0 and 1: row gl_WorkGroupID.y (one token)
  const uint i0 = pc.phase == 2u ? gl_WorkGroupID.y * TR : gl_WorkGroupID.y;
  const uint nr = pc.phase == 2u ? min(TR, pc.n_tok - i0) : 1u;
  const uint p0 = step[pc.o_step] + i0;
  const uint kvoff4 = (h / pc.group) * n4;
  const uint stride = hd + 2u; // one partial in `part`
  const uint pbase = pc.o_part + h * pc.n_chunk_max * stride;

  if (pc.phase == 0u && gl_WorkGroupID.z * WG > p0) return; // past the last key: nothing to do

  const float NEG_INF = uintBitsToFloat(0xff800000u);
  float M[TR], L[TR];
  vec4 ACC[TR];
  [[unroll]] for (uint r = 0u; r < TR; r++) {
    M[r] = NEG_INF;
    L[r] = 0.0;
    ACC[r] = vec4(0.0);
  }
  if (pc.phase != 1u) {
    for (uint r = 0u; r < nr; r++) load_q(r, i0 + r, h);
    barrier();
  }
  if (pc.phase == 0u) {
    const uint c = gl_WorkGroupID.z;
    float m_c[TR], l_c[TR];
    vec4 acc_c[TR];
    chunk_partial(c * WG, p0, 1u, kvoff4, m_c, l_c, acc_c);
    const uint b = pbase + c * stride;
    if (lid == 0u) {
      part[b] = m_c[0];
      part[b + 1u] = l_c[0];
    }
    if (lead) {
      part[b + 2u + 4u * dl] = acc_c[0].x;
      part[b + 3u + 4u * dl] = acc_c[0].y;
      part[b + 4u + 4u * dl] = acc_c[0].z;
      part[b + 5u + 4u * dl] = acc_c[0].w;
    }
    return;
  }
  if (pc.phase == 1u) {
    for (uint c = 0u; c * WG <= p0; c++) {
      const uint b = pbase + c * stride;
      vec4 acc_c = vec4(0.0);
      if (lead)
        acc_c = vec4(part[b + 2u + 4u * dl], part[b + 3u + 4u * dl], part[b + 4u + 4u * dl],
                      part[b + 5u + 4u * dl]);
      fold(M[0], L[0], ACC[0], part[b], part[b + 1u], acc_c);
    }
    if (pc.has_probs != 0u) { // the probs pass scores keys again: it needs q
      load_q(0u, i0, h);
      barrier();
    }
  } else {
    for (uint c0 = 0u; c0 <= p0 + nr - 1u; c0 += WG) {
      float m_c[TR], l_c[TR];
      vec4 acc_c[TR];
      chunk_partial(c0, p0, nr, kvoff4, m_c, l_c, acc_c);
      [[unroll]] for (uint r = 0u; r < TR; r++)
        if (r < nr && c0 <= p0 + r) fold(M[r], L[r], ACC[r], m_c[r], l_c[r], acc_c[r]);
    }
  }

  for (uint r = 0u; r < nr; r++) {
    const uint i = i0 + r;
    if (lead) {
      const uint oo = pc.o_out + i * pc.n_head * hd + h * hd + 4u * dl;
      vec4 res = ACC[r] / L[r];
      o[oo] = res.x;
      o[oo + 1u] = res.y;
      o[oo + 2u] = res.z;
      o[oo + 3u] = res.w;
    }
    if (pc.has_probs != 0u && i == pc.n_tok - 1u) {
      const uint p = p0 + r;
      for (uint j = lid; j <= p; j += WG) {
        float t[TR];
        scores(phys_row(j), kvoff4, nr, t);
        precise float d = t[r] - M[r];
        probs[pc.o_probs + h * pc.probs_stride + j] = exp(d) / L[r];
      }
    }
  }
}
