// W4A16 GEMM: C[M, N] = A[M, K] (fp16) x W[K, N] (4-bit symmetric, fp16 group scales), fp32 accumulation
// on tensor cores (mma.sync m16n8k16).
//
// Weight layout (prepared at load time, see layout.ts): for every 64-column tile and every 16-row k-tile,
// 512 bytes = one 16-byte word per lane holding exactly that lane's B fragments for the tile's eight
// 16x8 mma sub-tiles, so a warp reads each weight once, fully coalesced, straight into registers, and
// dequantizes with two bit ops per pair of values. Scales: per group and tile, 8 lanes x 8 halves.
//
// Grid: x = 64-column tiles, y = k-splits, z = 16*MT-row blocks of M. A block's W warps each take KT
// consecutive k-tiles: all their weight loads are issued before the first use, the activations for the
// block's k-range come in through cp.async meanwhile. Warps reduce through shared memory; k-splits reduce
// through a workspace, summed in split order by the last block of each tile (deterministic).
#include "common.cuh"

namespace {

__device__ __forceinline__ uint4 load_weights(const uint4* p, u64 policy) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "l"(policy));
  return v;
}

__device__ __forceinline__ uint4 load_nc(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src));
}

__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ u32 lop3_and_or(u32 a, u32 mask, u32 bits) {
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(bits));  // (a & mask) | bits
  return r;
}

__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
  u32 r;
  asm("sub.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

__device__ __forceinline__ u32 hmul2(u32 a, u32 b) {
  u32 r;
  asm("mul.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
  u32 r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// One word holds two sub-tiles' fragments: nibbles (0,4) = b0 and (1,5) = b1 of sub-tile j0,
// (2,6) = b0 and (3,7) = b1 of sub-tile j1. OR-ing a nibble into the mantissa of 1024.0 gives 1024 + q
// (low nibble) or 1024 + 16q (high nibble); subtracting the bias and the symmetric zero 8 gives q - 8.
__device__ __forceinline__ void dequant_word(u32 q, u32 s0, u32 s1, u32 (&f0)[2], u32 (&f1)[2]) {
  const u32 LO = 0x000f000f, HI = 0x00f000f0, EXP = 0x64006400;
  const u32 SUB = 0x64086408;                       // 1024 + 8
  const u32 MUL = 0x2c002c00, ADD = 0xd480d480;     // 1/16, -(64 + 8)
  u32 lo0 = lop3_and_or(q, LO, EXP), hi0 = lop3_and_or(q, HI, EXP);
  q >>= 8;
  u32 lo1 = lop3_and_or(q, LO, EXP), hi1 = lop3_and_or(q, HI, EXP);
  f0[0] = hmul2(hsub2(lo0, SUB), s0);
  f0[1] = hmul2(hfma2(hi0, MUL, ADD), s0);
  f1[0] = hmul2(hsub2(lo1, SUB), s1);
  f1[1] = hmul2(hfma2(hi1, MUL, ADD), s1);
}

__device__ __forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

constexpr int RED_STRIDE = 72;  // floats per reduction row: 64 + 8 keeps float2 stores conflict-free

template <int MT, int W, int KT>
__device__ __forceinline__ void w4a16(const uint4* __restrict__ B, const uint4* __restrict__ S,
                                      const u16* __restrict__ A, u16* __restrict__ C,
                                      const u16* __restrict__ bias, float* __restrict__ ws,
                                      int* __restrict__ counters, int M, int N, int K, int groupTiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int is_last;
  constexpr int ROWS = MT * 16;
  constexpr int KB = W * KT;                // k-tiles per block
  constexpr int ASTRIDE = KB * 16 + 8;      // halves per activation row in shared memory (+16 B: no conflicts)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int ntile = blockIdx.x, split = blockIdx.y, mblock = blockIdx.z;
  const int ntiles = gridDim.x, splits = gridDim.y;
  const int ktiles = K >> 4;
  const int ktBlock = split * KB;
  const int kt0 = ktBlock + warp * KT;
  const int m0 = mblock * ROWS;

  // 1. this warp's weights and scales, all loads in flight at once; weights are read once, so L2 is
  //    asked to evict them first and keep the activations
  u64 policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  uint4 b[KT], s[KT];
  const uint4* bp = B + ((size_t)ntile * ktiles + kt0) * 32 + lane;
#pragma unroll
  for (int i = 0; i < KT; i++)
    if (kt0 + i < ktiles) b[i] = load_weights(bp + i * 32, policy);
#pragma unroll
  for (int i = 0; i < KT; i++)
    if (kt0 + i < ktiles) s[i] = load_nc(S + ((size_t)((kt0 + i) / groupTiles) * ntiles + ntile) * 8 + (lane >> 2));

  // 2. activations of the block's k-range (rows past M repeat the last row; their outputs are dropped)
  u16* As = reinterpret_cast<u16*>(smem);
  {
    const int kbase = ktBlock * 16;
    const int chunks = imin(KB * 16, K - kbase) >> 3;
    for (int idx = threadIdx.x; idx < ROWS * chunks; idx += W * 32) {
      const int r = idx / chunks, c = idx - r * chunks;
      const int gr = imin(m0 + r, M - 1);
      cp_async16(As + r * ASTRIDE + c * 8, A + (size_t)gr * K + kbase + c * 8);
    }
    asm volatile("cp.async.wait_all;\n" ::);
  }
  __syncthreads();

  // 3. dequantize each k-tile once, multiply it into every m-tile
  float acc[MT][8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.f;

#pragma unroll
  for (int i = 0; i < KT; i++) {
    if (kt0 + i < ktiles) {
      const u32 sw[4] = {s[i].x, s[i].y, s[i].z, s[i].w};
      const u32 qw[4] = {b[i].x, b[i].y, b[i].z, b[i].w};
      u32 frag[8][2];
#pragma unroll
      for (int w = 0; w < 4; w++)
        dequant_word(qw[w], __byte_perm(sw[w], sw[w], 0x1010), __byte_perm(sw[w], sw[w], 0x3232), frag[2 * w],
                     frag[2 * w + 1]);
      const int kl = (warp * KT + i) * 16;
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        u32 a[4];
        ldmatrix_x4(a, As + (mt * 16 + (lane & 15)) * ASTRIDE + kl + (lane >> 4) * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) mma(acc[mt][j], a, frag[j][0], frag[j][1]);
      }
    }
  }

  // 4. reduce the warps through shared memory (reusing the activation area)
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int row = mt * 16 + (lane >> 2), col = j * 8 + 2 * (lane & 3);
      float* p = red + (warp * ROWS + row) * RED_STRIDE + col;
      *reinterpret_cast<float2*>(p) = make_float2(acc[mt][j][0], acc[mt][j][1]);
      *reinterpret_cast<float2*>(p + 8 * RED_STRIDE) = make_float2(acc[mt][j][2], acc[mt][j][3]);
    }
  __syncthreads();
  const int rows = imin(ROWS, M - m0);
  const int Npad = ntiles * 64;
  for (int e = threadIdx.x; e < rows * 64; e += W * 32) {
    const int r = e >> 6, c = e & 63, n = ntile * 64 + c;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < W; w++) v += red[(w * ROWS + r) * RED_STRIDE + c];
    if (splits == 1) {
      if (n < N) C[(size_t)(m0 + r) * N + n] = f2h(bias ? v + h2f(bias[n]) : v);
    } else {
      ws[((size_t)split * M + m0 + r) * Npad + n] = v;
    }
  }
  if (splits == 1) return;

  // 5. k-splits: the last block to finish a tile sums the partials in split order
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(&counters[mblock * ntiles + ntile], 1) == splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int e = threadIdx.x; e < rows * 64; e += W * 32) {
    const int r = e >> 6, c = e & 63, n = ntile * 64 + c;
    float v = 0.f;
    for (int sp = 0; sp < splits; sp++) v += __ldcg(ws + ((size_t)sp * M + m0 + r) * Npad + n);
    if (n < N) C[(size_t)(m0 + r) * N + n] = f2h(bias ? v + h2f(bias[n]) : v);
  }
  if (threadIdx.x == 0) counters[mblock * ntiles + ntile] = 0;  // ready for the next launch (graph replays)
}

}  // namespace

#define W4A16_KERNEL(MT, W, KT)                                                                          \
  extern "C" __global__ void __launch_bounds__(W * 32) w4a16_m##MT##_w##W##_k##KT(                       \
      const uint4* B, const uint4* S, const u16* A, u16* C, const u16* bias, float* ws, int* counters, \
      int M, int N, int K, int groupTiles) {                                                             \
    w4a16<MT, W, KT>(B, S, A, C, bias, ws, counters, M, N, K, groupTiles);                               \
  }

// the configurations the launcher chooses from (layout.ts W4A16_CONFIGS lists the same)
W4A16_KERNEL(1, 8, 8)
W4A16_KERNEL(1, 4, 8)
W4A16_KERNEL(1, 8, 4)
W4A16_KERNEL(1, 4, 4)
W4A16_KERNEL(1, 4, 16)
W4A16_KERNEL(2, 8, 4)
W4A16_KERNEL(2, 4, 4)
W4A16_KERNEL(2, 4, 8)
W4A16_KERNEL(4, 4, 2)
W4A16_KERNEL(4, 8, 2)
W4A16_KERNEL(4, 4, 4)

// A_perm[m, k] = A[m, perm[k]]: activations in the order of the weight rows sorted by group (act-order).
extern "C" __global__ void permute_columns(const u16* A, const int* perm, u16* out, int M, int K) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y;
  if (k < K) out[(size_t)m * K + k] = A[(size_t)m * K + perm[k]];
}
