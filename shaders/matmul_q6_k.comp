#version 450
// matmul_q6_k — out = x · Wᵀ with Q6_K weights dequantised inside the kernel; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 14
#include "matmul.glsl"
