/**
 * Reads ahead on a thread of its own: a byte range of a file is requested now, while the caller computes,
 * and taken later (waiting only for what is still in flight). Quantization reads the next layer's weights
 * this way while the current layer runs, so reading costs no time of its own once compute is the longer.
 */
import { Worker } from "node:worker_threads";
import { GptqError } from "../util/errors.js";

export const PREFETCH = { pending: 0, read: 1, failed: 2 } as const;

/** What the thread is sent for one range. */
export interface PrefetchRequest {
  path: string;
  pos: number;
  len: number;
  /** len bytes, filled by the thread */
  data: SharedArrayBuffer;
  /** one Int32: PREFETCH.pending, .read or .failed */
  status: SharedArrayBuffer;
  /** on failure: an Int32 length, then the reason's UTF-8 bytes */
  message: SharedArrayBuffer;
}

const MESSAGE_BYTES = 512;

export class Prefetcher {
  private worker?: Worker;
  private readonly pending = new Map<string, PrefetchRequest>();

  /** Starts reading `len` bytes of `path` from `pos`, to be taken as `key`; a key already pending is kept. */
  request(key: string, path: string, pos: number, len: number): void {
    if (this.pending.has(key)) return;
    if (!this.worker) {
      this.worker = new Worker(new URL("./prefetch-worker.js", import.meta.url));
      this.worker.unref();
    }
    const r: PrefetchRequest = {
      path,
      pos,
      len,
      data: new SharedArrayBuffer(len),
      status: new SharedArrayBuffer(4),
      message: new SharedArrayBuffer(MESSAGE_BYTES),
    };
    this.pending.set(key, r);
    this.worker.postMessage(r);
  }

  has(key: string): boolean {
    return this.pending.has(key);
  }

  /** The bytes requested as `key` (waiting for them if still in flight), or undefined if never requested. */
  take(key: string): Uint8Array | undefined {
    const r = this.pending.get(key);
    if (!r) return undefined;
    this.pending.delete(key);
    const status = new Int32Array(r.status);
    while (Atomics.load(status, 0) === PREFETCH.pending) Atomics.wait(status, 0, PREFETCH.pending);
    if (Atomics.load(status, 0) === PREFETCH.failed) {
      const n = new Int32Array(r.message, 0, 1)[0];
      const why = new TextDecoder().decode(new Uint8Array(r.message, 4, n));
      throw new GptqError(`${r.path}: read failed at byte ${r.pos}: ${why}`);
    }
    return new Uint8Array(r.data);
  }

  /** Drops every request not taken (one in flight still completes, into a buffer nobody holds). */
  forget(): void {
    this.pending.clear();
  }

  /** Drops what was not taken and stops the thread. */
  close(): void {
    this.pending.clear();
    if (this.worker) {
      this.worker.postMessage("close");
      void this.worker.terminate();
      this.worker = undefined;
    }
  }
}
