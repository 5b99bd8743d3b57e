/** Launchers for the fp16 dequantization kernels (dequant.cu): GPTQ v1/v2 at 2/3/4/8 bits and Marlin. */
import { Bits, GptqTensors, MarlinTensors, numGroups } from "../../../formats/types.js";
import { PERM, SCALE_PERM, SCALE_PERM_SINGLE } from "../../../formats/marlin.js";
import { GptqError } from "../../../util/errors.js";
import { CudaDevice, DeviceBuffer, i32, ptr } from "../device.js";

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
  const k = dev.kernel(import.meta.url, "dequant.cu", "gptq_dequant");
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
 * The Marlin format's permutations as the kernel wants them: perm[i] = index, in the 16x16-tiled order,
 * of the code stored at position i of each 1024; and for each column of a block of 64 (grouped) or 32
 * (per-channel) the position its scale is stored at.
 */
export function marlinTables(): {
  perm: Int32Array;
  scaleInvGrouped: Int32Array;
  scaleInvChannel: Int32Array;
} {
  const inverse = (p: Int32Array) => {
    const inv = new Int32Array(p.length);
    p.forEach((src, dst) => (inv[src] = dst));
    return inv;
  };
  return { perm: PERM, scaleInvGrouped: inverse(SCALE_PERM), scaleInvChannel: inverse(SCALE_PERM_SINGLE) };
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
  const k = dev.kernel(import.meta.url, "dequant.cu", "marlin_dequant");
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
