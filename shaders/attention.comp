#version 450
// attention — causal attention of query row i (position p = step.pos0 + i) over the cached
// positions 0..p of the paged K/V pool, one workgroup per (head, query row); GQA: query head h
// reads KV head h / (n_head / n_kv_head).
//
// Flash-style with a fixed order: keys are taken in chunks of WG (chunk c holds keys
// c*WG .. c*WG + WG - 1). Invocation lid scores key c*WG + lid (a dot over the head in dimension
// order, K read as vec4 in batches of 8 so the loads overlap). The chunk's max and sum are taken
// in key order; the running max m, sum l and output are rescaled per chunk. P·V: the head's
// dimensions are cut into vec4s, one per lane of a lane group (head_dim / 4 lanes); the G groups
// of the workgroup take keys g, g + G, ... of the chunk in order, and the group partials are
// added in group order. Every order depends only on p, head_dim and WG, never on n_tok, so a row
// computed in a batch equals the row computed alone. With has_probs, the last query row also
// writes its normalised softmax row exp(s - m) / l, recomputed after the final m and l are known.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define KV_BLOCK 16u
#define MAX_HD 256u // the host checks head_dim <= 256, head_dim % 4 == 0, WG >= 64

layout(push_constant) uniform PC {
  uint o_out, o_q, o_k, o_v, o_table, o_step, o_probs;
  uint n_tok, n_head, group, head_dim, kv_dim, probs_stride, has_probs;
  float sqrt_hd; // sqrt(head_dim), computed on the host: scores are dot / sqrt_hd
} pc;
layout(binding = 0) writeonly buffer Out { float o[]; };
layout(binding = 1) readonly buffer Q { float q[]; };
layout(binding = 2) readonly buffer K { vec4 kc4[]; };
layout(binding = 3) readonly buffer V { vec4 vc4[]; };
layout(binding = 4) readonly buffer Table { uint table[]; };
layout(binding = 5) readonly buffer Step { uint step[]; };
layout(binding = 6) writeonly buffer Probs { float probs[]; };

shared vec4 qs[MAX_HD / 4u];
shared float sc[WG];   // chunk scores, then exp(s - m_new)
shared uint rowof[WG]; // physical pool row of each key of the chunk
shared vec4 part[WG];  // P·V partials of the lane groups

uint phys_row(uint j) { return table[pc.o_table + j / KV_BLOCK] * KV_BLOCK + j % KV_BLOCK; }

float score(uint row, uint kvoff4) {
  const uint n4 = pc.head_dim >> 2;
  const uint ko = (pc.o_k >> 2) + row * (pc.kv_dim >> 2) + kvoff4;
  precise float s = 0.0;
  for (uint d0 = 0u; d0 < n4; d0 += 8u) {
    vec4 kk[8];
    for (uint j = 0u; j < 8u; j++) kk[j] = d0 + j < n4 ? kc4[ko + d0 + j] : vec4(0.0);
    for (uint j = 0u; j < 8u; j++) {
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

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint h = gl_WorkGroupID.x, i = gl_WorkGroupID.y;
  const uint hd = pc.head_dim, n4 = hd >> 2;
  const uint p = step[pc.o_step] + i;
  const uint kvoff4 = (h / pc.group) * n4;
  const uint qo = pc.o_q + i * pc.n_head * hd + h * hd;
  for (uint d = lid; d < n4; d += WG)
    qs[d] = vec4(q[qo + 4u * d], q[qo + 4u * d + 1u], q[qo + 4u * d + 2u], q[qo + 4u * d + 3u]);
  barrier();

  // P·V lane groups: n4 lanes each (one vec4 of the head per lane), G groups
  const uint G = WG / n4, grp = lid / n4, dl = lid % n4;
  const uint vrow = pc.kv_dim >> 2;

  const float NEG_INF = uintBitsToFloat(0xff800000u);
  float m = NEG_INF, l = 0.0;
  vec4 acc = vec4(0.0);

  for (uint c0 = 0u; c0 <= p; c0 += WG) {
    uint j = c0 + lid;
    float s = NEG_INF;
    if (j <= p) {
      uint row = phys_row(j);
      rowof[lid] = row;
      s = score(row, kvoff4);
    }
    sc[lid] = s;
    barrier();
    const uint nk = min(WG, p + 1u - c0);
    float mc = sc[0];
    for (uint jj = 1u; jj < nk; jj++) mc = max(mc, sc[jj]);
    float m_new = max(m, mc);
    float alpha = exp(m - m_new);
    barrier();
    sc[lid] = j <= p ? exp(s - m_new) : 0.0;
    barrier();
    precise float cs = 0.0;
    for (uint jj = 0u; jj < nk; jj++) cs += sc[jj];
    l = l * alpha + cs;
    if (grp < G) {
      precise vec4 pv = vec4(0.0);
      for (uint k0 = grp; k0 < nk; k0 += 4u * G) {
        vec4 vv[4];
        for (uint b = 0u; b < 4u; b++) {
          uint k = k0 + b * G;
          vv[b] = k < nk ? vc4[(pc.o_v >> 2) + rowof[k] * vrow + kvoff4 + dl] : vec4(0.0);
        }
        for (uint b = 0u; b < 4u; b++) {
          uint k = k0 + b * G;
          if (k < nk) pv = fma(vec4(sc[k]), vv[b], pv);
        }
      }
      part[lid] = pv;
    }
    barrier();
    if (grp == 0u) {
      precise vec4 sum = part[dl];
      for (uint g = 1u; g < G; g++) sum = sum + part[g * n4 + dl];
      precise vec4 na = acc * alpha + sum;
      acc = na;
    }
    m = m_new;
    barrier();
  }

  if (grp == 0u) {
    const uint oo = pc.o_out + i * pc.n_head * hd + h * hd + 4u * dl;
    vec4 r = acc / l;
    o[oo] = r.x;
    o[oo + 1u] = r.y;
    o[oo + 2u] = r.z;
    o[oo + 3u] = r.w;
  }
  if (pc.has_probs != 0u && i == pc.n_tok - 1u) {
    for (uint j = lid; j <= p; j += WG)
      probs[pc.o_probs + h * pc.probs_stride + j] = exp(score(phys_row(j), kvoff4) - m) / l;
  }
}
