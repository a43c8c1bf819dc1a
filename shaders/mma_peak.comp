#version 450
// mma_peak — the matrix units' rate as the cooperative-matrix kernels use them (kvscope bench's
// compute ceiling for prefill): each subgroup chains ITERS x 8 products C = A·B + C of the
// 16x8x16 f16 shape (f32 sums) on values that stay in registers, then stores its 8 sums so the
// work cannot be dropped. No memory traffic in the loop. Only created where VK_NV_cooperative_matrix
// is usable (gpu_info.coopmat).
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 128) in;
layout(push_constant) uniform PC {
  uint o_out; // word offset of binding 0
  uint iters;
} pc;
layout(binding = 0) writeonly buffer Out { float y[]; };

#define A_T fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define B_T fcoopmatNV<16, gl_ScopeSubgroup, 16, 8>
#define C_T fcoopmatNV<32, gl_ScopeSubgroup, 16, 8>

void main() {
  const uint sg = gl_WorkGroupID.x * 4u + gl_SubgroupID;
  A_T a = A_T(float16_t(1.0 / 64.0));
  B_T b = B_T(float16_t(float(sg % 7u) / 128.0));
  C_T acc[8];
  [[unroll]] for (uint j = 0u; j < 8u; j++) acc[j] = C_T(float(j));
  for (uint i = 0u; i < pc.iters; i++)
    [[unroll]] for (uint j = 0u; j < 8u; j++) acc[j] = coopMatMulAddNV(a, b, acc[j]);
  [[unroll]] for (uint j = 1u; j < 8u; j++) acc[0] = acc[0] + acc[j];
  coopMatStoreNV(acc[0], y, pc.o_out + sg * 128u, 8u, false);
}
