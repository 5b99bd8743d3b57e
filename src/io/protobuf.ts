/**
 * Protocol-buffer encoding, the little of it ONNX files need: varints (int64 included), fixed32 floats,
 * length-delimited strings, bytes and nested messages. A message is kept as a list of byte pieces and
 * its length, so large payloads (weights) are never copied into one buffer before they are written.
 */
import { writeSync } from "node:fs";

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

/** A varint: non-negative numbers in 7-bit groups; negative ones as 64-bit two's complement (10 bytes). */
export function encodeVarint(value: number | bigint): Uint8Array {
  if (typeof value === "number" && value >= 0 && value < 2 ** 31) {
    const out: number[] = [];
    let n = value;
    while (n >= 0x80) {
      out.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    out.push(n);
    return Uint8Array.from(out);
  }
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

function key(field: number, wire: number): Uint8Array {
  return encodeVarint((field << 3) | wire);
}

const utf8 = new TextEncoder();
const WRITE_BUFFER = 1 << 20;

/** writes all of `b` at the file's current position */
export function writeAll(fd: number, b: Uint8Array): void {
  let done = 0;
  while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done);
}

export class ProtoMessage {
  readonly parts: Uint8Array[] = [];
  byteLength = 0;

  private push(...pieces: Uint8Array[]): this {
    for (const p of pieces) {
      this.parts.push(p);
      this.byteLength += p.byteLength;
    }
    return this;
  }

  /** int32, int64 and enum fields (the same varint on the wire) */
  int(field: number, value: number | bigint): this {
    if (typeof value === "number" && !Number.isSafeInteger(value))
      throw new RangeError(`protobuf field ${field}: ${value} is not a safe integer`);
    return this.push(key(field, WIRE_VARINT), encodeVarint(value));
  }

  /** a repeated integer field, packed (proto3's default encoding) */
  packedInts(field: number, values: readonly number[]): this {
    const body = new ProtoMessage();
    for (const v of values) body.push(encodeVarint(v));
    return this.lengthDelimited(field, body);
  }

  float(field: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    return this.push(key(field, WIRE_FIXED32), b);
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  /** bytes as given (not copied: the caller keeps them unchanged until the message is written) */
  bytes(field: number, value: Uint8Array): this {
    return this.push(key(field, WIRE_LEN), encodeVarint(value.byteLength), value);
  }

  message(field: number, value: ProtoMessage): this {
    return this.lengthDelimited(field, value);
  }

  private lengthDelimited(field: number, body: ProtoMessage): this {
    return this.push(key(field, WIRE_LEN), encodeVarint(body.byteLength), ...body.parts);
  }

  /** writes every piece to an open file (small pieces gathered into one buffer, large ones as they are) */
  writeTo(fd: number): void {
    const buffer = new Uint8Array(WRITE_BUFFER);
    let used = 0;
    const flush = () => {
      writeAll(fd, buffer.subarray(0, used));
      used = 0;
    };
    for (const p of this.parts) {
      if (used + p.byteLength > WRITE_BUFFER) flush();
      if (p.byteLength >= WRITE_BUFFER / 4) writeAll(fd, p);
      else {
        buffer.set(p, used);
        used += p.byteLength;
      }
    }
    flush();
  }

  /** the whole message in one buffer (for small messages and tests) */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.byteLength);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}
