#version 450
// add — x += y, elementwise (the residual connection).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { uint o_x, o_y, n; } pc;
layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer Y { float y[]; };
#include "grid.glsl"
void main() {
  uint i = grid_index();
  if (i >= pc.n) return;
  x[pc.o_x + i] += y[pc.o_y + i];
}
