// The floor of a weight-streaming kernel, for benchmarks: read a buffer once (16 bytes per load, four
// loads in flight per thread) and fold it, with the launch, start-up and tail any kernel has.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(512) stream_read(const uint4* __restrict__ p, unsigned long long words,
                                                             u32* sink) {
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  u32 x = 0;
  for (; i + 3 * stride < words; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w)
                   : "l"(p + i + u * stride));
#pragma unroll
    for (int u = 0; u < 4; u++) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < words; i += stride) {
    const uint4 v = p[i];
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) sink[0] = x;  // keeps the loads; practically never taken
}

// nothing: the cost of a launch alone
extern "C" __global__ void empty_kernel() {}
