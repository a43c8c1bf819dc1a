#version 450
// swiglu — out = silu(gate) * up, elementwise; out may alias gate or up.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { uint o_out, o_gate, o_up, n; } pc;
layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer G { float gate[]; };
layout(binding = 2) readonly buffer U { float up[]; };
#include "grid.glsl"
void main() {
  uint i = grid_index();
  if (i >= pc.n) return;
  float g = gate[pc.o_gate + i];
  y[pc.o_out + i] = g * (1.0 / (1.0 + exp(-g))) * up[pc.o_up + i];
}
