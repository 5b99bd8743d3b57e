// fp-target's conversions around its fp64 solve (the GEMM and the Cholesky solves are cuBLAS and cuSOLVER).
// One thread per element, grid ceil(count / 256); a few hundred MB at most, so bandwidth-bound and small
// beside the solve.
#include "common.cuh"

// out[i] = src[i] widened to fp64, plus onDiagonal[c] on the diagonal of a K x K matrix (element i = c K + c);
// onDiagonal null: a plain copy (any row count).
extern "C" __global__ void fp_target_widen(const float* __restrict__ src, long long count, int K,
                                           const double* __restrict__ onDiagonal, double* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  double v = (double)src[i];
  if (onDiagonal != nullptr && i / K == i % K) v += onDiagonal[i % K];
  out[i] = v;
}

// out[i] = src[i], fp16 widened to fp64 (a weight as an fp16 checkpoint stores it).
extern "C" __global__ void fp_target_widen_f16(const u16* __restrict__ src, long long count, double* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) out[i] = (double)h2f(src[i]);
}

// out[i] = src[i] rounded to the nearest fp32 (as a Float32Array stores a double).
extern "C" __global__ void fp_target_narrow(const double* __restrict__ src, long long count, float* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) out[i] = (float)src[i];
}
