#version 450
// embed — out (n_tok, dim) = row tokens[i] of the embedding table, dequantised. The table may
// be split into row slices (maxStorageBufferRange); one dispatch per slice writes the tokens
// whose id falls in [row0, row0 + rows). Exact: same products as ks_dequant_row.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint TYPE = 0; // ks_type

layout(push_constant) uniform PC {
  uint o_out, o_tok, o_w; // word offsets into the bindings (descriptor alignment remainder)
  uint dim, n_tok, row0, rows, row_bytes;
} pc;
layout(binding = 0) writeonly buffer Out { float y[]; };
layout(binding = 1) readonly buffer Tok { uint tok[]; };
layout(binding = 2) readonly buffer W { uint wu[]; };
#include "quant.glsl"

void main() {
  uint e = gl_GlobalInvocationID.x, t = gl_WorkGroupID.y;
  if (e >= pc.dim) return;
  uint id = tok[pc.o_tok + t];
  if (id < pc.row0 || id - pc.row0 >= pc.rows) return;
  y[pc.o_out + t * pc.dim + e] = ld_elem(TYPE, id - pc.row0, pc.row_bytes, pc.rows, pc.dim, e);
}
