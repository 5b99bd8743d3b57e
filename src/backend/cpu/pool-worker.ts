/** A ThreadPool worker: waits for a job number to change, takes parts of the job, counts itself finished. */
import { MessagePort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { CTRL, Job, takeParts } from "./pool.js";

const { ctrl, port } = workerData as { ctrl: Int32Array; port: MessagePort };
Atomics.add(ctrl, CTRL.ready, 1); // loaded: the pool's first job waits for this
Atomics.notify(ctrl, CTRL.ready);
let seen = 0;
for (;;) {
  Atomics.wait(ctrl, CTRL.job, seen);
  seen = Atomics.load(ctrl, CTRL.job);
  let msg = receiveMessageOnPort(port);
  while (!msg) msg = receiveMessageOnPort(port);
  try {
    takeParts(ctrl, msg.message as Job);
  } catch (e) {
    Atomics.store(ctrl, CTRL.nextPart, (msg.message as Job).parts);
    Atomics.store(ctrl, CTRL.failed, 1);
    port.postMessage(e instanceof Error ? e.message : String(e));
  }
  Atomics.add(ctrl, CTRL.finished, 1);
  Atomics.notify(ctrl, CTRL.finished);
}
