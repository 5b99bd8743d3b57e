/**
 * A thread of `scanNonFinite`: takes the next tensor from the shared counter, checks it a piece at a time
 * from its own file descriptor, posts `[index, problem, unreadable]` for a tensor that is not all finite (or
 * cannot be read), and counts the bytes it checked.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { MessagePort, workerData } from "node:worker_threads";
import { DTYPE_BYTES } from "../tensor/dtype.js";
import { nonFiniteProblem } from "../tensor/finite.js";
import { viewAs } from "../tensor/tensor.js";
import { SCAN, ScanItem } from "./finite-scan.js";

const { items, ctrl, chunkBytes, port } = workerData as {
  items: ScanItem[];
  ctrl: Int32Array;
  chunkBytes: number;
  port: MessagePort;
};
const fds = new Map<string, number>();
const buf = new Uint8Array(chunkBytes);

/** The tensor's first non-finite value, or why it cannot be read (as SafetensorsFile says it). */
function check(t: ScanItem): [string, boolean] | undefined {
  let pos = t.start;
  try {
    let fd = fds.get(t.path);
    if (fd === undefined) fds.set(t.path, (fd = openSync(t.path, "r")));
    for (let offset = 0; pos < t.end;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, t.end - pos), pos);
      if (n === 0) return [`${t.path}: file ends at byte ${pos} inside tensor "${t.name}"`, true];
      const whole = n - (n % DTYPE_BYTES[t.dtype]);
      const problem = nonFiniteProblem(
        t.what,
        t.dtype,
        t.shape,
        viewAs(t.dtype, buf.subarray(0, whole)),
        offset,
      );
      if (problem) return [problem, false];
      offset += whole / DTYPE_BYTES[t.dtype];
      pos += whole;
      Atomics.add(ctrl, SCAN.kib, whole >>> 10);
    }
  } catch (e) {
    return [`${t.path}: read failed at byte ${pos}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, true];
  }
  return undefined;
}

try {
  for (let i; (i = Atomics.add(ctrl, SCAN.next, 1)) < items.length;) {
    const t = items[i];
    const found = check(t);
    if (found) port.postMessage([i, ...found]);
  }
} finally {
  for (const fd of fds.values()) closeSync(fd);
  Atomics.add(ctrl, SCAN.finished, 1);
  Atomics.notify(ctrl, SCAN.finished);
}
