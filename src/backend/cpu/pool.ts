/**
 * Synchronous data-parallel work on every core: `run(task, args, parts)` splits a task into parts that the
 * calling thread and `threads - 1` worker threads take one at a time (so a core slowed by other load takes
 * fewer), and returns when all are done. Operands the workers write or read live in SharedArrayBuffers; the
 * job is posted on each worker's port and a shared counter wakes them (Atomics), so no event loop is needed
 * on either side and callers stay synchronous.
 */
import { availableParallelism } from "node:os";
import { MessageChannel, MessagePort, Worker, receiveMessageOnPort } from "node:worker_threads";
import { GptqError } from "../../util/errors.js";
import { TASKS, TaskArgs, TaskName } from "./tasks.js";

/** control words, shared with the workers */
export const CTRL = { job: 0, finished: 1, nextPart: 2, failed: 3, ready: 4 } as const;

/** How long the first job waits for the workers to load: a worker whose module failed never comes. */
const START_TIMEOUT_MS = 60_000;

export interface Job<T extends TaskName = TaskName> {
  task: T;
  args: TaskArgs<T>;
  parts: number;
}

/** Takes parts of the current job until none is left. */
export function takeParts(ctrl: Int32Array, job: Job): void {
  const run = TASKS[job.task] as (args: TaskArgs<TaskName>, part: number, parts: number) => void;
  for (let p = Atomics.add(ctrl, CTRL.nextPart, 1); p < job.parts; p = Atomics.add(ctrl, CTRL.nextPart, 1))
    run(job.args, p, job.parts);
}

/** A typed array over shared memory, for operands the workers read or write. */
export function shared<T extends Float32Array | Float64Array>(
  kind: { new (b: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number },
  length: number,
): T {
  return new kind(new SharedArrayBuffer(length * kind.BYTES_PER_ELEMENT));
}

export class ThreadPool {
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(5 * 4));
  private readonly ports: MessagePort[] = [];
  private readonly workers: Worker[] = [];
  private started = false;

  constructor(
    readonly threads: number,
    /** the workers' module (a test may name one that fails to load) */
    workerModule = new URL("./pool-worker.js", import.meta.url),
    private readonly startTimeoutMs = START_TIMEOUT_MS,
  ) {
    if (!(Number.isInteger(threads) && threads >= 1))
      throw new GptqError(`threads must be a positive integer, got ${threads}`);
    for (let i = 1; i < threads; i++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(workerModule, {
        workerData: { ctrl: this.ctrl, port: port2 },
        transferList: [port2],
      });
      worker.unref();
      // a worker that fails to load reports it as an event, which the blocked first job cannot see (it
      // finds the worker silent instead); heard here, it is not an uncaught exception afterwards
      worker.on("error", () => {});
      this.workers.push(worker);
      this.ports.push(port1);
    }
  }

  /** Runs parts 0 .. parts-1 of `task` over every thread; returns when all are done. */
  run<T extends TaskName>(task: T, args: TaskArgs<T>, parts: number): void {
    const job: Job<T> = { task, args, parts };
    const { ctrl, ports } = this;
    if (ports.length === 0 || parts <= 1) {
      const fn = TASKS[task] as (a: TaskArgs<T>, part: number, parts: number) => void;
      for (let p = 0; p < parts; p++) fn(args, p, parts);
      return;
    }
    this.awaitWorkers();
    Atomics.store(ctrl, CTRL.finished, 0);
    Atomics.store(ctrl, CTRL.nextPart, 0);
    Atomics.store(ctrl, CTRL.failed, 0);
    for (const port of ports) port.postMessage(job);
    Atomics.add(ctrl, CTRL.job, 1);
    Atomics.notify(ctrl, CTRL.job);
    let error: unknown;
    try {
      takeParts(ctrl, job);
    } catch (e) {
      error = e;
      // let the workers drain the remaining parts quickly
      Atomics.store(ctrl, CTRL.nextPart, parts);
    }
    for (let done; (done = Atomics.load(ctrl, CTRL.finished)) < ports.length;)
      Atomics.wait(ctrl, CTRL.finished, done);
    // a failed worker posts its error; read them all so none is left for a later job
    const messages = ports.map((p) => receiveMessageOnPort(p)?.message as string | undefined);
    if (error) throw error;
    if (Atomics.load(ctrl, CTRL.failed))
      throw new GptqError(`a worker thread failed: ${messages.find((m) => m) ?? "unknown error"}`);
  }

  /**
   * Waits (once) until every worker has loaded: each job waits for all of them to finish it, so one that
   * never started would hang the caller. The event loop is blocked here, so a failed load is known only by
   * its silence.
   */
  private awaitWorkers(): void {
    if (this.started) return;
    const { ctrl, ports } = this;
    const deadline = Date.now() + this.startTimeoutMs;
    for (let ready; (ready = Atomics.load(ctrl, CTRL.ready)) < ports.length;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const workers = ports.length;
        this.dispose();
        throw new GptqError(
          `${workers - ready} of the CPU pool's ${workers} worker threads did not start within ${this.startTimeoutMs / 1000} s (their module failed to load: is the installation complete?); run with --threads 1 to work without them`,
        );
      }
      Atomics.wait(ctrl, CTRL.ready, ready, Math.min(left, 100));
    }
    this.started = true;
  }

  dispose(): void {
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
    this.ports.length = 0;
  }
}

let defaultThreads = availableParallelism();
let pool: ThreadPool | undefined;

/** Sets how many threads the CPU kernels use from now on (default: every core). */
export function setThreads(threads: number): void {
  if (!(Number.isInteger(threads) && threads >= 1))
    throw new GptqError(`--threads must be a positive integer, got ${threads}`);
  if (pool && pool.threads !== threads) {
    pool.dispose();
    pool = undefined;
  }
  defaultThreads = threads;
}

/** The shared pool (started on first use). */
export function threadPool(): ThreadPool {
  return (pool ??= new ThreadPool(defaultThreads));
}
