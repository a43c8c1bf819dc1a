#version 450
// matmul_f32 — out = x · Wᵀ with f32 weights; the kernel is matmul.glsl.
// variants: subgroup
#extension GL_GOOGLE_include_directive : require
#define WTYPE 0
#include "matmul.glsl"
