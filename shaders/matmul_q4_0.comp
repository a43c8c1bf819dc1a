#version 450
// matmul_q4_0 — out = x · Wᵀ with q4_0 weights; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 2
#include "matmul.glsl"
