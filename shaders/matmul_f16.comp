#version 450
// matmul_f16 — out = x · Wᵀ with f16 weights; the kernels are matmul.glsl and matmul_cm.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 1
#if KS_COOPMAT
#include "matmul_cm.glsl"
#else
#include "matmul.glsl"
#endif
