#version 450
// matmul_q5_0 — out = x · Wᵀ with Q5_0 weights dequantised inside the kernel (llama.cpp's
// variants: subgroup
// fallback for K-quant rows that are not a multiple of 256); the kernel is matmul.glsl.
#extension GL_GOOGLE_include_directive : require
#define WTYPE 6
#include "matmul.glsl"
