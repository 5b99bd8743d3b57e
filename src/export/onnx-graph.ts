/**
 * Building an ONNX graph node by node: unique names, cached constants, graph inputs and outputs, and
 * initializers handed to a weight sink that keeps them inline or appends them to an external data file
 * as they come (so a large model's weights are written once and never held together).
 */
import { closeSync, openSync } from "node:fs";
import { basename } from "node:path";
import {
  Attribute,
  ExternalLocation,
  ModelSpec,
  OnnxDType,
  modelProto,
  nodeProto,
  tensorProto,
  valueInfoProto,
} from "../io/onnx-proto.js";
import { ProtoMessage, writeAll } from "../io/protobuf.js";

export type Dim = number | string;

/** Where initializer bytes go. */
export interface WeightSink {
  /** the bytes to embed in the model (the array itself, kept until written), or where they were written */
  place(bytes: Uint8Array): Uint8Array | ExternalLocation;
  /** bytes written outside the model file so far */
  readonly externalBytes: number;
  close(): void;
}

/** Every initializer inside the model file (protobuf caps a file at 2 GiB). */
export const inlineWeights: WeightSink = { place: (b) => b, externalBytes: 0, close() {} };

/** tensors below this size stay inside the model file even with external data (onnx's own default) */
const EXTERNAL_MIN_BYTES = 1024;
/** offsets of external tensors are aligned so a runtime can map them */
const EXTERNAL_ALIGN = 64;

/** Initializers of EXTERNAL_MIN_BYTES or more appended to `path`, named relative to the model file. */
export class ExternalWeights implements WeightSink {
  private readonly fd: number;
  private offset = 0;

  constructor(
    private readonly path: string,
    /** the name the model file records (the data file's final name, beside the model) */
    private readonly location = basename(path),
  ) {
    this.fd = openSync(path, "w");
  }

  get externalBytes(): number {
    return this.offset;
  }

  place(bytes: Uint8Array): Uint8Array | ExternalLocation {
    if (bytes.byteLength < EXTERNAL_MIN_BYTES) return bytes;
    const pad = (EXTERNAL_ALIGN - (this.offset % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
    if (pad) writeAll(this.fd, new Uint8Array(pad));
    this.offset += pad;
    writeAll(this.fd, bytes);
    const at = { file: this.location, offset: this.offset, length: bytes.byteLength };
    this.offset += bytes.byteLength;
    return at;
  }

  close(): void {
    closeSync(this.fd);
  }
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export class GraphBuilder {
  private readonly nodes: ProtoMessage[] = [];
  private readonly initializers: ProtoMessage[] = [];
  private readonly inputs: ProtoMessage[] = [];
  private readonly outputs: ProtoMessage[] = [];
  private readonly used = new Set<string>();
  private readonly constants = new Map<string, string>();
  /** outputs of nodes already built, by a caller's key: the same computation is not repeated */
  private readonly memo = new Map<string, string>();
  /** node name prefix, e.g. "/model/layers.0/attn" */
  scope = "";
  initializerBytes = 0;

  constructor(private readonly sink: WeightSink) {}

  private unique(name: string): string {
    let n = name;
    for (let i = 1; this.used.has(n); i++) n = `${name}_${i}`;
    this.used.add(n);
    return n;
  }

  /** one node with one output; `output` names it (a graph output), else it is named after the node */
  op(
    op: string,
    inputs: readonly string[],
    attributes?: Record<string, Attribute>,
    opts: { domain?: string; output?: string; name?: string } = {},
  ): string {
    return this.opN(op, inputs, 1, attributes, opts)[0];
  }

  opN(
    op: string,
    inputs: readonly string[],
    outputs: number,
    attributes?: Record<string, Attribute>,
    opts: { domain?: string; output?: string; name?: string } = {},
  ): string[] {
    const name = this.unique(`${this.scope}/${opts.name ?? op}`);
    const outs =
      opts.output !== undefined
        ? [this.unique(opts.output)]
        : Array.from({ length: outputs }, (_, i) => this.unique(`${name}/output_${i}`));
    this.nodes.push(nodeProto({ op, inputs, outputs: outs, name, domain: opts.domain, attributes }));
    return outs;
  }

  /** the output `build` makes, built once per key */
  memoized(key: string, build: () => string): string {
    let out = this.memo.get(key);
    if (out === undefined) {
      out = build();
      this.memo.set(key, out);
    }
    return out;
  }

  initializer(name: string, dtype: OnnxDType, dims: readonly number[], data: ArrayBufferView): string {
    const n = this.unique(name);
    const bytes = bytesOf(data);
    this.initializerBytes += bytes.byteLength;
    this.initializers.push(tensorProto(n, dtype, dims, this.sink.place(bytes)));
    return n;
  }

  /** an int64 constant (a scalar when `scalar`), shared by every node that uses the same values */
  int64(values: readonly number[], scalar = false): string {
    const key = `i64:${scalar ? "s" : "v"}:${values.join(",")}`;
    let name = this.constants.get(key);
    if (!name) {
      const data = BigInt64Array.from(values.map((v) => BigInt(v)));
      name = this.initializer(
        `const_i64_${this.constants.size}`,
        "INT64",
        scalar ? [] : [values.length],
        data,
      );
      this.constants.set(key, name);
    }
    return name;
  }

  /** a float32 scalar constant */
  float(value: number): string {
    const key = `f32:${value}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.initializer(`const_f32_${this.constants.size}`, "FLOAT", [], Float32Array.of(value));
      this.constants.set(key, name);
    }
    return name;
  }

  input(name: string, dtype: OnnxDType, dims: readonly Dim[]): string {
    this.used.add(name);
    this.inputs.push(valueInfoProto(name, dtype, dims));
    return name;
  }

  output(name: string, dtype: OnnxDType, dims: readonly Dim[]): void {
    this.outputs.push(valueInfoProto(name, dtype, dims));
  }

  model(spec: Omit<ModelSpec, "nodes" | "initializers" | "inputs" | "outputs">): ProtoMessage {
    return modelProto({
      ...spec,
      nodes: this.nodes,
      initializers: this.initializers,
      inputs: this.inputs,
      outputs: this.outputs,
    });
  }
}
