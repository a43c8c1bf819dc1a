#version 450
// rmsnorm — one workgroup per token row: out = x / sqrt(mean(x^2) + eps) * w. The sum of squares
// is reduced in a fixed order (strided partials, then a sequential pass over them), so a row's
// result never depends on the batch it came in. out may alias x.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(push_constant) uniform PC {
  uint o_out, o_x, o_w;
  uint n;
  float eps;
} pc;
layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) readonly buffer W { float w[]; };

shared float part[WG];

void main() {
  uint lid = gl_LocalInvocationID.x;
  uint xo = pc.o_x + gl_WorkGroupID.x * pc.n, yo = pc.o_out + gl_WorkGroupID.x * pc.n;
  float s = 0.0;
  for (uint j = lid; j < pc.n; j += WG) s += x[xo + j] * x[xo + j];
  part[lid] = s;
  barrier();
  float ss = 0.0;
  for (uint i = 0; i < WG; i++) ss += part[i];
  float scale = 1.0 / sqrt(ss / float(pc.n) + pc.eps);
  for (uint j = lid; j < pc.n; j += WG) y[yo + j] = w[pc.o_w + j] * (scale * x[xo + j]);
}
