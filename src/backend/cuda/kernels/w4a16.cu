// W4A16 GEMM: C[M, N] = A[M, K] (fp16) x W[K, N] (4-bit symmetric, fp16 group scales), fp32 accumulation
// on tensor cores (mma.sync m16n8k16).
//
// Weight layout (prepared at load time, see layout.ts): for every 64-column tile and every 16-row k-tile,
// 512 bytes = one 16-byte word per lane holding exactly that lane's B fragments for the tile's eight
// 16x8 mma sub-tiles, so a warp reads each weight once, fully coalesced, and dequantizes with two bit
// ops per pair of values. K is padded to a multiple of 128 (code 8 = weight 0). Scales: per group and
// tile, 64 halves in the order of the accumulator columns each lane owns (lane & 3 picks 16 of them).
//
// Work: a block of W warps takes W adjacent 64-column tiles over one k-range (a "split"), so the
// activations it stages in shared memory serve all its warps. It walks the k-range in chunks of 128
// rows: activations and scales go through a 3-slot cp.async ring (one barrier per chunk); each warp's
// weights come through its own ring of P chunks, one bulk copy (TMA) per chunk. Splits of one tile add
// their fp32 partial sums into a workspace (so their order, and the last bit, may vary between runs).
//
// Decode (one m-tile, one group per chunk): the dequantized codes carry no scale; the mma sums a chunk
// into fp32 partials and the scales multiply those once per chunk. That is 9 instructions per 8 weights
// plus one mma per 128, against 13 when every fragment is scaled. Larger M, or groups of 32/64, scale
// the fragments instead (registers).
// Napkin math, Llama-2-7B layers at M = 1: 0.52 bytes per weight (codes + group-128 scales) against
// 2 for fp16, so 3.9x less traffic than cuBLAS's fp16 GEMV at equal bandwidth.
#include "common.cuh"

namespace {

constexpr int CHUNK = 8;  // k-tiles (16 rows each) per pipeline step: 128 rows of K
constexpr int RING = 3;   // slots of the activation/scale ring

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
// (low nibble) or 1024 + 16q (high nibble); subtracting the bias and the symmetric zero 8 gives q - 8,
// exact in fp16.
__device__ __forceinline__ void dequant_word(u32 q, u32 (&f0)[2], u32 (&f1)[2]) {
  const u32 LO = 0x000f000f, HI = 0x00f000f0, EXP = 0x64006400;
  const u32 SUB = 0x64086408;                    // 1024 + 8
  const u32 MUL = 0x2c002c00, ADD = 0xd480d480;  // 1/16, -(64 + 8)
  u32 lo0 = lop3_and_or(q, LO, EXP), hi0 = lop3_and_or(q, HI, EXP);
  q >>= 8;
  u32 lo1 = lop3_and_or(q, LO, EXP), hi1 = lop3_and_or(q, HI, EXP);
  f0[0] = hsub2(lo0, SUB);
  f0[1] = hfma2(hi0, MUL, ADD);
  f1[0] = hsub2(lo1, SUB);
  f1[1] = hfma2(hi1, MUL, ADD);
}

__device__ __forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c = a x b, starting from zero (a chunk's first product into fresh partials)
__device__ __forceinline__ void mma0(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  const float z = 0.f;
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(z));
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src));
}

// zero-fills the 16 bytes when `on` is false (rows of K past its end)
__device__ __forceinline__ void cp_async16_zfill(u32 dst, const void* src, bool on) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(on ? 16 : 0));
}

__device__ __forceinline__ void lds128(u32 (&r)[4], u32 addr) {
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// The weight ring: one bulk copy (TMA) per warp and chunk, completing on that slot's mbarrier.
__device__ __forceinline__ void mbar_init(u32 bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar));
}

__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// weights are read once: first out of L2 (which then keeps the activations)
__device__ __forceinline__ void bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar, u64 policy) {
  u64 state;
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;" : "=l"(state) : "r"(bar), "r"(bytes) : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "l"(policy)
      : "memory");
}

// W warps, MT 16-row m-tiles per block (R8: one m-tile of 8 rows), SG scale groups per chunk
// (1: one group covers the chunk; 2 or 4: groups of 64 or 32 rows), P chunks in each warp's weight ring.
template <int W, int MT, bool R8, int SG, int P>
__device__ __forceinline__ void w4a16(const uint4* __restrict__ B, const u16* __restrict__ S,
                                      const u16* __restrict__ A, u16* __restrict__ C,
                                      const u16* __restrict__ bias, float* __restrict__ ws,
                                      int* __restrict__ counters, int M, int N, int K, int ktiles,
                                      int groupTiles, int chunksPerSplit) {
  static_assert(!R8 || MT == 1, "8-row blocks have one m-tile");
  constexpr bool ACC = MT == 1 && SG == 1;  // scales on the fp32 partials of each chunk
  constexpr int ROWS = R8 ? 8 : 16 * MT;
  constexpr int A_TILE = R8 ? 256 : 512;  // bytes of activations per k-tile and m-tile
  constexpr int A_SLOT = MT * CHUNK * A_TILE;
  constexpr int SLOT = A_SLOT + W * SG * 128;
  extern __shared__ __align__(16) unsigned char smem[];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gq = lane >> 2, cq = lane & 3;  // mma fragment row group and column pair
  const int ntiles = (N + 63) >> 6;
  const int tile = blockIdx.y * W + warp;
  const bool active = tile < ntiles;  // warps past the last tile only help stage
  const int m0 = blockIdx.x * ROWS, split = blockIdx.z, splits = gridDim.z;
  const int c0 = split * chunksPerSplit;
  const int nchunks = imin(chunksPerSplit, (ktiles >> 3) - c0);
  const int rows = imin(ROWS, M - m0);
  const u32 base = smem_addr(smem);
  const u32 wring = base + RING * SLOT + warp * P * 4096;  // this warp's weight slots, 4 KB each
  const u32 bars = base + RING * SLOT + W * P * 4096 + warp * P * 8;
  u64 policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));

  // activations as ldmatrix reads them: per k-tile, 16-byte rows of the 8x8 matrices in lane order
  auto stage = [&](int c) {
    if (c < nchunks) {
      const u32 dst = base + (c % RING) * SLOT;
      const int kc = (c0 + c) * 128;
      for (int e = threadIdx.x; e < rows * 16; e += W * 32) {
        const int r = e >> 4, kk = (e & 15) * 8, i = kk >> 4, h = (kk >> 3) & 1;
        const u32 d = R8 ? dst + (i * 16 + h * 8 + r) * 16
                         : dst + (((r >> 4) * CHUNK + i) * 32 + h * 16 + (r & 15)) * 16;
        const int k = kc + kk;
        cp_async16_zfill(d, A + (size_t)(m0 + r) * K + (k < K ? k : 0), k < K);
      }
      for (int e = threadIdx.x; e < W * SG * 8; e += W * 32) {
        const int w = e / (8 * SG), sg = (e >> 3) % SG, t = blockIdx.y * W + w;
        const int gi = ((c0 + c) * CHUNK + sg * (CHUNK / SG)) / groupTiles;
        if (t < ntiles) cp_async16(dst + A_SLOT + e * 16, S + ((size_t)gi * ntiles + t) * 64 + (e & 7) * 8);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };

  // a tile's chunk of weights is 4 KB contiguous: one bulk copy, issued by lane 0
  const uint4* wsrc = B + ((size_t)(active ? tile : 0) * ktiles + c0 * CHUNK) * 32;
  auto issue = [&](int c) {
    if (active && lane == 0 && c < nchunks)
      bulk_copy(wring + (c % P) * 4096, wsrc + (size_t)c * CHUNK * 32, 4096, bars + (c % P) * 8, policy);
  };
  if (lane == 0) {
#pragma unroll
    for (int s = 0; s < P; s++) mbar_init(bars + s * 8);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncwarp();
#pragma unroll
  for (int s = 0; s < P; s++) issue(s);

  float acc[MT][8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.f;

  // scales of this lane: ACC, columns 8j + 2cq + e (accumulator side); else 8j + gq (fragment side)
  const u32 sRead = A_SLOT + warp * SG * 128 + (ACC ? cq : gq >> 1) * 32;
  const u32 sSel = (gq & 1) ? 0x3232 : 0x1010;
  // 8-row blocks: lanes 8-15 and 24-31 re-read rows 0-7 as the unused rows 8-15, so ldmatrix.x4 fills
  // the mma's register quad directly (rows 8-15 of the product are never stored)
  const u32 aRead = R8 ? ((lane >> 4) * 8 + (lane & 7)) * 16 : lane * 16;

  auto compute = [&](int c) {
    const u32 slot = base + (c % RING) * SLOT;
    const u32 wslot = wring + (c % P) * 4096 + lane * 16;
    float part[8][4];
    u32 sc[SG][8];  // fragment side: (s, s) per sub-tile and group
    if (!ACC) {
#pragma unroll
      for (int sg = 0; sg < SG; sg++) {
        u32 w[8];
        lds128(*reinterpret_cast<u32(*)[4]>(&w[0]), slot + sRead + sg * 128);
        lds128(*reinterpret_cast<u32(*)[4]>(&w[4]), slot + sRead + sg * 128 + 16);
#pragma unroll
        for (int j = 0; j < 8; j++) sc[sg][j] = __byte_perm(w[j], 0, sSel);
      }
    }
    // software-pipelined: tile i + 1 is dequantized while tile i's products issue
    u32 f[2][8][2];
    auto dequant = [&](int i, u32 (&fr)[8][2]) {
      u32 qw[4];
      lds128(qw, wslot + i * 512);
#pragma unroll
      for (int w = 0; w < 4; w++) dequant_word(qw[w], fr[2 * w], fr[2 * w + 1]);
    };
    dequant(0, f[0]);
#pragma unroll
    for (int i = 0; i < CHUNK; i++) {
      u32 a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(a[mt][0]), "=r"(a[mt][1]), "=r"(a[mt][2]), "=r"(a[mt][3])
                     : "r"(slot + (mt * CHUNK + i) * A_TILE + aRead));
      if (i + 1 < CHUNK) dequant(i + 1, f[(i + 1) & 1]);
      const u32(&fr)[8][2] = f[i & 1];
#pragma unroll
      for (int j = 0; j < 8; j++) {
        if (ACC) {
          if (i == 0)
            mma0(part[j], a[0], fr[j][0], fr[j][1]);
          else
            mma(part[j], a[0], fr[j][0], fr[j][1]);
        } else {
          const u32 s = sc[i / (CHUNK / SG)][j];
          const u32 b0 = hmul2(fr[j][0], s), b1 = hmul2(fr[j][1], s);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) mma(acc[mt][j], a[mt], b0, b1);
        }
      }
    }
    if (ACC) {
      u32 w[8];
      lds128(*reinterpret_cast<u32(*)[4]>(&w[0]), slot + sRead);
      lds128(*reinterpret_cast<u32(*)[4]>(&w[4]), slot + sRead + 16);
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const float s0 = h2f((u16)(w[j] & 0xffff)), s1 = h2f((u16)(w[j] >> 16));
        acc[0][j][0] += part[j][0] * s0;
        acc[0][j][1] += part[j][1] * s1;
        if (!R8) {
          acc[0][j][2] += part[j][2] * s0;
          acc[0][j][3] += part[j][3] * s1;
        }
      }
    }
  };

#pragma unroll
  for (int s = 0; s < RING - 1; s++) stage(s);
  for (int c = 0; c < nchunks; c++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(RING - 2));
    __syncthreads();  // chunk c's activations landed for all; every warp is done with chunk c - 1's slot
    stage(c + RING - 1);
    if (active) {
      mbar_wait(bars + (c % P) * 8, (c / P) & 1);
      compute(c);
      __syncwarp();  // every lane has read the slot before it is refilled
      issue(c + P);
    }
  }
  if (!active) return;

  // this lane's outputs: rows m0 + 16 mt + gq (+ 8), columns 64 tile + 8 j + 2 cq (+ 1)
  auto store = [&](float (&v)[MT][8][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int hr = 0; hr < (R8 ? 1 : 2); hr++) {
        const int row = m0 + 16 * mt + 8 * hr + gq;
        if (row >= M) continue;
#pragma unroll
        for (int j = 0; j < 8; j++) {
          const int col = tile * 64 + 8 * j + 2 * cq;
          float x = v[mt][j][2 * hr], y = v[mt][j][2 * hr + 1];
          if (bias) {
            if (col < N) x += h2f(bias[col]);
            if (col + 1 < N) y += h2f(bias[col + 1]);
          }
          u16* out = C + (size_t)row * N + col;
          if (col + 1 < N && (N & 1) == 0) {
            *reinterpret_cast<u32*>(out) = (u32)f2h(x) | ((u32)f2h(y) << 16);
          } else {
            if (col < N) out[0] = f2h(x);
            if (col + 1 < N) out[1] = f2h(y);
          }
        }
      }
  };
  if (splits == 1) {
    store(acc);
    return;
  }

  // k-splits add their partial sums into a zeroed fp32 workspace, per (m-block, tile) 32 lanes x MT x 32
  // floats, lane-major; the warp that finishes last converts them and zeroes the slot again.
  constexpr int PER = MT * 32;
  const int idx = blockIdx.x * ntiles + tile;
  float4* part = reinterpret_cast<float4*>(ws + ((size_t)idx * 32 + lane) * PER);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
    if (m0 + 16 * mt + gq < M)
#pragma unroll
      for (int j = 0; j < 8; j++)
        asm volatile("red.global.add.v4.f32 [%0], {%1,%2,%3,%4};" ::"l"(part + mt * 8 + j), "f"(acc[mt][j][0]),
                     "f"(acc[mt][j][1]), "f"(acc[mt][j][2]), "f"(acc[mt][j][3])
                     : "memory");
  __threadfence();
  __syncwarp();
  int last = 0;
  if (lane == 0) last = atomicAdd(&counters[idx], 1) == splits - 1;
  last = __shfl_sync(0xffffffffu, last, 0);
  if (!last) return;
  __threadfence();
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
    if (m0 + 16 * mt + gq < M)
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const float4 v = __ldcg(part + mt * 8 + j);
        acc[mt][j][0] = v.x;
        acc[mt][j][1] = v.y;
        acc[mt][j][2] = v.z;
        acc[mt][j][3] = v.w;
        __stcg(part + mt * 8 + j, make_float4(0.f, 0.f, 0.f, 0.f));
      }
  store(acc);
  if (lane == 0) counters[idx] = 0;  // ready for the next launch
}

}  // namespace

// The configurations the launcher chooses from (layout.ts W4A16_CONFIGS lists the same shapes); each
// comes in the three scale layouts: g (one group per chunk), g64, g32.
#define W4A16_VARIANT(W, MT, R8, SG, P, NAME)                                                              \
  extern "C" __global__ void __launch_bounds__(W * 32) NAME(                                              \
      const uint4* B, const u16* S, const u16* A, u16* C, const u16* bias, float* ws, int* counters, int M, \
      int N, int K, int ktiles, int groupTiles, int chunksPerSplit) {                                      \
    w4a16<W, MT, R8, SG, P>(B, S, A, C, bias, ws, counters, M, N, K, ktiles, groupTiles, chunksPerSplit);  \
  }
#define W4A16_KERNEL(W, MT, R8, P, ROWS)                                   \
  W4A16_VARIANT(W, MT, R8, 1, P, w4a16_r##ROWS##_w##W##_p##P##_g)         \
  W4A16_VARIANT(W, MT, R8, 2, P, w4a16_r##ROWS##_w##W##_p##P##_g64)       \
  W4A16_VARIANT(W, MT, R8, 4, P, w4a16_r##ROWS##_w##W##_p##P##_g32)

W4A16_KERNEL(4, 1, true, 3, 8)
W4A16_KERNEL(4, 1, true, 4, 8)
W4A16_KERNEL(4, 1, true, 6, 8)
W4A16_KERNEL(8, 1, true, 2, 8)
W4A16_KERNEL(4, 1, false, 3, 16)
W4A16_KERNEL(4, 1, false, 4, 16)
W4A16_KERNEL(8, 1, false, 2, 16)
W4A16_KERNEL(4, 2, false, 3, 32)
W4A16_KERNEL(4, 4, false, 3, 64)

// A_perm[m, k] = A[m, perm[k]]: activations in the order of the weight rows sorted by group (act-order).
extern "C" __global__ void permute_columns(const u16* A, const int* perm, u16* out, int M, int K) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y;
  if (k < K) out[(size_t)m * K + k] = A[(size_t)m * K + perm[k]];
}
