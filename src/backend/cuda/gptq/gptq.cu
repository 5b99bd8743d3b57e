// GPTQ on the GPU, everything but the GEMMs (cuBLAS) and the factorisation (cuSOLVER). Layouts: the working
// weight is K x N (processing order, column k of the nn.Linear weight contiguous), H and U K x K row-major.
//
// gptq_block, the column sweep over one lazy-update block: output rows are independent, so a thread owns
// one of them. It keeps its block of weights in shared memory (a column per thread, conflict-free),
// quantizes column i1 + i, divides the error by U's diagonal and feeds it into the block's later columns
// through U's row, read by every thread at once (a broadcast). The columns after the block are updated
// afterwards as one GEMM (cuBLAS): W[i2:, :] -= U[i1:i2, i2:]^T Err. Thread blocks are sized by the host
// so that N rows make at least two waves of blocks over the SMs (32 rows a block at N = 4096).
// Napkin math, a 4096 x 4096 layer: per block and row 128^2 / 2 = 8k FMAs, 32 blocks: 1 GFMA in all.
#include "common.cuh"

namespace {
constexpr int MAX_BLOCK = 128;

__device__ __forceinline__ int code_of(float x, float s, float z, int maxq) {
  // clamp(round-half-even(x / s) + z, 0, maxq), in double as the CPU path computes it
  const double q = rint((double)x / (double)s) + (double)z;
  return q < 0.0 ? 0 : q > maxq ? maxq : (int)q;
}

// The nearest fp16 value of a double, through fp32 as the host rounds it, kept positive and finite.
__device__ __forceinline__ float half_scale(double s) {
  const float h = h2f(f2h((float)s));
  return h < 5.9604644775390625e-8f ? 5.9604644775390625e-8f : h > 65504.f ? 65504.f : h;
}
}  // namespace

// grid ceil(N / blockDim); shared memory: the block's U (count x count) and weights (count x blockDim).
extern "C" __global__ void __launch_bounds__(128)
    gptq_block(float* __restrict__ w, const float* __restrict__ U, int K, int N, int i1, int count,
               const int* __restrict__ groupOf, const float* __restrict__ scales, const float* __restrict__ zeros,
               int maxq, unsigned char* __restrict__ codes, float* __restrict__ err, double* __restrict__ loss) {
  extern __shared__ float smem[];
  const int T = blockDim.x;
  float* us = smem;                          // count x count, row-major
  float* ws = smem + MAX_BLOCK * MAX_BLOCK;  // count x T
  const int t = threadIdx.x, n = blockIdx.x * T + t;
  for (int e = t; e < count * count; e += T) {
    const int a = e / count, b = e % count;
    us[e] = b >= a ? U[(size_t)(i1 + a) * K + i1 + b] : 0.f;
  }
  if (n < N)
    for (int i = 0; i < count; i++) ws[i * T + t] = w[(size_t)(i1 + i) * N + n];
  __syncthreads();
  if (n >= N) return;
  double sum = 0.0;
  for (int i = 0; i < count; i++) {
    const int c = i1 + i;
    const int g = groupOf[c];
    const float s = scales[(size_t)g * N + n], z = zeros[(size_t)g * N + n];
    const float x = ws[i * T + t];
    const int code = code_of(x, s, z, maxq);
    codes[(size_t)c * N + n] = (unsigned char)code;
    const double diff = ((double)x - (double)s * (double)(code - (int)z)) / (double)us[i * count + i];
    sum += diff * diff;
    const float e = (float)diff;
    err[(size_t)i * N + n] = e;
    for (int j = i + 1; j < count; j++) ws[j * T + t] -= us[i * count + j] * e;
  }
  atomicAdd(loss, sum);
}

// Min-max parameters of one group (rows c .. c + cols of w as they stand) as the host's findParams computes
// them: the range widened to include 0, symmetric about 0 when sym, [-1, 1] when all zero, the scale
// rounded to fp16. grid ceil(N / 256), one thread per output row.
extern "C" __global__ void gptq_minmax_params(const float* __restrict__ w, int N, int c, int cols, int g, int maxq,
                                              int sym, float* __restrict__ scales, float* __restrict__ zeros) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  double xmin = 0.0, xmax = 0.0;
  for (int k = 0; k < cols; k++) {
    const double v = w[(size_t)(c + k) * N + n];
    xmin = v < xmin ? v : xmin;
    xmax = v > xmax ? v : xmax;
  }
  if (sym) {
    xmax = -xmin > xmax ? -xmin : xmax;
    if (xmin < 0.0) xmin = -xmax;
  }
  if (xmin == 0.0 && xmax == 0.0) {
    xmin = -1.0;
    xmax = 1.0;
  }
  const float s = half_scale((xmax - xmin) / maxq);
  double z;
  if (sym) {
    z = (maxq + 1) / 2;
  } else {
    z = rint(-xmin / (double)s);
    z = z < 0.0 ? 0.0 : z > maxq ? (double)maxq : z;
  }
  scales[(size_t)g * N + n] = s;
  zeros[(size_t)g * N + n] = (float)z;
}

// ---- preparing the problem on the device ----

// out[k] = H[k, k]; grid ceil(K / 256)
extern "C" __global__ void gptq_diagonal(const float* __restrict__ H, int K, float* __restrict__ out) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < K) out[k] = H[(size_t)k * K + k];
}

// H[k, k] += add, or := add when `set`; grid ceil(count / 256) over the listed k (all K when list is null)
extern "C" __global__ void gptq_set_diagonal(float* __restrict__ H, int K, const int* __restrict__ list, int count,
                                             float add, int set) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int k = list ? list[i] : i;
  const size_t at = (size_t)k * K + k;
  H[at] = set ? add : H[at] + add;
}

// out[a, b] = H[perm[a], perm[b]]; grid (ceil(K / 256), K)
extern "C" __global__ void gptq_permute_square(const float* __restrict__ H, const int* __restrict__ perm, int K,
                                               float* __restrict__ out) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x, a = blockIdx.y;
  if (b < K) out[(size_t)a * K + b] = H[(size_t)perm[a] * K + perm[b]];
}

// out[a, :] = w[perm[a], :] (K x N rows); grid (ceil(N / 256), K)
extern "C" __global__ void gptq_permute_rows(const float* __restrict__ w, const int* __restrict__ perm, int N,
                                             float* __restrict__ out) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, a = blockIdx.y;
  if (n < N) out[(size_t)a * N + n] = w[(size_t)perm[a] * N + n];
}

// The working weight from an nn.Linear weight (N x K, fp32 or fp16): out[k, n] = W[n, k]. 32 x 32 tiles
// through shared memory so both sides are coalesced; grid (ceil(K / 32), ceil(N / 32)), 256 threads.
template <typename T>
__device__ __forceinline__ void transpose_tile(const T* __restrict__ W, int N, int K, float* __restrict__ out) {
  __shared__ float tile[32][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int k0 = blockIdx.x * 32, n0 = blockIdx.y * 32;
  for (int r = ty; r < 32; r += 8) {
    const int n = n0 + r, k = k0 + tx;
    if (n < N && k < K) {
      if constexpr (sizeof(T) == 2)
        tile[r][tx] = h2f(W[(size_t)n * K + k]);
      else
        tile[r][tx] = W[(size_t)n * K + k];
    }
  }
  __syncthreads();
  for (int r = ty; r < 32; r += 8) {
    const int k = k0 + r, n = n0 + tx;
    if (n < N && k < K) out[(size_t)k * N + n] = tile[tx][r];
  }
}

extern "C" __global__ void gptq_weight_f32(const float* __restrict__ W, int N, int K, float* __restrict__ out) {
  transpose_tile(W, N, K, out);
}

extern "C" __global__ void gptq_weight_f16(const u16* __restrict__ W, int N, int K, float* __restrict__ out) {
  transpose_tile(W, N, K, out);
}

// ---- after the sweep ----

// The dequantized weight as fp16, nn.Linear layout: out[n, k] = s[g, n] (code[k, n] - z[g, n]), g = gIdx[k];
// codes in the original column order (K x N). grid (ceil(N / 256), K).
extern "C" __global__ void gptq_dequantize(const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                           const float* __restrict__ zeros, const int* __restrict__ gIdx, int N, int K,
                                           u16* __restrict__ out) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (n >= N) return;
  const int g = gIdx[k];
  const size_t p = (size_t)g * N + n;
  out[(size_t)n * K + k] = f2h(scales[p] * ((float)codes[(size_t)k * N + n] - zeros[p]));
}

// The fp32 inputs of the output error: Wf = W and D = W - Q (all N x K; W fp16 or fp32, Q fp16);
// grid ceil(count / 256)
template <typename T>
__device__ __forceinline__ void error_inputs(const T* __restrict__ W, const u16* __restrict__ Q, long long count,
                                             float* __restrict__ Wf, float* __restrict__ D) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  float w;
  if constexpr (sizeof(T) == 2)
    w = h2f(W[i]);
  else
    w = W[i];
  Wf[i] = w;
  D[i] = w - h2f(Q[i]);
}

extern "C" __global__ void gptq_error_inputs_f16(const u16* __restrict__ W, const u16* __restrict__ Q, long long count,
                                                 float* __restrict__ Wf, float* __restrict__ D) {
  error_inputs(W, Q, count, Wf, D);
}

extern "C" __global__ void gptq_error_inputs_f32(const float* __restrict__ W, const u16* __restrict__ Q,
                                                 long long count, float* __restrict__ Wf, float* __restrict__ D) {
  error_inputs(W, Q, count, Wf, D);
}

// Sums of d^T H d and w^T H w over output rows, from rows of (D H) and (W H) (N x K each, row-major) and D, W:
// sums[0] += sum dh * d, sums[1] += sum wh * w. grid ceil(N * K / 256 / 8)
extern "C" __global__ void gptq_quadratic_forms(const float* __restrict__ DH, const float* __restrict__ D,
                                                const float* __restrict__ WH, const float* __restrict__ W,
                                                long long count, double* __restrict__ sums) {
  double a = 0.0, b = 0.0;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (long long)gridDim.x * blockDim.x) {
    a += (double)DH[i] * D[i];
    b += (double)WH[i] * W[i];
  }
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, o);
    b += __shfl_down_sync(0xffffffffu, b, o);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(sums, a);
    atomicAdd(sums + 1, b);
  }
}
