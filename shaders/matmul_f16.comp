#version 450
// matmul_f16 — out = x · Wᵀ with f16 weights; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 1
#include "matmul.glsl"
