/**
 * The ONNX messages an exported model needs (onnx.proto field numbers), built on the protobuf writer:
 * ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto (raw or external data), ValueInfoProto
 * with symbolic dimensions, and OperatorSetIdProto.
 */
import { ProtoMessage } from "./protobuf.js";

/** TensorProto.DataType values */
export const ONNX_DTYPE = { FLOAT: 1, UINT8: 2, INT32: 6, INT64: 7, BOOL: 9 } as const;
export type OnnxDType = keyof typeof ONNX_DTYPE;

/** AttributeProto.AttributeType values */
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_INTS = 7;

export type Attribute =
  | { kind: "int"; value: number }
  | { kind: "float"; value: number }
  | { kind: "ints"; value: readonly number[] }
  | { kind: "string"; value: string };

export const attr = {
  int: (value: number): Attribute => ({ kind: "int", value }),
  float: (value: number): Attribute => ({ kind: "float", value }),
  ints: (value: readonly number[]): Attribute => ({ kind: "ints", value }),
  string: (value: string): Attribute => ({ kind: "string", value }),
};

function attributeProto(name: string, a: Attribute): ProtoMessage {
  const m = new ProtoMessage().string(1, name);
  switch (a.kind) {
    case "float":
      return m.float(2, a.value).int(20, ATTR_FLOAT);
    case "int":
      return m.int(3, a.value).int(20, ATTR_INT);
    case "string":
      return m.string(4, a.value).int(20, ATTR_STRING);
    case "ints":
      // repeated int64 ints = 8, written unpacked as onnx's own serializer does
      for (const v of a.value) m.int(8, v);
      return m.int(20, ATTR_INTS);
  }
}

export interface NodeSpec {
  op: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  domain?: string;
  attributes?: Record<string, Attribute>;
}

export function nodeProto(n: NodeSpec): ProtoMessage {
  const m = new ProtoMessage();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.name).string(4, n.op);
  for (const [name, a] of Object.entries(n.attributes ?? {})) m.message(5, attributeProto(name, a));
  if (n.domain) m.string(7, n.domain);
  return m;
}

/** Where an external tensor's bytes are: a file beside the model, and the range in it. */
export interface ExternalLocation {
  file: string;
  offset: number;
  length: number;
}

export function tensorProto(
  name: string,
  dtype: OnnxDType,
  dims: readonly number[],
  data: Uint8Array | ExternalLocation,
): ProtoMessage {
  const m = new ProtoMessage().packedInts(1, dims).int(2, ONNX_DTYPE[dtype]).string(8, name);
  if (data instanceof Uint8Array) return m.bytes(9, data);
  const entry = (k: string, v: string) => new ProtoMessage().string(1, k).string(2, v);
  m.message(13, entry("location", data.file));
  m.message(13, entry("offset", String(data.offset)));
  m.message(13, entry("length", String(data.length)));
  return m.int(14, 1); // data_location = EXTERNAL
}

/** A graph input or output: element type and dimensions, numbers or symbolic names. */
export function valueInfoProto(
  name: string,
  dtype: OnnxDType,
  dims: readonly (number | string)[],
): ProtoMessage {
  const shape = new ProtoMessage();
  for (const d of dims)
    shape.message(1, typeof d === "number" ? new ProtoMessage().int(1, d) : new ProtoMessage().string(2, d));
  const tensorType = new ProtoMessage().int(1, ONNX_DTYPE[dtype]).message(2, shape);
  return new ProtoMessage().string(1, name).message(2, new ProtoMessage().message(1, tensorType));
}

export interface ModelSpec {
  irVersion: number;
  /** operator set versions by domain ("" is the default ONNX domain) */
  opsets: Record<string, number>;
  producer: string;
  graphName: string;
  nodes: ProtoMessage[];
  initializers: ProtoMessage[];
  inputs: ProtoMessage[];
  outputs: ProtoMessage[];
  metadata?: Record<string, string>;
}

export function modelProto(s: ModelSpec): ProtoMessage {
  const graph = new ProtoMessage();
  for (const n of s.nodes) graph.message(1, n);
  graph.string(2, s.graphName);
  for (const t of s.initializers) graph.message(5, t);
  for (const i of s.inputs) graph.message(11, i);
  for (const o of s.outputs) graph.message(12, o);
  const m = new ProtoMessage().int(1, s.irVersion).string(2, s.producer);
  m.message(7, graph);
  for (const [domain, version] of Object.entries(s.opsets))
    m.message(8, new ProtoMessage().string(1, domain).int(2, version));
  for (const [k, v] of Object.entries(s.metadata ?? {}))
    m.message(14, new ProtoMessage().string(1, k).string(2, v));
  return m;
}
