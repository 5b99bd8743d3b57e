/**
 * Matrix kernels in WebAssembly SIMD, assembled here at load time (a few hundred bytes, no toolchain):
 * out[r, n] = sum_k x[r, k] * w[n, k] over operands already copied into the module's memory, rows a
 * multiple of 4, columns a multiple of 2 and K a multiple of one vector (zero-padded by the caller).
 * A 4 x 2 tile keeps 8 vector accumulators.
 * - `gemm`: fp32; each dot product is 4 interleaved fp32 partial sums, added pairwise at the end.
 * - `dot16`: int16 x int16 -> exact int32 (i32x4.dot_i16x8_s), for int8 x int4 products.
 * - `gemm64`: fp64, 2 partial sums per dot product.
 * - `gemmSub` subtracts the fp32 products from `out` in place instead of storing them; `gemmSubInto64` and
 *   `gemmAddInto64` subtract them from or add them to an fp64 `out`.
 */

// opcodes (WebAssembly core + SIMD proposal, as shipped in V8)
const I32 = 0x7f;
const V128 = 0x7b;
const BLOCK = 0x02;
const LOOP = 0x03;
const BR = 0x0c;
const BR_IF = 0x0d;
const END = 0x0b;
const LOCAL_GET = 0x20;
const LOCAL_SET = 0x21;
const I32_CONST = 0x41;
const I32_GE_U = 0x4f;
const I32_ADD = 0x6a;
const I32_MUL = 0x6c;
const F32_ADD = 0x92;
const F32_STORE = 0x38;
const SIMD = 0xfd;
const V128_LOAD = 0x00;
const V128_CONST = 0x0c;
const F32X4_EXTRACT_LANE = 0x1f;
const F32X4_ADD = 0xe4;
const F32X4_MUL = 0xe6;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const I32_STORE = 0x36;
const I32X4_EXTRACT_LANE = 0x1b;
const I32X4_ADD = 0xae;
const I32X4_DOT_I16X8_S = 0xba;
const F64_ADD = 0xa0;
const F64_STORE = 0x39;
const F32_LOAD = 0x2a;
const F64_LOAD = 0x2b;
const F32_SUB = 0x93;
const F64_SUB = 0xa1;
const F64_PROMOTE_F32 = 0xbb;
const F64X2_EXTRACT_LANE = 0x21;
const F64X2_ADD = 0xf0;
const F64X2_MUL = 0xf2;

/** what differs between the fp32 and the int16 kernel */
interface Arith {
  /** acc, x, w on the stack -> acc + x * w */
  fma: number[];
  extractLane: number;
  addScalar: number;
  store: number;
  /** with `into`: out = out - sum or out + sum (`op`), the sum widened first where `promote`; else out = sum */
  into?: { load: number; op: number; promote?: number };
  /** accumulator lanes per vector and bytes per output value */
  lanes: 2 | 4;
  outBytes: 4 | 8;
}
const F32: Arith = {
  fma: [SIMD, ...uleb(F32X4_MUL), SIMD, ...uleb(F32X4_ADD)],
  extractLane: F32X4_EXTRACT_LANE,
  addScalar: F32_ADD,
  store: F32_STORE,
  lanes: 4,
  outBytes: 4,
};
const I16: Arith = {
  fma: [SIMD, ...uleb(I32X4_DOT_I16X8_S), SIMD, ...uleb(I32X4_ADD)],
  extractLane: I32X4_EXTRACT_LANE,
  addScalar: I32_ADD,
  store: I32_STORE,
  lanes: 4,
  outBytes: 4,
};
/** fp32 products, each widened to fp64 for an fp64 output */
const F32_INTO_F64: Arith = {
  fma: F32.fma,
  extractLane: F32X4_EXTRACT_LANE,
  addScalar: F32_ADD,
  store: F64_STORE,
  lanes: 4,
  outBytes: 8,
};
const F64: Arith = {
  fma: [SIMD, ...uleb(F64X2_MUL), SIMD, ...uleb(F64X2_ADD)],
  extractLane: F64X2_EXTRACT_LANE,
  addScalar: F64_ADD,
  store: F64_STORE,
  lanes: 2,
  outBytes: 8,
};

const str = (s: string) => [...uleb(s.length), ...Buffer.from(s, "utf8")];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];

// parameters (all i32, byte addresses and byte strides)
const P = { x: 0, xStride: 1, rows: 2, w: 3, wStride: 4, cols: 5, kBytes: 6, out: 7, outStride: 8 };
// locals after the parameters
const L = { r: 9, n: 10, k: 11, x0: 12, x1: 13, x2: 14, x3: 15, w0: 16, w1: 17, o: 18 };
const ACC = 19; // 8 v128 accumulators: ACC + 2 * row + col
const VW0 = 27;
const VW1 = 28;
const VX = 29;

function kernelBody(a: Arith): number[] {
  const c: number[] = [];
  const get = (i: number) => c.push(LOCAL_GET, ...uleb(i));
  const set = (i: number) => c.push(LOCAL_SET, ...uleb(i));
  const i32 = (v: number) => c.push(I32_CONST, ...sleb(v));
  const simd = (op: number) => c.push(SIMD, ...uleb(op));
  const add = (a: number, b: number, dst: number) => {
    get(a);
    get(b);
    c.push(I32_ADD);
    set(dst);
  };
  /** dst = base + i * stride */
  const offset = (base: number, i: number, stride: number, dst: number) => {
    get(base);
    get(i);
    get(stride);
    c.push(I32_MUL, I32_ADD);
    set(dst);
  };
  const loopWhileBelow = (i: number, limit: number, body: () => void) => {
    c.push(BLOCK, 0x40, LOOP, 0x40);
    get(i);
    get(limit);
    c.push(I32_GE_U, BR_IF, 1);
    body();
    c.push(BR, 0, END, END);
  };

  i32(0);
  set(L.r);
  loopWhileBelow(L.r, P.rows, () => {
    offset(P.x, L.r, P.xStride, L.x0);
    add(L.x0, P.xStride, L.x1);
    add(L.x1, P.xStride, L.x2);
    add(L.x2, P.xStride, L.x3);
    i32(0);
    set(L.n);
    loopWhileBelow(L.n, P.cols, () => {
      offset(P.w, L.n, P.wStride, L.w0);
      add(L.w0, P.wStride, L.w1);
      for (let i = 0; i < 8; i++) {
        simd(V128_CONST);
        c.push(...new Array<number>(16).fill(0));
        set(ACC + i);
      }
      i32(0);
      set(L.k);
      loopWhileBelow(L.k, P.kBytes, () => {
        for (const [src, dst] of [
          [L.w0, VW0],
          [L.w1, VW1],
        ]) {
          get(src);
          get(L.k);
          c.push(I32_ADD);
          simd(V128_LOAD);
          c.push(4, 0); // align 16, offset 0
          set(dst);
        }
        [L.x0, L.x1, L.x2, L.x3].forEach((xr, row) => {
          get(xr);
          get(L.k);
          c.push(I32_ADD);
          simd(V128_LOAD);
          c.push(4, 0);
          set(VX);
          for (const [col, vw] of [
            [0, VW0],
            [1, VW1],
          ]) {
            const acc = ACC + 2 * row + col;
            get(acc);
            get(VX);
            get(vw);
            c.push(...a.fma);
            set(acc);
          }
        });
        get(L.k);
        i32(16);
        c.push(I32_ADD);
        set(L.k);
      });
      // o = out + r * outStride + n * outBytes; store the 8 lane sums
      offset(P.out, L.r, P.outStride, L.o);
      get(L.o);
      get(L.n);
      i32(a.outBytes);
      c.push(I32_MUL, I32_ADD);
      set(L.o);
      const align = a.outBytes === 8 ? 3 : 2;
      for (let row = 0; row < 4; row++)
        for (let col = 0; col < 2; col++) {
          const address = () => {
            get(L.o);
            for (let i = 0; i < row; i++) {
              get(P.outStride);
              c.push(I32_ADD);
            }
          };
          address();
          if (a.into) {
            address();
            c.push(a.into.load, align, ...uleb(a.outBytes * col));
          }
          const acc = ACC + 2 * row + col;
          // (l0 + l1) + (l2 + l3)
          for (let lane = 0; lane < a.lanes; lane++) {
            get(acc);
            simd(a.extractLane);
            c.push(lane);
            if (lane % 2) c.push(a.addScalar);
          }
          if (a.lanes === 4) c.push(a.addScalar);
          if (a.into?.promote) c.push(a.into.promote);
          if (a.into) c.push(a.into.op);
          c.push(a.store, align, ...uleb(a.outBytes * col));
        }
      get(L.n);
      i32(2);
      c.push(I32_ADD);
      set(L.n);
    });
    get(L.r);
    i32(4);
    c.push(I32_ADD);
    set(L.r);
  });
  c.push(END);
  const locals = vec([
    [...uleb(VW0 - L.r - 8), I32], // r .. o
    [...uleb(11), V128], // 8 accumulators, two weight vectors, one activation vector
  ]);
  const body = [...locals, ...c];
  return [...uleb(body.length), ...body];
}

function moduleBytes(): Uint8Array {
  const type = vec([[0x60, ...vec(new Array(9).fill([I32])), 0x00]]);
  const imports = vec([[...str("env"), ...str("mem"), 0x02, 0x00, ...uleb(1)]]);
  const funcs = vec([[0x00], [0x00], [0x00], [0x00], [0x00], [0x00]]);
  const exports = vec([
    [...str("gemm"), 0x00, 0x00],
    [...str("dot16"), 0x00, 0x01],
    [...str("gemm64"), 0x00, 0x02],
    [...str("gemmSub"), 0x00, 0x03],
    [...str("gemmSubInto64"), 0x00, 0x04],
    [...str("gemmAddInto64"), 0x00, 0x05],
  ]);
  const code = vec([
    kernelBody(F32),
    kernelBody(I16),
    kernelBody(F64),
    kernelBody({ ...F32, into: { load: F32_LOAD, op: F32_SUB } }),
    kernelBody({ ...F32_INTO_F64, into: { load: F64_LOAD, op: F64_SUB, promote: F64_PROMOTE_F32 } }),
    kernelBody({ ...F32_INTO_F64, into: { load: F64_LOAD, op: F64_ADD, promote: F64_PROMOTE_F32 } }),
  ]);
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, type),
    ...section(2, imports),
    ...section(3, funcs),
    ...section(7, exports),
    ...section(10, code),
  ]);
}

export type WasmGemmFn = (
  x: number,
  xStride: number,
  rows: number,
  w: number,
  wStride: number,
  cols: number,
  kBytes: number,
  out: number,
  outStride: number,
) => void;

/** the part of the WebAssembly JS API used here (the project's TypeScript lib has no DOM types) */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Memory: new (d: { initial: number }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (m: object, imports: object) => { exports: Record<string, unknown> };
}

export interface WasmGemm {
  memory: WasmMemory;
  /** fp32 x fp32 -> fp32 */
  gemm: WasmGemmFn;
  /** int16 x int16 -> int32 (same arguments; kBytes a multiple of 16, i.e. K of 8) */
  dot16: WasmGemmFn;
  /** fp64 x fp64 -> fp64 (kBytes a multiple of 16, i.e. K of 2; 2 partial sums per dot product) */
  gemm64: WasmGemmFn;
  /** as gemm, subtracting the products from what `out` holds */
  gemmSub: WasmGemmFn;
  /** fp32 products subtracted from or added to an fp64 `out` (outStride in bytes of fp64 rows) */
  gemmSubInto64: WasmGemmFn;
  gemmAddInto64: WasmGemmFn;
}

let instance: WasmGemm | null | undefined;

/** The kernel, or null where WebAssembly SIMD is unavailable (callers fall back to scalar code). */
export function wasmGemm(): WasmGemm | null {
  if (instance !== undefined) return enabled ? instance : null;
  instance = null;
  if (process.env.GPTQ_NO_WASM) return instance;
  const wa = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
  const bytes = moduleBytes();
  if (!wa || !wa.validate(bytes)) return instance;
  const memory = new wa.Memory({ initial: 1 });
  const inst = new wa.Instance(new wa.Module(bytes), { env: { mem: memory } });
  const fn = (name: string) => inst.exports[name] as WasmGemmFn;
  instance = {
    memory,
    gemm: fn("gemm"),
    dot16: fn("dot16"),
    gemm64: fn("gemm64"),
    gemmSub: fn("gemmSub"),
    gemmSubInto64: fn("gemmSubInto64"),
    gemmAddInto64: fn("gemmAddInto64"),
  };
  return enabled ? instance : null;
}

let enabled = true;

/** Turns the WebAssembly kernels off or on (to compare with, or test, the scalar code). */
export function useWasm(on: boolean): void {
  enabled = on;
}
