// Device helpers of the W4A16 kernels (w4a16.cu, w4a16_wgmma.cu): shared-memory addresses, fp16x2
// arithmetic through PTX, the decode of one prepared weight word (layout.ts), bulk copies completing on
// mbarriers, and the split-k reduction.
#pragma once
#include "common.cuh"

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

// The same word with its offsets left in: 1024 + q for rows k..k+7 of the k-tile (f[0], low nibbles) and
// 1024 + 16q for rows k+8..k+15 (f[1], high nibbles), exact in fp16; 5 instructions instead of 9. The
// caller divides the activations of rows k+8..k+15 by 16 and subtracts, once per chunk, the offsets'
// product 1032 * sum(a[k..k+7]) + 72 * sum(a[k+8..k+15]) (from one more mma with constant operands).
__device__ __forceinline__ void biased_word(u32 q, u32 (&f0)[2], u32 (&f1)[2]) {
  const u32 LO = 0x000f000f, HI = 0x00f000f0, EXP = 0x64006400;
  f0[0] = lop3_and_or(q, LO, EXP);
  f0[1] = lop3_and_or(q, HI, EXP);
  q >>= 8;
  f1[0] = lop3_and_or(q, LO, EXP);
  f1[1] = lop3_and_or(q, HI, EXP);
}
constexpr u32 BIAS_LO = 0x64086408;   // 1032 = 1024 + the symmetric zero 8, for the low-nibble rows
constexpr u32 BIAS_HI = 0x64806480;   // 1152 = 16 * (64 + 8): the high-nibble rows, whose activations are / 16
constexpr u32 SIXTEENTH = 0x2c002c00;  // 1/16

// k-splits of one output tile add their fp32 partial sums into a zeroed workspace
__device__ __forceinline__ void red_add4(float4* p, float a, float b, float c, float d) {
  asm volatile("red.global.add.v4.f32 [%0], {%1,%2,%3,%4};" ::"l"(p), "f"(a), "f"(b), "f"(c), "f"(d) : "memory");
}

// After a warp's red_add4s: whether it is the tile's last split to finish (then it converts the sums).
// The counter's increment releases this warp's sums (the warp barrier orders every lane's before lane
// 0's) and acquires the other splits'; a full fence here cost about a tenth of the stall samples.
__device__ __forceinline__ bool last_split(int* counter, int splits, int lane) {
  __syncwarp();
  int last = 0;
  if (lane == 0) {
    int old;
    asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
    last = old == splits - 1;
  }
  return __shfl_sync(0xffffffffu, last, 0);
}

// Rings of shared memory filled by bulk copies (TMA) that complete on each slot's mbarrier.

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

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}

__device__ __forceinline__ void mbar_arrive(u32 bar) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }" ::"r"(bar) : "memory");
}

// arrives once and announces `bytes` that bulk copies will complete on the barrier
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1; }" ::"r"(bar), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

// weights are read once: first out of L2 (which then keeps the activations)
__device__ __forceinline__ void bulk_copy_once(u32 dst, const void* src, u32 bytes, u32 bar, u64 policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "l"(policy)
      : "memory");
}

// Thread block clusters (the k-splits of one tile, w4a16.cu): ranks, distributed shared memory, and
// mbarriers signalled across blocks.

__device__ __forceinline__ u32 cluster_rank() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

__device__ __forceinline__ u32 cluster_size() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return r;
}

// the address of the same shared-memory location in the cluster's block `rank`
__device__ __forceinline__ u32 cluster_map(u32 addr, u32 rank) {
  u32 r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }

// arrives on an mbarrier of another block (a shared::cluster address), releasing this thread's writes
__device__ __forceinline__ void mbar_arrive_cluster(u32 bar) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(bar) : "memory");
}

// waits for a phase whose arrivals came from other blocks of the cluster, acquiring their writes
__device__ __forceinline__ void mbar_wait_cluster(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

__device__ __forceinline__ float4 ld_cluster4(u32 addr) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(addr) : "memory");
  return v;
}

__device__ __forceinline__ void st_shared4(u32 addr, float a, float b, float c, float d) {
  asm volatile("st.shared.v4.f32 [%0], {%1,%2,%3,%4};" ::"r"(addr), "f"(a), "f"(b), "f"(c), "f"(d) : "memory");
}
