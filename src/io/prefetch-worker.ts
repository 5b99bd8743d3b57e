/**
 * A Prefetcher's thread: reads each requested byte range of a file into a buffer of its own, hands the
 * buffer over (transferred, so this thread keeps no hold on it) on the port it was given, then sets the
 * request's status word (1 read, 2 failed, with the reason sent instead of the bytes).
 */
import { closeSync, openSync, readSync } from "node:fs";
import { MessagePort, parentPort, workerData } from "node:worker_threads";
import { PREFETCH, PrefetchRequest } from "./prefetch.js";

const { port } = workerData as { port: MessagePort };
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
    const out = new Uint8Array(new ArrayBuffer(r.len));
    for (let done = 0; done < r.len;) {
      const n = readSync(fd, out, done, Math.min(r.len - done, 1 << 30), r.pos + done);
      if (n === 0) throw new Error(`file ends at byte ${r.pos + done}, expected ${r.len - done} more bytes`);
      done += n;
    }
    port.postMessage({ key: r.key, data: out.buffer }, [out.buffer]);
    Atomics.store(status, 0, PREFETCH.read);
  } catch (e) {
    const why = e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);
    port.postMessage({ key: r.key, error: why });
    Atomics.store(status, 0, PREFETCH.failed);
  }
  Atomics.notify(status, 0);
});
