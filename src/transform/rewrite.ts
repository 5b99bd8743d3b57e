/**
 * The engine behind every command that turns one checkpoint directory into another (convert,
 * dequantize, split, merge): the output is built in a temporary sibling and renamed into place, the
 * input is only read, every file and tensor not rewritten is carried over, and rewritten layers are
 * produced one at a time as the sharded writer reaches them, so memory holds about one layer.
 */
import { cpSync, readdirSync, realpathSync, statSync, existsSync } from "node:fs";
import { join, resolve, sep } from "node:path";
import { buildDirAtomic, treeBytes } from "../io/atomic.js";
import { checkOutputDir, tensorFileBytes } from "../io/output.js";
import { TensorEntry } from "../io/safetensors.js";
import { INDEX_FILE, TensorStore, writeCheckpointTensors } from "../io/store.js";
import { DType } from "../tensor/dtype.js";
import { TypedArray } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";

/** Several source tensors replaced by several new ones (a layer converted, split, merged...). */
export interface Rewrite {
  /** source tensors this rewrite replaces; its outputs go where the first of them stood */
  consumes: readonly string[];
  outputs: readonly { name: string; dtype: DType; shape: number[] }[];
  /** computes every output (called once, when the writer reaches the first) */
  produce(): Map<string, TypedArray>;
}

export interface RewritePlan {
  rewrites: readonly Rewrite[];
  /** writes or fixes the config files in the output directory (the input's files are already copied) */
  finish?(dir: string): void;
  /** checks the finished output before it is renamed into place; throws GptqError to abort */
  verify?(dir: string): void;
}

export interface RewriteResult {
  shards: string[];
  tensorsCopied: number;
  tensorsWritten: number;
  filesCopied: string[];
}

/** Refuses an output that is the input or lies inside it (building it would modify the input). */
export function checkOutputPath(input: string, output: string): void {
  const a = realpathSync(input);
  let b = resolve(output);
  if (existsSync(b)) b = realpathSync(b);
  if (a === b || b.startsWith(a + sep))
    throw new GptqError(`output ${output} is inside the input ${input}; write to a new directory beside it`);
  if (a.startsWith(b + sep))
    throw new GptqError(`output ${output} contains the input ${input}; choose a new directory`);
}

export async function rewriteCheckpoint(
  input: string,
  output: string,
  store: TensorStore,
  plan: RewritePlan,
): Promise<RewriteResult> {
  checkOutputPath(input, output);
  const owner = new Map<string, Rewrite>();
  for (const r of plan.rewrites)
    for (const name of r.consumes) {
      if (!store.has(name)) throw new GptqError(`${input}: no tensor named "${name}"`);
      owner.set(name, r);
    }
  const entries: TensorEntry[] = [];
  const emitted = new Set<Rewrite>();
  let tensorsCopied = 0;
  for (const name of store.names()) {
    const r = owner.get(name);
    if (r) {
      if (!emitted.has(r)) {
        emitted.add(r);
        entries.push(...lazyOutputs(r));
      }
      continue;
    }
    const info = store.info(name);
    entries.push({
      name,
      dtype: info.dtype,
      shape: info.shape,
      data: { chunks: () => store.readChunks(name) },
    });
    tensorsCopied++;
  }
  // keep the input's sharding: its largest shard bounds ours (a single file: HF's default 5 GB)
  const maxShardBytes = store.files.length > 1 ? Math.max(...store.files.map((f) => f.fileSize)) : 5e9;
  const others = otherFiles(input, new Set(store.shardNames));
  // before any work: the output can be created and what it will hold fits the disk
  checkOutputDir(
    output,
    tensorFileBytes(entries) + others.reduce((s, f) => s + treeBytes(join(input, f)), 0),
  );
  return buildDirAtomic(output, (tmp) => {
    const filesCopied = copyFiles(input, tmp, others);
    const shards = writeCheckpointTensors(tmp, entries, { maxShardBytes, metadata: store.metadata() });
    plan.finish?.(tmp);
    plan.verify?.(tmp);
    return { shards, tensorsCopied, tensorsWritten: entries.length - tensorsCopied, filesCopied };
  });
}

/** One producer per output; the first computes them all, each hands its array over and forgets it. */
function lazyOutputs(r: Rewrite): TensorEntry[] {
  let pending: Map<string, TypedArray> | undefined;
  return r.outputs.map((o) => ({
    ...o,
    data: () => {
      pending ??= r.produce();
      const data = pending.get(o.name);
      if (!data) throw new Error(`rewrite produced no tensor "${o.name}"`);
      pending.delete(o.name);
      if (!pending.size) pending = undefined;
      return data;
    },
  }));
}

/** Every file and folder of the input except its safetensors shards and index: carried over as they are. */
function otherFiles(input: string, shards: ReadonlySet<string>): string[] {
  return readdirSync(input)
    .sort()
    .filter((name) => !(shards.has(name) || name === INDEX_FILE || name.endsWith(".safetensors")));
}

function copyFiles(input: string, out: string, names: readonly string[]): string[] {
  for (const name of names) {
    const src = join(input, name);
    cpSync(src, join(out, name), { recursive: statSync(src).isDirectory(), preserveTimestamps: true });
  }
  return [...names];
}
