#version 450
// matmul_q6_k — out = x · Wᵀ with Q6_K weights dequantised inside the kernel; the kernels are matmul.glsl and matmul_cm.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 14
#if KS_COOPMAT
#include "matmul_cm.glsl"
#else
#include "matmul.glsl"
#endif
