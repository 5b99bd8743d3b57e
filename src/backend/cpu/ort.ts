/**
 * ONNX Runtime (the optional `onnxruntime-node` package) as a CPU engine: a quantized linear as one
 * `MatMulNBits` operator (MLAS's 2/4/8-bit kernels), an fp32 linear as `MatMul`. Sessions are created
 * asynchronously; a forward is then a synchronous call into the native session, so these layers sit
 * behind the same `Linear` interface as ours.
 */
import { createRequire } from "node:module";
import { QuantizedLinear } from "../../formats/types.js";
import { GptqError } from "../../util/errors.js";
import { checkInput } from "./gemm.js";
import type { Linear } from "./linear.js";
import { OnnxGraph, OnnxNode, OnnxTensor, onnxModel } from "./onnx-graph.js";
import { checkQuantizedLinear, groupOrder } from "./quant-linear.js";

interface OrtTensor {
  readonly data: Float32Array;
}
interface NativeSession {
  loadModel(buffer: ArrayBuffer, offset: number, length: number, options: object): Promise<void>;
  run(
    feeds: Record<string, OrtTensor>,
    fetches: Record<string, null>,
    options: object,
  ): Record<string, OrtTensor>;
  dispose(): void;
}
interface Ort {
  version: string;
  newSession(): NativeSession;
  tensor(data: Float32Array, dims: number[]): OrtTensor;
}

let ort: Ort | undefined;
let missing: string | undefined;

/**
 * onnxruntime-node, or undefined with `ortMissing()` saying why. Its native session is used directly:
 * the package's own `run` defers every call to the next turn of the event loop.
 */
export function loadOrt(): Ort | undefined {
  if (ort || missing) return ort;
  try {
    const require = createRequire(import.meta.url);
    const common = require("onnxruntime-common") as {
      Tensor: new (type: string, data: Float32Array, dims: number[]) => OrtTensor;
    };
    const native = require("onnxruntime-node/dist/binding.js") as {
      binding: { InferenceSession: new () => NativeSession };
      initOrt(): void;
    };
    const { version } = require("onnxruntime-node/dist/version.js") as { version: string };
    native.initOrt();
    ort = {
      version,
      newSession: () => new native.binding.InferenceSession(),
      tensor: (data, dims) => new common.Tensor("float32", data, dims),
    };
  } catch (e) {
    missing = `onnxruntime-node is not installed or does not load here (${(e as Error).message.split("\n")[0]})`;
  }
  return ort;
}

/** Why loadOrt() gave nothing. */
export function ortMissing(): string {
  return missing ?? "";
}

/** A one-input, one-output ONNX model run synchronously: x [rows, K] -> y [rows, N]. */
export class OrtSession {
  private constructor(
    private readonly ort: Ort,
    private readonly session: NativeSession,
  ) {}

  static async create(graph: OnnxGraph, threads: number): Promise<OrtSession> {
    const o = loadOrt();
    if (!o) throw new GptqError(ortMissing());
    const bytes = onnxModel(graph);
    const session = o.newSession();
    await session.loadModel(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
      executionProviders: [{ name: "cpu" }],
      // idle intra-op threads sleep instead of spinning: a model runs many small operators between
      // which our own code runs, and on a busy machine spinning threads starve everything else
      extra: { session: { intra_op: { allow_spinning: "0" } } },
    });
    return new OrtSession(o, session);
  }

  run(x: Float32Array, rows: number, K: number): Float32Array {
    const feeds = { x: this.ort.tensor(x.subarray(0, rows * K), [rows, K]) };
    return this.session.run(feeds, { y: null }, {}).y.data;
  }

  dispose(): void {
    this.session.dispose();
  }
}

const io = (K: number, N: number): Pick<OnnxGraph, "inputs" | "outputs"> => ({
  inputs: [{ name: "x", type: "FLOAT", shape: ["rows", K] }],
  outputs: [{ name: "y", type: "FLOAT", shape: ["rows", N] }],
});

/** y = x W^T (+ bias) as MatMul on W^T. */
export function denseGraph(weight: Float32Array, N: number, K: number, bias?: Float32Array): OnnxGraph {
  const wt = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wt[k * N + n] = weight[n * K + k];
  const initializers: OnnxTensor[] = [{ name: "wt", type: "FLOAT", dims: [K, N], data: wt }];
  const nodes: OnnxNode[] = [{ op: "MatMul", inputs: ["x", "wt"], outputs: [bias ? "xw" : "y"] }];
  if (bias) {
    initializers.push({ name: "bias", type: "FLOAT", dims: [N], data: bias });
    nodes.push({ op: "Add", inputs: ["xw", "bias"], outputs: ["y"] });
  }
  return { nodes, initializers, ...io(K, N) };
}

/**
 * MatMulNBits' block size for a layer: a power of two from 16 to 256 that divides the group size, with
 * every group starting on a block once the inputs are in group order (act-order layers get a Gather of
 * the inputs first); undefined when there is none or the bits are not 2, 4 or 8.
 */
export function nbitsBlockSize(layer: QuantizedLinear): number | undefined {
  if (![2, 4, 8].includes(layer.bits)) return undefined;
  const G = checkQuantizedLinear(layer);
  const { starts } = groupOrder(layer.gIdx, G);
  const groupStarts = starts.subarray(0, starts.length - 1);
  for (let bs = 256; bs >= 16; bs /= 2) if (groupStarts.every((s) => s % bs === 0)) return bs;
  return undefined;
}

/**
 * `MatMulNBits` (com.microsoft) for a GPTQ layer: codes packed little-endian per block of K, one scale and
 * zero point per (output, block) from the block's group, the inputs gathered into group order first when
 * g_idx is not ascending. accuracyLevel 0 keeps fp32 activations; 4 lets MLAS quantize them to int8.
 */
export function nbitsGraph(layer: QuantizedLinear, accuracyLevel: 0 | 4): OnnxGraph {
  const bs = nbitsBlockSize(layer);
  if (bs === undefined)
    throw new GptqError(
      `MatMulNBits cannot hold this layer (${layer.bits}-bit, group ${layer.groupSize}): it takes 2, 4 or 8 bits in blocks of 16 to 256`,
    );
  const { inFeatures: K, outFeatures: N, bits, codes, scales, zeros } = layer;
  const { perm, starts } = groupOrder(layer.gIdx, checkQuantizedLinear(layer));
  const groupAt = new Int32Array(K); // group of each position in group order
  for (let g = 0; g + 1 < starts.length; g++) groupAt.fill(g, starts[g], starts[g + 1]);
  const blocks = Math.ceil(K / bs);
  const blob = (bs * bits) / 8;
  const zpBytes = Math.ceil((blocks * bits) / 8);
  const packed = new Uint8Array(N * blocks * blob);
  const blockScales = new Float32Array(N * blocks);
  const zp = new Uint8Array(N * zpBytes);
  for (let j = 0; j < K; j++) {
    const src = (perm ? perm[j] : j) * N;
    const b = Math.floor(j / bs);
    const bit = (j - b * bs) * bits;
    const byte = b * blob + (bit >> 3);
    for (let n = 0; n < N; n++) packed[n * blocks * blob + byte] |= codes[src + n] << (bit & 7);
  }
  for (let b = 0; b < blocks; b++) {
    const g = groupAt[b * bs];
    const bit = b * bits;
    for (let n = 0; n < N; n++) {
      blockScales[n * blocks + b] = scales[g * N + n];
      zp[n * zpBytes + (bit >> 3)] |= zeros[g * N + n] << (bit & 7);
    }
  }
  const initializers: OnnxTensor[] = [
    { name: "B", type: "UINT8", dims: [N, blocks, blob], data: packed },
    { name: "scales", type: "FLOAT", dims: [N * blocks], data: blockScales },
    { name: "zero_points", type: "UINT8", dims: [N * zpBytes], data: zp },
  ];
  const nodes: OnnxNode[] = [];
  let input = "x";
  if (perm) {
    initializers.push({ name: "perm", type: "INT64", dims: [K], data: BigInt64Array.from(perm, BigInt) });
    nodes.push({ op: "Gather", inputs: ["x", "perm"], outputs: ["xg"], attrs: { axis: 1 } });
    input = "xg";
  }
  const inputs = [input, "B", "scales", "zero_points"];
  if (layer.bias) {
    initializers.push({ name: "bias", type: "FLOAT", dims: [N], data: layer.bias });
    inputs.push("", "bias");
  }
  nodes.push({
    op: "MatMulNBits",
    domain: "com.microsoft",
    inputs,
    outputs: ["y"],
    attrs: { K, N, bits, block_size: bs, accuracy_level: accuracyLevel },
  });
  return { nodes, initializers, ...io(K, N) };
}

/** A linear layer run by ONNX Runtime (see OrtSession). */
export class OrtLinear implements Linear {
  private constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    private readonly session: OrtSession,
  ) {}

  static async create(graph: OnnxGraph, K: number, N: number, threads: number): Promise<OrtLinear> {
    return new OrtLinear(K, N, await OrtSession.create(graph, threads));
  }

  forward(x: Float32Array, rows: number): Float32Array {
    checkInput(this, x, rows);
    if (rows === 0) return new Float32Array(0);
    return this.session.run(x, rows, this.inFeatures);
  }

  dispose(): void {
    this.session.dispose();
  }
}
