// cm_input.glsl — an input row as the cooperative-matrix products take it: RMS-normalised under
// NORM_IN ((x * nw) * scale, the scale summed in a fixed order by one subgroup of 32), rounded
// to f16, eight values to a uvec4. Shared by matmul_cm.glsl (its decode kernel stages the row
// itself) and cm_xprep.comp (the prefill products' input, written once per product), so both
// round the same values. The includer declares pc (K, o_x, o_nw, flags, eps), x4, nw4, NORM_IN.
uvec4 h8(vec4 a, vec4 b) {
  return uvec4(packFloat2x16(f16vec2(a.xy)), packFloat2x16(f16vec2(a.zw)),
               packFloat2x16(f16vec2(b.xy)), packFloat2x16(f16vec2(b.zw)));
}

// RMSNorm's 1 / sqrt(mean(x^2) + eps) of input row t, summed by one subgroup (32 lanes) in a
// fixed order: lane l takes vec4s l, l + 32, ... (fma each), then a butterfly
float row_scale(uint t) {
  const uint k4 = pc.K >> 2;
  precise float s = 0.0;
  for (uint i = gl_SubgroupInvocationID; i < k4; i += 32u) {
    vec4 a = x4[pc.o_x / 4u + t * k4 + i];
    s = fma(a.x, a.x, s);
    s = fma(a.y, a.y, s);
    s = fma(a.z, a.z, s);
    s = fma(a.w, a.w, s);
  }
  for (uint m = 16u; m > 0u; m >>= 1) {
    precise float r = s + subgroupShuffleXor(s, m);
    s = r;
  }
  precise float ms = s / float(pc.K) + pc.eps;
  precise float sc = 1.0 / sqrt(ms);
  return sc;
}

// input row t, elements 8 u .. 8 u + 7, as the product sees them (normalised under NORM_IN), f16
uvec4 x_in8(uint t, uint u, float sc) {
  const uint q = 2u * u;
  vec4 a = x4[pc.o_x / 4u + t * (pc.K >> 2) + q];
  vec4 b = x4[pc.o_x / 4u + t * (pc.K >> 2) + q + 1u];
  if ((pc.flags & NORM_IN) != 0u) {
    precise vec4 va = a * nw4[pc.o_nw / 4u + q];
    precise vec4 vb = b * nw4[pc.o_nw / 4u + q + 1u];
    precise vec4 wa = va * sc;
    precise vec4 wb = vb * sc;
    a = wa;
    b = wb;
  }
  return h8(a, b);
}

