#version 450
// copy — dst = src, 32-bit words.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { uint o_dst, o_src, n; } pc;
layout(binding = 0) writeonly buffer D { uint dst[]; };
layout(binding = 1) readonly buffer S { uint src[]; };
#include "grid.glsl"
void main() {
  uint i = grid_index();
  if (i >= pc.n) return;
  dst[pc.o_dst + i] = src[pc.o_src + i];
}
