#version 450
// cm_xprep — the input of a cooperative-matrix prefill product (matmul_cm.glsl, KS_DECODE=0),
// written once per product instead of by every workgroup: row t of x (n_tok, K), RMS-normalised
// under NORM_IN, rounded to f16 (cm_input.glsl), to row t of xh (n_tok, K / 8 uvec4s). One
// subgroup of 32 per row (the device's subgroup size wherever these kernels run).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
layout(local_size_x = 32) in;
layout(push_constant) uniform PC {
  uint o_out, o_x, o_nw; // word offsets of bindings 0-2
  uint K, flags;
  float eps;
} pc;
layout(binding = 0) writeonly buffer XH { uvec4 xh[]; };
layout(binding = 1) readonly buffer X { vec4 x4[]; };
layout(binding = 2) readonly buffer NW { vec4 nw4[]; };
#define NORM_IN 1u
#include "cm_input.glsl"

void main() {
  const uint t = gl_WorkGroupID.x;
  const float sc = (pc.flags & NORM_IN) != 0u ? row_scale(t) : 1.0;
  for (uint u = gl_LocalInvocationID.x; u < pc.K / 8u; u += 32u)
    xh[pc.o_out / 4u + t * (pc.K / 8u) + u] = x_in8(t, u, sc);
}
