// Device helpers of the W4A16 kernels (mma.cu, wgmma.cu): fp16x2 arithmetic through PTX, the decode of
// one prepared weight word (layout.ts), and the split-k reduction through the workspace.
#pragma once
#include "async.cuh"

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
constexpr u32 BIAS_LO = 0x64086408;    // 1032 = 1024 + the symmetric zero 8, for the low-nibble rows
constexpr u32 BIAS_HI = 0x64806480;    // 1152 = 16 * (64 + 8): the high-nibble rows, whose activations are / 16
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
