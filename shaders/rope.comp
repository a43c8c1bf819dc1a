#version 450
// rope — rotates pairs of each head in place; token i is at position step.pos0 + i (read from
// the step buffer so a recorded decode step can be replayed). The inverse frequencies come
// from a table computed on the host exactly as the CPU reference does, so the angle pos * freq
// is the same float; it is reduced to [-pi, pi] before sin/cos (GPU sin/cos are only accurate
// there), keeping large positions accurate.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(push_constant) uniform PC {
  uint o_x, o_step, o_f;
  uint n_tok, n_heads, head_dim, neox, total; // total = n_tok * n_heads * head_dim / 2
} pc;
layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer Step { uint step[]; };
layout(binding = 2) readonly buffer F { float freq[]; };
#include "grid.glsl"

void main() {
  uint idx = grid_index();
  if (idx >= pc.total) return;
  uint half_dim = pc.head_dim / 2u;
  uint j = idx % half_dim, hh = idx / half_dim; // hh = token * n_heads + head
  uint t = hh / pc.n_heads;
  uint pos = step[pc.o_step] + t;
  precise float val = float(pos) * freq[pc.o_f + j];
  precise float k = round(val * 0.15915494309189535);
  precise float r = (val - k * 6.28125) - k * 0.0019353071795864769;
  float c = cos(r), s = sin(r);
  uint base = pc.o_x + hh * pc.head_dim;
  uint i0 = pc.neox != 0u ? base + j : base + 2u * j;
  uint i1 = pc.neox != 0u ? i0 + half_dim : i0 + 1u;
  float x0 = x[i0], x1 = x[i1];
  x[i0] = x0 * c - x1 * s;
  x[i1] = x0 * s + x1 * c;
}
