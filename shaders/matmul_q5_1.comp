#version 450
// matmul_q5_1 — out = x · Wᵀ with Q5_1 weights dequantised inside the kernel (llama.cpp's
// variants: subgroup
// fallback for K-quant rows that are not a multiple of 256); the kernels are matmul.glsl and matmul_cm.glsl.
#extension GL_GOOGLE_include_directive : require
#define WTYPE 7
#if KS_COOPMAT
#include "matmul_cm.glsl"
#else
#include "matmul.glsl"
#endif
