/** Splitting one quantized layer of a checkpoint into several along out_features, and merging several into one. */
import { Checkpoint, QuantizedLayerInfo, openCheckpoint } from "../io/checkpoint.js";
import { dequantize } from "../formats/dequantize.js";
import { FORMATS, WriteOptions } from "../formats/registry.js";
import { mergeLayers, splitLayer, splitProblem } from "../formats/split.js";
import { CheckpointFormat, QuantizedLinear } from "../formats/types.js";
import { DType } from "../tensor/dtype.js";
import { toFloat32, fromFloat32 } from "../tensor/tensor.js";
import { LayerShape } from "../formats/gptq.js";
import { GptqError } from "../util/errors.js";
import { layerShape, layerTensorNames, readLayer } from "./layers.js";
import { Rewrite, rewriteCheckpoint } from "./rewrite.js";

export interface SplitMergeResult {
  format: CheckpointFormat;
  /** the layers written, with their out_features */
  layers: { name: string; outFeatures: number }[];
  verified: boolean;
  shards: string[];
}

function openQuantized(input: string): Checkpoint & { format: CheckpointFormat } {
  const ckpt = openCheckpoint(input);
  if (ckpt.format === "fp") {
    ckpt.close();
    throw new GptqError(`${input} is not quantized; split and merge work on GPTQ and Marlin layers`);
  }
  return ckpt as Checkpoint & { format: CheckpointFormat };
}

function findLayer(ckpt: Checkpoint, name: string): QuantizedLayerInfo {
  const l = ckpt.layers.find((x) => x.name === name);
  if (!l) {
    const near = ckpt.layers.filter((x) => x.name.endsWith(name.split(".").pop()!)).slice(0, 3);
    throw new GptqError(
      `${ckpt.dir}: no quantized layer "${name}"${near.length ? `; layers include ${near.map((x) => x.name).join(", ")}` : ""}`,
    );
  }
  return l;
}

/** Layer plus its bias (as fp32), read from the store. */
function readWithBias(
  ckpt: Checkpoint & { format: CheckpointFormat },
  info: QuantizedLayerInfo,
): QuantizedLinear {
  const layer = readLayer(ckpt.store, ckpt.format, info.name, layerShape(ckpt, info));
  if (ckpt.store.has(`${info.name}.bias`))
    layer.bias = Float32Array.from(toFloat32(ckpt.store.read(`${info.name}.bias`)));
  return layer;
}

function writeOptions(ckpt: Checkpoint, info: QuantizedLayerInfo, format: CheckpointFormat): WriteOptions {
  if (format === "marlin") return {};
  const dtype = ckpt.store.info(`${info.name}.scales`).dtype;
  return { scaleDtype: dtype === "BF16" || dtype === "F32" ? dtype : "F16" };
}

/** Output tensors of one layer (format tensors plus bias in the source's bias dtype). */
function layerOutputs(
  format: CheckpointFormat,
  shape: LayerShape,
  name: string,
  opts: WriteOptions,
  biasDtype: DType | undefined,
) {
  const specs = FORMATS[format].layout(shape, opts).map((t) => ({ ...t, name: `${name}.${t.suffix}` }));
  if (biasDtype)
    specs.push({ suffix: "bias", name: `${name}.bias`, dtype: biasDtype, shape: [shape.outFeatures] });
  return specs;
}

/** Throws unless `part` dequantizes (weights and bias) to rows `row`.. of `whole`. */
function assertRows(
  whole: QuantizedLinear,
  W: Float32Array,
  row: number,
  part: QuantizedLinear,
  what: string,
): void {
  const K = whole.inFeatures;
  const P = dequantize(part);
  const rows = W.subarray(row * K, (row + part.outFeatures) * K);
  const same = (a: ArrayLike<number>, b: ArrayLike<number>) =>
    a.length === b.length &&
    Array.prototype.every.call(a, (v: number, j: number) => v === b[j] || (v === 0 && b[j] === 0));
  if (
    !same(P, rows) ||
    (whole.bias && !same(part.bias ?? [], whole.bias.subarray(row, row + part.outFeatures)))
  )
    throw new GptqError(`verification failed: ${what}`);
}

function produceLayer(
  format: CheckpointFormat,
  layer: QuantizedLinear,
  name: string,
  opts: WriteOptions,
  biasDtype?: DType,
) {
  const out = new Map(FORMATS[format].write(layer, opts).map((t) => [`${name}.${t.suffix}`, t.data]));
  if (biasDtype && layer.bias)
    out.set(`${name}.bias`, fromFloat32(layer.bias, biasDtype, [layer.outFeatures]).data);
  return out;
}

function checkNewNames(ckpt: Checkpoint, names: string[], replaced: ReadonlySet<string>): void {
  if (new Set(names).size !== names.length)
    throw new GptqError(`layer names must be distinct: ${names.join(", ")}`);
  for (const n of names) {
    if (!/^[^\s]+$/.test(n) || n.startsWith(".") || n.endsWith("."))
      throw new GptqError(`invalid layer name "${n}"`);
    const clash = ckpt.store.names().find((t) => t.startsWith(`${n}.`) && !replaced.has(t));
    if (clash) throw new GptqError(`${ckpt.dir}: layer name "${n}" is taken (tensor ${clash} exists)`);
  }
}

export async function splitCheckpoint(
  input: string,
  output: string,
  layerName: string,
  sizes: number[],
  names: string[],
): Promise<SplitMergeResult> {
  const ckpt = openQuantized(input);
  try {
    const info = findLayer(ckpt, layerName);
    if (names.length !== sizes.length)
      throw new GptqError(`${sizes.length} sizes but ${names.length} names; give one name per part`);
    const problem = splitProblem(ckpt.format, info.bits, info.outFeatures, sizes);
    if (problem) throw new GptqError(`cannot split ${layerName}: ${problem}`);
    const consumes = layerTensorNames(ckpt.store, ckpt.format, layerName);
    const biasName = `${layerName}.bias`;
    const biasDtype = ckpt.store.has(biasName) ? ckpt.store.info(biasName).dtype : undefined;
    if (biasDtype) consumes.push(biasName);
    checkNewNames(ckpt, names, new Set(consumes));
    const opts = writeOptions(ckpt, info, ckpt.format);
    const shape = layerShape(ckpt, info);
    const outputs = names.flatMap((name, i) =>
      layerOutputs(ckpt.format, { ...shape, outFeatures: sizes[i] }, name, opts, biasDtype),
    );
    const rewrite: Rewrite = {
      consumes,
      outputs,
      produce() {
        const parts = splitLayer(readWithBias(ckpt, info), sizes);
        const all = new Map();
        parts.forEach((p, i) =>
          produceLayer(ckpt.format, p, names[i], opts, biasDtype).forEach((v, k) => all.set(k, v)),
        );
        return all;
      },
    };
    const r = await rewriteCheckpoint(input, output, ckpt.store, {
      rewrites: [rewrite],
      verify(dir) {
        const out = openQuantized(dir);
        try {
          const whole = readWithBias(ckpt, info);
          const W = dequantize(whole);
          let row = 0;
          names.forEach((name, i) => {
            const part = readWithBias(out, findLayer(out, name));
            assertRows(whole, W, row, part, `${name} is not rows ${row}..${row + sizes[i]} of ${layerName}`);
            row += sizes[i];
          });
        } finally {
          out.close();
        }
      },
    });
    return {
      format: ckpt.format,
      layers: names.map((name, i) => ({ name, outFeatures: sizes[i] })),
      verified: true,
      shards: r.shards,
    };
  } finally {
    ckpt.close();
  }
}

export async function mergeCheckpoint(
  input: string,
  output: string,
  layerNames: string[],
  name: string,
): Promise<SplitMergeResult> {
  const ckpt = openQuantized(input);
  try {
    if (layerNames.length < 2) throw new GptqError("merge needs at least two layers");
    if (new Set(layerNames).size !== layerNames.length)
      throw new GptqError(`a layer is listed twice: ${layerNames.join(", ")}`);
    const infos = layerNames.map((l) => findLayer(ckpt, l));
    const first = infos[0];
    for (const [i, l] of infos.entries()) {
      const differ = (what: string, a: unknown, b: unknown) =>
        new GptqError(`cannot merge: ${l.name} has ${what} ${b}, ${first.name} has ${a}`);
      if (l.inFeatures !== first.inFeatures) throw differ("in_features", first.inFeatures, l.inFeatures);
      if (l.bits !== first.bits) throw differ("bits", first.bits, l.bits);
      if (l.groups !== first.groups) throw differ("groups", first.groups, l.groups);
      if (l.hasBias !== first.hasBias)
        throw differ("bias", first.hasBias ? "one" : "none", l.hasBias ? "one" : "none");
      if (
        i > 0 &&
        ckpt.format !== "marlin" &&
        ckpt.store.info(`${l.name}.scales`).dtype !== ckpt.store.info(`${first.name}.scales`).dtype
      )
        throw new GptqError(`cannot merge: ${l.name} and ${first.name} store scales in different dtypes`);
    }
    const consumes = infos.flatMap((l) => [
      ...layerTensorNames(ckpt.store, ckpt.format, l.name),
      ...(l.hasBias ? [`${l.name}.bias`] : []),
    ]);
    checkNewNames(ckpt, [name], new Set(consumes));
    const biasDtype = first.hasBias ? ckpt.store.info(`${first.name}.bias`).dtype : undefined;
    const opts = writeOptions(ckpt, first, ckpt.format);
    const N = infos.reduce((a, l) => a + l.outFeatures, 0);
    const rewrite: Rewrite = {
      consumes,
      outputs: layerOutputs(
        ckpt.format,
        { ...layerShape(ckpt, first), outFeatures: N },
        name,
        opts,
        biasDtype,
      ),
      produce: () =>
        produceLayer(
          ckpt.format,
          mergeLayers(infos.map((l) => readWithBias(ckpt, l))),
          name,
          opts,
          biasDtype,
        ),
    };
    const r = await rewriteCheckpoint(input, output, ckpt.store, {
      rewrites: [rewrite],
      verify(dir) {
        const out = openQuantized(dir);
        try {
          const whole = readWithBias(out, findLayer(out, name));
          const W = dequantize(whole);
          let row = 0;
          for (const l of infos) {
            assertRows(whole, W, row, readWithBias(ckpt, l), `rows ${row}.. of ${name} are not ${l.name}`);
            row += l.outFeatures;
          }
        } finally {
          out.close();
        }
      },
    });
    return { format: ckpt.format, layers: [{ name, outFeatures: N }], verified: true, shards: r.shards };
  } finally {
    ckpt.close();
  }
}
