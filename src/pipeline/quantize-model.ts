/**
 * The calibration pipeline: quantize a model decoder layer by decoder layer, true-sequential inside each
 * layer in the order its family's table gives (for Llama: q/k/v, then o, then gate/up, then down). Each group's Hessian is taken from its
 * inputs as they are once every projection before it (in this layer and all earlier ones) is already
 * quantized, so each projection compensates the error of those before it. Memory: the calibration set's
 * hidden states at the current layer (entering it and after its attention half; twice more with
 * fpTarget, for the unquantized model) and one group's Hessian (plus its cross term with fpTarget).
 */
import { DenseLinear, Linear } from "../backend/cpu/linear.js";
import { dequantize } from "../formats/dequantize.js";
import { Bits, QuantizedLinear } from "../formats/types.js";
import { DecoderLayer, HalfState, LayerSource } from "../model/decoder.js";
import { GptqError } from "../util/errors.js";
import { HessianAccumulator, gptqQuantize, quantizeRtn } from "../quant/index.js";
import { CPU_GPTQ, GptqBackend, cpuGptqBackend } from "../quant/gptq.js";
import { CudaDevice } from "../backend/cuda/device.js";
import { roundToHalf } from "../tensor/dtype.js";
import {
  ParallelCross,
  ParallelHessian,
  parallelDenseAvailable,
  parallelGptqSteps,
  timesHessianParallel,
} from "../backend/cpu/dense.js";
import { CudaHessian } from "../backend/cuda/gptq/hessian.js";
import { cudaGptqBackend } from "./cuda-gptq.js";
import { quantizeModelOnDevice } from "./quantize-model-cuda.js";
import { cudaDecoderUnsupported, fusedProjection } from "../model/cuda.js";
import type { ClipMethod } from "../quant/index.js";
import { CrossAccumulator, fpTargetWeights } from "../quant/fp-target.js";
import { TimesHessian, relativeOutputError, relativeWeightError } from "../quant/relative-error.js";
import { expertOf } from "../model/families/experts.js";

export interface PipelineOptions {
  method: "gptq" | "rtn";
  bits: Bits;
  /** -1 = one group over all of K */
  groupSize: number;
  sym: boolean;
  descAct: boolean;
  staticGroups: boolean;
  /** dampening fraction of the mean Hessian diagonal (GPTQ) */
  damp: number;
  /** how each group's range is chosen: "minmax" (AutoGPTQ default), "mse" grid, "hessian"-weighted grid, "gptq" loss */
  clip: ClipMethod;
  blockSize?: number;
  /**
   * Aim every projection at the unquantized model's outputs: its inputs X_q have drifted from the fp
   * model's X_f through the quantized layers before it, so GPTQ quantizes the least-squares target
   * W* = W (X_f^T X_q) (X_q^T X_q + damp)^-1 instead of W (the minimiser of ||X_f W^T - X_q W*^T||).
   */
  fpTarget?: boolean;
  /** asymmetric grids: search the two ends of each group's range separately */
  splitRange?: boolean;
  /** GPTQ: dynamic groups take their parameters from the weights as updated so far */
  freshGroups?: boolean;
  /** GPTQ: rounds of least-squares scale refit with the codes fixed, then GPTQ again (default 0) */
  refine?: number;
  /** where Hessians accumulate and GPTQ's factorisation and sweeps run (default "cpu") */
  device?: "cpu" | "cuda";
  /**
   * CPU path: "f16" rounds the calibration activations (hidden states and every projection group's
   * input, of both models with fp-target) to fp16, as the GPU path stores them, so the two can be
   * compared with only the arithmetic's order apart. Default "f32".
   */
  activations?: "f32" | "f16";
}

/**
 * Calibration tokens per input feature a data-hungry option needs: below it, a projection group's
 * least-squares fit follows the sample rather than the model, and the group runs without the option
 * (LinearReport.fallback says so). fp-target's W* (K x K unknowns per row's fit) hurt stories260K at 16
 * tokens per input and helped from 32 (BENCHMARKS.md, "Quality presets"); refine fits only K / group
 * scales per row but on H, which is rank-deficient below 1 token per input.
 */
export const TOKENS_PER_INPUT: Readonly<Record<"fpTarget" | "refine", number>> = { fpTarget: 32, refine: 2 };

/** The data-hungry options a group of `K` inputs can use with `tokens` calibration tokens, and why not the rest. */
export function dataSupports(
  opts: PipelineOptions,
  K: number,
  tokens: number,
): { fpTarget: boolean; refine: number; fallback?: string } {
  const off: string[] = [];
  const enough = (o: keyof typeof TOKENS_PER_INPUT, flag: string) => {
    const ok = tokens >= TOKENS_PER_INPUT[o] * K;
    if (!ok) off.push(`${flag} (needs ${TOKENS_PER_INPUT[o] * K} tokens)`);
    return ok;
  };
  const fpTarget = !!opts.fpTarget && enough("fpTarget", "fp-target");
  const refine = opts.refine && enough("refine", "refine") ? opts.refine : 0;
  return {
    fpTarget,
    refine,
    fallback: off.length ? `${tokens} calibration tokens: no ${off.join(", no ")}` : undefined,
  };
}

/**
 * Whether the unquantized model runs alongside: fp-target is asked for and some projection group has the
 * calibration tokens it needs (`layer` stands for every layer; they are alike). Without it, a run whose
 * every group falls back spends nothing on the fp model.
 */
export function fpModelNeeded(opts: PipelineOptions, layer: DecoderLayer, tokens: number): boolean {
  return (
    !!opts.fpTarget &&
    layer.family.groups.some(
      (g) => dataSupports(opts, layer.linears[layer.linearsFor(g.roles)[0]].inFeatures, tokens).fpTarget,
    )
  );
}

export interface LinearReport {
  layer: number;
  /** tensor prefix, e.g. "model.layers.0.self_attn.q_proj" */
  name: string;
  /** the family's name for the projection, e.g. "q_proj", "query_key_value" */
  linear: string;
  inFeatures: number;
  outFeatures: number;
  /**
   * ||X Q^T - X W^T||^2 / ||X W^T||^2 on the calibration inputs X (W the target GPTQ aimed at: with
   * fpTarget the least-squares W*); ||W - Q||^2 / ||W||^2 when there are no calibration inputs
   */
  relError: number;
  relErrorOf: "outputs" | "weights";
  /** GPTQ's loss (sum of (w - q)^2 / d^2 / 2) */
  loss?: number;
  /** dampening used, when raised above the requested one */
  damp?: number;
  /** the data-hungry options switched off for lack of calibration tokens, and why (see dataSupports) */
  fallback?: string;
  /** a mixture-of-experts expert: the calibration tokens routed to it */
  tokens?: number;
  /** an expert that got too few tokens for GPTQ (fewer than its input features), rounded (RTN) instead */
  rounded?: boolean;
  seconds: number;
}

export type PipelineEvent =
  | {
      type: "step";
      layer: number;
      layers: number;
      step: string;
      done: number;
      total: number;
      elapsed: number;
      eta: number;
    }
  | { type: "linear"; report: LinearReport };

/** Progress over `total` steps of an L-layer run: `report` sends where it is, `done` counts steps finished. */
export function stepCounter(L: number, total: number, onEvent: (e: PipelineEvent) => void) {
  const t0 = Date.now();
  const counter = {
    done: 0,
    report(layer: number, step: string): void {
      const elapsed = (Date.now() - t0) / 1000;
      const { done } = counter;
      onEvent({
        type: "step",
        layer,
        layers: L,
        step,
        done,
        total,
        elapsed,
        eta: done ? (elapsed / done) * (total - done) : NaN,
      });
    },
  };
  return counter;
}

/** Where a run's time goes (seconds), measured where the device can be waited on between phases. */
export type Phase = "read" | "forward" | "hessian" | "gptq" | "error" | "pack";

/**
 * Seconds per phase: each `lap` charges the time since the previous one to a phase, after `settle` (the
 * device's queue drained, where work runs asynchronously).
 */
export function phaseClock(settle: () => void = () => {}) {
  const phases: Record<Phase, number> = { read: 0, forward: 0, hessian: 0, gptq: 0, error: 0, pack: 0 };
  let mark = Date.now();
  return {
    phases,
    lap(phase: Phase): void {
      settle();
      const now = Date.now();
      phases[phase] += (now - mark) / 1000;
      mark = now;
    },
  };
}

export interface PipelineResult {
  /** quantized layers by tensor prefix */
  layers: Map<string, QuantizedLinear>;
  reports: LinearReport[];
  seconds: number;
  phases: Record<Phase, number>;
}

/**
 * Bytes of down_proj inputs (tokens x intermediate fp32, per path) the CPU pipeline keeps from the down
 * group's Hessian pass for the layer's outputs; above it the MLP runs again instead.
 */
const KEEP_DOWN_INPUTS = 2 ** 30;

/** Thrown from a capture hook to stop a forward pass once the input we need has been seen. */
class StopForward extends Error {}

/**
 * The input of projection `name` when the attention half of `layer` runs on `h` (or its MLP half on
 * `mid`): T rows, or for an expert the rows routed to it (none when no token went to it).
 */
function inputOf(layer: DecoderLayer, h: Float32Array | HalfState, T: number, name: string): Float32Array {
  let x: Float32Array | undefined;
  const capture = (n: string, input: Float32Array, rows: number) => {
    if (n !== name) return;
    x = input.subarray(0, rows * layer.linears[name].inFeatures);
    throw new StopForward();
  };
  try {
    if (h instanceof Float32Array) layer.attentionBlock(h, T, capture);
    else layer.mlpBlock(h, T, capture);
  } catch (e) {
    if (!(e instanceof StopForward)) throw e;
  }
  if (x) return x;
  if (expertOf(name) !== undefined) return new Float32Array(0);
  throw new Error(`${layer.linearPrefix(name)} was never reached`);
}

function denseOf(l: Linear, name: string): DenseLinear {
  if (!(l instanceof DenseLinear))
    throw new GptqError(`${name} is already quantized; quantize an unquantized (fp16/bf16/fp32) checkpoint`);
  return l;
}

/** Where a layer's Hessians accumulate and its GPTQ runs. */
interface Compute {
  hessian(K: number): {
    add(x: Float32Array, rows: number): void;
    readonly H: Float64Array;
    dispose?(): void;
  };
  /** fp-target's cross term */
  cross(K: number): { add(f: Float32Array, q: Float32Array, rows: number): void; readonly C: Float64Array };
  gptq: GptqBackend;
  /** the dense step of each projection's output error */
  timesHessian?: TimesHessian;
}

function computeOn(device: "cpu" | "cuda"): Compute {
  const cross = (K: number) => new CrossAccumulator(K);
  if (device === "cpu")
    return parallelDenseAvailable()
      ? {
          hessian: (K) => new ParallelHessian(K),
          cross: (K) => new ParallelCross(K),
          gptq: cpuGptqBackend(parallelGptqSteps()),
          timesHessian: timesHessianParallel,
        }
      : { hessian: (K) => new HessianAccumulator(K), cross, gptq: CPU_GPTQ };
  const dev = CudaDevice.get();
  return { hessian: (K) => new CudaHessian(dev, K), cross, gptq: cudaGptqBackend(dev) };
}

/**
 * Quantizes one projection. A group size above K means one group spanning K (as AutoGPTQ computes it);
 * the layer keeps the requested group size so its config and g_idx (all 0) agree.
 */
function quantizeOne(
  W: Float32Array,
  N: number,
  K: number,
  H: Float64Array | undefined,
  o: PipelineOptions,
  backend: GptqBackend,
): { layer: QuantizedLinear; Q: Float32Array; loss?: number; damp?: number } {
  const groupSize = o.groupSize > K ? -1 : o.groupSize;
  const q = { bits: o.bits, groupSize, sym: o.sym, clip: o.clip, splitRange: o.splitRange };
  let res: { layer: QuantizedLinear; Q: Float32Array; loss?: number; damp?: number };
  if (o.method === "gptq") {
    if (!H) throw new GptqError("GPTQ needs calibration data (--calib FILE)");
    const r = gptqQuantize(W, N, K, H, {
      ...q,
      descAct: o.descAct,
      staticGroups: o.staticGroups,
      damp: o.damp,
      blockSize: o.blockSize,
      freshGroups: o.freshGroups,
      refine: o.refine,
      backend,
    });
    res = { layer: r.layer, Q: r.Q, loss: r.loss, damp: r.damp };
  } else {
    if (o.clip === "hessian" || o.clip === "gptq")
      throw new GptqError(`--clip ${o.clip} needs GPTQ (it weights errors by the Hessian)`);
    const layer = quantizeRtn(W, N, K, q);
    res = { layer, Q: dequantize(layer) };
  }
  res.layer.groupSize = o.groupSize;
  return res;
}

/**
 * The projections of one true-sequential group split by their input: one set for a dense layer, one per
 * expert in a mixture-of-experts MLP. Each expert gets the Hessian of the tokens routed to it, plain
 * (not weighted by the router's weights): the expert's linears see those rows unweighted, as GPTQModel's
 * and AutoGPTQ's hooks capture them, and a token's weight only scales the expert's output afterwards.
 */
function byInput(names: string[]): string[][] {
  const sets = new Map<number | undefined, string[]>();
  for (const n of names) {
    const e = expertOf(n);
    sets.set(e, [...(sets.get(e) ?? []), n]);
  }
  return [...sets.values()];
}

/** the options an expert with too few calibration tokens is rounded with: RTN, with a grid RTN can search */
function roundingOf(o: PipelineOptions): PipelineOptions {
  return { ...o, method: "rtn", clip: o.clip === "mse" ? "mse" : "minmax" };
}

/**
 * Quantizes every decoder projection of `model`, one layer at a time, and returns the quantized layers.
 * Each projection of the layer object is replaced by its dequantized weights: a `DecoderModel` afterwards
 * computes what the quantized checkpoint will; a `LayerwiseDecoder` drops each layer once it is done.
 * `calibration` may be omitted for RTN only. On "cuda", GPTQ (fpTarget included) runs wholly on the GPU
 * for the families its decoder layer computes (quantize-model-cuda.ts); otherwise the forward runs here
 * and the Hessians and GPTQ there.
 */
export function quantizeModel(
  model: LayerSource,
  calibration: readonly Int32Array[] | undefined,
  opts: PipelineOptions,
  onEvent: (e: PipelineEvent) => void = () => {},
  /** where each quantized layer goes as soon as it is done (then `layers` stays empty); default: `layers` */
  keep?: (prefix: string, layer: QuantizedLinear) => void,
): PipelineResult {
  if (
    opts.device === "cuda" &&
    opts.method === "gptq" &&
    calibration?.length &&
    !cudaDecoderUnsupported(model.family, model.config)
  ) {
    // a checkpoint storing fused projections (Phi-3's, or merge's) is only known from its layers
    const first = model.layer(0);
    if (!fusedProjection(first)) return quantizeModelOnDevice(model, calibration, opts, onEvent, keep, first);
  }
  const t0 = Date.now();
  const compute = computeOn(opts.device ?? "cpu");
  const layers = new Map<string, QuantizedLinear>();
  const reports: LinearReport[] = [];
  const L = model.numLayers;
  const calibrated = calibration !== undefined && calibration.length > 0;
  if (opts.method === "gptq" && !calibrated)
    throw new GptqError("GPTQ needs calibration data (--calib FILE)");
  if (opts.fpTarget && model.family.mlp === "experts")
    throw new GptqError(
      `--fp-target is not supported for ${model.family.name} (mixture of experts): the unquantized and the quantized model route tokens to different experts; quantize without it`,
    );
  // per layer: its groups, then (with calibration) the attention half's and the layer's outputs
  const total = L * (model.family.groups.length + (calibrated ? 2 : 0));
  const counter = stepCounter(L, total, onEvent);
  const progress = counter.report;
  const { phases, lap } = phaseClock();

  // Hidden states entering the current layer (one T x hidden array per calibration sequence), and after
  // its attention half once that half is quantized: the MLP groups calibrate from there, so attention
  // is not recomputed for them. With fpTarget, the same for the unquantized model alongside.
  /** activations as the chosen precision keeps them (rounded in place: each is a fresh array) */
  const atPrecision = opts.activations === "f16" ? roundToHalf : (x: Float32Array) => x;
  let hs: Float32Array[] = calibrated ? calibration.map((s) => atPrecision(model.embed(s))) : [];
  let mid: HalfState[] = [];
  // the unquantized model alongside, for fp-target (decided at layer 0: whether any group has the tokens)
  let fpStates = !!opts.fpTarget;
  let hsF: Float32Array[] = fpStates ? hs : [];
  let midF: HalfState[] = [];
  const tokens = calibrated ? calibration.reduce((n, s) => n + s.length, 0) : 0;
  // o_proj's inputs from its Hessian pass, reused for the residual once it is quantized (attention runs
  // once per path, not twice)
  let attn: Float32Array[] = [];
  let attnF: Float32Array[] = [];
  // down_proj's inputs likewise for the layer's outputs, while they fit KEEP_DOWN_INPUTS
  const keepDown =
    model.family.mlp !== "experts" && tokens * model.config.intermediateSize * 4 <= KEEP_DOWN_INPUTS;
  let act: Float32Array[] = [];
  let actF: Float32Array[] = [];
  const T = (s: number) => calibration![s].length;

  for (let li = 0; li < L; li++) {
    const layer = model.layer(li);
    lap("read");
    if (li === 0 && fpStates && calibrated && !fpModelNeeded(opts, layer, tokens)) {
      fpStates = false;
      hsF = [];
    }
    const fpLinears = { ...layer.linears };
    /** runs `fn` with the layer's unquantized projections in place */
    const asFp = <R>(fn: () => R): R => {
      const saved = { ...layer.linears };
      Object.assign(layer.linears, fpLinears);
      try {
        return fn();
      } finally {
        Object.assign(layer.linears, saved);
      }
    };
    // one step per group, or per expert in a mixture-of-experts MLP group
    const steps = layer.family.groups.flatMap((group) => {
      const sets = byInput(layer.linearsFor(group.roles));
      return sets.map((names) => ({ group, names, share: 1 / sets.length }));
    });
    for (const { group, names, share } of steps) {
      let H: Float64Array | undefined;
      let C: Float64Array | undefined;
      const K = layer.linears[names[0]].inFeatures;
      const fits = calibrated ? dataSupports(opts, K, tokens) : { fpTarget: false, refine: opts.refine ?? 0 };
      let routed = 0;
      if (calibrated) {
        if (group.block === "mlp" && !mid.length) {
          progress(li, "attention outputs");
          const half = (h: Float32Array, s: number, kept: Float32Array[]) =>
            kept[s] ? layer.attentionOutput(h, kept[s], T(s)) : layer.attentionBlock(h, T(s));
          const halfAtPrecision = (m: HalfState) => ({ ...m, residual: atPrecision(m.residual) });
          mid = hs.map((h, s) => halfAtPrecision(half(h, s, attn)));
          if (fpStates) midF = asFp(() => hsF.map((h, s) => halfAtPrecision(half(h, s, attnF))));
          attn = [];
          attnF = [];
          lap("forward");
          counter.done++;
        }
        progress(li, names.join("/"));
        const first = names[0];
        const acc = compute.hessian(K);
        const cross = fits.fpTarget ? compute.cross(K) : undefined;
        const mlp = group.block === "mlp";
        /** sequence s's input of the group on one path, keeping o_proj's and down_proj's for reuse */
        const groupInput = (
          s: number,
          h: Float32Array[],
          m: HalfState[],
          keptAttn: Float32Array[],
          keptAct: Float32Array[],
        ) =>
          atPrecision(
            group.roles[0] === "o"
              ? (keptAttn[s] = layer.attentionCore(h[s], T(s)))
              : group.roles[0] === "down" && keepDown
                ? (keptAct[s] = layer.mlpCore(m[s], T(s)))
                : inputOf(layer, mlp ? m[s] : h[s], T(s), first),
          );
        for (let s = 0; s < hs.length; s++) {
          const xq = groupInput(s, hs, mid, attn, act);
          lap("forward");
          const rows = xq.length / K;
          routed += rows;
          if (rows) acc.add(xq, rows);
          lap("hessian");
          if (cross) {
            const xf = asFp(() => groupInput(s, hsF, midF, attnF, actF));
            lap("forward");
            cross.add(xf, xq, T(s));
            lap("hessian");
          }
        }
        H = acc.H;
        acc.dispose?.();
        C = cross?.C;
        lap("hessian");
      } else progress(li, names.join("/"));
      const expert = expertOf(names[0]) !== undefined;
      for (const name of names) {
        const t1 = Date.now();
        const prefix = layer.linearPrefix(name);
        const dense = denseOf(layer.linears[name], prefix);
        const { outFeatures: N } = dense;
        // fewer routed tokens than inputs leave the Hessian singular: GPTQ would fit noise, so round
        const rounded = expert && calibrated && opts.method === "gptq" && routed < K;
        const W = C && H ? fpTargetWeights(dense.weight, N, K, C, H, opts.damp) : dense.weight;
        const r = rounded
          ? quantizeOne(W, N, K, undefined, roundingOf(opts), compute.gptq)
          : quantizeOne(W, N, K, H, { ...opts, refine: fits.refine }, compute.gptq);
        lap("gptq");
        if (dense.bias) r.layer.bias = dense.bias;
        if (keep) keep(prefix, r.layer);
        else layers.set(prefix, r.layer);
        lap("pack");
        layer.linears[name] = new DenseLinear(r.Q, N, K, dense.bias);
        const relError =
          H && routed
            ? relativeOutputError(W, r.Q, N, K, H, compute.timesHessian)
            : relativeWeightError(W, r.Q);
        lap("error");
        const report: LinearReport = {
          layer: li,
          name: prefix,
          linear: name,
          inFeatures: K,
          outFeatures: N,
          relError,
          relErrorOf: H && routed ? "outputs" : "weights",
          loss: r.loss,
          damp: r.damp !== undefined && r.damp !== opts.damp ? r.damp : undefined,
          fallback: fits.fallback,
          tokens: expert && calibrated ? routed : undefined,
          rounded: rounded || undefined,
          seconds: (Date.now() - t1) / 1000,
        };
        reports.push(report);
        onEvent({ type: "linear", report });
      }
      counter.done += share;
    }
    if (calibrated) {
      progress(li, "outputs");
      // The next layer calibrates on this layer's outputs with its weights already quantized (the last
      // layer's outputs are not needed).
      const out = (h: HalfState, s: number, kept: Float32Array[]) =>
        kept[s] ? layer.mlpDown(h, kept[s], T(s)) : layer.mlpBlock(h, T(s));
      if (li < L - 1) hs = mid.map((h, s) => atPrecision(out(h, s, act)));
      mid = [];
      if (fpStates && li < L - 1) hsF = asFp(() => midF.map((h, s) => atPrecision(out(h, s, actF))));
      midF = [];
      act = [];
      actF = [];
      lap("forward");
      counter.done++;
    }
  }
  progress(L - 1, "done");
  return { layers, reports, seconds: (Date.now() - t0) / 1000, phases };
}
