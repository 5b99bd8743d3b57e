/**
 * safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
 * then the data. The reader validates the header completely before anything is read, and reads tensors
 * on demand with positioned reads, so a multi-GB shard is never loaded whole.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { DType, DTYPE_BYTES, isDType } from "../tensor/dtype.js";
import { Tensor, TypedArray, bytesOf, numel, viewAs } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { parseJsonStrict } from "../util/json.js";
import { writeFileAtomic } from "./atomic.js";

/** Headers above this are refused rather than allocated (real ones are well under 10 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** byte offsets relative to the start of the file */
  start: number;
  end: number;
}

export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly fileSize: number;
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    fileSize: number,
  ) {
    this.fd = fd;
    this.tensors = tensors;
    this.metadata = metadata;
    this.fileSize = fileSize;
  }

  /** Opens and validates a file; reads only its header. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw new GptqError(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new GptqError(`${path}: not a regular file`);
      const size = st.size;
      const { tensors, metadata } = parseHeader(path, (pos, len) => readExact(fd, path, pos, len), size);
      return new SafetensorsFile(path, fd, tensors, metadata, size);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new GptqError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    if (this.fd === undefined) throw new Error(`${this.path} is closed`);
    return readExact(this.fd, this.path, t.start, t.end - t.start);
  }

  /** A tensor's bytes in pieces of at most `chunkBytes`, for copying without holding it whole. */
  *readChunks(name: string, chunkBytes = 64 << 20): Generator<Uint8Array> {
    const t = this.info(name);
    const buf = new Uint8Array(Math.max(1, Math.min(chunkBytes, t.end - t.start)));
    for (let pos = t.start; pos < t.end; pos += buf.length) {
      if (this.fd === undefined) throw new Error(`${this.path} is closed`);
      const len = Math.min(buf.length, t.end - pos);
      let done = 0;
      while (done < len) {
        const n = readSync(this.fd, buf, done, len - done, pos + done);
        if (n === 0)
          throw new GptqError(`${this.path}: file ends at byte ${pos + done} inside tensor "${name}"`);
        done += n;
      }
      yield buf.subarray(0, len);
    }
  }

  read(name: string): Tensor {
    const t = this.info(name);
    return { dtype: t.dtype, shape: [...t.shape], data: viewAs(t.dtype, this.readBytes(name)) };
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function readExact(fd: number, path: string, pos: number, len: number): Uint8Array {
  // A fresh ArrayBuffer keeps every dtype's view aligned.
  const out = new Uint8Array(new ArrayBuffer(len));
  let done = 0;
  while (done < len) {
    let n: number;
    try {
      n = readSync(fd, out, done, Math.min(len - done, 1 << 30), pos + done);
    } catch (e) {
      throw new GptqError(
        `${path}: read failed at byte ${pos + done}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      );
    }
    if (n === 0)
      throw new GptqError(`${path}: file ends at byte ${pos + done}, expected ${len - done} more bytes`);
    done += n;
  }
  return out;
}

/** Validates a header; `read` fetches bytes by absolute position. Exported for the malformed-input tests. */
export function parseHeader(
  path: string,
  read: (pos: number, len: number) => Uint8Array,
  fileSize: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const bad = (msg: string): never => {
    throw new GptqError(`${path}: not a valid safetensors file: ${msg}`);
  };
  if (fileSize < 8) bad(`file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const lenBytes = read(0, 8);
  const headerLen = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLen === 0n) bad("header length is 0");
  if (headerLen > BigInt(MAX_HEADER_BYTES))
    bad(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLen > BigInt(fileSize - 8))
    bad(`header length ${headerLen} runs past the end of the ${fileSize}-byte file`);
  const hlen = Number(headerLen);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(read(8, hlen));
  } catch {
    return bad("header is not valid UTF-8");
  }
  const header = parseJsonStrict(text.replace(/[ ]+$/, ""), `${path}: header`);
  if (typeof header !== "object" || header === null || Array.isArray(header))
    return bad("header is not a JSON object");
  const dataStart = 8 + hlen;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry))
        bad("__metadata__ is not an object");
      for (const [k, v] of Object.entries(entry as Record<string, unknown>))
        if (typeof v !== "string") bad(`__metadata__["${k}"] is not a string`);
      metadata = { ...(entry as Record<string, string>) };
      continue;
    }
    const where = `tensor "${name}"`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry))
      return bad(`${where} is not an object`);
    const { dtype, shape, data_offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string" || !isDType(dtype))
      return bad(`${where} has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0))
      return bad(`${where} has an invalid shape ${JSON.stringify(shape)}`);
    if (
      !Array.isArray(data_offsets) ||
      data_offsets.length !== 2 ||
      !data_offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)
    )
      return bad(`${where} has invalid data_offsets ${JSON.stringify(data_offsets)}`);
    const [b, e] = data_offsets as [number, number];
    if (e < b) bad(`${where} has data_offsets [${b}, ${e}] that end before they begin`);
    if (e > dataSize) bad(`${where} data_offsets [${b}, ${e}] run past the ${dataSize}-byte data section`);
    const expected = numel(shape as number[]) * DTYPE_BYTES[dtype];
    if (e - b !== expected)
      bad(
        `${where} ${dtype}${JSON.stringify(shape)} needs ${expected} bytes but data_offsets [${b}, ${e}] hold ${e - b}`,
      );
    tensors.set(name, { name, dtype, shape: shape as number[], start: dataStart + b, end: dataStart + e });
  }
  const sorted = [...tensors.values()].filter((t) => t.end > t.start).sort((x, y) => x.start - y.start);
  for (let i = 1; i < sorted.length; i++)
    if (sorted[i].start < sorted[i - 1].end)
      bad(`tensors "${sorted[i - 1].name}" and "${sorted[i].name}" overlap`);
  return { tensors, metadata };
}

/** Bytes handed over in pieces (a tensor copied from another file without holding it whole). */
export interface ChunkSource {
  chunks(): Iterable<Uint8Array>;
}

/**
 * A tensor to write: its bytes now, a producer called when the writer reaches it, or a chunk source
 * read as it is written (both keep memory bounded).
 */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  data: TypedArray | (() => TypedArray) | ChunkSource;
}

/** A tensor's name, dtype and shape: all a header and a shard plan need. */
export type TensorSpec = Pick<TensorEntry, "name" | "dtype" | "shape">;

export function entry(name: string, t: Tensor): TensorEntry {
  return { name, dtype: t.dtype, shape: t.shape, data: t.data };
}

/** Builds the header bytes (padded to 8 bytes, as the reference writer does). */
export function buildHeader(entries: readonly TensorSpec[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.name)) throw new GptqError(`two tensors named "${e.name}"`);
    seen.add(e.name);
    const size = numel(e.shape) * DTYPE_BYTES[e.dtype];
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((json.length + 8) % 8)) % 8);
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

export function entryBytes(e: TensorSpec): number {
  return numel(e.shape) * DTYPE_BYTES[e.dtype];
}

/** Writes a safetensors file atomically (temporary sibling, then rename). */
export function writeSafetensors(
  path: string,
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(path, (fd) => {
    writeAll(fd, buildHeader(entries, metadata));
    for (const e of entries) {
      if (!ArrayBuffer.isView(e.data) && typeof e.data === "object") {
        const want = entryBytes(e);
        let written = 0;
        for (const chunk of e.data.chunks()) {
          written += chunk.byteLength;
          if (written > want) break;
          writeAll(fd, chunk);
        }
        if (written !== want)
          throw new GptqError(
            `tensor "${e.name}": ${written > want ? "more than" : written} bytes given for ${e.dtype}${JSON.stringify(e.shape)} (${want} bytes)`,
          );
        continue;
      }
      const data = typeof e.data === "function" ? e.data() : e.data;
      const bytes = bytesOf(data);
      if (bytes.byteLength !== entryBytes(e))
        throw new GptqError(
          `tensor "${e.name}": ${bytes.byteLength} bytes given for ${e.dtype}${JSON.stringify(e.shape)}`,
        );
      writeAll(fd, bytes);
    }
  });
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** Reads every tensor of a small file (fixtures, tests). */
export function readAllTensors(path: string): {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
} {
  const f = SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, Tensor>();
    for (const name of f.names()) tensors.set(name, f.read(name));
    return { tensors, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}
