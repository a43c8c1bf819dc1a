#version 450
// kv_write — copies src rows (n_tok, kv_dim) into the paged K or V pool: position p = pos0 + i
// goes to row table[p / 16] * 16 + p % 16 (KS_KV_BLOCK = 16).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#define KV_BLOCK 16u

layout(push_constant) uniform PC {
  uint o_cache, o_src, o_table, o_step;
  uint n_tok, kv_dim, total;
} pc;
layout(binding = 0) writeonly buffer Cache { float cache[]; };
layout(binding = 1) readonly buffer Src { float src[]; };
layout(binding = 2) readonly buffer Table { uint table[]; };
layout(binding = 3) readonly buffer Step { uint step[]; };
#include "grid.glsl"

void main() {
  uint idx = grid_index();
  if (idx >= pc.total) return;
  uint t = idx / pc.kv_dim, e = idx % pc.kv_dim;
  uint p = step[pc.o_step] + t;
  uint row = table[pc.o_table + p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK;
  cache[pc.o_cache + row * pc.kv_dim + e] = src[pc.o_src + idx];
}
