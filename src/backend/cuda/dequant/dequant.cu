// Dequantization to fp16, out[k, n] (the qweight orientation, K x N row-major), for
//  - GPTQ v1/v2 at 2/3/4/8 bits with any g_idx: codes are a bit stream along K in each 32-row slab
//    (3-bit codes straddle words), zero points the same along N; v1 stores zero - 1 (zeroAdd = 1);
//  - Marlin: 16x16 tiles, a 1024-entry permutation (perm[i] = index in the tiled order of the value
//    stored at position i), 8 codes per word, zero 8, scales column-permuted (scaleInv[c] = stored
//    position of column c within each block of scaleBlock columns).
#include "common.cuh"

__device__ __forceinline__ u32 extract(const u32* words, int stride, int idx, int col, int bits) {
  const int bit = (idx & 31) * bits;
  const int row = (idx >> 5) * bits + (bit >> 5);
  const int sh = bit & 31;
  u32 v = words[(size_t)row * stride + col] >> sh;
  if (sh + bits > 32) v |= words[(size_t)(row + 1) * stride + col] << (32 - sh);
  return v & ((1u << bits) - 1);
}

// grid (ceil(N / 256), K); one thread per output element
extern "C" __global__ void gptq_dequant(const u32* qweight, const u32* qzeros, const u16* scales, const int* gIdx,
                                        u16* out, int K, int N, int bits, int zeroAdd) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const int k = blockIdx.y;
  if (n >= N) return;
  const int g = gIdx[k];
  const int code = (int)extract(qweight, N, k, n, bits);
  // qzeros row g is a bit stream along N: word (n / 32) * bits + ..., in a row of N * bits / 32 words
  const int zw = N * bits / 32;
  const int bit = (n & 31) * bits;
  const int word = (n >> 5) * bits + (bit >> 5);
  const int sh = bit & 31;
  const u32* zr = qzeros + (size_t)g * zw;
  u32 z = zr[word] >> sh;
  if (sh + bits > 32) z |= zr[word + 1] << (32 - sh);
  const int zero = (int)(z & ((1u << bits) - 1)) + zeroAdd;
  out[(size_t)k * N + n] = f2h(h2f(scales[(size_t)g * N + n]) * (float)(code - zero));
}

// grid (ceil(16 N / 256), K / 16); one thread per stored code
extern "C" __global__ void marlin_dequant(const u32* B, const u16* s, const int* perm, const int* scaleInv,
                                          int scaleBlock, u16* out, int K, int N, int groupSize) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;  // position in the row of 16 N codes
  const int kt = blockIdx.y;
  if (p >= 16 * N) return;
  const u32 code = (B[(size_t)kt * 2 * N + (p >> 3)] >> ((p & 7) * 4)) & 15u;
  const int tiled = (p & ~1023) + perm[p & 1023];  // index in the (K/16, N/16, 16, 16) tiled order
  const int tile = tiled >> 8, within = tiled & 255;
  const int k = kt * 16 + (within >> 4), n = tile * 16 + (within & 15);
  const int g = groupSize < 0 ? 0 : k / groupSize;
  const int sc = (n / scaleBlock) * scaleBlock + scaleInv[n % scaleBlock];
  out[(size_t)k * N + n] = f2h(h2f(s[(size_t)g * N + sc]) * (float)((int)code - 8));
}
