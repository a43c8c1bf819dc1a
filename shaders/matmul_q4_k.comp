#version 450
// matmul_q4_k — out = x · Wᵀ with Q4_K weights dequantised inside the kernel; the kernels are matmul.glsl and matmul_cm.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 12
#if KS_COOPMAT
#include "matmul_cm.glsl"
#else
#include "matmul.glsl"
#endif
