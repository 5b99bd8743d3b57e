/** `gptq bench`: time our CUDA W4A16 kernel against cuBLAS fp16, or our CPU linears against ONNX Runtime. */
import { availableParallelism } from "node:os";
import { Command, intOption, parse, printJson, threadsOption } from "../command.js";
import { CPU_HEADER, CPU_RULE, runCpuBench } from "../../backend/cpu/bench.js";
import { HEADER, RULE, parseShapes, runBench, setTotals } from "../../backend/cuda/bench.js";
import { parseConfig } from "../../backend/cuda/w4a16/index.js";
import { UsageError } from "../../util/errors.js";
import { w4a16GroupOk } from "../../kernels/gptq-ts.js";

const usage = `usage: gptq bench [--shapes llama2-7b,llama2-70b,KxN,...] [--batch 1,2,4,...] [--group 128]
                  [--kernel gptq-ts-w4a16[:CONFIG]] [--json] [--sweep]
       gptq bench --device cpu [--shapes KxN,...] [--batch 1,64,256] [--group 128] [--threads N] [--json]

Checks our W4A16 kernel and cuBLAS fp16 against a float32 reference on random data, then times both
with CUDA events (graph replays of 50 launches, weights rotated beyond the L2, median of 7) and prints
µs, speedup over fp16, effective weight bandwidth and its share of the measured copy bandwidth, the
floor (a kernel that only reads the same bytes, launched the same way) and ours with programmatic
dependent launch.
  --shapes  sets (llama2-7b, llama2-70b) and/or KxN (K = in_features); default llama2-7b
  --batch   rows of activations (M); default 1,2,4,8,16,32,64,128
  --group   group size (-1 = per channel); default 128
  --kernel  gptq-ts-w4a16, optionally with a fixed configuration: r16_w4_p2 (mma.sync: rows of M
            per block, warps, weight stages) or wg_r64_x2_p4 (warpgroup MMA, sm_90: rows,
            warpgroups, stages); a suffix _s8 also fixes 8 k-splits
  --json    print the rows as JSON
  --sweep   also time every compiled block shape and split count (tuning)

With --device cpu: our CPU linears on random 4-bit symmetric layers, each beside ONNX Runtime's
(onnxruntime-node, when it is installed) on the same layer, timed alternately in one run: w4a16
(fp32 activations) against MatMulNBits accuracy level 0, a8w4 (int8 activations) against level 4,
dense fp32 against MatMul. ms per forward (best of 3 trials), GMAC/s and weight GB/s.
  --shapes  default 4096x4096,1024x1024; --batch default 1,64,256
  --threads threads for both engines (default: every core)
  --json    rows {"kernel", "engine", "M", "K", "N", "ms"}`;

export const bench: Command = {
  name: "bench",
  summary:
    "time our CUDA W4A16 GEMM against cuBLAS fp16, or (--device cpu) our CPU linears against ONNX Runtime",
  usage,
  // synchronous for CUDA (its argument errors are thrown before anything runs); a promise for the CPU
  run(argv) {
    const { values } = parse(argv, {
      shapes: { type: "string" },
      batch: { type: "string" },
      group: { type: "string" },
      kernel: { type: "string" },
      json: { type: "boolean" },
      sweep: { type: "boolean" },
      device: { type: "string" },
      threads: { type: "string" },
    });
    const device = values.device ?? "cuda";
    if (device !== "cuda" && device !== "cpu")
      throw new UsageError(`--device must be cuda or cpu, got "${device}"`);
    const cpu = device === "cpu";
    const shapes = parseShapes(values.shapes ?? (cpu ? "4096x4096,1024x1024" : "llama2-7b"));
    const batches = (values.batch ?? (cpu ? "1,64,256" : "1,2,4,8,16,32,64,128"))
      .split(",")
      .map((s) => intOption(s.trim(), "batch")!);
    if (batches.some((b) => b < 1)) throw new UsageError("--batch values must be positive");
    const group = intOption(values.group, "group", 128)!;
    if (cpu) {
      if (values.kernel || values.sweep)
        throw new UsageError("--kernel and --sweep time CUDA kernels: drop --device cpu");
      if (group !== -1 && (group < 16 || group % 16))
        throw new UsageError("--group must be a multiple of 16, or -1");
      threadsOption(values.threads);
      const threads = intOption(values.threads, "threads", availableParallelism(), 1)!;
      const print = (l: string) => process.stdout.write(l + "\n");
      return runCpuBench({
        shapes,
        batches,
        group,
        threads,
        onStart: values.json ? undefined : (note) => print(`${note}\n\n${CPU_HEADER}\n${CPU_RULE}`),
        log: values.json ? undefined : print,
      }).then((res) => {
        if (values.json) printJson(res.rows);
        return 0;
      });
    }
    if (!w4a16GroupOk(group)) throw new UsageError("--group must be 32, 64, a multiple of 128, or -1");
    let config;
    if (values.kernel) {
      const [name, cfg] = values.kernel.split(":");
      if (name !== "gptq-ts-w4a16")
        throw new UsageError(`--kernel: only gptq-ts-w4a16 is timed, got "${name}"`);
      if (cfg) config = parseConfig(cfg);
    }
    const log = values.json ? undefined : (l: string) => process.stdout.write(l + "\n");
    let header = 0;
    const res = runBench({
      shapes,
      batches,
      group,
      config,
      sweep: values.sweep,
      // the first line names the device; the table starts under it
      log: log ? (l) => log(header++ === 0 ? `${l}\n\n${HEADER}\n${RULE}` : l) : undefined,
    });
    if (values.json) printJson(res);
    else for (const l of ["", ...setTotals(res)]) process.stdout.write(l + "\n");
    return 0;
  },
};
