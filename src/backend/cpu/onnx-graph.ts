/**
 * The few ONNX protobuf messages a one-operator CPU model needs (ModelProto with a graph of nodes,
 * initializers and typed inputs/outputs), encoded by hand: ONNX Runtime takes the bytes directly.
 * Field numbers follow onnx.proto3.
 */

export const ONNX_FLOAT = 1;
export const ONNX_UINT8 = 2;
export const ONNX_INT32 = 6;
export const ONNX_INT64 = 7;

/** An encoded message as a list of chunks (large tensors are not copied until the end). */
type Bytes = Uint8Array[];

function varint(v: number): Uint8Array {
  let n = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Uint8Array.from(out);
}

const size = (m: Bytes) => m.reduce((s, c) => s + c.length, 0);
const key = (field: number, wire: number) => varint((field << 3) | wire);
const int = (field: number, v: number): Bytes => [key(field, 0), varint(v)];
/** a length-delimited field: bytes, a string or a nested message */
const bytes = (field: number, b: Uint8Array | Bytes): Bytes => {
  const parts = b instanceof Uint8Array ? [b] : b;
  return [key(field, 2), varint(size(parts)), ...parts];
};
const str = (field: number, s: string) => bytes(field, new Uint8Array(Buffer.from(s, "utf8")));

export interface OnnxTensor {
  name: string;
  type: number;
  dims: number[];
  data: Uint8Array | Float32Array | Int32Array | BigInt64Array;
}

function tensor(t: OnnxTensor): Bytes {
  const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return [...t.dims.flatMap((d) => int(1, d)), ...int(2, t.type), ...str(8, t.name), ...bytes(9, raw)];
}

export interface OnnxNode {
  op: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  /** integer attributes */
  attrs?: Record<string, number>;
}

function node(n: OnnxNode, i: number): Bytes {
  const attrs = Object.entries(n.attrs ?? {}).map(([name, v]) =>
    bytes(5, [...str(1, name), ...int(3, v), ...int(20, 2 /* AttributeType INT */)]),
  );
  return [
    ...n.inputs.flatMap((s) => str(1, s)),
    ...n.outputs.flatMap((s) => str(2, s)),
    ...str(3, `${n.op}_${i}`),
    ...str(4, n.op),
    ...attrs.flat(),
    ...(n.domain ? str(7, n.domain) : []),
  ];
}

/** A value's name, element type and shape (a string is a symbolic dimension). */
export interface OnnxValue {
  name: string;
  type: number;
  shape: (number | string)[];
}

function valueInfo(v: OnnxValue): Bytes {
  const dims = v.shape.map((d) => bytes(1, typeof d === "number" ? int(1, d) : str(2, d)));
  const tensorType = [...int(1, v.type), ...bytes(2, dims.flat())];
  return [...str(1, v.name), ...bytes(2, bytes(1, tensorType))];
}

export interface OnnxGraph {
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValue[];
  outputs: OnnxValue[];
}

/** A serialized ModelProto (IR 8, opset 17 and com.microsoft 1). */
export function onnxModel(g: OnnxGraph): Uint8Array {
  const graph = [
    ...g.nodes.flatMap((n, i) => bytes(1, node(n, i))),
    ...str(2, "main"),
    ...g.initializers.flatMap((t) => bytes(5, tensor(t))),
    ...g.inputs.flatMap((v) => bytes(11, valueInfo(v))),
    ...g.outputs.flatMap((v) => bytes(12, valueInfo(v))),
  ];
  const opset = (domain: string, version: number) => bytes(8, [...str(1, domain), ...int(2, version)]);
  const model = [
    ...int(1, 8),
    ...str(2, "gptq-ts"),
    ...bytes(7, graph),
    ...opset("", 17),
    ...opset("com.microsoft", 1),
  ];
  const out = new Uint8Array(size(model));
  let at = 0;
  for (const c of model) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
