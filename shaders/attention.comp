#version 450
// attention — causal attention of query row i (position p = step.pos0 + i) over the cached
// positions 0..p of the paged K/V pool, one workgroup per (head, query row); GQA: query head h
// reads KV head h / (n_head / n_kv_head).
//
// Flash-style with a fixed order: keys are taken in chunks of WG (chunk c holds keys
// c*WG .. c*WG + WG - 1, invocation lid scores key c*WG + lid); the chunk's max and sum are
// reduced sequentially in key order; the running max m, sum l and output accumulator (each
// invocation owns dims lid, lid + WG, ... of the head) are rescaled per chunk. Every order
// depends only on p and WG, never on n_tok, so a row computed in a batch equals the row
// computed alone. With has_probs, the last query row also writes its normalised softmax row
// exp(s - m) / l, recomputed after the final m and l are known.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define KV_BLOCK 16u
#define MAX_HD 256u
#define ACC 8u // MAX_HD / 32: WG >= 32 is required by the host

layout(push_constant) uniform PC {
  uint o_out, o_q, o_k, o_v, o_table, o_step, o_probs;
  uint n_tok, n_head, group, head_dim, kv_dim, probs_stride, has_probs;
  float sqrt_hd; // sqrt(head_dim), computed on the host: scores are dot / sqrt_hd
} pc;
layout(binding = 0) writeonly buffer Out { float o[]; };
layout(binding = 1) readonly buffer Q { float q[]; };
layout(binding = 2) readonly buffer K { float kc[]; };
layout(binding = 3) readonly buffer V { float vc[]; };
layout(binding = 4) readonly buffer Table { uint table[]; };
layout(binding = 5) readonly buffer Step { uint step[]; };
layout(binding = 6) writeonly buffer Probs { float probs[]; };

shared float qs[MAX_HD];
shared float sc[WG];   // chunk scores, then exp(s - m_new)
shared uint rowof[WG]; // physical pool row of each key of the chunk

uint phys_row(uint j) { return table[pc.o_table + j / KV_BLOCK] * KV_BLOCK + j % KV_BLOCK; }

float score(uint row, uint kvoff) {
  uint ko = pc.o_k + row * pc.kv_dim + kvoff;
  float s = 0.0;
  for (uint d = 0u; d < pc.head_dim; d++) s += qs[d] * kc[ko + d];
  return s / pc.sqrt_hd;
}

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint h = gl_WorkGroupID.x, i = gl_WorkGroupID.y;
  const uint hd = pc.head_dim;
  const uint p = step[pc.o_step] + i;
  const uint kvoff = (h / pc.group) * hd;
  const uint qo = pc.o_q + i * pc.n_head * hd + h * hd;
  for (uint d = lid; d < hd; d += WG) qs[d] = q[qo + d];
  barrier();

  const float NEG_INF = uintBitsToFloat(0xff800000u);
  float m = NEG_INF, l = 0.0;
  float acc[ACC];
  for (uint a = 0u; a < ACC; a++) acc[a] = 0.0;

  for (uint c0 = 0u; c0 <= p; c0 += WG) {
    uint j = c0 + lid;
    float s = NEG_INF;
    if (j <= p) {
      uint row = phys_row(j);
      rowof[lid] = row;
      s = score(row, kvoff);
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
    float cs = 0.0;
    for (uint jj = 0u; jj < nk; jj++) cs += sc[jj];
    l = l * alpha + cs;
    for (uint a = 0u; a < ACC; a++) {
      uint d = lid + a * WG;
      if (d < hd) {
        float sum = 0.0;
        for (uint jj = 0u; jj < nk; jj++) sum += sc[jj] * vc[pc.o_v + rowof[jj] * pc.kv_dim + kvoff + d];
        acc[a] = acc[a] * alpha + sum;
      }
    }
    m = m_new;
    barrier();
  }

  const uint oo = pc.o_out + i * pc.n_head * hd + h * hd;
  for (uint a = 0u; a < ACC; a++) {
    uint d = lid + a * WG;
    if (d < hd) o[oo + d] = acc[a] / l;
  }
  if (pc.has_probs != 0u && i == pc.n_tok - 1u) {
    for (uint j = lid; j <= p; j += WG)
      probs[pc.o_probs + h * pc.probs_stride + j] = exp(score(phys_row(j), kvoff) - m) / l;
  }
}
