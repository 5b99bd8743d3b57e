// The floor of a weight-streaming kernel, for benchmarks: read a buffer once (16 bytes per load, four
// loads in flight per thread) and fold it, with the launch, start-up and tail any kernel has.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(512)
    stream_read(const uint4* __restrict__ p, unsigned long long words, u32* sink) {
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  u32 x = 0;
  for (; i + 3 * stride < words; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w)
                   : "l"(p + i + u * stride));
#pragma unroll
    for (int u = 0; u < 4; u++) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < words; i += stride) {
    const uint4 v = p[i];
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) sink[0] = x;  // keeps the loads; practically never taken
}

// nothing: the cost of a launch alone
extern "C" __global__ void empty_kernel() {}

// The floor of streaming weights the way mma.cu does, for `bench/floors.ts`: a block of W warps takes
// W adjacent tiles over one k-range; each warp walks its tile's chunks (4 KB each, contiguous) through
// its own ring of P slots of BYTES, one bulk copy per slot, touching one word a lane. REDUCE: the
// k-splits then meet as mma.cu's do through its workspace (1, 2: atomics, the last split reads back;
// 3: plain stores of one row per split, the last split sums them), to price the reduction alone.
#include "w4a16.cuh"

template <int W, int P, int BYTES, bool HINT, int REDUCE>
__device__ __forceinline__ void stream_tiles(const uint4* __restrict__ B, int ktiles, int ntiles, int chunksPerSplit,
                                             float* ws, int* counters, u32* sink) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int STEP = BYTES / 4096;  // chunks per copy
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tile = blockIdx.y * W + warp;
  const int c0 = blockIdx.z * chunksPerSplit;
  const int nchunks = imin(chunksPerSplit, (ktiles >> 3) - c0);
  const u32 ring = smem_addr(smem) + warp * P * BYTES;
  const u32 bars = smem_addr(smem) + W * P * BYTES + warp * P * 8;
  if (lane == 0)
    for (int s = 0; s < P; s++) mbar_init(bars + s * 8, 1);
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncwarp();
  if (tile >= ntiles) return;
  u64 policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  const uint4* src = B + ((size_t)tile * ktiles + c0 * 8) * 32;
  const int steps = (nchunks + STEP - 1) / STEP;
  auto issue = [&](int s) {
    if (lane == 0 && s < steps) {
      const u32 bar = bars + (s % P) * 8, bytes = imin(BYTES, (nchunks - s * STEP) * 4096);
      mbar_expect(bar, bytes);
      if (HINT)
        bulk_copy_once(ring + (s % P) * BYTES, src + (size_t)s * STEP * 256, bytes, bar, policy);
      else
        bulk_copy(ring + (s % P) * BYTES, src + (size_t)s * STEP * 256, bytes, bar);
    }
  };
#pragma unroll
  for (int s = 0; s < P; s++) issue(s);
  u32 x = 0;
  for (int s = 0; s < steps; s++) {
    mbar_wait(bars + (s % P) * 8, (s / P) & 1);
    u32 v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(ring + (s % P) * BYTES + lane * 4));
    x ^= v;
    __syncwarp();
    issue(s + P);
  }
  const float f = (float)(x & 1);
  // 1: every lane adds 16 floats; 2: a quarter of the lanes, as mma.cu's 8-row blocks at M = 1
  if ((REDUCE == 1 || REDUCE == 2) && gridDim.z > 1) {
    const bool holds = REDUCE == 1 || (lane & 3) == 0;
    float4* part = reinterpret_cast<float4*>(ws + ((size_t)tile * 32 + lane) * 32);
    if (holds)
#pragma unroll
      for (int j = 0; j < 4; j++) red_add4(part + j, f, f, f, f);
    if (!last_split(&counters[tile], gridDim.z, lane)) return;
    if (holds)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        x ^= __float_as_uint(__ldcg(part + j).x);
        __stcg(part + j, make_float4(0.f, 0.f, 0.f, 0.f));
      }
    if (lane == 0) counters[tile] = 0;
  }
  if (REDUCE == 3 && gridDim.z > 1) {  // row 0 only, stored (no atomics) per split; the last warp sums
    float* mine = ws + ((size_t)blockIdx.z * ntiles + tile) * 64;
    if ((lane & 3) == 0)
#pragma unroll
      for (int j = 0; j < 8; j++) __stcg(mine + (lane >> 2) + 8 * j, f);
    if (!last_split(&counters[tile], gridDim.z, lane)) return;
    float2 sum = make_float2(0.f, 0.f);
    const float2* col = reinterpret_cast<const float2*>(ws + (size_t)tile * 64) + lane;
#pragma unroll 8
    for (int z = 0; z < (int)gridDim.z; z++) {
      const float2 v = __ldcg(col + (size_t)z * ntiles * 32);
      sum.x += v.x;
      sum.y += v.y;
    }
    x ^= __float_as_uint(sum.x + sum.y);
    if (lane == 0) counters[tile] = 0;
  }
  if (x == 0x9e3779b9u) sink[0] = x;
}

#define STREAM_TILES(W, P, BYTES, HINT, REDUCE, NAME)                                              \
  extern "C" __global__ void __launch_bounds__(W * 32)                                             \
      NAME(const uint4* B, int ktiles, int ntiles, int cps, float* ws, int* counters, u32* sink) { \
    stream_tiles<W, P, BYTES, HINT, REDUCE>(B, ktiles, ntiles, cps, ws, counters, sink);           \
  }
STREAM_TILES(4, 2, 4096, true, 0, stream_tiles_w4_p2)
STREAM_TILES(4, 2, 4096, false, 0, stream_tiles_w4_p2_nohint)
STREAM_TILES(4, 3, 4096, true, 0, stream_tiles_w4_p3)
STREAM_TILES(4, 4, 4096, true, 0, stream_tiles_w4_p4)
STREAM_TILES(8, 2, 4096, true, 0, stream_tiles_w8_p2)
STREAM_TILES(4, 2, 8192, true, 0, stream_tiles_w4_p2_8k)
STREAM_TILES(4, 4, 8192, true, 0, stream_tiles_w4_p4_8k)
STREAM_TILES(4, 2, 4096, true, 1, stream_tiles_w4_p2_red32)
STREAM_TILES(4, 2, 4096, true, 2, stream_tiles_w4_p2_red8)
STREAM_TILES(4, 2, 4096, true, 3, stream_tiles_w4_p2_store)
