#version 450
// rope_kv — the step after the fused q|k|v product, in one dispatch: for token i (position
// step.pos0 + i) of qkv rows (n_tok, qd + 2 kvd) it adds the q/k/v biases (qwen2; has_bias),
// rotates the q and k pairs (RoPE, the arithmetic of rope.comp), writes q to its own buffer
// (n_tok, qd), and writes k and v into the paged pools: position p goes to row
// table[p / 16] * 16 + p % 16 (KS_KV_BLOCK = 16). One invocation per pair of elements.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define KV_BLOCK 16u
layout(push_constant) uniform PC {
  uint o_q, o_qkv, o_k, o_v, o_table, o_step, o_f, o_bias;
  uint n_tok, qd, kvd, head_dim, neox, has_bias, total; // total = n_tok * (qd + 2 kvd) / 2
} pc;
layout(binding = 0) writeonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer QKV { float qkv[]; };
layout(binding = 2) writeonly buffer KP { float kp[]; };
layout(binding = 3) writeonly buffer VP { float vp[]; };
layout(binding = 4) readonly buffer Table { uint table[]; };
layout(binding = 5) readonly buffer Step { uint step[]; };
layout(binding = 6) readonly buffer F { float freq[]; };
layout(binding = 7) readonly buffer B { float bias[]; };
#include "grid.glsl"

void main() {
  uint idx = grid_index();
  if (idx >= pc.total) return;
  const uint width = pc.qd + 2u * pc.kvd, per_tok = width / 2u;
  const uint t = idx / per_tok, c = idx % per_tok;
  const uint half_dim = pc.head_dim / 2u;
  const uint pos = step[pc.o_step] + t;
  // the pair's two columns e0, e1 within the qkv row; v pairs are adjacent columns
  uint e0, e1;
  const bool is_v = c >= (pc.qd + pc.kvd) / 2u;
  uint j = 0u;
  if (is_v) {
    e0 = pc.qd + pc.kvd + 2u * (c - (pc.qd + pc.kvd) / 2u);
    e1 = e0 + 1u;
  } else {
    uint hc = c < pc.qd / 2u ? c : c - pc.qd / 2u; // pair index inside q or k
    uint base = (c < pc.qd / 2u ? 0u : pc.qd) + (hc / half_dim) * pc.head_dim;
    j = hc % half_dim;
    e0 = pc.neox != 0u ? base + j : base + 2u * j;
    e1 = pc.neox != 0u ? e0 + half_dim : e0 + 1u;
  }
  const uint ro = pc.o_qkv + t * width;
  float x0 = qkv[ro + e0], x1 = qkv[ro + e1];
  if (pc.has_bias != 0u) {
    precise float a = x0 + bias[pc.o_bias + e0];
    precise float b = x1 + bias[pc.o_bias + e1];
    x0 = a;
    x1 = b;
  }
  if (!is_v) {
    precise float val = float(pos) * freq[pc.o_f + j];
    precise float k = round(val * 0.15915494309189535);
    precise float r = (val - k * 6.28125) - k * 0.0019353071795864769;
    float cs = cos(r), sn = sin(r);
    float y0 = x0 * cs - x1 * sn, y1 = x0 * sn + x1 * cs;
    x0 = y0;
    x1 = y1;
  }
  const uint prow = table[pc.o_table + pos / KV_BLOCK] * KV_BLOCK + pos % KV_BLOCK;
  if (e0 < pc.qd) {
    q[pc.o_q + t * pc.qd + e0] = x0;
    q[pc.o_q + t * pc.qd + e1] = x1;
  } else if (e0 < pc.qd + pc.kvd) {
    kp[pc.o_k + prow * pc.kvd + e0 - pc.qd] = x0;
    kp[pc.o_k + prow * pc.kvd + e1 - pc.qd] = x1;
  } else {
    vp[pc.o_v + prow * pc.kvd + e0 - pc.qd - pc.kvd] = x0;
    vp[pc.o_v + prow * pc.kvd + e1 - pc.qd - pc.kvd] = x1;
  }
}
