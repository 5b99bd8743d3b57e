/**
 * Synthetic checkpoints with real model shapes for tests of inspect/check: tensors given no data are
 * left as holes in a sparse file, so a 7B-shaped layer costs a header and no disk or memory.
 */
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DType, DTYPE_BYTES } from "../../src/tensor/dtype.js";
import { TypedArray, bytesOf, numel } from "../../src/tensor/tensor.js";
import { buildHeader } from "../../src/io/safetensors.js";
import { Bits, CheckpointFormat } from "../../src/formats/types.js";
import { QuantConfig } from "../../src/io/quant-config.js";

export interface SparseEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** written at its offset; absent = zeros (a hole) */
  data?: TypedArray;
}

export function tmpDir(tag = "ckpt"): string {
  return mkdtempSync(join(tmpdir(), `gptq-${tag}-`));
}

export function writeSparseSafetensors(path: string, entries: SparseEntry[]): void {
  const header = buildHeader(entries.map((e) => ({ ...e, data: new Uint8Array(0) })));
  const fd = openSync(path, "w");
  try {
    writeSync(fd, header, 0, header.length, 0);
    let offset = header.length;
    for (const e of entries) {
      const size = numel(e.shape) * DTYPE_BYTES[e.dtype];
      if (e.data) writeSync(fd, bytesOf(e.data), 0, size, offset);
      offset += size;
    }
    ftruncateSync(fd, offset);
  } finally {
    closeSync(fd);
  }
}

export interface LayerShape {
  name: string;
  K: number;
  N: number;
}

export interface GptqPlan {
  bits: Bits;
  groupSize: number;
  sym: boolean;
  version: "v1" | "v2";
  /** g_idx as a permutation (act-order) rather than k // group */
  actOrder?: boolean;
  /** asymmetric zero point to store for every group and column (default varies 1..2^bits-1) */
  zero?: number;
}

function gIdxFor(K: number, groupSize: number, actOrder: boolean): Int32Array {
  const g = groupSize === -1 ? K : groupSize;
  const out = new Int32Array(K);
  // A fixed stride permutation stands in for the Hessian order.
  for (let k = 0; k < K; k++) out[k] = Math.floor((actOrder ? (k * 7) % K : k) / g);
  return out;
}

/** Packs zero points as a bit stream per row (the GPTQ layout for every bit width). */
export function packZeros(zeros: Uint8Array, G: number, N: number, bits: number): Int32Array {
  const perRow = (N * bits) / 32;
  const out = new Int32Array(G * perRow);
  for (let g = 0; g < G; g++)
    for (let n = 0; n < N; n++) {
      const bit = n * bits;
      const w = g * perRow + (bit >>> 5);
      const off = bit & 31;
      const v = zeros[g * N + n];
      out[w] |= v << off;
      if (off + bits > 32) out[w + 1] |= v >>> (32 - off);
    }
  return out;
}

export function gptqEntries(l: LayerShape, p: GptqPlan): SparseEntry[] {
  const G = p.groupSize === -1 ? 1 : Math.ceil(l.K / p.groupSize);
  const zeros = new Uint8Array(G * l.N);
  const max = (1 << p.bits) - 1;
  for (let i = 0; i < zeros.length; i++) {
    const z = p.sym ? 1 << (p.bits - 1) : (p.zero ?? 1 + (i % max));
    zeros[i] = p.version === "v1" ? z - 1 : z;
  }
  return [
    { name: `${l.name}.qweight`, dtype: "I32", shape: [(l.K * p.bits) / 32, l.N] },
    {
      name: `${l.name}.qzeros`,
      dtype: "I32",
      shape: [G, (l.N * p.bits) / 32],
      data: packZeros(zeros, G, l.N, p.bits),
    },
    { name: `${l.name}.scales`, dtype: "F16", shape: [G, l.N] },
    {
      name: `${l.name}.g_idx`,
      dtype: "I32",
      shape: [l.K],
      data: gIdxFor(l.K, p.groupSize, p.actOrder ?? false),
    },
  ];
}

export function marlinEntries(l: LayerShape, groupSize: number): SparseEntry[] {
  const G = groupSize === -1 ? 1 : Math.ceil(l.K / groupSize);
  return [
    { name: `${l.name}.B`, dtype: "I32", shape: [l.K / 16, 2 * l.N] },
    { name: `${l.name}.s`, dtype: "F16", shape: [G, l.N] },
  ];
}

export function fpEntries(l: LayerShape): SparseEntry[] {
  return [{ name: `${l.name}.weight`, dtype: "F16", shape: [l.N, l.K] }];
}

/** Writes a checkpoint directory: one model.safetensors and the given JSON files. */
export function writeCheckpointDir(
  dir: string,
  entries: SparseEntry[],
  files: Record<string, unknown> = {},
): string {
  mkdirSync(dir, { recursive: true });
  writeSparseSafetensors(join(dir, "model.safetensors"), entries);
  for (const [name, value] of Object.entries(files))
    writeFileSync(join(dir, name), JSON.stringify(value, null, 2));
  return dir;
}

/** A Llama-style decoder layer's linears. */
export function llamaLayers(i: number, hidden: number, intermediate: number, kvOut = hidden): LayerShape[] {
  const p = `model.layers.${i}`;
  return [
    { name: `${p}.self_attn.q_proj`, K: hidden, N: hidden },
    { name: `${p}.self_attn.k_proj`, K: hidden, N: kvOut },
    { name: `${p}.self_attn.v_proj`, K: hidden, N: kvOut },
    { name: `${p}.self_attn.o_proj`, K: hidden, N: hidden },
    { name: `${p}.mlp.gate_proj`, K: hidden, N: intermediate },
    { name: `${p}.mlp.up_proj`, K: hidden, N: intermediate },
    { name: `${p}.mlp.down_proj`, K: intermediate, N: hidden },
  ];
}

/** The embedding, norms and head that are not linears to quantize. */
export function llamaExtras(hidden: number, vocab: number): SparseEntry[] {
  return [
    { name: "model.embed_tokens.weight", dtype: "F16", shape: [vocab, hidden] },
    { name: "model.layers.0.input_layernorm.weight", dtype: "F16", shape: [hidden] },
    { name: "model.norm.weight", dtype: "F16", shape: [hidden] },
    { name: "lm_head.weight", dtype: "F16", shape: [vocab, hidden] },
  ];
}

/** A complete quantization config for writing test checkpoints: 4-bit, group 128, symmetric GPTQ v1. */
export function quantConfig(
  over: Partial<QuantConfig> & { checkpointFormat?: CheckpointFormat } = {},
): QuantConfig {
  return {
    bits: 4,
    groupSize: 128,
    sym: true,
    descAct: false,
    staticGroups: false,
    trueSequential: true,
    quantMethod: "gptq",
    checkpointFormat: "gptq",
    ...over,
  };
}
