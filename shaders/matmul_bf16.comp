#version 450
// matmul_bf16 — out = x · Wᵀ with BF16 weights, each widened in registers (the top half of an
// variants: subgroup
// f32), so no f32 copy of the weights is ever made; the kernels are matmul.glsl and matmul_cm.glsl.
#extension GL_GOOGLE_include_directive : require
#define WTYPE 30
#if KS_COOPMAT
#include "matmul_cm.glsl"
#else
#include "matmul.glsl"
#endif
