// W4A16 GEMM: C[M, N] = A[M, K] (fp16) x W[K, N] (4-bit symmetric, fp16 group scales), fp32 accumulation
// on tensor cores (mma.sync m16n8k16).
//
// Weight layout (prepared at load time, see layout.ts): for every 64-column tile and every 16-row k-tile,
// 512 bytes = one 16-byte word per lane holding exactly that lane's B fragments for the tile's eight
// 16x8 mma sub-tiles, so a warp reads each weight once, fully coalesced, and dequantizes with two bit
// ops per pair of values. Scales: per group and tile, 8 lanes x 8 halves.
//
// Grid: x = 64-column tiles, y = k-splits, z = blocks of 16*MT rows of M. Each warp of a block takes a
// contiguous k-range of the block's tile (see w4a16_stream). Warps reduce through shared memory;
// k-splits through a workspace, summed in split order by the last block of each tile (deterministic).
// Napkin math, Llama-2-7B layers at M = 1: 0.52 bytes per weight (codes + group-128 scales) against
// 2 for fp16, so 3.9x less traffic than cuBLAS's fp16 GEMV at equal bandwidth.
#include "common.cuh"

namespace {

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
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

// Keeps a value in a register: the compiler otherwise rebuilds shared addresses (S2R, cvta) every
// iteration of the streaming loop, which is issue-bound.
__device__ __forceinline__ u32 pin(u32 v) {
  asm volatile("mov.b32 %0, %0;" : "+r"(v));
  return v;
}

__device__ __forceinline__ void cp_async16_to(u32 dst, const void* src, bool on) {
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %2, 0; @p cp.async.cg.shared.global [%0], [%1], 16; }" ::"r"(dst),
               "l"(src), "r"((int)on));
}

// The streaming kernel: every warp streams its k-range of one 64-column tile through a private
// P-stage cp.async ring in shared memory, KS k-tiles a stage (per k-tile: weights 512 B, scales 128 B,
// activations 32 B per row for 16 MT rows), so the bytes in flight do not depend on registers and no
// block-wide barrier stalls the stream. Each k-tile is dequantized once and multiplied into every m-tile.
// Addresses advance incrementally and scales are unpacked to half2 once per group: the loop is close
// to issue-bound.
template <int W, int P, int KS, int MT>
__device__ __forceinline__ void w4a16_stream(const uint4* __restrict__ B, const uint4* __restrict__ S,
                                             const u16* __restrict__ A, u16* __restrict__ C,
                                             const u16* __restrict__ bias, float* __restrict__ ws,
                                             int* __restrict__ counters, int M, int N, int K, int groupTiles,
                                             int ktPerWarp) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int is_last;
  constexpr int TILE = 512 + 128 + MT * 512;  // bytes per k-tile: weights, scales, 16 MT rows x 16 halves
  constexpr int STAGE = KS * TILE;
  const int lane = pin(threadIdx.x & 31), warp = threadIdx.x >> 5;
  const int ntile = blockIdx.x, split = blockIdx.y, mblock = blockIdx.z;
  const int m0 = mblock * MT * 16;
  const int ntiles = gridDim.x, splits = gridDim.y;
  const int ktiles = K >> 4;
  const int kbeg = (split * W + warp) * ktPerWarp;
  const int n = imin(ktPerWarp, ktiles - kbeg);  // k-tiles of this warp; <= 0 for spare warps
  const int stages = n > 0 ? (n + KS - 1) / KS : 0;
  const u32 ring = pin(smem_addr(smem) + warp * P * STAGE);
  u64 policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));

  // what this lane copies per k-tile: its 16 B of weights; lanes 0-7 the tile's scales; lanes 2r, 2r+1
  // (r < M) row r's 16 activations
  const int kb = kbeg < ktiles ? kbeg : 0;
  const uint4* bsrc = B + ((size_t)ntile * ktiles + kb) * 32 + lane;
  int ig = kb / groupTiles, ileft = groupTiles - kb % groupTiles;
  const uint4* ssrc = S + ((size_t)ig * ntiles + ntile) * 8 + (lane & 7);
  const size_t sstep = (size_t)ntiles * 8;
  const int r = lane >> 1;
  const u16* asrc = A + (size_t)imin(m0 + r, M - 1) * K + kb * 16 + (lane & 1) * 8;
  const bool scaleLane = lane < 8;
  const int rowsLeft = M - m0 - r;  // rows 16 mt + r of this block exist while 16 mt < rowsLeft
  const u32 dstW = pin(ring + lane * 16), dstS = pin(ring + 512 + (lane & 7) * 16), dstA = pin(ring + 640 + lane * 16);

  auto issue = [&](int st) {
    const u32 off = (st % P) * STAGE;
#pragma unroll
    for (int i = 0; i < KS; i++) {
      const bool on = st * KS + i < n;
      asm volatile(
          "{ .reg .pred p; setp.ne.b32 p, %3, 0; @p cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2; }" ::
              "r"(dstW + off + i * TILE),
          "l"(bsrc), "l"(policy), "r"((int)on));
      // scales only where the compute loop reads them: a warp's first k-tile and each group's first
      cp_async16_to(dstS + off + i * TILE, ssrc, on && scaleLane && (st * KS + i == 0 || ileft == groupTiles));
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        cp_async16_to(dstA + off + i * TILE + mt * 512, asrc + (size_t)mt * 16 * K, on && 16 * mt < rowsLeft);
      if (on) {
        bsrc += 32;
        asrc += 16;
        if (--ileft == 0) {
          ileft = groupTiles;
          ssrc += sstep;
        }
      }
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };

  float acc[MT][8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.f;

  const u32 readW = dstW, readS = pin(ring + 512 + (lane >> 2) * 16);
  const u32 readA = pin(ring + 640 + (lane & 15) * 32 + (lane >> 4) * 16);
  u32 sc[8];      // this group's scales as half2 (s, s) per sub-tile
  int cleft = 0;  // k-tiles left in the group whose scales sc holds
  int cg = kb % groupTiles;  // position of the first k-tile in its group
#pragma unroll
  for (int t = 0; t < P - 1; t++) issue(t);
  for (int st = 0; st < stages; st++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(P - 2));
    __syncwarp();
    issue(st + P - 1);  // refills the slot read in the previous iteration
    const u32 off = (st % P) * STAGE;
#pragma unroll
    for (int i = 0; i < KS; i++) {
      if (st * KS + i < n) {
        if (cleft == 0) {
          u32 sw[4];
          asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
                       : "=r"(sw[0]), "=r"(sw[1]), "=r"(sw[2]), "=r"(sw[3])
                       : "r"(readS + off + i * TILE));
#pragma unroll
          for (int w = 0; w < 4; w++) {
            sc[2 * w] = __byte_perm(sw[w], sw[w], 0x1010);
            sc[2 * w + 1] = __byte_perm(sw[w], sw[w], 0x3232);
          }
          cleft = groupTiles - cg;
          cg = 0;
        }
        cleft--;
        u32 qw[4];
        asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(qw[0]), "=r"(qw[1]), "=r"(qw[2]), "=r"(qw[3])
                     : "r"(readW + off + i * TILE));
        u32 frag[8][2];
#pragma unroll
        for (int w = 0; w < 4; w++) dequant_word(qw[w], sc[2 * w], sc[2 * w + 1], frag[2 * w], frag[2 * w + 1]);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          u32 a[4];
          // each 16 x 16 activation tile is stored row-major, 32 B per row
          asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                       : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                       : "r"(readA + off + i * TILE + mt * 512));
#pragma unroll
          for (int j = 0; j < 8; j++) mma(acc[mt][j], a, frag[j][0], frag[j][1]);
        }
      }
    }
  }
  asm volatile("cp.async.wait_all;\n" ::);
  __syncthreads();

  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int row = mt * 16 + (lane >> 2), col = j * 8 + 2 * (lane & 3);
      float* p = red + (warp * MT * 16 + row) * RED_STRIDE + col;
      *reinterpret_cast<float2*>(p) = make_float2(acc[mt][j][0], acc[mt][j][1]);
      *reinterpret_cast<float2*>(p + 8 * RED_STRIDE) = make_float2(acc[mt][j][2], acc[mt][j][3]);
    }
  __syncthreads();
  const int rows = imin(16 * MT, M - m0);
  const int Npad = ntiles * 64;
  for (int e = threadIdx.x; e < rows * 64; e += W * 32) {
    const int r = e >> 6, c = e & 63, col = ntile * 64 + c;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < W; w++) v += red[(w * MT * 16 + r) * RED_STRIDE + c];
    if (splits == 1) {
      if (col < N) C[(size_t)(m0 + r) * N + col] = f2h(bias ? v + h2f(bias[col]) : v);
    } else {
      ws[((size_t)split * M + m0 + r) * Npad + col] = v;
    }
  }
  if (splits == 1) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(&counters[mblock * ntiles + ntile], 1) == splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int e = threadIdx.x; e < rows * 64; e += W * 32) {
    const int r = e >> 6, c = e & 63, col = ntile * 64 + c;
    float v = 0.f;
    for (int sp = 0; sp < splits; sp++) v += __ldcg(ws + ((size_t)sp * M + m0 + r) * Npad + col);
    if (col < N) C[(size_t)(m0 + r) * N + col] = f2h(bias ? v + h2f(bias[col]) : v);
  }
  if (threadIdx.x == 0) counters[mblock * ntiles + ntile] = 0;
}

}  // namespace

// the configurations the launcher chooses from (layout.ts W4A16_CONFIGS lists the same)
#define W4A16_STREAM_KERNEL(W, P, KS, MT)                                                                  \
  extern "C" __global__ void __launch_bounds__(W * 32) w4a16_stream_m##MT##_w##W##_p##P##_s##KS( \
      const uint4* B, const uint4* S, const u16* A, u16* C, const u16* bias, float* ws, int* counters, int M, \
      int N, int K, int groupTiles, int ktPerWarp) {                                                        \
    w4a16_stream<W, P, KS, MT>(B, S, A, C, bias, ws, counters, M, N, K, groupTiles, ktPerWarp);             \
  }

W4A16_STREAM_KERNEL(8, 4, 1, 1)
W4A16_STREAM_KERNEL(8, 4, 2, 1)
W4A16_STREAM_KERNEL(4, 4, 2, 1)
W4A16_STREAM_KERNEL(8, 3, 4, 1)
W4A16_STREAM_KERNEL(8, 4, 2, 2)
W4A16_STREAM_KERNEL(4, 4, 2, 2)
W4A16_STREAM_KERNEL(4, 4, 2, 4)
W4A16_STREAM_KERNEL(4, 3, 1, 4)

// A_perm[m, k] = A[m, perm[k]]: activations in the order of the weight rows sorted by group (act-order).
extern "C" __global__ void permute_columns(const u16* A, const int* perm, u16* out, int M, int K) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y;
  if (k < K) out[(size_t)m * K + k] = A[(size_t)m * K + perm[k]];
}
