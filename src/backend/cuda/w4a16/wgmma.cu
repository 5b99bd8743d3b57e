// W4A16 GEMM for larger batches on Hopper warpgroup MMA (wgmma, sm_90a): C[M, N] = A[M, K] x W[K, N],
// the same prepared weights as mma.cu (layout.ts), fp32 accumulation.
//
// Orientation: the weights are wgmma's A operand, from registers, and the activations its B, from shared
// memory. A warpgroup (4 warps) takes one 64-column tile: warp w dequantizes word w of each lane, which
// is exactly the A fragment of tile columns 16w..16w+15 (the mma.m16n8k16 A layout that wgmma uses per
// warp), scales it by its two columns' group scales, and one m64nRk16 product covers 64 columns x R
// activation rows x 16 k. Each weight is decoded once per R rows (not once per 16 or 32, as in mma.cu),
// and the tensor cores read the activations straight from shared memory.
//
// Block: WG consumer warpgroups on WG adjacent tiles over one k-range (a split) and R rows, and one
// producer warp. Per 128-row chunk of K a stage holds the activations (two TMA tensor copies of 64 k x R
// rows, 128-byte swizzled: wgmma's K-major layout, zero-filled past M and K), every tile's 4 KB of
// weights and its scales (bulk copies); all complete on the stage's mbarrier. The consumers release a
// stage on a second mbarrier once the products that read it are done; nothing else synchronizes the
// block. Splits add fp32 partial sums into a workspace, as in mma.cu.
#include "w4a16.cuh"

namespace {

// A CUtensorMap, passed by value (opaque, 64-byte aligned, 128 bytes)
struct __align__(64) TensorMap {
  u64 opaque[16];
};

// box {64 k, rows} of the activations at (k, row), into 128-byte-swizzled shared memory
__device__ __forceinline__ void tma_load_2d(u32 dst, const TensorMap* map, int k, int row, u32 bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          dst),
      "l"(map), "r"(k), "r"(row), "r"(bar)
      : "memory");
}

__device__ __forceinline__ u32 lds32(u32 addr) {
  u32 r;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(addr));
  return r;
}

__device__ __forceinline__ u32 lds16x2(u32 addr) {  // one half, in both halves of the word
  u16 h;
  asm volatile("ld.shared.u16 %0, [%1];" : "=h"(h) : "r"(addr));
  return (u32)h * 0x10001u;
}

// Shared-memory matrix descriptor, K-major with 128-byte swizzle: rows 128 bytes apart, 8-row groups
// 1024 bytes apart (SBO); the k16 step within a 64-k atom moves the start address by 32 bytes.
__device__ __forceinline__ u64 smem_desc_sw128(u32 addr) {
  return (u64)((addr & 0x3ffff) >> 4) | (1ull << 16) | ((u64)(1024 >> 4) << 32) | (1ull << 62);
}

// The same descriptor `bytes` further on: the start address is the low 14 bits (address / 16, and
// shared addresses stay below 256 KB), so an offset adds to the low word alone, without a carry.
__device__ __forceinline__ u64 desc_plus(u64 desc, u32 bytes) {
  return (desc & 0xffffffff00000000ull) | (u32)((u32)desc + (bytes >> 4));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// d[64 x R] += a (registers: this warp's 16 rows x 16 k) x B (16 k x R, shared memory through `desc`).
// d[4j + e]: row 16 warp + lane/4 + 8 (e >> 1), column 8j + 2 (lane % 4) + (e & 1).
template <int R>
__device__ __forceinline__ void wgmma(float (&d)[R / 2], const u32 (&a)[4], u64 desc);

template <>
__device__ __forceinline__ void wgmma<16>(float (&d)[8], const u32 (&a)[4], u64 desc) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, 1, 1, 1, 0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

template <>
__device__ __forceinline__ void wgmma<32>(float (&d)[16], const u32 (&a)[4], u64 desc) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
      "{%16,%17,%18,%19}, %20, 1, 1, 1, 0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

template <>
__device__ __forceinline__ void wgmma<64>(float (&d)[32], const u32 (&a)[4], u64 desc) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%"
      "30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, 0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

template <>
__device__ __forceinline__ void wgmma<128>(float (&d)[64], const u32 (&a)[4], u64 desc) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%"
      "30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%"
      "58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, 1, 1, 1, 0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

template <int N>
__device__ __forceinline__ void keep(float (&d)[N]) {  // the accumulators stay put across the async MMA
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// WG consumer warpgroups (tiles) per block, R rows (wgmma's N), SG scale groups per chunk, P stages.
template <int WG, int R, int SG, int P>
__device__ __forceinline__ void w4a16_wg(const TensorMap* amap, const uint4* __restrict__ B, const u16* __restrict__ S,
                                         u16* __restrict__ C, const u16* __restrict__ bias, float* __restrict__ ws,
                                         int* __restrict__ counters, int M, int N, int ktiles, int groupTiles,
                                         int chunksPerSplit) {
  // per stage: activations (two 64-k boxes of R rows x 128 bytes), weights, scales; 1024-aligned
  constexpr int W_OFF = R * 256, S_OFF = W_OFF + WG * 4096;
  constexpr int SLOT = (S_OFF + WG * SG * 128 + 1023) / 1024 * 1024;
  extern __shared__ __align__(1024) unsigned char smem[];

  const int tid = threadIdx.x, lane = tid & 31, warp = (tid >> 5) & 3, wg = tid >> 7;
  const int gq = lane >> 2, cq = lane & 3;
  const int ntiles = (N + 63) >> 6;
  const int tile0 = blockIdx.y * WG, tilesHere = imin(WG, ntiles - tile0);
  const int tile = tile0 + wg;
  const int m0 = blockIdx.x * R, split = blockIdx.z, splits = gridDim.z;
  const int c0 = split * chunksPerSplit;
  const int nchunks = imin(chunksPerSplit, (ktiles >> 3) - c0);
  // the swizzle pattern repeats every 1024 bytes of shared address: align the stages to it
  const u32 base = (smem_addr(smem) + 1023) & ~1023u;
  const u32 full = base + P * SLOT;  // P barriers: a stage's bytes landed
  const u32 empty = full + P * 8;    // P barriers: every consumer thread is done with the stage
  if (tid == 0) {
    for (int s = 0; s < P; s++) {
      mbar_init(full + s * 8, 1);
      mbar_init(empty + s * 8, tilesHere * 128);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");

  if (wg == WG) {
    // the producer: one lane issues every copy; a stage is refilled once its consumers release it
    if (lane != 0) return;
    u64 policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    const u32 bytes = R * 256 + tilesHere * (4096 + SG * 128);
    for (int c = 0; c < nchunks; c++) {
      const int s = c % P;
      if (c >= P) mbar_wait(empty + s * 8, (c / P - 1) & 1);
      const u32 slot = base + s * SLOT, bar = full + s * 8;
      const int kc = (c0 + c) * 128;
      mbar_expect(bar, bytes);
      tma_load_2d(slot, amap, kc, m0, bar);
      tma_load_2d(slot + R * 128, amap, kc + 64, m0, bar);
      for (int w = 0; w < tilesHere; w++) {
        bulk_copy_once(slot + W_OFF + w * 4096, B + ((size_t)(tile0 + w) * ktiles + (c0 + c) * 8) * 32, 4096, bar,
                       policy);
        for (int sg = 0; sg < SG; sg++) {
          const int gi = ((c0 + c) * 8 + sg * (8 / SG)) / groupTiles;
          bulk_copy(slot + S_OFF + (w * SG + sg) * 128, S + ((size_t)gi * ntiles + tile0 + w) * 64, 128, bar);
        }
      }
    }
    return;
  }
  if (wg >= tilesHere) return;  // past the last tile

  float acc[R / 2];
#pragma unroll
  for (int i = 0; i < R / 2; i++) acc[i] = 0.f;

  // this lane's words: word `warp` of lane `lane` in each 512-byte k-tile; its columns' scales sit at
  // S[t][c][j][e] for columns n0 = 16 warp + gq and n0 + 8 (layout.ts)
  const u32 wRead = W_OFF + wg * 4096 + lane * 16 + warp * 4;
  const int n0 = 16 * warp + gq;
  const u32 sRead = S_OFF + wg * SG * 128 + (((n0 & 7) >> 1) * 16 + (n0 >> 3) * 2 + (n0 & 1)) * 2;

  // A chunk's products go out as two groups of four k-tiles, each from its own registers: a half is
  // decoded while the other half's products run, and registers are rewritten only once the group that
  // read them is done (wgmma reads them asynchronously). Once the second half may start, every product
  // of the chunk before is done: that stage is released.
  u32 fr[2][4][4];
  for (int c = 0; c < nchunks; c++) {
    const u32 slot = base + (c % P) * SLOT;
    const u64 desc = smem_desc_sw128(slot);  // the stage's first box; the products' offsets add to it
    mbar_wait(full + (c % P) * 8, (c / P) & 1);
    u32 s0[SG], s1[SG], q[8];
#pragma unroll
    for (int sg = 0; sg < SG; sg++) {
      s0[sg] = lds16x2(slot + sRead + sg * 128);
      s1[sg] = lds16x2(slot + sRead + sg * 128 + 4);
    }
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = lds32(slot + wRead + i * 512);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      wgmma_wait<1>();  // the group that last read fr[h] is done
      // every consumer thread arrives (a branch on the lane here would serialize the wgmma pipeline)
      if (h == 1 && c > 0) mbar_arrive(empty + ((c - 1) % P) * 8);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        u32 f0[2], f1[2];
        dequant_word(q[4 * h + i], f0, f1);
        const int sg = (4 * h + i) / (8 / SG);
        fr[h][i][0] = hmul2(f0[0], s0[sg]);
        fr[h][i][1] = hmul2(f1[0], s1[sg]);
        fr[h][i][2] = hmul2(f0[1], s0[sg]);
        fr[h][i][3] = hmul2(f1[1], s1[sg]);
      }
      wgmma_fence();
      // k-tiles 4h..4h+3: the h-th 64-k box, 32 bytes further per k16 step
#pragma unroll
      for (int i = 0; i < 4; i++) {
        // (32-row blocks measured 1-2 % slower with the descriptor built once, and keep their own)
        const u32 off = h * (R * 128) + i * 32;
        wgmma<R>(acc, fr[h][i], R == 32 ? smem_desc_sw128(slot + off) : desc_plus(desc, off));
      }
      wgmma_commit();
    }
  }
  wgmma_wait<0>();
  keep(acc);

  // this lane's outputs: rows m0 + 8j + 2cq (+1), columns 64 tile + n0 (+8)
  const int col0 = tile * 64 + n0;
  auto store = [&]() {
    const float b0 = bias && col0 < N ? h2f(bias[col0]) : 0.f;
    const float b1 = bias && col0 + 8 < N ? h2f(bias[col0 + 8]) : 0.f;
#pragma unroll
    for (int j = 0; j < R / 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int row = m0 + 8 * j + 2 * cq + (e & 1), col = col0 + 8 * (e >> 1);
        if (row < M && col < N) C[(size_t)row * N + col] = f2h(acc[4 * j + e] + (e >> 1 ? b1 : b0));
      }
  };
  if (splits == 1) {
    store();
    return;
  }

  // k-splits: per (m-block, tile, warp) R / 8 float4 per lane, lane-minor; the last warp converts
  const int idx = (blockIdx.x * ntiles + tile) * 4 + warp;
  float4* part = reinterpret_cast<float4*>(ws) + (size_t)idx * (R / 8) * 32 + lane;
#pragma unroll
  for (int j = 0; j < R / 8; j++)
    if (m0 + 8 * j < M) red_add4(part + j * 32, acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
  if (!last_split(&counters[idx], splits, lane)) return;
#pragma unroll
  for (int j = 0; j < R / 8; j++)
    if (m0 + 8 * j < M) {
      const float4 v = __ldcg(part + j * 32);
      acc[4 * j] = v.x;
      acc[4 * j + 1] = v.y;
      acc[4 * j + 2] = v.z;
      acc[4 * j + 3] = v.w;
      __stcg(part + j * 32, make_float4(0.f, 0.f, 0.f, 0.f));
    }
  store();
  if (lane == 0) counters[idx] = 0;  // ready for the next launch
}

}  // namespace

// One kernel per shape and scale layout: configs.ts generates a W4A16_WGMMA line for each row of
// W4A16_CONFIGS (kind "wgmma") and appends them to this source. WG consumer warpgroups + 1 producer
// warp, R rows, SG scale groups per chunk, P stages, the symbol.
#define W4A16_WGMMA(WG, R, SG, P, NAME)                                                                              \
  extern "C" __global__ void __launch_bounds__(WG * 128 + 32)                                                        \
      NAME(const __grid_constant__ TensorMap amap, const uint4* B, const u16* S, u16* C, const u16* bias, float* ws, \
           int* counters, int M, int N, int ktiles, int groupTiles, int chunksPerSplit) {                            \
    w4a16_wg<WG, R, SG, P>(&amap, B, S, C, bias, ws, counters, M, N, ktiles, groupTiles, chunksPerSplit);            \
  }
