#version 450
// matmul_q5_k — out = x · Wᵀ with Q5_K weights dequantised inside the kernel; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 13
#include "matmul.glsl"
