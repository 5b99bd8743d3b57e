/**
 * The tensors of a checkpoint directory, however they are sharded: `model.safetensors`, or
 * `model.safetensors.index.json` with its `weight_map`, or any set of `*.safetensors` files.
 * Opening reads headers only.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeSync,
} from "node:fs";
import { basename, join } from "node:path";
import { Tensor, TypedArray, bytesOf, viewAs } from "../tensor/tensor.js";
import { Prefetcher } from "./prefetch.js";
import { GptqError } from "../util/errors.js";
import { parseJsonStrict } from "../util/json.js";
import { writeTextAtomic } from "./atomic.js";
import {
  SafetensorsFile,
  TensorEntry,
  TensorInfo,
  TensorSpec,
  buildHeader,
  entryBytes,
  writeSafetensors,
} from "./safetensors.js";

export const INDEX_FILE = "model.safetensors.index.json";
export const SINGLE_FILE = "model.safetensors";

export class TensorStore {
  private readonly owner = new Map<string, SafetensorsFile>();
  private prefetcher?: Prefetcher;

  private constructor(
    readonly dir: string,
    readonly files: SafetensorsFile[],
    /** shard file names, in order */
    readonly shardNames: string[],
  ) {
    for (const f of files)
      for (const name of f.names()) {
        const prev = this.owner.get(name);
        if (prev)
          throw new GptqError(`${dir}: tensor "${name}" is stored in both ${prev.path} and ${f.path}`);
        this.owner.set(name, f);
      }
  }

  static open(dir: string): TensorStore {
    if (!existsSync(dir)) throw new GptqError(`${dir}: no such directory`);
    if (!statSync(dir).isDirectory())
      throw new GptqError(`${dir}: not a directory (expected a checkpoint directory)`);
    const files: SafetensorsFile[] = [];
    const close = () => files.forEach((f) => f.close());
    try {
      const indexPath = join(dir, INDEX_FILE);
      let shardNames: string[];
      let weightMap: Record<string, string> | undefined;
      if (existsSync(indexPath)) {
        let text: string;
        try {
          text = readFileSync(indexPath, "utf8");
        } catch (e) {
          throw new GptqError(`cannot read ${indexPath}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
        }
        const index = parseJsonStrict(text, indexPath) as { weight_map?: unknown };
        if (
          typeof index !== "object" ||
          index === null ||
          typeof index.weight_map !== "object" ||
          index.weight_map === null ||
          Array.isArray(index.weight_map)
        )
          throw new GptqError(`${indexPath}: no "weight_map" object`);
        weightMap = index.weight_map as Record<string, string>;
        shardNames = [...new Set(Object.values(weightMap))].sort();
        if (!shardNames.length) throw new GptqError(`${indexPath}: "weight_map" lists no tensors`);
        for (const s of shardNames) {
          if (typeof s !== "string" || !s.endsWith(".safetensors") || s.includes("/") || s.includes("\\"))
            throw new GptqError(`${indexPath}: invalid shard name ${JSON.stringify(s)}`);
          if (!existsSync(join(dir, s)))
            throw new GptqError(`${indexPath}: shard ${s} is missing from ${dir}`);
        }
      } else if (existsSync(join(dir, SINGLE_FILE))) {
        shardNames = [SINGLE_FILE];
      } else {
        shardNames = readdirSync(dir)
          .filter((n) => n.endsWith(".safetensors"))
          .sort();
        if (!shardNames.length) throw new GptqError(`${dir}: no .safetensors files`);
      }
      for (const s of shardNames) files.push(SafetensorsFile.open(join(dir, s)));
      const store = new TensorStore(dir, files, shardNames);
      if (weightMap) {
        for (const [name, shard] of Object.entries(weightMap)) {
          const f = store.owner.get(name);
          if (!f)
            throw new GptqError(`${indexPath}: tensor "${name}" is listed in ${shard} but not stored there`);
          if (basename(f.path) !== shard)
            throw new GptqError(
              `${indexPath}: tensor "${name}" is listed in ${shard} but stored in ${f.path}`,
            );
        }
        for (const name of store.owner.keys())
          if (!(name in weightMap))
            throw new GptqError(`${indexPath}: tensor "${name}" is stored but missing from weight_map`);
      }
      return store;
    } catch (e) {
      close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.owner.keys()];
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  /** the file tensor `name` is stored in */
  pathOf(name: string): string {
    return this.file(name).path;
  }

  read(name: string): Tensor {
    const ahead = this.prefetcher?.take(name);
    if (!ahead) return this.file(name).read(name);
    const { dtype, shape } = this.info(name);
    return { dtype, shape: [...shape], data: viewAs(dtype, ahead) };
  }

  /**
   * Starts reading these tensors on a thread of their own; `read` then takes them from there (waiting
   * only for what is still in flight). For the next layer's weights while the current one computes;
   * replaces an earlier prefetch's untaken tensors.
   */
  prefetch(names: readonly string[]): void {
    this.prefetcher ??= new Prefetcher();
    this.prefetcher.forget(); // what an earlier prefetch read and nobody took
    for (const name of names) {
      const f = this.file(name);
      const { start, end } = f.info(name);
      this.prefetcher.request(name, f.path, start, end - start);
    }
  }

  readChunks(name: string, chunkBytes?: number): Generator<Uint8Array> {
    return this.file(name).readChunks(name, chunkBytes);
  }

  metadata(): Record<string, string> {
    return Object.assign({}, ...this.files.map((f) => f.metadata)) as Record<string, string>;
  }

  close(): void {
    this.prefetcher?.close();
    this.prefetcher = undefined;
    for (const f of this.files) f.close();
  }

  private file(name: string): SafetensorsFile {
    const f = this.owner.get(name);
    if (!f) throw new GptqError(`${this.dir}: no tensor named "${name}"`);
    return f;
  }
}

export interface ShardOptions {
  /** bytes per shard; a tensor larger than this gets a shard of its own. Default 5 GB (HF's default). */
  maxShardBytes?: number;
  metadata?: Record<string, string>;
}

/**
 * The shard files tensors of these sizes go to, in order: one `model.safetensors`, or
 * `model-0000i-of-0000n.safetensors` of up to `maxShardBytes` each (a larger tensor gets its own).
 */
function planShards<T extends TensorSpec>(
  specs: readonly T[],
  maxShardBytes = 5e9,
): { file: string; tensors: T[] }[] {
  const shards: T[][] = [[]];
  let size = 0;
  for (const e of specs) {
    const b = entryBytes(e);
    if (size > 0 && size + b > maxShardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(e);
    size += b;
  }
  const n = shards.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  return shards.map((tensors, i) => ({
    file: n === 1 ? SINGLE_FILE : `model-${pad(i + 1)}-of-${pad(n)}.safetensors`,
    tensors,
  }));
}

/** The index of a sharded checkpoint (none for a single file). */
function writeIndex(dir: string, shards: readonly { file: string; tensors: readonly TensorSpec[] }[]): void {
  if (shards.length === 1) return;
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const s of shards)
    for (const e of s.tensors) {
      weightMap[e.name] = s.file;
      total += entryBytes(e);
    }
  const index = JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n";
  writeTextAtomic(join(dir, INDEX_FILE), index);
}

/**
 * Writes tensors into `dir` as one `model.safetensors`, or as `model-0000i-of-0000n.safetensors` shards
 * plus an index when they exceed the shard size. Entries with producer functions are materialised one at
 * a time, so memory stays bounded by the largest tensor. Returns the shard file names.
 */
export function writeCheckpointTensors(
  dir: string,
  entries: readonly TensorEntry[],
  opts: ShardOptions = {},
): string[] {
  const shards = planShards(entries, opts.maxShardBytes);
  const metadata = { format: "pt", ...(opts.metadata ?? {}) };
  for (const s of shards) writeSafetensors(join(dir, s.file), s.tensors, metadata);
  writeIndex(dir, shards);
  return shards.map((s) => s.file);
}

/**
 * Checkpoint tensors written as they arrive, in any order, so none waits in memory for the ones before it:
 * every shard's header is fixed up front from the tensors' names, dtypes and shapes, and each tensor's
 * bytes go straight to their place. `finish` checks that every tensor came, syncs the files and writes the
 * index. The files are not atomic by themselves: write into a directory renamed into place when done.
 */
export class StreamingCheckpointWriter {
  private readonly shards: { file: string; tensors: TensorSpec[] }[];
  private readonly places = new Map<
    string,
    { fd: number; offset: number; bytes: number; written: boolean }
  >();
  private readonly fds: number[] = [];

  constructor(
    private readonly dir: string,
    specs: readonly TensorSpec[],
    opts: ShardOptions = {},
  ) {
    this.shards = planShards(specs, opts.maxShardBytes);
    const metadata = { format: "pt", ...(opts.metadata ?? {}) };
    try {
      for (const s of this.shards) {
        const fd = openSync(join(dir, s.file), "wx");
        this.fds.push(fd);
        const header = buildHeader(s.tensors, metadata);
        writeAt(fd, header, 0);
        let offset = header.byteLength;
        for (const e of s.tensors) {
          const bytes = entryBytes(e);
          this.places.set(e.name, { fd, offset, bytes, written: false });
          offset += bytes;
        }
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  write(name: string, data: TypedArray): void {
    const place = this.places.get(name);
    if (!place) throw new GptqError(`${this.dir}: no tensor "${name}" was planned for this checkpoint`);
    if (place.written) throw new GptqError(`${this.dir}: tensor "${name}" written twice`);
    const bytes = bytesOf(data);
    if (bytes.byteLength !== place.bytes)
      throw new GptqError(`tensor "${name}": ${bytes.byteLength} bytes given for ${place.bytes}`);
    writeAt(place.fd, bytes, place.offset);
    place.written = true;
  }

  /** Checks every planned tensor was written, syncs and closes the shards, writes the index; the files. */
  finish(): string[] {
    const missing = [...this.places].find(([, p]) => !p.written);
    if (missing) throw new GptqError(`${this.dir}: tensor "${missing[0]}" was never written`);
    for (const fd of this.fds) fsyncSync(fd);
    this.close();
    writeIndex(this.dir, this.shards);
    return this.shards.map((s) => s.file);
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}

function writeAt(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.byteLength)
    done += writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
}
