#version 450
// copy4 — dst = src, 16-byte words (the bandwidth probe of kvscope bench and large copies).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { uint o_dst, o_src, n; } pc; // word offsets (multiples of 4); n uvec4s
layout(binding = 0) writeonly buffer D { uvec4 dst[]; };
layout(binding = 1) readonly buffer S { uvec4 src[]; };
#include "grid.glsl"
void main() {
  uint i = grid_index();
  if (i >= pc.n) return;
  dst[pc.o_dst / 4u + i] = src[pc.o_src / 4u + i];
}
