/**
 * A one-operator CPU model for ONNX Runtime (nodes, initializers and typed inputs/outputs), serialized
 * with the project's ONNX message writer: ONNX Runtime takes the bytes directly.
 */
import { OnnxDType, attr, modelProto, nodeProto, tensorProto, valueInfoProto } from "../../io/onnx-proto.js";

export interface OnnxTensor {
  name: string;
  type: OnnxDType;
  dims: number[];
  data: Uint8Array | Float32Array | Int32Array | BigInt64Array;
}

export interface OnnxNode {
  op: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  /** integer attributes */
  attrs?: Record<string, number>;
}

/** A value's name, element type and shape (a string is a symbolic dimension). */
export interface OnnxValue {
  name: string;
  type: OnnxDType;
  shape: (number | string)[];
}

export interface OnnxGraph {
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValue[];
  outputs: OnnxValue[];
}

/** A serialized ModelProto (IR 8, opset 17 and com.microsoft 1). */
export function onnxModel(g: OnnxGraph): Uint8Array {
  return modelProto({
    irVersion: 8,
    opsets: { "": 17, "com.microsoft": 1 },
    producer: "gptq-ts",
    graphName: "main",
    nodes: g.nodes.map((n, i) =>
      nodeProto({
        op: n.op,
        domain: n.domain,
        inputs: n.inputs,
        outputs: n.outputs,
        name: `${n.op}_${i}`,
        attributes: Object.fromEntries(Object.entries(n.attrs ?? {}).map(([k, v]) => [k, attr.int(v)])),
      }),
    ),
    initializers: g.initializers.map((t) =>
      tensorProto(
        t.name,
        t.type,
        t.dims,
        new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      ),
    ),
    inputs: g.inputs.map((v) => valueInfoProto(v.name, v.type, v.shape)),
    outputs: g.outputs.map((v) => valueInfoProto(v.name, v.type, v.shape)),
  }).toBytes();
}
