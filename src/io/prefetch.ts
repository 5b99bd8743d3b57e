/**
 * Reads ahead on a thread of its own: a byte range of a file is requested now, while the caller computes,
 * and taken later (waiting only for what is still in flight). Quantization reads the next layer's weights
 * this way while the current layer runs, so reading costs no time of its own once compute is the longer.
 * The bytes come back as a plain ArrayBuffer transferred from the thread, which keeps no hold on it: the
 * buffer is freed as soon as its taker drops it.
 */
import { MessageChannel, MessagePort, Worker, receiveMessageOnPort } from "node:worker_threads";
import { GptqError } from "../util/errors.js";

export const PREFETCH = { pending: 0, read: 1, failed: 2 } as const;

/** What the thread is sent for one range. */
export interface PrefetchRequest {
  key: string;
  path: string;
  pos: number;
  len: number;
  /** one Int32: PREFETCH.pending, .read or .failed, set once the bytes (or the reason) are on the port */
  status: SharedArrayBuffer;
}

/** What the thread sends back for one range. */
interface PrefetchReply {
  key: string;
  data?: ArrayBuffer;
  error?: string;
}

export class Prefetcher {
  private worker?: Worker;
  private port?: MessagePort;
  private readonly pending = new Map<string, { path: string; pos: number; status: Int32Array }>();
  /** replies received while waiting for another key's */
  private readonly arrived = new Map<string, PrefetchReply>();

  /** Starts reading `len` bytes of `path` from `pos`, to be taken as `key`; a key already pending is kept. */
  request(key: string, path: string, pos: number, len: number): void {
    if (this.pending.has(key)) return;
    if (!this.worker) {
      const { port1, port2 } = new MessageChannel();
      this.worker = new Worker(new URL("./prefetch-worker.js", import.meta.url), {
        workerData: { port: port2 },
        transferList: [port2],
      });
      this.worker.unref();
      this.port = port1;
    }
    const status = new SharedArrayBuffer(4);
    this.pending.set(key, { path, pos, status: new Int32Array(status) });
    this.worker.postMessage({ key, path, pos, len, status } satisfies PrefetchRequest);
  }

  has(key: string): boolean {
    return this.pending.has(key);
  }

  /** The bytes requested as `key` (waiting for them if still in flight), or undefined if never requested. */
  take(key: string): Uint8Array | undefined {
    const r = this.pending.get(key);
    if (!r) return undefined;
    this.pending.delete(key);
    while (Atomics.load(r.status, 0) === PREFETCH.pending) Atomics.wait(r.status, 0, PREFETCH.pending);
    // the reply is on the port now; earlier ones still wanted are kept, forgotten ones dropped
    while (!this.arrived.has(key)) {
      const m = receiveMessageOnPort(this.port!)?.message as PrefetchReply | undefined;
      if (!m) throw new Error(`prefetch: no reply for ${key}`);
      if (m.key === key || this.pending.has(m.key)) this.arrived.set(m.key, m);
    }
    const reply = this.arrived.get(key)!;
    this.arrived.delete(key);
    if (reply.error !== undefined)
      throw new GptqError(`${r.path}: read failed at byte ${r.pos}: ${reply.error}`);
    return new Uint8Array(reply.data!);
  }

  /** Drops every request not taken (one in flight still completes, and its reply is dropped). */
  forget(): void {
    this.pending.clear();
    this.arrived.clear();
  }

  /** Drops what was not taken and stops the thread. */
  close(): void {
    this.forget();
    if (this.worker) {
      this.worker.postMessage("close");
      void this.worker.terminate();
      this.port?.close();
      this.worker = undefined;
      this.port = undefined;
    }
  }
}
