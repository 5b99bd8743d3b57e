// GPTQ's column sweep over one lazy-update block on the GPU: the weight is K x N (processing order, column k
// of the nn.Linear weight contiguous), U the upper Cholesky factor of the damped inverse Hessian (K x K,
// row-major upper triangle). Output rows are independent, so a thread owns one of them: it keeps its
// block of weights in shared memory (a column per thread, conflict-free), quantizes column i1 + i,
// divides the error by U's diagonal and feeds it into the block's later columns through U's row, read by
// every thread at once (a broadcast). The columns after the block are updated afterwards as one GEMM
// (cuBLAS): W[i2:, :] -= U[i1:i2, i2:]^T Err.
// Napkin math, a 4096 x 4096 layer: per block and row 128^2 / 2 = 8k FMAs, 32 blocks: 1 GFMA in all.
#include "common.cuh"

namespace {
constexpr int THREADS = 128;  // output rows per thread block
constexpr int MAX_BLOCK = 128;

__device__ __forceinline__ int code_of(float x, float s, float z, int maxq) {
  // clamp(round-half-even(x / s) + z, 0, maxq), in double as the CPU path computes it
  const double q = rint((double)x / (double)s) + (double)z;
  return q < 0.0 ? 0 : q > maxq ? maxq : (int)q;
}
}  // namespace

// One thread block of THREADS rows; shared memory: the block's U (count x count) and weights (count x THREADS).
extern "C" __global__ void __launch_bounds__(THREADS)
    gptq_block(const float* __restrict__ w, const float* __restrict__ U, int K, int N, int i1, int count,
               const int* __restrict__ groupOf, const float* __restrict__ scales, const float* __restrict__ zeros,
               int maxq, unsigned char* __restrict__ codes, float* __restrict__ err, double* __restrict__ loss) {
  extern __shared__ float smem[];
  float* us = smem;                          // count x count, row-major
  float* ws = smem + MAX_BLOCK * MAX_BLOCK;  // count x THREADS
  const int t = threadIdx.x, n = blockIdx.x * THREADS + t;
  for (int e = t; e < count * count; e += THREADS) {
    const int a = e / count, b = e % count;
    us[e] = b >= a ? U[(size_t)(i1 + a) * K + i1 + b] : 0.f;
  }
  if (n < N)
    for (int i = 0; i < count; i++) ws[i * THREADS + t] = w[(size_t)(i1 + i) * N + n];
  __syncthreads();
  if (n >= N) return;
  double sum = 0.0;
  for (int i = 0; i < count; i++) {
    const int c = i1 + i;
    const int g = groupOf[c];
    const float s = scales[(size_t)g * N + n], z = zeros[(size_t)g * N + n];
    const float x = ws[i * THREADS + t];
    const int code = code_of(x, s, z, maxq);
    codes[(size_t)c * N + n] = (unsigned char)code;
    const double diff = ((double)x - (double)s * (double)(code - (int)z)) / (double)us[i * count + i];
    sum += diff * diff;
    const float e = (float)diff;
    err[(size_t)i * N + n] = e;
    for (int j = i + 1; j < count; j++) ws[j * THREADS + t] -= us[i * count + j] * e;
  }
  atomicAdd(loss, sum);
}
