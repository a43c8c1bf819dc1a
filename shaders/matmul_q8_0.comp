#version 450
// matmul_q8_0 — out = x · Wᵀ with q8_0 weights; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 8
#include "matmul.glsl"
