// W4A16 GEMM: C[M, N] = A[M, K] (fp16) x W[K, N] (4-bit symmetric, fp16 group scales), fp32 accumulation
// on tensor cores (mma.sync m16n8k16). Hopper (sm_90) and later: bulk copies (TMA), mbarriers.
//
// Weight layout (prepared at load time, see layout.ts): for every 64-column tile and every 16-row k-tile,
// 512 bytes = one 16-byte word per lane. Word w of a lane holds the fragments of columns 16w + g and
// 16w + g + 8 (g = lane / 4) at rows 2c, 2c+1, 2c+8, 2c+9 (c = lane % 4): the B fragments of two 16x8
// mma sub-tiles, or equally the A fragment of a 16x16 tile whose rows are those 16 columns. A warp reads
// each weight once, coalesced, and dequantizes with two bit ops per pair of values. K is padded to a
// multiple of 128 (code 8 = weight 0). Scales: per group and tile, 64 halves, 32 contiguous bytes for
// each pair of lanes' columns (see layout.ts).
//
// Work: a block of W warps takes W adjacent 64-column tiles over one k-range (a "split"), so the
// activations it stages in shared memory serve all its warps; or, in KS k-slices, W / KS tiles whose
// KS warps each walk alternate chunks of the range (narrow layers, where the tiles alone cannot fill
// the GPU without many splits). It walks the k-range in chunks of 128 rows: the block's activations go
// through a shared ring that warp 0 fills with bulk copies while every warp waits only for the data and
// says when it is done with a slot; each warp's weights and scales come through its own ring of P
// chunks, bulk copies that lane 0 issues. No block-wide barrier in the loop; the k-slices of a tile add
// their partials in shared memory after it, behind one named barrier. The splits of one tile add their
// fp32 partial sums in distributed shared memory when they form one cluster (up to 4 splits of 8 rows,
// 2 of 16), else in a workspace (so their order, and the last bit, may vary).
//
// Decode (one m-tile, one group per chunk): the codes go into the fp16 mantissa with their offsets left
// in (1024 + q, 1024 + 16q: 5 instructions per 8 weights); the activations of the high-nibble rows are
// divided by 16, and one more mma with constant operands gives the offsets' share, subtracted from the
// fp32 partials once per chunk, when the scales multiply them. Up to 8 rows, the weights are the mma's A
// operand and the activations its B (8 rows), so one mma covers 16 columns (256 weights). Larger M, or
// groups of 32/64, dequantize exactly (9 instructions) and scale the fragments (registers).
// Napkin math, Llama-2-7B layers at M = 1: 0.52 bytes per weight (codes + group-128 scales) against
// 2 for fp16, so 3.9x less traffic than cuBLAS's fp16 GEMV at equal bandwidth.
#include "w4a16.cuh"

namespace {

constexpr int CHUNK = 8;    // k-tiles (16 rows each) per pipeline step: 128 rows of K
constexpr int A_ROW = 272;  // bytes per staged activation row: 256 + 16, so ldmatrix rows hit distinct banks

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

__device__ __forceinline__ void lds128(u32 (&r)[4], u32 addr) {
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// ---- A chunk's products: the two compute paths ----
// Each takes one 128-row chunk of one tile from the shared slots (activations at `slot`, this warp's
// weights at `wslot` and scales at `sslot`) into the fp32 accumulators. ACC (one m-tile, one group per
// chunk): the codes decode with their offsets left in, into fresh partials that the scales multiply once
// per chunk; else each fragment is decoded exactly and scaled before its mma.

// Scales of this lane for the fragment side, (s, s) per sub-tile and group: columns 8j + gq.
template <int SG>
__device__ __forceinline__ void fragment_scales(u32 (&sc)[SG][8], u32 sslot, u32 sSel) {
#pragma unroll
  for (int sg = 0; sg < SG; sg++) {
    u32 w[8];
    lds128(*reinterpret_cast<u32(*)[4]>(&w[0]), sslot + sg * 128);
    lds128(*reinterpret_cast<u32(*)[4]>(&w[4]), sslot + sg * 128 + 16);
#pragma unroll
    for (int j = 0; j < 8; j++) sc[sg][j] = __byte_perm(w[j], 0, sSel);
  }
}

template <bool ACC>
__device__ __forceinline__ void decode_codes(const u32 (&qw)[4], u32 (&fr)[8][2]) {
#pragma unroll
  for (int w = 0; w < 4; w++) {
    if (ACC)
      biased_word(qw[w], fr[2 * w], fr[2 * w + 1]);
    else
      dequant_word(qw[w], fr[2 * w], fr[2 * w + 1]);
  }
}

// 8-row blocks: the weights are the mma's A operand (16 columns x 16 k) and the activations its B
// (16 k x 8 rows), so one mma covers 16 columns: half the products of the other orientation, whose
// m16 would be half empty. The words need no other layout: a word's fragments b0/b1 of sub-tiles
// 2w, 2w+1 are exactly the A fragment of columns 16w..16w+15. Accumulators acc[w]: columns 16w + gq
// (e = 0, 1) and 16w + gq + 8 (e = 2, 3), rows 2cq, 2cq + 1.
// Software-pipelined: tile i + 1 is dequantized while tile i's products issue; its codes load a tile
// earlier, and tile i + 1's activations during tile i: the shared loads and the mma are volatile asm,
// which the compiler keeps in program order (2-4 % at batch 1-8).
template <int SG>
__device__ __forceinline__ void chunk_weights_as_a(float (&acc)[8][4], u32 slot, u32 wslot, u32 sslot, u32 aRead,
                                                   u32 sSel) {
  constexpr bool ACC = SG == 1;
  float part[8][4];
  u32 sc[SG][8];
  if (!ACC) fragment_scales<SG>(sc, sslot, sSel);
  u32 f[2][8][2], codes[2][4];
  auto ldb = [&](int i, u32& b0, u32& b1) {  // rows 0-7 at k 0-7 and k 8-15 of k-tile i
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(b0), "=r"(b1)
                 : "r"(slot + i * 32 + aRead));
  };
  // ACC: the offsets' products, 1032 * sum of a over rows k..k+7 + 72 * over k+8..k+15, per row of M
  float corr[4];
  u32 bn0 = 0, bn1 = 0;
  ldb(0, bn0, bn1);
  lds128(codes[0], wslot);
  lds128(codes[1], wslot + 512);
  decode_codes<ACC>(codes[0], f[0]);
#pragma unroll
  for (int i = 0; i < CHUNK; i++) {
    u32 b0 = bn0, b1 = bn1;
    if (i + 1 < CHUNK) ldb(i + 1, bn0, bn1);
    if (i + 2 < CHUNK) lds128(codes[i & 1], wslot + (i + 2) * 512);
    if (ACC) {
      b1 = hmul2(b1, SIXTEENTH);
      const u32 bias[4] = {BIAS_LO, BIAS_LO, BIAS_HI, BIAS_HI};
      if (i == 0)
        mma0(corr, bias, b0, b1);
      else
        mma(corr, bias, b0, b1);
    }
    if (i + 1 < CHUNK) decode_codes<ACC>(codes[(i + 1) & 1], f[(i + 1) & 1]);
    const u32(&fr)[8][2] = f[i & 1];
#pragma unroll
    for (int w = 0; w < 4; w++) {
      u32 wa[4] = {fr[2 * w][0], fr[2 * w + 1][0], fr[2 * w][1], fr[2 * w + 1][1]};
      if (ACC) {
        if (i == 0)
          mma0(part[w], wa, b0, b1);
        else
          mma(part[w], wa, b0, b1);
      } else {
        const u32 s0 = sc[i / (CHUNK / SG)][2 * w], s1 = sc[i / (CHUNK / SG)][2 * w + 1];
        wa[0] = hmul2(wa[0], s0);
        wa[1] = hmul2(wa[1], s1);
        wa[2] = hmul2(wa[2], s0);
        wa[3] = hmul2(wa[3], s1);
        mma(acc[w], wa, b0, b1);
      }
    }
  }
  if (ACC) {
    u32 w[8];
    lds128(*reinterpret_cast<u32(*)[4]>(&w[0]), sslot);
    lds128(*reinterpret_cast<u32(*)[4]>(&w[4]), sslot + 16);
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const float s0 = h2f((u16)(__byte_perm(w[2 * q], 0, sSel) & 0xffff));
      const float s1 = h2f((u16)(__byte_perm(w[2 * q + 1], 0, sSel) & 0xffff));
      // corr: A's rows are all equal, so its outputs 0, 1 (rows 2cq, 2cq + 1) serve both columns
      acc[q][0] += (part[q][0] - corr[0]) * s0;
      acc[q][1] += (part[q][1] - corr[1]) * s0;
      acc[q][2] += (part[q][2] - corr[0]) * s1;
      acc[q][3] += (part[q][3] - corr[1]) * s1;
    }
  }
}

// 16 rows and more: the activations are the mma's A operand (MT m-tiles of 16 rows) and the weights its
// B, 8 columns a product. Accumulators acc[mt][j]: rows 16 mt + gq (e = 0, 1) and + 8 (e = 2, 3),
// columns 8j + 2cq (+ 1). Tile i + 1 is dequantized while tile i's products issue (loading its codes
// earlier as well was 1-3 % slower here: the products hide the loads).
template <int MT, int SG>
__device__ __forceinline__ void chunk_weights_as_b(float (&acc)[MT][8][4], u32 slot, u32 wslot, u32 sslot, u32 aRead,
                                                   u32 sSel) {
  constexpr bool ACC = MT == 1 && SG == 1;
  float part[8][4];
  u32 sc[SG][8];
  if (!ACC) fragment_scales<SG>(sc, sslot, sSel);
  u32 f[2][8][2], codes[2][4];
  float corr[4];
  lds128(codes[0], wslot);
  decode_codes<ACC>(codes[0], f[0]);
#pragma unroll
  for (int i = 0; i < CHUNK; i++) {
    u32 a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                   : "=r"(a[mt][0]), "=r"(a[mt][1]), "=r"(a[mt][2]), "=r"(a[mt][3])
                   : "r"(slot + mt * 16 * A_ROW + i * 32 + aRead));
    if (ACC) {
      a[0][2] = hmul2(a[0][2], SIXTEENTH);
      a[0][3] = hmul2(a[0][3], SIXTEENTH);
      if (i == 0)
        mma0(corr, a[0], BIAS_LO, BIAS_HI);
      else
        mma(corr, a[0], BIAS_LO, BIAS_HI);
    }
    if (i + 1 < CHUNK) {
      lds128(codes[(i + 1) & 1], wslot + (i + 1) * 512);
      decode_codes<ACC>(codes[(i + 1) & 1], f[(i + 1) & 1]);
    }
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
    // scales on the accumulator side: columns 8j + 2cq + e
    u32 w[8];
    lds128(*reinterpret_cast<u32(*)[4]>(&w[0]), sslot);
    lds128(*reinterpret_cast<u32(*)[4]>(&w[4]), sslot + 16);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const float s0 = h2f((u16)(w[j] & 0xffff)), s1 = h2f((u16)(w[j] >> 16));
      // corr: B's columns are all equal, so its outputs 0 (row gq) and 2 (row gq + 8) serve every column
      acc[0][j][0] += (part[j][0] - corr[0]) * s0;
      acc[0][j][1] += (part[j][1] - corr[0]) * s1;
      acc[0][j][2] += (part[j][2] - corr[2]) * s0;
      acc[0][j][3] += (part[j][3] - corr[2]) * s1;
    }
  }
}

// ---- Storing a tile's outputs (fp16, plus the bias) ----

// weights as A: rows m0 + 2cq (+ 1), columns 16w + gq (+ 8)
__device__ __forceinline__ void store_weights_as_a(const float (&v)[8][4], u16* __restrict__ C,
                                                   const u16* __restrict__ bias, int M, int N, int m0, int col0, int gq,
                                                   int cq) {
#pragma unroll
  for (int w = 0; w < 4; w++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int row = m0 + 2 * cq + (e & 1), col = col0 + 16 * w + gq + (e >> 1) * 8;
      if (row < M && col < N) C[(size_t)row * N + col] = f2h(v[w][e] + (bias ? h2f(bias[col]) : 0.f));
    }
}

// weights as B: rows m0 + 16 mt + gq (+ 8), columns 8j + 2cq (+ 1), two at a time where N allows
template <int MT>
__device__ __forceinline__ void store_weights_as_b(const float (&v)[MT][8][4], u16* __restrict__ C,
                                                   const u16* __restrict__ bias, int M, int N, int m0, int col0, int gq,
                                                   int cq) {
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
      const int row = m0 + 16 * mt + 8 * hr + gq;
      if (row >= M) continue;
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const int col = col0 + 8 * j + 2 * cq;
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
}

// ---- The kernel: rings, main loop, k-slice and split-k reductions around either compute path ----

// W warps in KS k-slices of W / KS tiles, MT 16-row m-tiles per block (R8: one m-tile of 8 rows, the
// weights-as-A path), SG scale groups per chunk (1: one group covers the chunk; 2 or 4: groups of 64 or
// 32 rows), P chunks in each warp's weight ring, AR slots in the activation ring (0: 4 up to 32 rows,
// else 3).
template <int W, int KS, int MT, bool R8, int SG, int P, int AR>
__device__ __forceinline__ void w4a16(const uint4* __restrict__ B, const u16* __restrict__ S, const u16* __restrict__ A,
                                      u16* __restrict__ C, const u16* __restrict__ bias, float* __restrict__ ws,
                                      int* __restrict__ counters, int M, int N, int K, int ktiles, int groupTiles,
                                      int chunksPerSplit) {
  static_assert(!R8 || MT == 1, "8-row blocks have one m-tile");
  static_assert(KS == 1 || MT == 1, "k-slices add their partials in the weight slots: one m-tile");
  constexpr bool ACC = MT == 1 && SG == 1;  // scales on the fp32 partials of each chunk
  constexpr int ROWS = R8 ? 8 : 16 * MT;
  constexpr int TW = W / KS;  // tiles per block
  // one warp per tile and a full block's rows staged: the producer and the loop skip the k-slice
  // arithmetic, which cost 2-5 % at batch 1 on layers of long K (its divisions sit on warp 0's path)
  constexpr bool SIMPLE = KS == 1 && AR == 0;
  // activation/scale ring: slots, and how many chunks behind the producer refills (its only wait)
  constexpr int RING = AR ? AR : ROWS <= 32 ? 4 : 3;
  constexpr int LAG = ROWS <= 16 ? 2 : 1;
  extern __shared__ __align__(128) unsigned char smem[];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tw = SIMPLE ? warp : warp % TW, ks = SIMPLE ? 0 : warp / TW;  // tile in the block, k-slice
  const int gq = lane >> 2, cq = lane & 3;                                // mma fragment row group and column pair
  const int ntiles = (N + 63) >> 6;
  const int tile = blockIdx.y * TW + tw;
  const int tilesHere = imin(TW, ntiles - blockIdx.y * TW);
  const bool active = tw < tilesHere;  // warps past the last tile leave after setting up
  const int m0 = blockIdx.x * ROWS, split = blockIdx.z, splits = gridDim.z;
  const int c0 = split * chunksPerSplit;
  const int nchunks = imin(chunksPerSplit, (ktiles >> 3) - c0);
  // the block walks its chunks in steps of KS, one chunk per k-slice: slice ks takes chunks ks, ks + KS, ...
  const int nsteps = (nchunks + KS - 1) / KS;
  const int rows = imin(ROWS, M - m0);
  // activation rows staged per chunk and k-slice: k-sliced blocks and deeper rings stage only M's rows
  // when M has fewer (the launcher sizes their shared memory by M). ldmatrix still reads ROWS rows: those
  // past M come from whatever follows, always inside the block's shared memory, and only feed outputs
  // never stored. (Their addresses stay distinct: rows repeated in one ldmatrix conflict on the same banks.)
  const int srows = KS > 1 || AR ? imin(ROWS, M) : ROWS;
  const int SLOT = KS * srows * A_ROW;
  constexpr int S_SLOT = SG * 128;  // a tile's scales for one chunk
  const u32 base = smem_addr(smem);
  const u32 wring = base + RING * SLOT + warp * P * 4096;  // this warp's weight slots, 4 KB each
  // and its scale slots: they travel with its weights, so the shared ring carries only activations
  // (L2-resident after the first block), and no warp waits there on a DRAM fetch of scales
  const u32 sring = base + RING * SLOT + W * P * 4096 + warp * P * S_SLOT;
  const u32 full = base + RING * SLOT + W * P * (4096 + S_SLOT);  // RING barriers: a slot's data landed
  const u32 empty = full + RING * 8;                              // RING barriers: every warp is done with it
  const u32 wbars = empty + RING * 8 + warp * P * 8;              // this warp's weight slots landed
  // split-k in a cluster: per warp, its tile's partials gathered (leader) and read (the others)
  const u32 gathered = empty + RING * 8 + W * P * 8 + warp * 16, released = gathered + 8;
  // (up to 16 rows: their partials fit the warp's weight slots; the launcher forms clusters only then)
  const u32 csize = MT == 1 && splits > 1 ? cluster_size() : 1;
  u64 policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));

  if (K & 127) {
    // the last chunk reads past K: those activations must be finite (their weights are 0)
    for (int e = threadIdx.x; e < RING * SLOT / 16; e += W * 32)
      asm volatile("st.shared.v4.u32 [%0], {%1,%1,%1,%1};" ::"r"(base + e * 16), "r"(0));
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < RING; s++) {
      mbar_init(full + s * 8, 1);
      mbar_init(empty + s * 8, tilesHere * KS);
    }
  }
  if (lane == 0) {
    for (int s = 0; s < P; s++) mbar_init(wbars + s * 8, 1);
    if (csize > 1) {
      mbar_init(gathered, 32 * (csize - 1));
      mbar_init(released, 32);
    }
  }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();
  if (csize > 1) cluster_arrive();  // this block's barriers are ready for the others
  if (!active) return;

  // warp 0 fills the shared ring: per step and k-slice, each staged row's 256 bytes of activations
  // (row-major, rows A_ROW apart)
  auto produce = [&](int t) {
    if (t >= nsteps) return;
    const u32 slot = base + (t % RING) * SLOT, bar = full + (t % RING) * 8;
    if constexpr (SIMPLE) {  // one chunk a step
      const int kc = (c0 + t) * 128;
      const u32 rowBytes = imin(256, (K - kc) * 2);
      if (lane == 0) mbar_expect(bar, rows * rowBytes);
      __syncwarp();
      for (int e = lane; e < rows; e += 32) bulk_copy(slot + e * A_ROW, A + (size_t)(m0 + e) * K + kc, rowBytes, bar);
      return;
    }
    const int here = imin(KS, nchunks - t * KS);  // chunks in this step
    if (lane == 0) {
      u32 bytes = 0;
      for (int k = 0; k < here; k++) bytes += rows * imin(256, (K - (c0 + t * KS + k) * 128) * 2);
      mbar_expect(bar, bytes);
    }
    __syncwarp();
    for (int e = lane; e < here * rows; e += 32) {
      const int k = e / rows, r = e % rows, kc = (c0 + t * KS + k) * 128;
      bulk_copy(slot + (k * srows + r) * A_ROW, A + (size_t)(m0 + r) * K + kc, imin(256, (K - kc) * 2), bar);
    }
  };

  // a tile's chunk of weights is 4 KB contiguous and its scales 128 bytes per group: lane 0 copies
  // both (after announcing their bytes); step t of this warp is chunk t * KS + ks of the split
  const uint4* wsrc = B + ((size_t)tile * ktiles + c0 * CHUNK) * 32;
  const u16* ssrc = S + (size_t)tile * 64;
  auto issue = [&](int t) {
    const int c = t * KS + ks;
    if (lane == 0 && c < nchunks) {
      const u32 bar = wbars + (t % P) * 8;
      mbar_expect(bar, 4096 + S_SLOT);
      bulk_copy_once(wring + (t % P) * 4096, wsrc + (size_t)c * CHUNK * 32, 4096, bar, policy);
#pragma unroll
      for (int sg = 0; sg < SG; sg++) {
        const int gi = ((c0 + c) * CHUNK + sg * (CHUNK / SG)) / groupTiles;
        bulk_copy_once(sring + (t % P) * S_SLOT + sg * 128, ssrc + (size_t)gi * ntiles * 64, 128, bar, policy);
      }
    }
  };
#pragma unroll
  for (int s = 0; s < P; s++) issue(s);
  // launched with programmatic dependent launch, the weights (constant) stream in while the previous
  // kernel finishes; activations, workspace and outputs are touched only once it has
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (warp == 0)
    for (int s = 0; s < RING; s++) produce(s);

  float acc[MT][8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.f;

  // scales of this lane: ACC with weights as B, columns 8j + 2cq + e (accumulator side); else 8j + gq
  // (fragment side)
  constexpr bool T = R8;  // weights as the mma's A operand
  const u32 sRead = (ACC && !T ? cq : gq >> 1) * 32;
  const u32 sSel = (gq & 1) ? 0x3232 : 0x1010;
  // ldmatrix.x4 lanes: 0-7 rows 0-7 and 8-15 rows 8-15 at k 0-7, 16-31 the same at k 8-15. 8-row
  // blocks re-read rows 0-7 as the unused rows 8-15, so the mma's register quad fills directly
  const u32 aRead =
      ks * srows * A_ROW + (T ? (lane & 7) * A_ROW + ((lane >> 3) & 1) * 16 : (lane & 15) * A_ROW + (lane >> 4) * 16);

  auto compute = [&](int t) {
    const u32 slot = base + (t % RING) * SLOT;
    const u32 wslot = wring + (t % P) * 4096 + lane * 16;
    const u32 sslot = sring + (t % P) * S_SLOT + sRead;
    if constexpr (T)
      chunk_weights_as_a<SG>(acc[0], slot, wslot, sslot, aRead, sSel);
    else
      chunk_weights_as_b<MT, SG>(acc, slot, wslot, sslot, aRead, sSel);
  };

  for (int t = 0; t < nsteps; t++) {
    if (warp == 0 && t >= LAG && t - LAG + RING < nsteps) {
      mbar_wait(empty + ((t - LAG) % RING) * 8, ((t - LAG) / RING) & 1);
      produce(t - LAG + RING);
    }
    if (SIMPLE || t * KS + ks < nchunks) {  // the last step may have no chunk for this slice
      mbar_wait(full + (t % RING) * 8, (t / RING) & 1);
      mbar_wait(wbars + (t % P) * 8, (t / P) & 1);
      compute(t);
    }
    __syncwarp();  // every lane has read both slots before they are refilled
    if (lane == 0) mbar_arrive(empty + (t % RING) * 8);
    issue(t + P);
  }

  auto store = [&](float (&v)[MT][8][4]) {
    if constexpr (T)
      store_weights_as_a(v[0], C, bias, M, N, m0, tile * 64, gq, cq);
    else
      store_weights_as_b<MT>(v, C, bias, M, N, m0, tile * 64, gq, cq);
  };
  constexpr int Q = T ? 4 : 8;  // float4 of partials per lane (up to 16 rows)
  if (KS > 1) {
    // the k-slices of a tile add up in shared memory: each leaves its partials in its weight slots
    // (every copy into them has landed), and slice 0 takes them
    const u32 mine = wring + lane * 16;
    if (ks > 0)
#pragma unroll
      for (int q = 0; q < Q; q++) {
        float (&v)[4] = acc[0][q];
        st_shared4(mine + q * 512, v[0], v[1], v[2], v[3]);
      }
    asm volatile("bar.sync 1, %0;" ::"r"(tilesHere * KS * 32) : "memory");
    if (ks > 0) return;
#pragma unroll
    for (int k = 1; k < KS; k++)
#pragma unroll
      for (int q = 0; q < Q; q++) {
        float4 o;
        asm volatile("ld.shared.v4.f32 {%0,%1,%2,%3}, [%4];"
                     : "=f"(o.x), "=f"(o.y), "=f"(o.z), "=f"(o.w)
                     : "r"(mine + k * TW * P * 4096 + q * 512));
        float (&v)[4] = acc[0][q];
        v[0] += o.x;
        v[1] += o.y;
        v[2] += o.z;
        v[3] += o.w;
      }
  }
  if (splits == 1) {
    store(acc);
    return;
  }
  if (csize > 1) {
    // the splits of this tile are one cluster: each leaves its partials in this warp's weight slots
    // (float4 q of lane l at 16 (32 q + l)); the first block adds the others' through distributed
    // shared memory and stores, then lets them go
    constexpr int REMOTE = T ? 3 : 1;  // blocks besides the leader: clusters of up to 4 (8 rows) or 2
    const u32 mine = wring + lane * 16;
#pragma unroll
    for (int q = 0; q < Q; q++) {
      float (&v)[4] = acc[q >> 3][q & 7];
      st_shared4(mine + q * 512, v[0], v[1], v[2], v[3]);
    }
    cluster_wait();  // every block of the cluster has its barriers set up
    if (cluster_rank() != 0) {
      mbar_arrive_cluster(cluster_map(gathered, 0));
      mbar_wait(released, 0);
      return;
    }
    mbar_wait_cluster(gathered, 0);
    // every remote load in flight at once, then the sums, then the others may leave
    float4 o[REMOTE][Q];
#pragma unroll
    for (int r = 0; r < REMOTE; r++)
      if (r + 1 < (int)csize)
#pragma unroll
        for (int q = 0; q < Q; q++) o[r][q] = ld_cluster4(cluster_map(mine + q * 512, r + 1));
#pragma unroll
    for (int r = 0; r < REMOTE; r++)
      if (r + 1 < (int)csize) {
#pragma unroll
        for (int q = 0; q < Q; q++) {
          float (&v)[4] = acc[q >> 3][q & 7];
          v[0] += o[r][q].x;
          v[1] += o[r][q].y;
          v[2] += o[r][q].z;
          v[3] += o[r][q].w;
        }
        mbar_arrive_cluster(cluster_map(released, r + 1));
      }
    store(acc);
    return;
  }

  // k-splits add their partial sums into a zeroed fp32 workspace, per (m-block, tile) 32 lanes x MT x 32
  // floats, lane-major; the warp that finishes last converts them and zeroes the slot again.
  constexpr int PER = MT * 32;
  const int idx = blockIdx.x * ntiles + tile;
  float4* part = reinterpret_cast<float4*>(ws + ((size_t)idx * 32 + lane) * PER);
  // lanes whose first row exists (8-row blocks: rows 2cq, 2cq + 1; else gq, gq + 8 of each m-tile)
  const int laneRow = T ? 2 * cq : gq;
  constexpr int JN = T ? 4 : 8;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
    if (m0 + 16 * mt + laneRow < M)
#pragma unroll
      for (int j = 0; j < JN; j++)
        red_add4(part + mt * 8 + j, acc[mt][j][0], acc[mt][j][1], acc[mt][j][2], acc[mt][j][3]);
  if (!last_split(&counters[idx], splits, lane)) return;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
    if (m0 + 16 * mt + laneRow < M)
#pragma unroll
      for (int j = 0; j < JN; j++) {
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

// One kernel per shape and scale layout: configs.ts generates a W4A16_MMA line for each row of
// W4A16_CONFIGS (kind "mma") and appends them to this source. W warps, KS k-slices, MT m-tiles, 8-row
// block, SG scale groups per chunk, P weight slots, AR activation slots (0: default), the symbol.
#define W4A16_MMA(W, KS, MT, R8, SG, P, AR, NAME)                                                                 \
  extern "C" __global__ void __launch_bounds__(W * 32)                                                            \
      NAME(const uint4* B, const u16* S, const u16* A, u16* C, const u16* bias, float* ws, int* counters, int M,  \
           int N, int K, int ktiles, int groupTiles, int chunksPerSplit) {                                        \
    w4a16<W, KS, MT, R8, SG, P, AR>(B, S, A, C, bias, ws, counters, M, N, K, ktiles, groupTiles, chunksPerSplit); \
  }

// A_perm[m, k] = A[m, perm[k]]: activations in the order of the weight rows sorted by group (act-order).
extern "C" __global__ void permute_columns(const u16* A, const int* perm, u16* out, int M, int K) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y;
  if (k < K) out[(size_t)m * K + k] = A[(size_t)m * K + perm[k]];
}
