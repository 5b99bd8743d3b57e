/** Corrupting stored checkpoints in place, for the tests that must refuse them. */
import { closeSync, openSync, readdirSync, writeSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile } from "../../src/io/safetensors.js";
import { floatToHalf, floatsToBf16s } from "../../src/tensor/dtype.js";

/** The shard of `dir` that stores `tensor`. */
export function shardOf(dir: string, tensor: string): string {
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".safetensors"))) {
    const file = SafetensorsFile.open(join(dir, f));
    try {
      if (file.has(tensor)) return join(dir, f);
    } finally {
      file.close();
    }
  }
  throw new Error(`${dir}: no shard stores ${tensor}`);
}

/** Overwrites element `index` (flat) of a stored float tensor with NaN, +Inf, -Inf or a number. */
export function pokeFloat(
  dir: string,
  tensor: string,
  index: number,
  value: "NaN" | "Inf" | "-Inf" | number,
): void {
  const v =
    typeof value === "number" ? value : value === "NaN" ? NaN : value === "Inf" ? Infinity : -Infinity;
  const path = shardOf(dir, tensor);
  const file = SafetensorsFile.open(path);
  const info = file.info(tensor);
  file.close();
  let bytes: Uint8Array;
  if (info.dtype === "F16") bytes = new Uint8Array(Uint16Array.of(floatToHalf(v)).buffer);
  else if (info.dtype === "BF16") bytes = new Uint8Array(floatsToBf16s(Float32Array.of(v)).buffer);
  else if (info.dtype === "F32") bytes = new Uint8Array(Float32Array.of(v).buffer);
  else throw new Error(`${tensor} is ${info.dtype}, not a float tensor`);
  pokeBytes(path, info.start + index * bytes.length, bytes);
}

/** Overwrites int32 element `index` (flat) of a stored tensor. */
export function pokeInt32(dir: string, tensor: string, index: number, value: number): void {
  const path = shardOf(dir, tensor);
  const file = SafetensorsFile.open(path);
  const info = file.info(tensor);
  file.close();
  if (info.dtype !== "I32") throw new Error(`${tensor} is ${info.dtype}, not I32`);
  pokeBytes(path, info.start + index * 4, new Uint8Array(Int32Array.of(value).buffer));
}

function pokeBytes(path: string, pos: number, bytes: Uint8Array): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, bytes, 0, bytes.length, pos);
  } finally {
    closeSync(fd);
  }
}
