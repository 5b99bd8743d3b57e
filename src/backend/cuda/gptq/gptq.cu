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

// ---- group parameters, as the host's findParams finds them ----
// Every step is the host's float64 operation in the host's order; the _rn intrinsics keep the compiler
// from fusing a multiply and an add (--use_fast_math allows it), which would round differently.

namespace {
// Row n's range over columns c .. c + cols of w: widened to include 0, symmetric about 0 when sym,
// [-1, 1] when all zero.
__device__ void group_range(const float* __restrict__ w, int N, int c, int cols, int n, int sym, double& xmin,
                            double& xmax) {
  xmin = 0.0;
  xmax = 0.0;
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
}

// Scale and zero point of the range [lo, hi]: the scale rounded to fp16, the zero (maxq + 1) / 2 when sym,
// else clamp(round(-lo / s), 0, maxq).
__device__ void range_params(double lo, double hi, int maxq, int sym, float& s, double& z) {
  s = half_scale(__ddiv_rn(__dsub_rn(hi, lo), (double)maxq));
  if (sym) {
    z = (double)((maxq + 1) / 2);
  } else {
    z = rint(__ddiv_rn(-lo, (double)s));
    z = z < 0.0 ? 0.0 : z > maxq ? (double)maxq : z;
  }
}
}  // namespace

// Min-max parameters of one group (rows c .. c + cols of w as they stand). grid ceil(N / 256), one thread per
// output row.
extern "C" __global__ void gptq_minmax_params(const float* __restrict__ w, int N, int c, int cols, int g, int maxq,
                                              int sym, float* __restrict__ scales, float* __restrict__ zeros) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  double xmin, xmax, z;
  float s;
  group_range(w, N, c, cols, n, sym, xmin, xmax);
  range_params(xmin, xmax, maxq, sym, s, z);
  scales[(size_t)g * N + n] = s;
  zeros[(size_t)g * N + n] = (float)z;
}

// The clip searches of one group ("mse": sum_k |w - q|^norm; "hessian": sum_k colWeight[c + k] (w - q)^2):
// candidates scale the range's ends by factors (lo, hi), and the first candidate of least error wins, as
// findParams' sequential rule (a later one replaces the best only when strictly smaller). Phases in order:
// joint shrinks 1 - i / grid (i < shrinks) then widenings 1 + i / grid (1 <= i <= widens); with split, two
// rounds of the lower end's shrinks (upper held at the best) and the upper end's (lower held). A phase's
// candidates are independent given its start, so SEARCH_LANES threads of a row score every SEARCH_LANES-th
// candidate (each error summed over the columns in order) and the lowest-index minimum is taken.
// Threads: 32 rows (a warp, so reads of w coalesce) x lanes (blockDim.x / 32 <= SEARCH_LANES); grid
// ceil(N / 32). Napkin math, a 4096-row group of 128 columns with 88 candidates: 46M scored weights, a
// float64 divide and rint each (about 0.1 ms of an H100's float64 rate).
namespace {
constexpr int SEARCH_ROWS = 32;
constexpr int SEARCH_LANES = 16;

// Candidate i of a phase: its factors for the lower and upper end of the range.
__device__ void candidate(int phase, int i, int shrinks, int grid, double lo, double hi, double& a, double& b) {
  if (phase == 0) {
    const double f = i < shrinks ? __dsub_rn(1.0, __ddiv_rn((double)i, (double)grid))
                                 : __dadd_rn(1.0, __ddiv_rn((double)(i - shrinks + 1), (double)grid));
    a = f;
    b = f;
  } else {
    const double f = __dsub_rn(1.0, __ddiv_rn((double)i, (double)grid));
    a = phase % 2 ? f : lo;  // odd phases move the lower end, even ones the upper
    b = phase % 2 ? hi : f;
  }
}
}  // namespace

extern "C" __global__ void __launch_bounds__(SEARCH_ROWS* SEARCH_LANES)
    gptq_search_params(const float* __restrict__ w, int N, int c, int cols, int g, int maxq, int sym,
                       const double* __restrict__ colWeight, int hessian, double norm, int grid, int shrinks,
                       int widens, int split, float* __restrict__ scales, float* __restrict__ zeros) {
  __shared__ double partErr[SEARCH_LANES * SEARCH_ROWS];
  __shared__ int partIdx[SEARCH_LANES * SEARCH_ROWS];
  const double inf = __longlong_as_double(0x7ff0000000000000ll);
  const int r = threadIdx.x % SEARCH_ROWS, lane = threadIdx.x / SEARCH_ROWS;
  const int lanes = imin(blockDim.x / SEARCH_ROWS, SEARCH_LANES);
  const int n = blockIdx.x * SEARCH_ROWS + r;
  // threads past N or past the lanes still take part in the barriers
  const bool active = n < N && lane < lanes;

  double xmin = 0.0, xmax = 0.0, z = 0.0;
  float s = 0.f;
  if (active) {
    group_range(w, N, c, cols, n, sym, xmin, xmax);
    range_params(xmin, xmax, maxq, sym, s, z);  // kept when no candidate scores below infinity
    // the Hessian-aware search of a symmetric row with no negative weight starts from [-max, max]
    if (sym && hessian && xmin == 0.0) xmin = -xmax;
  }
  double best = inf, bestLo = 1.0, bestHi = 1.0;
  bool found = false;
  const int phases = split && !sym ? 5 : 1;
  for (int phase = 0; phase < phases; phase++) {
    const int count = phase == 0 ? shrinks + widens : shrinks;
    double mine = inf;
    int mineIdx = -1;
    for (int i = lane; active && i < count; i += lanes) {
      double a, b, zc;
      float sc;
      candidate(phase, i, shrinks, grid, bestLo, bestHi, a, b);
      const double lo = __dmul_rn(a, xmin);
      range_params(lo, __dmul_rn(b, xmax), maxq, sym, sc, zc);
      double err = 0.0;
      for (int k = 0; k < cols; k++) {
        const double x = w[(size_t)(c + k) * N + n];
        double q = rint(__ddiv_rn(x, (double)sc)) + zc;
        q = q < 0.0 ? 0.0 : q > maxq ? (double)maxq : q;
        const double d = fabs(__dsub_rn(__dmul_rn((double)sc, __dsub_rn(q, zc)), x));
        const double term = hessian       ? __dmul_rn(colWeight[c + k], __dmul_rn(d, d))
                            : norm == 2.0 ? __dmul_rn(d, d)
                            : d == 0.0    ? 0.0
                                          : exp(__dmul_rn(norm, log(d)));
        err = __dadd_rn(err, term);
      }
      if (err < mine) {  // this lane's candidates come in increasing order: keeps the first minimum
        mine = err;
        mineIdx = i;
      }
    }
    __syncthreads();  // the previous phase's partials have been read
    if (lane < lanes) {
      partErr[lane * SEARCH_ROWS + r] = mine;
      partIdx[lane * SEARCH_ROWS + r] = mineIdx;
    }
    __syncthreads();
    double e = inf;
    int idx = -1;
    for (int l = 0; l < lanes; l++) {
      const double el = partErr[l * SEARCH_ROWS + r];
      const int il = partIdx[l * SEARCH_ROWS + r];
      if (il >= 0 && (idx < 0 || el < e || (el == e && il < idx))) {
        e = el;
        idx = il;
      }
    }
    if (idx >= 0 && e < best) {
      best = e;
      found = true;
      candidate(phase, idx, shrinks, grid, bestLo, bestHi, bestLo, bestHi);
    }
  }
  if (!active || lane != 0) return;
  if (found) range_params(__dmul_rn(bestLo, xmin), __dmul_rn(bestHi, xmax), maxq, sym, s, z);
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
