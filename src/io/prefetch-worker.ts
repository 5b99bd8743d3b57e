/**
 * A Prefetcher's thread: reads each requested byte range of a file into the shared buffer it was given,
 * then sets the request's status word (1 read, 2 failed with the reason in its message buffer).
 */
import { closeSync, openSync, readSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import { PREFETCH, PrefetchRequest } from "./prefetch.js";

const fds = new Map<string, number>();

parentPort!.on("message", (r: PrefetchRequest | "close") => {
  if (r === "close") {
    for (const fd of fds.values()) closeSync(fd);
    fds.clear();
    return;
  }
  const status = new Int32Array(r.status);
  try {
    let fd = fds.get(r.path);
    if (fd === undefined) fds.set(r.path, (fd = openSync(r.path, "r")));
    const out = new Uint8Array(r.data);
    for (let done = 0; done < r.len;) {
      const n = readSync(fd, out, done, Math.min(r.len - done, 1 << 30), r.pos + done);
      if (n === 0) throw new Error(`file ends at byte ${r.pos + done}, expected ${r.len - done} more bytes`);
      done += n;
    }
    Atomics.store(status, 0, PREFETCH.read);
  } catch (e) {
    const text = e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);
    const bytes = new TextEncoder().encode(text).subarray(0, r.message.byteLength - 4);
    new Uint8Array(r.message).set(bytes, 4);
    new Int32Array(r.message, 0, 1)[0] = bytes.length;
    Atomics.store(status, 0, PREFETCH.failed);
  }
  Atomics.notify(status, 0);
});
