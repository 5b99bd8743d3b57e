/**
 * Layer-by-layer GPTQ with the whole calibration on the GPU: the calibration set's hidden states live on
 * the device in fp16 (chunks of sequences), each decoder layer runs there (backend/cuda/decoder), every
 * group's Hessian is accumulated from its inputs where they are computed (tensor-core GEMMs, fp32
 * accumulation), GPTQ prepares, factorises and sweeps on the device, and each quantized projection's
 * dequantized weight replaces the fp16 one in place before the next group's inputs are computed. Only
 * the weights (in), the codes and group parameters (out) and the Hessian diagonal cross the bus.
 *
 * With fp-target, the unquantized model's hidden states run alongside (a second copy of each layer keeps
 * the original weights), each group's cross term with them is accumulated beside its Hessian, and GPTQ
 * quantizes the least-squares target W* solved on the device (backend/cuda/gptq/fp-target.ts; its time
 * counts as GPTQ's, the cross term's as the Hessian's).
 *
 * The same true-sequential order and options as the CPU pipeline; activations in fp16 rather than fp32.
 */
import { CudaDevice, DeviceBuffer } from "../backend/cuda/device.js";
import { CudaDecoderLayer, CudaEmbedding, DecoderLinearName } from "../backend/cuda/decoder/decoder.js";
import { CudaHessian } from "../backend/cuda/gptq/hessian.js";
import { CudaCrossAccumulator, CudaFpTarget } from "../backend/cuda/gptq/fp-target.js";
import {
  CudaGptqData,
  dequantizeOnDevice,
  hessianDiagonal,
  outputErrorOnDevice,
} from "../backend/cuda/gptq/problem.js";
import { DenseLinear } from "../backend/cpu/linear.js";
import { QuantizedLinear } from "../formats/types.js";
import { DECODER_LINEARS, cudaDecoderLayer } from "../model/cuda.js";
import { DecoderLayer, DecoderModel, LayerSource } from "../model/decoder.js";
import { Role } from "../model/families/types.js";
import { dequantize } from "../formats/dequantize.js";
import { gptqSolve } from "../quant/gptq.js";
import { fpTargetRidge } from "../quant/fp-target.js";
import { GptqError } from "../util/errors.js";
import { cudaGptqProblem } from "./cuda-gptq.js";
import type { LinearReport, PipelineEvent, PipelineOptions, PipelineResult } from "./quantize-model.js";
import { dataSupports, fpModelNeeded, phaseClock, stepCounter } from "./quantize-model.js";

/** The GPU decoder's name of the projection that computes each role. */
const DECODER_NAME = Object.fromEntries(
  Object.entries(DECODER_LINEARS).map(([name, role]) => [role, name]),
) as Record<Role, DecoderLinearName>;

/** Calibration rows per chunk: bounds the MLP's intermediates and the attention scores of one pass. */
const CHUNK_TOKENS = 16384;

/** Sequences grouped into chunks of up to CHUNK_TOKENS rows (a longer sequence is a chunk of its own). */
function chunksOf(calibration: readonly Int32Array[]): Int32Array[][] {
  const chunks: Int32Array[][] = [];
  let cur: Int32Array[] = [];
  let rows = 0;
  for (const s of calibration) {
    if (cur.length && rows + s.length > CHUNK_TOKENS) {
      chunks.push(cur);
      cur = [];
      rows = 0;
    }
    cur.push(s);
    rows += s.length;
  }
  if (cur.length) chunks.push(cur);
  return chunks;
}

/** One model's hidden states of a chunk at the current layer (fp16 on the device). */
interface States {
  /** entering the layer (rows x hidden) */
  h: DeviceBuffer;
  /** after the layer's attention half, once its projections are quantized */
  mid?: DeviceBuffer;
  /** o_proj's input, kept from its Hessian pass to the residual */
  attn?: DeviceBuffer;
}

/** A chunk of calibration sequences: the quantized path's states, and with fp-target the fp model's. */
interface Chunk extends States {
  seqLens: number[];
  rows: number;
  fp?: States;
}

/**
 * Refuses a projection group whose Hessian has a non-finite diagonal: its calibration inputs overflowed on
 * the device, which keeps activations in fp16 (largest value 65504). The checkpoint's own values were
 * checked when it was opened, so this is the activations' range, and the CPU path (fp32) has it.
 */
export function checkDeviceHessian(projections: readonly string[], diag: Float64Array): void {
  const k = diag.findIndex((d) => !Number.isFinite(d));
  if (k < 0) return;
  throw new GptqError(
    `${projections.join(", ")}: the calibration inputs overflowed fp16 on the GPU (input feature ${k} of the Hessian is ${diag[k]}); activations there are fp16 (at most 65504) and this model's exceed that: quantize with --device cpu`,
  );
}

export function quantizeModelOnDevice(
  model: LayerSource,
  calibration: readonly Int32Array[],
  opts: PipelineOptions,
  onEvent: (e: PipelineEvent) => void,
  keep?: (prefix: string, layer: QuantizedLinear) => void,
  /** layer 0, when the caller has read it already */
  layer0: DecoderLayer = model.layer(0),
): PipelineResult {
  if (opts.method !== "gptq") throw new GptqError("the device-resident pipeline runs GPTQ");
  const dev = CudaDevice.get();
  const t0 = Date.now();
  const layers = new Map<string, QuantizedLinear>();
  const reports: LinearReport[] = [];
  const L = model.numLayers;
  // per layer: its groups, the attention half's outputs and the layer's outputs
  const counter = stepCounter(L, L * (model.family.groups.length + 2), onEvent);
  const progress = counter.report;
  const positions = Math.max(...calibration.map((s) => s.length));
  const tokens = calibration.reduce((n, s) => n + s.length, 0);
  const fpStates = fpModelNeeded(opts, layer0, tokens);
  // the embeddings gathered on the device: the table goes up once, not a row per calibration token
  const { vocabSize, hiddenSize } = model.config;
  const table = new CudaEmbedding(dev, model.embedTokens, vocabSize, hiddenSize);
  const chunks: Chunk[] = chunksOf(calibration).map((seqs) => {
    const tokensOf = new Int32Array(seqs.reduce((n, s) => n + s.length, 0));
    let at = 0;
    for (const s of seqs) {
      tokensOf.set(s, at);
      at += s.length;
    }
    const h = table.forward(tokensOf);
    return {
      seqLens: seqs.map((s) => s.length),
      rows: seqs.reduce((a, s) => a + s.length, 0),
      h,
      fp: fpStates ? { h: dev.duplicate(h) } : undefined,
    };
  });
  table.dispose();
  const free = (b?: DeviceBuffer) => b && dev.free(b);
  // where the time goes: each phase ends with the device idle, so its kernels are counted in it
  const { phases, lap } = phaseClock(() => dev.synchronize());

  try {
    for (let li = 0; li < L; li++) {
      const layer = li === 0 ? layer0 : model.layer(li);
      const gpu = cudaDecoderLayer(dev, layer, positions);
      // the fp model's layer: a copy made before any projection is replaced by its quantized weights
      const gpuF = fpStates ? new CudaDecoderLayer(dev, gpu) : undefined;
      lap("read");
      try {
        for (const group of model.family.groups) {
          const names = layer.linearsFor(group.roles);
          const lead = group.roles[0];
          if (group.block === "mlp" && !chunks[0].mid) {
            progress(li, "attention outputs");
            for (const c of chunks) {
              attentionOutputs(dev, gpu, c, c);
              if (c.fp) attentionOutputs(dev, gpuF!, c.fp, c);
            }
            lap("forward");
            counter.done++;
          }
          progress(li, names.join("/"));
          const K = layer.linears[names[0]].inFeatures;
          const fits = dataSupports(opts, K, tokens);
          const acc = new CudaHessian(dev, K);
          const cross = fits.fpTarget ? new CudaCrossAccumulator(dev, K) : undefined;
          for (const c of chunks) {
            const x = groupInput(dev, gpu, lead, c, c.seqLens);
            lap("forward");
            acc.addDevice(x, c.rows);
            lap("hessian");
            if (cross) {
              const xF = groupInput(dev, gpuF!, lead, c.fp!, c.seqLens);
              lap("forward");
              cross.addDevice(xF, x, c.rows);
              lap("hessian");
              keepOrFree(dev, c.fp!, lead, xF);
            }
            keepOrFree(dev, c, lead, x);
          }
          const H = acc.take();
          const C = cross?.take();
          try {
            checkDeviceHessian(
              names.map((n) => layer.linearPrefix(n)),
              hessianDiagonal(dev, H, K),
            );
          } catch (e) {
            for (const b of [H, C]) if (b) dev.free(b);
            throw e;
          }
          lap("hessian");
          let target: CudaFpTarget | null = null;
          try {
            if (C)
              try {
                target = CudaFpTarget.prepare(dev, C, H, K, (d) => fpTargetRidge(d, opts.damp));
              } finally {
                dev.free(C);
              }
            lap("gptq");
            for (const name of names) quantizeLinear(layer, gpu, H, target, fits, name, li);
          } finally {
            target?.dispose();
            dev.free(H);
          }
          counter.done++;
        }
        progress(li, "outputs");
        // the next layer calibrates on these; the last layer's are not needed
        if (li < L - 1)
          for (const c of chunks) {
            layerOutputs(dev, gpu, c, c);
            if (c.fp) layerOutputs(dev, gpuF!, c.fp, c);
          }
        lap("forward");
        counter.done++;
      } finally {
        gpu.dispose();
        gpuF?.dispose();
      }
    }
  } finally {
    for (const c of chunks) for (const s of [c, c.fp]) for (const b of [s?.h, s?.mid, s?.attn]) free(b);
  }
  progress(L - 1, "done");
  return { layers, reports, seconds: (Date.now() - t0) / 1000, phases };

  /**
   * GPTQ of one projection from its group's Hessian H (left as it is), aimed at the group's fp target when
   * there is one; its dequantized weight goes into `gpu`.
   */
  function quantizeLinear(
    layer: DecoderLayer,
    gpu: CudaDecoderLayer,
    H: DeviceBuffer,
    target: CudaFpTarget | null,
    fits: ReturnType<typeof dataSupports>,
    name: string,
    li: number,
  ): void {
    const t1 = Date.now();
    const prefix = layer.linearPrefix(name);
    const linear = layer.linears[name];
    if (!(linear instanceof DenseLinear))
      throw new GptqError(
        `${prefix} is already quantized; quantize an unquantized (fp16/bf16/fp32) checkpoint`,
      );
    const { outFeatures: N, inFeatures: K } = linear;
    // GPTQ's target: the layer's fp16 weight on the device for an fp16/bf16 checkpoint (the values as
    // stored; bf16 narrowed), an fp32 one as it is; with fp-target, W* of it
    const decoderName = DECODER_NAME[layer.segmentsOf(name)[0].part];
    const halfs = linear.stored !== undefined && linear.stored.dtype !== "F32";
    let w = halfs ? gpu.weightOf(decoderName) : dev.upload(linear.weight);
    let wType: "f16" | "f32" = halfs ? "f16" : "f32";
    let owned = !halfs;
    lap("read");
    if (target) {
      // GPTQ quantizes W*, and the error is measured against it, as on the CPU
      const aim = target.weights(w, N, wType);
      if (owned) dev.free(w);
      w = aim;
      wType = "f32";
      owned = true;
      lap("gptq");
    }
    const h = dev.alloc(K * K * 4);
    dev.copy(h, H, K * K * 4);
    const problem = cudaGptqProblem(dev, CudaGptqData.fromDevice(dev, h, w, wType, N, K));
    let r;
    try {
      r = gptqSolve(problem, {
        bits: opts.bits,
        groupSize: opts.groupSize > K ? -1 : opts.groupSize,
        sym: opts.sym,
        clip: opts.clip,
        splitRange: opts.splitRange,
        descAct: opts.descAct,
        staticGroups: opts.staticGroups,
        damp: opts.damp,
        blockSize: opts.blockSize,
        freshGroups: opts.freshGroups,
        refine: fits.refine,
      });
    } finally {
      problem.dispose?.();
    }
    lap("gptq");
    r.layer.groupSize = opts.groupSize;
    if (linear.bias) r.layer.bias = linear.bias;
    const q = dequantizeOnDevice(dev, r.layer);
    const relError = outputErrorOnDevice(dev, w, wType, q, H, N, K);
    if (owned) dev.free(w);
    gpu.setWeight(decoderName, q); // frees the fp16 weight
    lap("error");
    // a model held in memory computes afterwards what the quantized checkpoint will (as on the CPU path);
    // a layer-wise one drops the layer when it is done
    if (model instanceof DecoderModel)
      layer.linears[name] = new DenseLinear(dequantize(r.layer), N, K, linear.bias);
    if (keep) keep(prefix, r.layer);
    else layers.set(prefix, r.layer);
    lap("pack");
    const report: LinearReport = {
      layer: li,
      name: prefix,
      linear: name,
      inFeatures: K,
      outFeatures: N,
      relError,
      relErrorOf: "outputs",
      loss: r.loss,
      damp: r.damp !== opts.damp ? r.damp : undefined,
      fallback: fits.fallback,
      seconds: (Date.now() - t1) / 1000,
    };
    reports.push(report);
    onEvent({ type: "linear", report });
  }
}

/** The input of a group's projections for one chunk of one model's states (a new buffer). */
function groupInput(
  dev: CudaDevice,
  gpu: CudaDecoderLayer,
  lead: Role,
  s: States,
  seqLens: readonly number[],
): DeviceBuffer {
  switch (lead) {
    case "q":
      return gpu.attentionInput(s.h, seqLens);
    case "o": {
      const x = gpu.attentionInput(s.h, seqLens);
      const a = gpu.attentionCore(x, seqLens);
      dev.free(x);
      return a;
    }
    case "gate":
      return gpu.mlpInput(s.mid!, seqLens);
    case "down": {
      const y = gpu.mlpInput(s.mid!, seqLens);
      const a = gpu.mlpCore(y, seqLens);
      dev.free(y);
      return a;
    }
    default:
      throw new Error(`no group starts with ${lead}`);
  }
}

/** A group's input after its Hessian pass: o_proj's is kept for the residual, the others are freed. */
function keepOrFree(dev: CudaDevice, s: States, lead: Role, x: DeviceBuffer): void {
  if (lead === "o") s.attn = x;
  else dev.free(x);
}

/** mid = h + o_proj(attn), from the attention input kept by o_proj's Hessian pass (or computed now). */
function attentionOutputs(dev: CudaDevice, gpu: CudaDecoderLayer, s: States, { seqLens, rows }: Chunk): void {
  const attn = s.attn ?? groupInput(dev, gpu, "o", s, seqLens);
  s.mid = dev.duplicate(s.h);
  const y = gpu.project("o_proj", attn, rows);
  gpu.addInPlace(s.mid, y, rows);
  dev.free(y);
  dev.free(attn);
  s.attn = undefined;
}

/** The layer's outputs, the next layer's h, from mid (h and mid freed). */
function layerOutputs(dev: CudaDevice, gpu: CudaDecoderLayer, s: States, { seqLens, rows }: Chunk): void {
  const y = gpu.mlpInput(s.mid!, seqLens);
  const act = gpu.mlpCore(y, seqLens);
  dev.free(y);
  const down = gpu.project("down_proj", act, rows);
  dev.free(act);
  gpu.addInPlace(s.mid!, down, rows);
  dev.free(down);
  dev.free(s.h);
  s.h = s.mid!;
  s.mid = undefined;
}
