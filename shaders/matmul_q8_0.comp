#version 450
// matmul_q8_0 — out = x · Wᵀ with q8_0 weights; the kernels are matmul.glsl and matmul_cm.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 8
#if KS_COOPMAT
#include "matmul_cm.glsl"
#else
#include "matmul.glsl"
#endif
