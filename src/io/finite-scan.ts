/**
 * Many stored tensors checked for NaN and ±Inf on several threads at once, each reading its own pieces of
 * the files: a 7B checkpoint's 13.5 GB is checked at the page cache's or the disk's speed rather than one
 * core's. Small checks stay on the calling thread (starting threads costs more than they would save).
 */
import { availableParallelism } from "node:os";
import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import { DType } from "../tensor/dtype.js";
import { FLOAT_TENSOR_DTYPES } from "../tensor/finite.js";
import { ChunkReader, storedNonFinite } from "./finite.js";

/** Where tensors are: their headers, their bytes, and the file each is stored in. */
export type ScanSource = ChunkReader & { pathOf(name: string): string };

/** A tensor that is not all finite, or cannot be read (`unreadable`). */
export interface ScanProblem {
  problem: string;
  unreadable: boolean;
}

/** One tensor to check: where its bytes are, and how a problem names it. */
export interface ScanItem {
  name: string;
  path: string;
  start: number;
  end: number;
  dtype: DType;
  shape: number[];
  what: string;
}

export const SCAN = { next: 0, finished: 1, kib: 2 } as const;

/** below this many bytes in all, one thread checks everything */
const PARALLEL_BYTES = 256 << 20;
const CHUNK_BYTES = 16 << 20;

export interface ScanOptions {
  /** threads to use (default: every core, at most 8) */
  threads?: number;
  /** hears the bytes checked so far, about every 200 ms and at the end */
  onBytes?: (done: number, total: number) => void;
  /** threads start only from this many bytes in all (default 256 MiB) */
  parallelFrom?: number;
}

/**
 * The problem of each of `names` in `store` (undefined where the tensor is all finite or not a float
 * tensor), in the order of `names`; `what(name)` starts each problem's text.
 */
export function scanNonFinite(
  store: ScanSource,
  names: readonly string[],
  what: (name: string) => string = (n) => n,
  opts: ScanOptions = {},
): (ScanProblem | undefined)[] {
  const floats = names.filter((n) => FLOAT_TENSOR_DTYPES.includes(store.info(n).dtype));
  const items: ScanItem[] = floats.map((n) => {
    const { dtype, shape, start, end } = store.info(n);
    return { name: n, path: store.pathOf(n), start, end, dtype, shape: [...shape], what: what(n) };
  });
  const total = items.reduce((s, t) => s + t.end - t.start, 0);
  const threads = Math.min(opts.threads ?? Math.min(8, availableParallelism()), items.length);
  const found = new Map<string, ScanProblem>();
  if (threads <= 1 || total < (opts.parallelFrom ?? PARALLEL_BYTES)) {
    let done = 0;
    for (const n of floats) {
      try {
        const p = storedNonFinite(store, n, what(n), { onBytes: (b) => opts.onBytes?.((done += b), total) });
        if (p) found.set(n, { problem: p, unreadable: false });
      } catch (e) {
        found.set(n, { problem: e instanceof Error ? e.message : String(e), unreadable: true });
      }
    }
  } else {
    const ctrl = new Int32Array(new SharedArrayBuffer(3 * 4));
    const ports = [];
    const workers: Worker[] = [];
    for (let w = 0; w < threads; w++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(new URL("./finite-scan-worker.js", import.meta.url), {
        workerData: { items, ctrl, chunkBytes: CHUNK_BYTES, port: port2 },
        transferList: [port2],
      });
      worker.unref();
      workers.push(worker);
      ports.push(port1);
    }
    for (let f; (f = Atomics.load(ctrl, SCAN.finished)) < threads;) {
      Atomics.wait(ctrl, SCAN.finished, f, 200);
      opts.onBytes?.(Math.min(total, Atomics.load(ctrl, SCAN.kib) * 1024), total);
    }
    opts.onBytes?.(total, total);
    for (const port of ports) {
      for (let m; (m = receiveMessageOnPort(port));) {
        const [i, problem, unreadable] = m.message as [number, string, boolean];
        found.set(floats[i], { problem, unreadable });
      }
      port.close();
    }
    for (const w of workers) void w.terminate();
  }
  return names.map((n) => found.get(n));
}
