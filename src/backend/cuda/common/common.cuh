// Small device helpers shared by the kernels. NVRTC sees no CUDA headers, so fp16 goes through PTX.
#pragma once

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

__device__ __forceinline__ float h2f(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ u16 f2h(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

// A scale as stored: the nearest fp16 value of a double, through fp32 as the host rounds it (quant-grid.ts's
// halfScale), kept positive and finite.
__device__ __forceinline__ float half_scale(double s) {
  const float h = h2f(f2h((float)s));
  return h < 5.9604644775390625e-8f ? 5.9604644775390625e-8f : h > 65504.f ? 65504.f : h;
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
