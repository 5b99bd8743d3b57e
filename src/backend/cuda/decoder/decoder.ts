/**
 * A Llama-family decoder layer on the GPU, for calibration: activations stay on the device in fp16 (fp32
 * math inside every kernel and fp32 accumulation in every GEMM), for a chunk of sequences at once laid
 * end to end (rows = the sum of their lengths; each sequence's positions start at 0). The stages are
 * separate so that GPTQ can take each projection's input; projections and the two attention products are
 * cuBLAS GEMMs, the rest are the small kernels of decoder.cu. Every stage returns a new device buffer that
 * the caller frees (`dev.free`).
 */
import { floatsToHalfs, halfsToFloats } from "../../../tensor/dtype.js";
import { Tensor, toFloat32 } from "../../../tensor/tensor.js";
import { GptqError } from "../../../util/errors.js";
import { BatchedGemm, Cublas } from "../cublas.js";
import { CudaDevice, DeviceBuffer, Kernel, KernelArg, f32, i32, ptr, u64 } from "../device.js";

export type DecoderLinearName =
  "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj";

/** An nn.Linear: weight N x K row-major, optional bias of N. */
export interface DecoderLinearSpec {
  /** N x K: fp32 values, or the tensor as a checkpoint stores it (F16 goes up as it is) */
  weight: Float32Array | Tensor;
  bias?: Float32Array;
  N: number;
  K: number;
}

/** What the layer computes, in plain arrays (the model layer builds it from a CPU DecoderLayer). */
export interface CudaDecoderSpec {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** dimensions of each head that are rotated (the first rotaryDim, rotate_half layout) */
  rotaryDim: number;
  eps: number;
  /** attend to the last `slidingWindow` positions only (undefined: full causal) */
  slidingWindow?: number;
  /** cos and sin of each position's angles: positions x ropeStride, the first rotaryDim / 2 used */
  ropeCos: Float32Array;
  ropeSin: Float32Array;
  ropeStride: number;
  inputNorm: Float32Array;
  postAttentionNorm: Float32Array;
  linears: Record<DecoderLinearName, DecoderLinearSpec>;
}

/** Called with each projection's input before it runs (q/k/v share one, gate/up another). */
export type DeviceCaptureFn = (linear: DecoderLinearName, x: DeviceBuffer, rows: number) => void;

const THREADS = 256;
/** the softmax kernel's "no sliding window" */
const NO_WINDOW = 0x7fffffff;
/** bytes of one fp16 value */
const FP16_BYTES = 2;

/** fp32 host values -> a new fp16 device buffer */
export function uploadHalfs(dev: CudaDevice, x: Float32Array): DeviceBuffer {
  return dev.upload(floatsToHalfs(x));
}

/** A weight on the device in fp16: stored fp16 values go up as they are, others are narrowed here. */
function uploadWeight(dev: CudaDevice, w: Float32Array | Tensor): DeviceBuffer {
  if (w instanceof Float32Array) return uploadHalfs(dev, w);
  if (w.dtype === "F16") return dev.upload(w.data);
  if (w.dtype !== "BF16") return uploadHalfs(dev, toFloat32(w));
  const buf = dev.upload(w.data);
  const count = w.data.length;
  dev.launch(
    dev.kernel(import.meta.url, "decoder.cu", "bf16_to_f16"),
    [Math.ceil(count / THREADS), 1, 1],
    THREADS,
    0,
    [ptr(buf), u64(count)],
  );
  return buf;
}

/** the first `count` fp16 values of a device buffer, widened to fp32 on the host */
export function downloadFloats(dev: CudaDevice, buf: DeviceBuffer, count: number): Float32Array {
  if (count * FP16_BYTES > buf.bytes)
    throw new GptqError(`download of ${count} fp16 values from a buffer of ${buf.bytes} bytes`);
  return halfsToFloats(dev.download(buf, new Uint16Array(count)));
}

/**
 * The rows of a chunk of sequences, refused unless every length is a positive integer of at most
 * `maxPositions` (the rotary tables' reach).
 */
export function chunkRows(seqLens: readonly number[], maxPositions: number): number {
  if (seqLens.length === 0) throw new GptqError("decoder layer: a chunk needs at least one sequence");
  let rows = 0;
  for (const T of seqLens) {
    if (!Number.isInteger(T) || T <= 0)
      throw new GptqError(`decoder layer: sequence length ${T} is not a positive integer`);
    if (T > maxPositions)
      throw new GptqError(
        `decoder layer: a sequence of ${T} tokens is longer than the ${maxPositions} positions its rotary tables cover; build the layer for longer sequences`,
      );
    rows += T;
  }
  return rows;
}

/** Each row's position in its sequence: 0..T-1 for every sequence of the chunk in turn. */
export function chunkPositions(seqLens: readonly number[]): Int32Array {
  const pos = new Int32Array(seqLens.reduce((a, b) => a + b, 0));
  let r = 0;
  for (const T of seqLens) for (let t = 0; t < T; t++) pos[r++] = t;
  return pos;
}

/** The attention's device buffers (byte addresses): fp16 q, k, v and out of the whole chunk, scratch. */
export interface AttentionBuffers {
  /** rows x heads*headDim, rows x kvHeads*headDim, rows x kvHeads*headDim, rows x heads*headDim */
  q: number;
  k: number;
  v: number;
  out: number;
  /** kvHeads x T x T fp32 scores and fp16 probabilities, for the longest sequence */
  scores: number;
  probs: number;
}

/** One step of a chunk's attention: scores GEMM, softmax over T rows of each batch entry, values GEMM. */
export interface AttentionStep {
  T: number;
  scores: BatchedGemm;
  values: BatchedGemm;
}

/**
 * A chunk's attention as cuBLAS calls: per sequence and query head of each kv-head group (`g`), two
 * batched GEMMs over the kv heads (batch entry b = kv head b, query head b x group + g): the scores
 * S_b = Q_h K_b^T / sqrt(headDim) (T x T row-major, fp32) and, after the softmax, O_h = P_b V_b written
 * into the head's columns of `out`. Row-major X (rows x cols, leading dimension ld) is column-major X^T
 * with the same ld, so cuBLAS computes S^T = K Q^T and O^T = V^T P^T.
 */
export function attentionPlan(
  shape: { heads: number; kvHeads: number; headDim: number },
  seqLens: readonly number[],
  bufs: AttentionBuffers,
): AttentionStep[] {
  const { heads: H, kvHeads: KV, headDim: hd } = shape;
  const group = H / KV;
  const qRow = H * hd;
  const kvRow = KV * hd;
  const steps: AttentionStep[] = [];
  let row = 0;
  for (const T of seqLens) {
    const q = bufs.q + row * qRow * FP16_BYTES;
    const k = bufs.k + row * kvRow * FP16_BYTES;
    const v = bufs.v + row * kvRow * FP16_BYTES;
    const out = bufs.out + row * qRow * FP16_BYTES;
    for (let g = 0; g < group; g++)
      steps.push({
        T,
        scores: {
          transA: true,
          transB: false,
          m: T,
          n: T,
          k: hd,
          alpha: 1 / Math.sqrt(hd),
          a: k,
          lda: kvRow,
          strideA: hd,
          b: q + g * hd * FP16_BYTES,
          ldb: qRow,
          strideB: group * hd,
          c: bufs.scores,
          ldc: T,
          strideC: T * T,
          cType: "f32",
          batch: KV,
        },
        values: {
          transA: false,
          transB: false,
          m: hd,
          n: T,
          k: T,
          alpha: 1,
          a: v,
          lda: kvRow,
          strideA: hd,
          b: bufs.probs,
          ldb: T,
          strideB: T * T,
          c: out + g * hd * FP16_BYTES,
          ldc: qRow,
          strideC: group * hd,
          cType: "f16",
          batch: KV,
        },
      });
    row += T;
  }
  return steps;
}

/** The (N, K) each projection must have. */
function expectedShapes(
  s: CudaDecoderSpec,
  intermediate: number,
): Record<DecoderLinearName, [number, number]> {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  return {
    q_proj: [q, s.hidden],
    k_proj: [kv, s.hidden],
    v_proj: [kv, s.hidden],
    o_proj: [s.hidden, q],
    gate_proj: [intermediate, s.hidden],
    up_proj: [intermediate, s.hidden],
    down_proj: [s.hidden, intermediate],
  };
}

/** Refuses a spec whose parts do not fit together (before anything is uploaded). */
export function checkDecoderSpec(s: CudaDecoderSpec): void {
  const bad = (what: string) => {
    throw new GptqError(`decoder layer spec: ${what}`);
  };
  for (const key of ["hidden", "heads", "kvHeads", "headDim", "rotaryDim", "ropeStride"] as const)
    if (!Number.isInteger(s[key]) || s[key] <= 0) bad(`${key} must be a positive integer, got ${s[key]}`);
  if (s.heads % s.kvHeads !== 0) bad(`heads ${s.heads} is not a multiple of kvHeads ${s.kvHeads}`);
  if (s.rotaryDim % 2 !== 0 || s.rotaryDim > s.headDim)
    bad(`rotaryDim ${s.rotaryDim} must be even and at most headDim ${s.headDim}`);
  if (s.ropeStride < s.rotaryDim / 2)
    bad(`ropeStride ${s.ropeStride} is below rotaryDim / 2 = ${s.rotaryDim / 2}`);
  if (
    s.ropeCos.length !== s.ropeSin.length ||
    s.ropeCos.length % s.ropeStride !== 0 ||
    s.ropeCos.length === 0
  )
    bad(
      `rotary tables of ${s.ropeCos.length} and ${s.ropeSin.length} values are not positions x ${s.ropeStride}`,
    );
  if (s.slidingWindow !== undefined && !(Number.isInteger(s.slidingWindow) && s.slidingWindow > 0))
    bad(`slidingWindow must be a positive integer, got ${s.slidingWindow}`);
  if (!(s.eps > 0)) bad(`eps must be positive, got ${s.eps}`);
  if (s.inputNorm.length !== s.hidden || s.postAttentionNorm.length !== s.hidden)
    bad(
      `norm weights have ${s.inputNorm.length} and ${s.postAttentionNorm.length} values, hidden is ${s.hidden}`,
    );
  const shapes = expectedShapes(s, s.linears.gate_proj.N);
  for (const [name, [N, K]] of Object.entries(shapes)) {
    const l = s.linears[name as DecoderLinearName];
    if (l.N !== N || l.K !== K) bad(`${name} is ${l.N} x ${l.K}, expected ${N} x ${K}`);
    const values = l.weight instanceof Float32Array ? l.weight.length : l.weight.data.length;
    if (values !== N * K) bad(`${name} weight has ${values} values, expected ${N} x ${K}`);
    if (l.bias && l.bias.length !== N) bad(`${name} bias has ${l.bias.length} values, expected ${N}`);
  }
}

/** A projection on the device: fp16 weight N x K, fp32 bias. */
interface DeviceLinear {
  weight: DeviceBuffer;
  bias?: DeviceBuffer;
  N: number;
  K: number;
}

export class CudaDecoderLayer {
  readonly hidden: number;
  readonly intermediate: number;
  /** the longest sequence the rotary tables cover */
  readonly maxPositions: number;
  private readonly linears = {} as Record<DecoderLinearName, DeviceLinear>;
  private readonly owned: DeviceBuffer[] = [];
  private readonly inputNorm: DeviceBuffer;
  private readonly postAttentionNorm: DeviceBuffer;
  private readonly ropeCos: DeviceBuffer;
  private readonly ropeSin: DeviceBuffer;
  private readonly blas: Cublas;
  private readonly kernels = new Map<string, Kernel>();
  /** the spec's scalars (its host arrays are not kept: a 7B layer's weights are 800 MB in fp32) */
  private readonly spec: Omit<
    CudaDecoderSpec,
    "ropeCos" | "ropeSin" | "inputNorm" | "postAttentionNorm" | "linears"
  >;

  constructor(
    private readonly dev: CudaDevice,
    /** what to compute, or a layer to copy: its weights as they are now, copied on the device */
    spec: CudaDecoderSpec | CudaDecoderLayer,
  ) {
    this.blas = Cublas.get(dev);
    const keep = (b: DeviceBuffer) => (this.owned.push(b), b);
    if (spec instanceof CudaDecoderLayer) {
      const from = spec;
      const copy = (b: DeviceBuffer) => keep(dev.duplicate(b));
      this.spec = from.spec;
      this.hidden = from.hidden;
      this.intermediate = from.intermediate;
      this.maxPositions = from.maxPositions;
      this.inputNorm = copy(from.inputNorm);
      this.postAttentionNorm = copy(from.postAttentionNorm);
      this.ropeCos = copy(from.ropeCos);
      this.ropeSin = copy(from.ropeSin);
      for (const [name, l] of Object.entries(from.linears))
        this.linears[name as DecoderLinearName] = {
          ...l,
          weight: dev.duplicate(l.weight),
          bias: l.bias && copy(l.bias),
        };
      return;
    }
    checkDecoderSpec(spec);
    const { hidden, heads, kvHeads, headDim, rotaryDim, eps, slidingWindow, ropeStride } = spec;
    this.spec = { hidden, heads, kvHeads, headDim, rotaryDim, eps, slidingWindow, ropeStride };
    this.hidden = spec.hidden;
    this.intermediate = spec.linears.gate_proj.N;
    this.maxPositions = spec.ropeCos.length / spec.ropeStride;
    this.inputNorm = keep(dev.upload(spec.inputNorm));
    this.postAttentionNorm = keep(dev.upload(spec.postAttentionNorm));
    this.ropeCos = keep(dev.upload(spec.ropeCos));
    this.ropeSin = keep(dev.upload(spec.ropeSin));
    for (const [name, l] of Object.entries(spec.linears))
      this.linears[name as DecoderLinearName] = {
        weight: uploadWeight(dev, l.weight),
        bias: l.bias && keep(dev.upload(l.bias)),
        N: l.N,
        K: l.K,
      };
  }

  /**
   * Replaces a projection's weight (the quantized one, say): fp32 N x K on the host, or an fp16 N x K
   * device buffer that the layer then owns and frees. The bias stays.
   */
  setWeight(name: DecoderLinearName, weight: Float32Array | DeviceBuffer): void {
    const l = this.linears[name];
    const host = weight instanceof Float32Array;
    const values = host ? weight.length : weight.bytes / FP16_BYTES;
    if (host ? values !== l.N * l.K : values < l.N * l.K)
      throw new GptqError(`${name}: a weight of ${values} values given, the projection is ${l.N} x ${l.K}`);
    const next = weight instanceof Float32Array ? uploadHalfs(this.dev, weight) : weight;
    this.dev.free(l.weight);
    l.weight = next;
  }

  /** A projection's fp16 weight (N x K) on the device, until it is replaced. */
  weightOf(name: DecoderLinearName): DeviceBuffer {
    return this.linears[name].weight;
  }

  /** rmsNorm(h) with the input norm: the input of q/k/v (rows x hidden). */
  attentionInput(h: DeviceBuffer, seqLens: readonly number[]): DeviceBuffer {
    return this.norm(h, this.rows(seqLens), this.inputNorm);
  }

  /** q/k/v projections (+ bias), rotary, causal grouped-query attention: o_proj's input (rows x heads*headDim). */
  attentionCore(x: DeviceBuffer, seqLens: readonly number[]): DeviceBuffer {
    const rows = this.rows(seqLens);
    const { heads: H, kvHeads: KV, headDim: hd } = this.spec;
    const q = this.project("q_proj", x, rows);
    const k = this.project("k_proj", x, rows);
    const v = this.project("v_proj", x, rows);
    const pos = this.dev.upload(chunkPositions(seqLens));
    this.rope(q, rows, H, pos);
    this.rope(k, rows, KV, pos);
    const out = this.dev.alloc(rows * H * hd * FP16_BYTES);
    const longest = Math.max(...seqLens);
    const scores = this.dev.alloc(KV * longest * longest * 4);
    const probs = this.dev.alloc(KV * longest * longest * FP16_BYTES);
    const softmax = this.kernel("causal_softmax");
    const window = this.spec.slidingWindow ?? NO_WINDOW;
    const bufs = { q: q.ptr, k: k.ptr, v: v.ptr, out: out.ptr, scores: scores.ptr, probs: probs.ptr };
    for (const step of attentionPlan(this.spec, seqLens, bufs)) {
      this.blas.gemmStridedBatched(step.scores);
      this.dev.launch(softmax, [step.T, KV, 1], THREADS, 0, [
        ptr(scores),
        ptr(probs),
        i32(step.T),
        i32(window),
      ]);
      this.blas.gemmStridedBatched(step.values);
    }
    for (const b of [q, k, v, pos, scores, probs]) this.dev.free(b);
    return out;
  }

  /** rmsNorm(h1) with the post-attention norm: the input of gate/up (rows x hidden). */
  mlpInput(h1: DeviceBuffer, seqLens: readonly number[]): DeviceBuffer {
    return this.norm(h1, this.rows(seqLens), this.postAttentionNorm);
  }

  /** silu(gate(y)) * up(y): down_proj's input (rows x intermediate). */
  mlpCore(y: DeviceBuffer, seqLens: readonly number[]): DeviceBuffer {
    const rows = this.rows(seqLens);
    const gate = this.project("gate_proj", y, rows);
    const up = this.project("up_proj", y, rows);
    const count = rows * this.intermediate;
    const out = this.dev.alloc(count * FP16_BYTES);
    this.elementwise("silu_mul", count, [ptr(gate), ptr(up), ptr(out), u64(count)]);
    this.dev.free(gate);
    this.dev.free(up);
    return out;
  }

  /** x W^T + bias: rows x N from rows x K. */
  project(name: DecoderLinearName, x: DeviceBuffer, rows: number): DeviceBuffer {
    const l = this.linears[name];
    this.checkInput(`${name} input`, x, rows, l.K);
    const out = this.dev.alloc(rows * l.N * FP16_BYTES);
    this.blas.linear(x, l.weight, out, rows, l.N, l.K);
    if (l.bias) this.elementwise("add_bias", rows * l.N, [ptr(out), ptr(l.bias), i32(l.N), u64(rows * l.N)]);
    return out;
  }

  /** h += y (the residual), both rows x hidden. */
  addInPlace(h: DeviceBuffer, y: DeviceBuffer, rows: number): void {
    this.checkInput("residual", h, rows, this.hidden);
    this.checkInput("residual branch", y, rows, this.hidden);
    const count = rows * this.hidden;
    this.elementwise("add_inplace", count, [ptr(h), ptr(y), u64(count)]);
  }

  /** The whole layer, in place on h (rows x hidden); `capture` sees each projection's input. */
  forward(h: DeviceBuffer, seqLens: readonly number[], capture?: DeviceCaptureFn): void {
    const rows = this.rows(seqLens);
    const x = this.attentionInput(h, seqLens);
    for (const name of ["q_proj", "k_proj", "v_proj"] as const) capture?.(name, x, rows);
    const attn = this.attentionCore(x, seqLens);
    this.dev.free(x);
    this.residual(h, "o_proj", attn, rows, capture);
    const y = this.mlpInput(h, seqLens);
    for (const name of ["gate_proj", "up_proj"] as const) capture?.(name, y, rows);
    const act = this.mlpCore(y, seqLens);
    this.dev.free(y);
    this.residual(h, "down_proj", act, rows, capture);
  }

  dispose(): void {
    for (const l of Object.values(this.linears)) this.dev.free(l.weight);
    for (const b of this.owned) this.dev.free(b);
    this.owned.length = 0;
  }

  /** h += name(x); frees x */
  private residual(
    h: DeviceBuffer,
    name: DecoderLinearName,
    x: DeviceBuffer,
    rows: number,
    capture?: DeviceCaptureFn,
  ): void {
    capture?.(name, x, rows);
    const y = this.project(name, x, rows);
    this.dev.free(x);
    this.addInPlace(h, y, rows);
    this.dev.free(y);
  }

  private rows(seqLens: readonly number[]): number {
    return chunkRows(seqLens, this.maxPositions);
  }

  private checkInput(what: string, x: DeviceBuffer, rows: number, width: number): void {
    if (x.bytes < rows * width * FP16_BYTES)
      throw new GptqError(
        `${what}: a buffer of ${x.bytes} bytes is smaller than ${rows} x ${width} fp16 values`,
      );
  }

  private norm(h: DeviceBuffer, rows: number, weight: DeviceBuffer): DeviceBuffer {
    const D = this.hidden;
    this.checkInput("rmsNorm input", h, rows, D);
    const out = this.dev.alloc(rows * D * FP16_BYTES);
    this.dev.launch(this.kernel("rms_norm"), [rows, 1, 1], THREADS, 0, [
      ptr(h),
      ptr(weight),
      ptr(out),
      i32(D),
      f32(this.spec.eps),
    ]);
    return out;
  }

  private rope(x: DeviceBuffer, rows: number, heads: number, pos: DeviceBuffer): void {
    const half = this.spec.rotaryDim / 2;
    this.elementwise("rope", rows * heads * half, [
      ptr(x),
      ptr(this.ropeCos),
      ptr(this.ropeSin),
      i32(this.spec.ropeStride),
      ptr(pos),
      i32(rows),
      i32(heads),
      i32(this.spec.headDim),
      i32(half),
    ]);
  }

  /** a kernel of one thread per element over `count` elements */
  private elementwise(name: string, count: number, args: KernelArg[]): void {
    this.dev.launch(this.kernel(name), [Math.ceil(count / THREADS), 1, 1], THREADS, 0, args);
  }

  private kernel(name: string): Kernel {
    let k = this.kernels.get(name);
    if (!k) this.kernels.set(name, (k = this.dev.kernel(import.meta.url, "decoder.cu", name)));
    return k;
  }
}

/** An embedding table on the device (fp16, vocab x hidden) and its gather from token ids. */
export class CudaEmbedding {
  private readonly table: DeviceBuffer;

  constructor(
    private readonly dev: CudaDevice,
    table: Float32Array,
    readonly vocab: number,
    readonly hidden: number,
  ) {
    if (table.length !== vocab * hidden)
      throw new GptqError(`embedding table has ${table.length} values, expected ${vocab} x ${hidden}`);
    this.table = uploadHalfs(dev, table);
  }

  /** tokens -> rows x hidden fp16 (a new buffer the caller frees) */
  forward(tokens: Int32Array): DeviceBuffer {
    const rows = tokens.length;
    if (rows === 0) throw new GptqError("embedding: no tokens given");
    for (let t = 0; t < rows; t++)
      if (!(tokens[t] >= 0 && tokens[t] < this.vocab))
        throw new GptqError(
          `token ${tokens[t]} at position ${t} is outside the vocabulary [0, ${this.vocab})`,
        );
    const ids = this.dev.upload(tokens);
    const out = this.dev.alloc(rows * this.hidden * FP16_BYTES);
    const k = this.dev.kernel(import.meta.url, "decoder.cu", "embed_gather");
    this.dev.launch(k, [rows, 1, 1], THREADS, 0, [ptr(this.table), ptr(ids), ptr(out), i32(this.hidden)]);
    this.dev.free(ids);
    return out;
  }

  dispose(): void {
    this.dev.free(this.table);
  }
}
