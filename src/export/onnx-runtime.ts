/**
 * Running an exported decoder with onnxruntime-node, used when installed (`npm install onnxruntime-node`) and
 * loaded only when asked for: without it everything else works, and callers say that the check was skipped.
 */
import { IO_NAMES } from "./decoder-graph.js";
import { DecoderConfig } from "./model-view.js";

/** The part of onnxruntime-node's API used here (declared, not imported: the package may be absent). */
export interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
}
export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
export interface OnnxRuntime {
  InferenceSession: {
    create(path: string, options?: Record<string, unknown>): Promise<OrtSession>;
  };
  Tensor: new (type: string, data: Float32Array | BigInt64Array, dims: readonly number[]) => OrtTensor;
  env: { versions?: { node?: string } };
}

export type RuntimeLoad = { runtime: OnnxRuntime; version: string } | { runtime: undefined; reason: string };

/** onnxruntime-node when it is installed and loads; otherwise why not. */
export async function loadOnnxRuntime(): Promise<RuntimeLoad> {
  const name = "onnxruntime-node"; // a variable: the compiler must not require the optional package
  try {
    const mod = (await import(name)) as OnnxRuntime & { default?: OnnxRuntime };
    const runtime = mod.InferenceSession ? mod : mod.default!;
    return { runtime, version: runtime.env?.versions?.node ?? "unknown version" };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ERR_MODULE_NOT_FOUND") return { runtime: undefined, reason: `${name} is not installed` };
    return {
      runtime: undefined,
      reason: `${name} does not load here: ${(e as Error).message.split("\n")[0]}`,
    };
  }
}

/** One batch through the decoder: logits [B, S, vocab] and the new cache. */
export interface DecoderStep {
  logits: Float32Array;
  present: { key: OrtTensor; value: OrtTensor }[];
}

export class OnnxDecoder {
  private constructor(
    private readonly ort: OnnxRuntime,
    private readonly session: OrtSession,
    private readonly config: DecoderConfig,
  ) {}

  static async open(
    ort: OnnxRuntime,
    modelPath: string,
    config: DecoderConfig,
    threads?: number,
  ): Promise<OnnxDecoder> {
    const options = threads ? { intraOpNumThreads: threads } : {};
    return new OnnxDecoder(ort, await ort.InferenceSession.create(modelPath, options), config);
  }

  /** An empty cache for a batch: [B, kv_heads, 0, head_dim] per layer. */
  emptyCache(batch: number): { key: OrtTensor; value: OrtTensor }[] {
    const dims = [batch, this.config.numKvHeads, 0, this.config.headDim];
    return Array.from({ length: this.config.numLayers }, () => ({
      key: new this.ort.Tensor("float32", new Float32Array(0), dims),
      value: new this.ort.Tensor("float32", new Float32Array(0), dims),
    }));
  }

  /**
   * Runs `tokens` (B rows of S ids) after the cache `past` (from emptyCache or an earlier step), with
   * the padding mask over past + S positions (1 = attend) and each token's position.
   */
  async step(
    tokens: readonly (readonly number[])[],
    mask: readonly (readonly number[])[],
    positions: readonly (readonly number[])[],
    past: { key: OrtTensor; value: OrtTensor }[],
  ): Promise<DecoderStep> {
    const B = tokens.length;
    const int64 = (rows: readonly (readonly number[])[]) =>
      new this.ort.Tensor(
        "int64",
        BigInt64Array.from(rows.flat(), (v) => BigInt(v)),
        [B, rows[0].length],
      );
    const feeds: Record<string, OrtTensor> = {
      [IO_NAMES.inputIds]: int64(tokens),
      [IO_NAMES.attentionMask]: int64(mask),
      [IO_NAMES.positionIds]: int64(positions),
    };
    past.forEach((p, i) => {
      feeds[IO_NAMES.pastKey(i)] = p.key;
      feeds[IO_NAMES.pastValue(i)] = p.value;
    });
    const out = await this.session.run(feeds);
    return {
      logits: out[IO_NAMES.logits].data as Float32Array,
      present: past.map((_, i) => ({
        key: out[IO_NAMES.presentKey(i)],
        value: out[IO_NAMES.presentValue(i)],
      })),
    };
  }

  /** One sequence from the start, with no padding: T x vocab logits. */
  async forward(tokens: Int32Array, past = this.emptyCache(1), start = 0): Promise<DecoderStep> {
    const ids = Array.from(tokens);
    const mask = new Array<number>(start + ids.length).fill(1);
    return this.step([ids], [mask], [ids.map((_, t) => start + t)], past);
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

/** max |a - b| / max |b|: the largest error relative to the reference's scale */
export function relativeDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`relativeDifference: ${a.length} vs ${b.length} values`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

export interface DecoderCheck {
  tokens: number;
  /** the whole sequence in one run, against the reference logits */
  fullRelDiff: number;
  /** the sequence in three runs (a prefix, a chunk after it, one token), each reading the cache before it */
  cachedRelDiff: number;
}

/**
 * Runs `tokens` through the decoder in one run, and again split into a prefix, a chunk and a last
 * single token that read the cache the runs before them wrote; both against `reference` (T x vocab).
 */
export async function checkDecoder(
  decoder: OnnxDecoder,
  tokens: Int32Array,
  reference: Float32Array,
): Promise<DecoderCheck> {
  const T = tokens.length;
  const full = await decoder.forward(tokens);
  const cuts = [0, Math.max(1, Math.floor(T / 2)), T - 1, T].filter((v, i, a) => i === 0 || v > a[i - 1]);
  const cached = new Float32Array(reference.length);
  const V = reference.length / T;
  let past = decoder.emptyCache(1);
  for (let i = 0; i + 1 < cuts.length; i++) {
    const r = await decoder.forward(tokens.subarray(cuts[i], cuts[i + 1]), past, cuts[i]);
    cached.set(r.logits, cuts[i] * V);
    past = r.present;
  }
  return {
    tokens: T,
    fullRelDiff: relativeDifference(full.logits, reference),
    cachedRelDiff: relativeDifference(cached, reference),
  };
}
