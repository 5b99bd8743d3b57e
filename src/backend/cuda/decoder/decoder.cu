// The elementwise and row-wise kernels of a Llama-family decoder layer on fp16 activations (fp32 math);
// the projections and the two attention products are cuBLAS GEMMs (decoder.ts). All of these are
// bandwidth-bound: per layer of a Llama-2-7B-shaped model and 128 x 2048 calibration tokens (262k rows),
//  - rms_norm: reads and writes rows x 4096 fp16 = 2 x 2.1 GB, about 1.3 ms at 3.3 TB/s;
//  - add_bias / add_inplace: 2-3 passes over rows x width fp16 (bias in fp32, from L1/L2);
//  - rope: q and k read and written once (the rotated part): up to 4 x 2.1 GB;
//  - silu_mul: gate and up read, the product written: rows x 11008 x 6 bytes = 17 GB, about 5 ms;
//  - causal_softmax: per sequence and kv head T^2 fp32 scores read twice (max, then sum; the third pass
//    rereads them from L2 at T = 2048: 16 kB a row) and T^2 fp16 probabilities written: 10 bytes x T^2 =
//    42 MB per head and sequence, 128 x 32 x 42 MB = 172 GB a layer, about 50 ms (the attention GEMMs
//    are 2 x 2 x T^2 x 128 x 32 x 128 = 9 TFLOP, about 10 ms on tensor cores: the softmax dominates; a
//    fused flash kernel is the later step);
//  - embed_gather: rows x hidden fp16 read and written once.
#include "common.cuh"

namespace {
constexpr int THREADS = 256;

// The sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_sum(float v, float* shared32) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // shared32 may still be read by a previous reduction
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < warps; w++) s += shared32[w];
  return s;
}

__device__ float block_max(float v, float* shared32) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float m = -__int_as_float(0x7f800000);  // -inf
  for (int w = 0; w < warps; w++) m = fmaxf(m, shared32[w]);
  return m;
}
}  // namespace

// out[r, i] = w[i] * (x[r, i] / sqrt(mean_i(x[r, i]^2) + eps)), as the CPU rmsNorm. grid (rows), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    rms_norm(const u16* __restrict__ x, const float* __restrict__ w, u16* __restrict__ out, int dim, float eps) {
  __shared__ float red[32];
  const size_t base = (size_t)blockIdx.x * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = h2f(x[base + i]);
    ss += v * v;
  }
  const float inv = 1.f / sqrtf(block_sum(ss, red) / (float)dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[base + i] = f2h(w[i] * (h2f(x[base + i]) * inv));
}

// y[r, n] += bias[n] for `count` = rows x N elements. grid (ceil(count / THREADS)).
extern "C" __global__ void add_bias(u16* __restrict__ y, const float* __restrict__ bias, int N, size_t count) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e < count) y[e] = f2h(h2f(y[e]) + bias[e % N]);
}

// A bf16 weight narrowed to fp16 in place (what the layer computes with). grid (ceil(count / THREADS)).
extern "C" __global__ void bf16_to_f16(u16* __restrict__ w, size_t count) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= count) return;
  float f;
  asm("mov.b32 %0, %1;" : "=f"(f) : "r"((u32)w[e] << 16));
  w[e] = f2h(f);
}

// h[e] += y[e] (the residual). grid (ceil(count / THREADS)).
extern "C" __global__ void add_inplace(u16* __restrict__ h, const u16* __restrict__ y, size_t count) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e < count) h[e] = f2h(h2f(h[e]) + h2f(y[e]));
}

// Rotary embedding in place, rotate_half layout: in each head (headDim values) the first 2 x half values
// are rotated as (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), x1 = x[i], x2 = x[i + half], with the
// angles of row r's position pos[r] (cos/sin: positions x stride). One thread per (row, head, i < half).
// grid (ceil(rows x heads x half / THREADS)).
extern "C" __global__ void rope(u16* __restrict__ x, const float* __restrict__ cosT, const float* __restrict__ sinT,
                                int stride, const int* __restrict__ pos, int rows, int heads, int headDim, int half) {
  const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= (size_t)rows * heads * half) return;
  const int i = (int)(t % half);
  const size_t rh = t / half;  // row x heads + head
  const int r = (int)(rh / heads);
  u16* p = x + rh * headDim;
  const float c = cosT[(size_t)pos[r] * stride + i], s = sinT[(size_t)pos[r] * stride + i];
  const float x1 = h2f(p[i]), x2 = h2f(p[i + half]);
  p[i] = f2h(x1 * c - x2 * s);
  p[i + half] = f2h(x2 * c + x1 * s);
}

// Causal softmax over the scores of one sequence (T x T fp32 per batch entry, already scaled by
// 1/sqrt(headDim)): row i attends to keys j in [max(0, i - window + 1), i]; probabilities in fp16, zeros
// elsewhere so that P V may run over the full T x T. grid (T, batch), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    causal_softmax(const float* __restrict__ scores, u16* __restrict__ probs, int T, int window) {
  __shared__ float red[32];
  const int i = blockIdx.x;
  const size_t row = ((size_t)blockIdx.y * T + i) * T;
  const int j0 = i - window + 1 > 0 ? i - window + 1 : 0;
  float m = -__int_as_float(0x7f800000);  // -inf
  for (int j = j0 + threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, scores[row + j]);
  m = block_max(m, red);
  float sum = 0.f;
  for (int j = j0 + threadIdx.x; j <= i; j += blockDim.x) sum += expf(scores[row + j] - m);
  const float inv = 1.f / block_sum(sum, red);
  for (int j = threadIdx.x; j < T; j += blockDim.x)
    probs[row + j] = f2h(j >= j0 && j <= i ? expf(scores[row + j] - m) * inv : 0.f);
}

// out[e] = silu(gate[e]) * up[e], silu(g) = g / (1 + exp(-g)). grid (ceil(count / THREADS)).
extern "C" __global__ void silu_mul(const u16* __restrict__ gate, const u16* __restrict__ up, u16* __restrict__ out,
                                    size_t count) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= count) return;
  const float g = h2f(gate[e]);
  out[e] = f2h(g / (1.f + expf(-g)) * h2f(up[e]));
}

// out[r, :] = table[tokens[r], :] (tokens checked on the host). grid (rows), block THREADS.
extern "C" __global__ void embed_gather(const u16* __restrict__ table, const int* __restrict__ tokens,
                                        u16* __restrict__ out, int dim) {
  const size_t src = (size_t)tokens[blockIdx.x] * dim, dst = (size_t)blockIdx.x * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[dst + i] = table[src + i];
}
