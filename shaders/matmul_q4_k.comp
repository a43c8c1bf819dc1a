#version 450
// matmul_q4_k — out = x · Wᵀ with Q4_K weights dequantised inside the kernel; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 12
#include "matmul.glsl"
