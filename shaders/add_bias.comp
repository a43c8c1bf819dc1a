#version 450
// add_bias — x (n_tok, n) += b (n) on every row: the Q/K/V projection biases (qwen2). One add
// per element, so a row's result does not depend on the batch.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { uint o_x, o_b, n, total; } pc; // total = n_tok * n
layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer B { float b[]; };
#include "grid.glsl"
void main() {
  uint i = grid_index();
  if (i >= pc.total) return;
  x[pc.o_x + i] += b[pc.o_b + i % pc.n];
}
