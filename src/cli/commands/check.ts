import { Command, groupSizeOption, intOption, parse, printJson } from "../command.js";
import { openCheckpoint } from "../../io/checkpoint.js";
import {
  CheckLayer,
  CheckScheme,
  CheckpointProblem,
  LayerReport,
  checkLayers,
  checkpointProblems,
} from "../../kernels/check.js";
import { KERNELS, findKernel } from "../../kernels/registry.js";
import { KernelRule } from "../../kernels/types.js";
import { Bits } from "../../formats/types.js";
import { fixContext, modelFixFacts } from "../../model/dimensions.js";
import { GptqError, UsageError } from "../../util/errors.js";

const USAGE = `usage: gptq check <dir> [--kernel NAME]... [--bits N --group-size N --sym|--asym --desc-act]
                  [--tp N] [--require NAME]... [--json]

For every linear layer and kernel: compatible or not, the rule that fails, and fixes you can run: a
gptq command (gptq pad to a multiple, gptq quantize with another group size, gptq convert to
gptq_v2) or a kernel that takes the layer as it is; a note says what no command can change (hidden
size, heads). Reads tensor headers and g_idx only.
A quantized checkpoint is checked with its own scheme; an unquantized one with a planned scheme
(default 4-bit, group 128, symmetric, no act-order), so shapes can be checked before quantizing.

options:
  --kernel NAME     check only these kernels (repeatable; default all, listed below)
  --bits N          planned bits: 2, 3, 4 or 8 (unquantized checkpoints)
  --group-size N    planned group size, -1 for one group per column
  --sym | --asym    planned symmetric or asymmetric zero points
  --desc-act        planned act-order
  --tp N            check one tensor-parallel shard: column-parallel layers split out_features,
                    row-parallel ones (o_proj, down_proj, dense, dense_4h_to_h, out_proj, wo, w2, ...)
                    split in_features
  --require NAME    exit 1 unless every layer passes this kernel (repeatable)
  --json            {"format", "scheme", "tp", "layers": [{"name", "inFeatures", "outFeatures",
                      "shard"?, "kernels": {"<kernel>": {"ok", "reason"?, "fix"?, "note"?}}}]}

examples:
  gptq check ./falcon-7b --bits 4 --group-size 128 --kernel exllama --kernel marlin
  gptq check ./Qwen1.5-14B-Chat-GPTQ --tp 2 --require marlin

kernels:
`;

/** Kernels registered after this module loads (our own) are listed too. */
function usage(): string {
  const width = Math.max(...KERNELS.map((k) => k.name.length));
  return (
    USAGE +
    KERNELS.map((k) => `  ${k.name.padEnd(width)}  ${k.ours ? "(gptq-ts) " : ""}${k.description}`).join(
      "\n",
    ) +
    "\n"
  );
}

const options = {
  kernel: { type: "string", multiple: true },
  bits: { type: "string" },
  "group-size": { type: "string" },
  sym: { type: "boolean" },
  asym: { type: "boolean" },
  "desc-act": { type: "boolean" },
  tp: { type: "string" },
  require: { type: "string", multiple: true },
  json: { type: "boolean" },
} as const;

function kernelsByName(names: readonly string[]): KernelRule[] {
  return names.map((n) => {
    const k = findKernel(n);
    if (!k)
      throw new UsageError(`unknown kernel "${n}"; known kernels: ${KERNELS.map((x) => x.name).join(", ")}`);
    return k;
  });
}

/** Layers with the same name up to their block index and the same verdicts print once. */
function collapse(reports: LayerReport[]): { pattern: string; count: number; report: LayerReport }[] {
  const groups = new Map<string, { pattern: string; count: number; report: LayerReport }>();
  for (const r of reports) {
    const pattern = r.name.replace(/\.\d+\./g, ".*.");
    const key = pattern + JSON.stringify([r.inFeatures, r.outFeatures, r.kernels]);
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { pattern, count: 1, report: r });
  }
  return [...groups.values()].map((g) => (g.count === 1 ? { ...g, pattern: g.report.name } : g));
}

function schemeText(s: CheckScheme, actOrder: boolean): string {
  return `${s.bits}-bit, group size ${s.groupSize}, ${s.sym ? "symmetric" : "asymmetric"}${actOrder ? ", act-order" : ""}`;
}

export const checkCommand: Command = {
  name: "check",
  summary: "check every layer's shape against kernels' rules, with fixes",
  get usage() {
    return usage();
  },
  run(argv) {
    const { values, positionals } = parse(argv, options);
    if (positionals.length !== 1) throw new UsageError("expected one checkpoint directory");
    if (values.sym && values.asym) throw new UsageError("--sym and --asym exclude each other");
    const tp = intOption(values.tp, "tp", 1)!;
    if (tp < 1) throw new UsageError(`--tp must be at least 1, got ${tp}`);
    const bitsOpt = intOption(values.bits, "bits");
    if (bitsOpt !== undefined && ![2, 3, 4, 8].includes(bitsOpt))
      throw new UsageError(`--bits must be 2, 3, 4 or 8, got ${bitsOpt}`);
    const groupOpt = groupSizeOption(values["group-size"], "group-size");
    const required = kernelsByName(values.require ?? []);
    const listed = values.kernel?.length ? kernelsByName(values.kernel) : KERNELS;
    const kernels = [...listed, ...required.filter((r) => !listed.includes(r))];
    const planned =
      bitsOpt !== undefined || groupOpt !== undefined || values.sym || values.asym || values["desc-act"];

    const ck = openCheckpoint(positionals[0]);
    let scheme: CheckScheme;
    let layers: CheckLayer[];
    let plannedActOrder = false;
    let problems: CheckpointProblem[] = [];
    try {
      for (const w of ck.warnings) process.stderr.write(`gptq check: warning: ${w}\n`);
      if (ck.format === "fp") {
        scheme = { bits: (bitsOpt ?? 4) as Bits, groupSize: groupOpt ?? 128, sym: !values.asym };
        plannedActOrder = values["desc-act"] === true;
        // a mixture-of-experts router stays unquantized
        const router = modelFixFacts(ck.dir).family?.experts?.router;
        layers = ck.linears
          .filter((l) => !router || !l.name.endsWith(`.${router}`))
          .map((l) => ({ ...l, actOrder: plannedActOrder }));
        if (!layers.length) throw new GptqError(`${ck.dir}: no linear weights found (2-D .weight tensors)`);
      } else {
        if (planned)
          throw new GptqError(
            `${ck.dir} is already quantized (${ck.format}, ${ck.config!.bits}-bit, group size ${ck.config!.groupSize}); --bits, --group-size, --sym, --asym and --desc-act plan a scheme for unquantized checkpoints`,
          );
        scheme = { bits: ck.config!.bits, groupSize: ck.config!.groupSize, sym: ck.config!.sym };
        layers = ck.layers;
        problems = checkpointProblems(ck);
      }
    } finally {
      ck.close();
    }
    const fixes = fixContext(ck.dir, ck.format !== "fp", {
      ...scheme,
      actOrder: layers.some((l) => l.actOrder),
    });
    const reports = checkLayers(layers, scheme, kernels, tp, problems, fixes);
    if (values.json)
      printJson({
        format: ck.format,
        scheme: { ...scheme, planned: ck.format === "fp" },
        tp,
        layers: reports,
      });
    else {
      const out = [
        `${ck.dir}: ${
          ck.format === "fp"
            ? `unquantized, planned scheme ${schemeText(scheme, plannedActOrder)}`
            : `${ck.format}, ${schemeText(
                scheme,
                layers.some((l) => l.actOrder),
              )}`
        }${tp > 1 ? `, tensor parallel ${tp}` : ""}`,
      ];
      const width = Math.max(...kernels.map((k) => k.name.length));
      for (const { pattern, count, report: r } of collapse(reports)) {
        const shard = r.shard
          ? `, per rank ${r.shard.inFeatures} x ${r.shard.outFeatures} (splits ${r.shard.splits})`
          : "";
        out.push(
          "",
          `${pattern}${count > 1 ? ` (${count} layers)` : ""}: in ${r.inFeatures}, out ${r.outFeatures}${shard}`,
        );
        for (const k of kernels) {
          const v = r.kernels[k.name];
          out.push(
            `  ${k.name.padEnd(width)}  ${v.ok ? "ok" : `FAIL  ${v.reason}${v.fix ? `\n  ${" ".repeat(width)}        fix: ${v.fix}` : ""}${v.note ? `\n  ${" ".repeat(width)}        note: ${v.note}` : ""}`}`,
          );
        }
      }
      out.push("", "summary:");
      for (const k of kernels) {
        const ok = reports.filter((r) => r.kernels[k.name].ok).length;
        out.push(`  ${k.name.padEnd(width)}  ${ok}/${reports.length} layers ok`);
      }
      process.stdout.write(out.join("\n") + "\n");
    }
    for (const k of required) {
      const failing = reports.filter((r) => !r.kernels[k.name].ok);
      if (failing.length)
        throw new GptqError(
          `${failing.length} of ${reports.length} layers fail kernel ${k.name} (first: ${failing[0].name}: ${failing[0].kernels[k.name].reason})`,
        );
    }
  },
};
