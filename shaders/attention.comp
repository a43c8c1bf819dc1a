#version 450
#extension GL_EXT_control_flow_attributes : require
// attention — causal attention of query row i (position p = step.pos0 + i) over the cached
// positions 0..p of the paged K/V pool; GQA: query head h reads KV head h / (n_head / n_kv_head).
//
// Keys are taken in chunks of WG (chunk c holds keys c*WG .. c*WG + WG - 1). A chunk's partial
// (m_c, l_c, acc_c) is computed from scratch: invocation lid scores key c*WG + lid (a dot over
// the head in dimension order, K read as vec4 in batches of 16 so the loads overlap); m_c is the
// chunk's max, l_c the sum of exp(s - m_c) by a halving tree over the WG slots (fixed pairs);
// P·V cuts the head into vec4s, one per lane of a lane group (head_dim / 4 lanes), the G groups
// take keys g, g + G, ... in order and their partials are added in group order. The partials are then folded in chunk order:
// M' = max(M, m_c), L' = L e^(M - M') + l_c e^(m_c - M'), likewise the output. Three phases:
//   0  decode, split over the context: workgroup (h, 0, c) writes chunk c's partial to `part`
//   1  decode: workgroup (h) folds the partials of the chunks up to p and writes the output
//   2  one workgroup per (h, i) computes and folds its chunks itself (prefill)
// Phases 0+1 and phase 2 run the same arithmetic in the same order, so a row's bits never depend
// on n_tok or on the path. With has_probs, the last query row also writes its normalised softmax
// row exp(s - M) / L, recomputed after the final M and L are known.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define KV_BLOCK 16u
#define MAX_HD 256u // the host checks head_dim <= 256, head_dim % 4 == 0, WG >= 64

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

shared vec4 qs[MAX_HD / 4u];
shared float sc[WG];   // exp(s - m_c) of the chunk's keys
shared float red[WG];  // the max and sum trees
shared uint rowof[WG]; // physical pool row of each key of the chunk
shared vec4 pv_part[WG]; // P·V partials of the lane groups

uint phys_row(uint j) { return table[pc.o_table + j / KV_BLOCK] * KV_BLOCK + j % KV_BLOCK; }

float score(uint row, uint kvoff4) {
  const uint n4 = pc.head_dim >> 2;
  const uint ko = (pc.o_k >> 2) + row * (pc.kv_dim >> 2) + kvoff4;
  precise float s = 0.0;
  for (uint d0 = 0u; d0 < n4; d0 += 16u) {
    vec4 kk[16];
    [[unroll]] for (uint j = 0u; j < 16u; j++) kk[j] = d0 + j < n4 ? kc4[ko + d0 + j] : vec4(0.0);
    [[unroll]] for (uint j = 0u; j < 16u; j++) {
      if (d0 + j < n4) {
        vec4 qv = qs[d0 + j];
        s = fma(qv.x, kk[j].x, s);
        s = fma(qv.y, kk[j].y, s);
        s = fma(qv.z, kk[j].z, s);
        s = fma(qv.w, kk[j].w, s);
      }
    }
  }
  return s / pc.sqrt_hd;
}

// The partial of the chunk starting at key c0 (c0 <= p): m and l for every lane, acc for the
// lanes of group 0 (dims 4 dl .. 4 dl + 3). Every invocation must call it (barriers).
void chunk_partial(uint c0, uint p, uint kvoff4, out float m_c, out float l_c, out vec4 acc_c) {
  const uint lid = gl_LocalInvocationID.x, n4 = pc.head_dim >> 2;
  const uint G = WG / n4, grp = lid / n4, dl = lid % n4, vrow = pc.kv_dim >> 2;
  const float NEG_INF = uintBitsToFloat(0xff800000u);
  const uint j = c0 + lid;
  float s = NEG_INF;
  if (j <= p) {
    uint row = phys_row(j);
    rowof[lid] = row;
    s = score(row, kvoff4);
  }
  const uint nk = min(WG, p + 1u - c0);
  // chunk max and sum by halving trees over the WG slots (fixed pairs: lane i takes i + off)
  red[lid] = s;
  barrier();
  for (uint off = WG >> 1; off > 0u; off >>= 1) {
    if (lid < off) red[lid] = max(red[lid], red[lid + off]);
    barrier();
  }
  const float mc = red[0];
  barrier();
  const float e = j <= p ? exp(s - mc) : 0.0;
  sc[lid] = e;
  red[lid] = e;
  barrier();
  for (uint off = WG >> 1; off > 0u; off >>= 1) {
    if (lid < off) {
      precise float t = red[lid] + red[lid + off];
      red[lid] = t;
    }
    barrier();
  }
  const float cs = red[0];
  if (grp < G) {
    precise vec4 pv = vec4(0.0);
    for (uint k0 = grp; k0 < nk; k0 += 8u * G) {
      vec4 vv[8];
      [[unroll]] for (uint b = 0u; b < 8u; b++) {
        uint k = k0 + b * G;
        vv[b] = k < nk ? vc4[(pc.o_v >> 2) + rowof[k] * vrow + kvoff4 + dl] : vec4(0.0);
      }
      [[unroll]] for (uint b = 0u; b < 8u; b++) {
        uint k = k0 + b * G;
        if (k < nk) pv = fma(vec4(sc[k]), vv[b], pv);
      }
    }
    pv_part[lid] = pv;
  }
  barrier();
  acc_c = vec4(0.0);
  if (grp == 0u) {
    precise vec4 sum = pv_part[dl];
    for (uint g = 1u; g < G; g++) sum = sum + pv_part[g * n4 + dl];
    acc_c = sum;
  }
  m_c = mc;
  l_c = cs;
  barrier(); // sc, rowof and pv_part are reused by the next chunk
}

// (M, L, ACC) <- the fold of one more chunk partial
void fold(inout float M, inout float L, inout vec4 ACC, float m_c, float l_c, vec4 acc_c) {
  float mn = max(M, m_c);
  float a = exp(M - mn), b = exp(m_c - mn);
  precise float nl = L * a + l_c * b;
  precise vec4 nacc = ACC * a + acc_c * b;
  M = mn;
  L = nl;
  ACC = nacc;
}

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint h = gl_WorkGroupID.x, i = gl_WorkGroupID.y;
  const uint hd = pc.head_dim, n4 = hd >> 2, dl = lid % n4;
  const bool lead = lid < n4; // lane group 0: holds the output dims
  const uint p = step[pc.o_step] + i;
  const uint kvoff4 = (h / pc.group) * n4;
  const uint stride = hd + 2u; // one partial in `part`
  const uint pbase = pc.o_part + h * pc.n_chunk_max * stride;

  if (pc.phase == 0u && gl_WorkGroupID.z * WG > p) return; // past the last key: nothing to do

  const float NEG_INF = uintBitsToFloat(0xff800000u);
  float M = NEG_INF, L = 0.0;
  vec4 ACC = vec4(0.0);
  if (pc.phase != 1u) {
    const uint qo = pc.o_q + i * pc.n_head * hd + h * hd;
    for (uint d = lid; d < n4; d += WG)
      qs[d] = vec4(q[qo + 4u * d], q[qo + 4u * d + 1u], q[qo + 4u * d + 2u], q[qo + 4u * d + 3u]);
    barrier();
  }
  if (pc.phase == 0u) {
    const uint c = gl_WorkGroupID.z;
    float m_c, l_c;
    vec4 acc_c;
    chunk_partial(c * WG, p, kvoff4, m_c, l_c, acc_c);
    const uint b = pbase + c * stride;
    if (lid == 0u) {
      part[b] = m_c;
      part[b + 1u] = l_c;
    }
    if (lead) {
      part[b + 2u + 4u * dl] = acc_c.x;
      part[b + 3u + 4u * dl] = acc_c.y;
      part[b + 4u + 4u * dl] = acc_c.z;
      part[b + 5u + 4u * dl] = acc_c.w;
    }
    return;
  }
  if (pc.phase == 1u) {
    for (uint c = 0u; c * WG <= p; c++) {
      const uint b = pbase + c * stride;
      vec4 acc_c = vec4(0.0);
      if (lead)
        acc_c = vec4(part[b + 2u + 4u * dl], part[b + 3u + 4u * dl], part[b + 4u + 4u * dl],
                      part[b + 5u + 4u * dl]);
      fold(M, L, ACC, part[b], part[b + 1u], acc_c);
    }
    if (pc.has_probs != 0u) { // the probs pass scores keys again: it needs q
      const uint qo = pc.o_q + i * pc.n_head * hd + h * hd;
      for (uint d = lid; d < n4; d += WG)
        qs[d] = vec4(q[qo + 4u * d], q[qo + 4u * d + 1u], q[qo + 4u * d + 2u], q[qo + 4u * d + 3u]);
      barrier();
    }
  } else {
    for (uint c0 = 0u; c0 <= p; c0 += WG) {
      float m_c, l_c;
      vec4 acc_c;
      chunk_partial(c0, p, kvoff4, m_c, l_c, acc_c);
      fold(M, L, ACC, m_c, l_c, acc_c);
    }
  }

  if (lead) {
    const uint oo = pc.o_out + i * pc.n_head * hd + h * hd + 4u * dl;
    vec4 r = ACC / L;
    o[oo] = r.x;
    o[oo + 1u] = r.y;
    o[oo + 2u] = r.z;
    o[oo + 3u] = r.w;
  }
  if (pc.has_probs != 0u && i == pc.n_tok - 1u) {
    for (uint j = lid; j <= p; j += WG)
      probs[pc.o_probs + h * pc.probs_stride + j] = exp(score(phys_row(j), kvoff4) - M) / L;
  }
}
