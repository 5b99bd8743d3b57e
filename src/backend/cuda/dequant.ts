/** Launchers for the fp16 dequantization kernels (dequant.cu): GPTQ v1/v2 at 2/3/4/8 bits and Marlin. */
import { Bits, GptqTensors, MarlinTensors, numGroups } from "../../formats/types.js";
import { GptqError } from "../../util/errors.js";
import { CudaDevice, DeviceBuffer, i32, ptr } from "./device.js";

export interface GptqShape {
  inFeatures: number;
  outFeatures: number;
  bits: Bits;
  groupSize: number;
}

/** GPTQ tensors resident on the device. */
export interface DeviceGptq {
  shape: GptqShape;
  version: "v1" | "v2";
  qweight: DeviceBuffer;
  qzeros: DeviceBuffer;
  scales: DeviceBuffer;
  gIdx: DeviceBuffer;
}

export function uploadGptq(
  dev: CudaDevice,
  t: GptqTensors,
  shape: GptqShape,
  version: "v1" | "v2",
): DeviceGptq {
  const { inFeatures: K, outFeatures: N, bits } = shape;
  const G = numGroups(K, shape.groupSize);
  const perWord = 32 / bits;
  if (K % 32 !== 0 && (bits === 3 || K % perWord !== 0))
    throw new GptqError(
      `GPTQ ${bits}-bit layer with in_features ${K}: the packing needs a multiple of ${bits === 3 ? 32 : perWord}`,
    );
  if (t.qweight.length !== ((K * bits) / 32) * N)
    throw new GptqError(`qweight has ${t.qweight.length} words, expected ${((K * bits) / 32) * N}`);
  if (t.qzeros.length !== G * ((N * bits) / 32))
    throw new GptqError(`qzeros has ${t.qzeros.length} words, expected ${G * ((N * bits) / 32)}`);
  return {
    shape,
    version,
    qweight: dev.upload(t.qweight),
    qzeros: dev.upload(t.qzeros),
    scales: dev.upload(t.scales),
    gIdx: dev.upload(t.gIdx),
  };
}

/** out (fp16 K x N) = the GPTQ layer's weights, in the qweight orientation. */
export function dequantGptq(dev: CudaDevice, g: DeviceGptq, out: DeviceBuffer): void {
  const { inFeatures: K, outFeatures: N, bits } = g.shape;
  const k = dev.kernel(import.meta.url, "kernels/dequant.cu", "gptq_dequant");
  dev.launch(k, [Math.ceil(N / 256), K, 1], 256, 0, [
    ptr(g.qweight),
    ptr(g.qzeros),
    ptr(g.scales),
    ptr(g.gIdx),
    ptr(out),
    i32(K),
    i32(N),
    i32(bits),
    i32(g.version === "v1" ? 1 : 0),
  ]);
}

/**
 * Marlin's tile permutation as the serialized format defines it: perm[i] = index, in the 16x16-tiled
 * order, of the code stored at position i of each 1024; and the inverse scale permutation.
 */
export function marlinTables(): {
  perm: Int32Array;
  scaleInvGrouped: Int32Array;
  scaleInvChannel: Int32Array;
} {
  const perm1: number[] = [];
  for (let i = 0; i < 32; i++) {
    const col = i >> 2;
    for (const block of [0, 1])
      for (const row of [2 * (i % 4), 2 * (i % 4) + 1, 2 * ((i % 4) + 4), 2 * ((i % 4) + 4) + 1])
        perm1.push(16 * row + col + 8 * block);
  }
  const base: number[] = [];
  for (let j = 0; j < 4; j++) for (const p of perm1) base.push(p + 256 * j);
  const interleave = [0, 2, 4, 6, 1, 3, 5, 7];
  const perm = new Int32Array(1024);
  for (let i = 0; i < 1024; i++) perm[i] = base[(i & ~7) + interleave[i & 7]];
  const grouped: number[] = [];
  for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) grouped.push(i + 8 * j);
  const channel: number[] = [];
  for (let i = 0; i < 4; i++) for (const j of [0, 1, 8, 9, 16, 17, 24, 25]) channel.push(2 * i + j);
  const inverse = (p: number[]) => {
    const inv = new Int32Array(p.length);
    p.forEach((src, dst) => (inv[src] = dst));
    return inv;
  };
  return { perm, scaleInvGrouped: inverse(grouped), scaleInvChannel: inverse(channel) };
}

/** out (fp16 K x N) = the Marlin layer's weights. */
export function dequantMarlin(
  dev: CudaDevice,
  t: MarlinTensors,
  shape: { inFeatures: number; outFeatures: number; groupSize: number },
  out: DeviceBuffer,
): void {
  const { inFeatures: K, outFeatures: N, groupSize } = shape;
  if (K % 16 !== 0 || N % 64 !== 0)
    throw new GptqError(`Marlin needs in_features % 16 and out_features % 64, got ${K} x ${N}`);
  const tables = marlinTables();
  const inv = groupSize === -1 ? tables.scaleInvChannel : tables.scaleInvGrouped;
  const bufs = [dev.upload(t.B), dev.upload(t.s), dev.upload(tables.perm), dev.upload(inv)];
  const k = dev.kernel(import.meta.url, "kernels/dequant.cu", "marlin_dequant");
  dev.launch(k, [Math.ceil((16 * N) / 256), K / 16, 1], 256, 0, [
    ptr(bufs[0]),
    ptr(bufs[1]),
    ptr(bufs[2]),
    ptr(bufs[3]),
    i32(inv.length),
    ptr(out),
    i32(K),
    i32(N),
    i32(groupSize),
  ]);
  dev.synchronize();
  for (const b of bufs) dev.free(b);
}
