/**
 * Layer-by-layer GPTQ with the whole calibration on the GPU: the calibration set's hidden states live on
 * the device in fp16 (chunks of sequences), each decoder layer runs there (backend/cuda/decoder), every
 * group's Hessian is accumulated from its inputs where they are computed (tensor-core GEMMs, fp32
 * accumulation), GPTQ prepares, factorises and sweeps on the device, and each quantized projection's
 * dequantized weight replaces the fp16 one in place before the next group's inputs are computed. Only
 * the weights (in), the codes and group parameters (out) and the Hessian diagonal cross the bus.
 *
 * The same true-sequential order and options as the CPU pipeline; activations in fp16 rather than fp32.
 */
import { CudaDevice, DeviceBuffer } from "../backend/cuda/device.js";
import { CudaDecoderLayer, DecoderLinearName, uploadHalfs } from "../backend/cuda/decoder/decoder.js";
import { CudaHessian } from "../backend/cuda/gptq/hessian.js";
import { CudaGptqData, dequantizeOnDevice, outputErrorOnDevice } from "../backend/cuda/gptq/problem.js";
import { DenseLinear } from "../backend/cpu/linear.js";
import { QuantizedLinear } from "../formats/types.js";
import { DECODER_LINEARS, cudaDecoderLayer } from "../model/cuda.js";
import { DecoderLayer, DecoderModel, LayerSource } from "../model/decoder.js";
import { Role } from "../model/families/types.js";
import { dequantize } from "../formats/dequantize.js";
import { gptqSolve } from "../quant/gptq.js";
import { GptqError } from "../util/errors.js";
import { cudaGptqProblem } from "./cuda-gptq.js";
import type {
  LinearReport,
  Phase,
  PipelineEvent,
  PipelineOptions,
  PipelineResult,
} from "./quantize-model.js";
import { dataSupports, stepCounter } from "./quantize-model.js";

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

interface Chunk {
  seqLens: number[];
  rows: number;
  /** hidden states entering the current layer (rows x hidden fp16) */
  h: DeviceBuffer;
  /** after the layer's attention half, once its projections are quantized */
  mid?: DeviceBuffer;
  /** o_proj's input, kept from its Hessian pass to the residual */
  attn?: DeviceBuffer;
}

export function quantizeModelOnDevice(
  model: LayerSource,
  calibration: readonly Int32Array[],
  opts: PipelineOptions,
  onEvent: (e: PipelineEvent) => void,
  keep?: (prefix: string, layer: QuantizedLinear) => void,
  /** layer 0, when the caller has read it already */
  first?: DecoderLayer,
): PipelineResult {
  if (opts.method !== "gptq" || opts.fpTarget)
    throw new GptqError("the device-resident pipeline runs GPTQ without --fp-target");
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
  const chunks: Chunk[] = chunksOf(calibration).map((seqs) => {
    const embedded = seqs.map((s) => uploadHalfs(dev, model.embed(s)));
    const h = dev.alloc(embedded.reduce((a, e) => a + e.bytes, 0));
    let at = 0;
    for (const e of embedded) {
      dev.copy(h.ptr + at, e, e.bytes);
      at += e.bytes;
      dev.free(e);
    }
    return { seqLens: seqs.map((s) => s.length), rows: seqs.reduce((a, s) => a + s.length, 0), h };
  });
  const free = (b?: DeviceBuffer) => b && dev.free(b);
  // where the time goes: each phase ends with the device idle, so its kernels are counted in it
  const phases: Record<Phase, number> = { read: 0, forward: 0, hessian: 0, gptq: 0, error: 0, pack: 0 };
  let mark = Date.now();
  const lap = (phase: Phase) => {
    dev.synchronize();
    const now = Date.now();
    phases[phase] += (now - mark) / 1000;
    mark = now;
  };

  try {
    for (let li = 0; li < L; li++) {
      const layer = li === 0 && first ? first : model.layer(li);
      const gpu = cudaDecoderLayer(dev, layer, positions);
      lap("read");
      try {
        for (const group of model.family.groups) {
          const names = layer.linearsFor(group.roles);
          const first = group.roles[0];
          if (group.block === "mlp" && !chunks[0].mid) {
            progress(li, "attention outputs");
            for (const c of chunks) {
              c.mid = dev.alloc(c.h.bytes);
              dev.copy(c.mid, c.h, c.h.bytes);
              const y = gpu.project("o_proj", c.attn!, c.rows);
              gpu.addInPlace(c.mid, y, c.rows);
              dev.free(y);
              free(c.attn);
              c.attn = undefined;
            }
            lap("forward");
            counter.done++;
          }
          progress(li, names.join("/"));
          const K = layer.linears[names[0]].inFeatures;
          const acc = new CudaHessian(dev, K);
          for (const c of chunks) {
            const x = groupInput(dev, gpu, first, c);
            lap("forward");
            acc.addDevice(x, c.rows);
            if (first === "o") c.attn = x;
            else dev.free(x);
            lap("hessian");
          }
          const H = acc.take();
          lap("hessian");
          try {
            for (const name of names) quantizeLinear(layer, gpu, H, name, li);
          } finally {
            dev.free(H);
          }
          counter.done++;
        }
        progress(li, "outputs");
        for (const c of chunks) {
          const y = gpu.mlpInput(c.mid!, c.seqLens);
          const act = gpu.mlpCore(y, c.seqLens);
          dev.free(y);
          const down = gpu.project("down_proj", act, c.rows);
          dev.free(act);
          gpu.addInPlace(c.mid!, down, c.rows);
          dev.free(down);
          dev.free(c.h);
          c.h = c.mid!;
          c.mid = undefined;
        }
        lap("forward");
        counter.done++;
      } finally {
        gpu.dispose();
      }
    }
  } finally {
    for (const c of chunks) for (const b of [c.h, c.mid, c.attn]) free(b);
  }
  progress(L - 1, "done");
  return { layers, reports, seconds: (Date.now() - t0) / 1000, phases };

  /** GPTQ of one projection from its group's Hessian H (left as it is); its dequantized weight goes into `gpu`. */
  function quantizeLinear(
    layer: DecoderLayer,
    gpu: CudaDecoderLayer,
    H: DeviceBuffer,
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
    const fits = dataSupports(opts, K, tokens);
    // GPTQ's target: the layer's fp16 weight on the device for an fp16/bf16 checkpoint (the values as
    // stored; bf16 narrowed), an fp32 one as it is
    const decoderName = DECODER_NAME[layer.segmentsOf(name)[0].part];
    const halfs = linear.stored !== undefined && linear.stored.dtype !== "F32";
    const w = halfs ? gpu.weightOf(decoderName) : dev.upload(linear.weight);
    const wType = halfs ? "f16" : "f32";
    lap("read");
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
    if (!halfs) dev.free(w);
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

/** The input of a group's projections for one chunk (a new buffer). */
function groupInput(dev: CudaDevice, gpu: CudaDecoderLayer, first: Role, c: Chunk): DeviceBuffer {
  switch (first) {
    case "q":
      return gpu.attentionInput(c.h, c.seqLens);
    case "o": {
      const x = gpu.attentionInput(c.h, c.seqLens);
      const a = gpu.attentionCore(x, c.seqLens);
      dev.free(x);
      return a;
    }
    case "gate":
      return gpu.mlpInput(c.mid!, c.seqLens);
    case "down": {
      const y = gpu.mlpInput(c.mid!, c.seqLens);
      const a = gpu.mlpCore(y, c.seqLens);
      dev.free(y);
      return a;
    }
    default:
      throw new Error(`no group starts with ${first}`);
  }
}
