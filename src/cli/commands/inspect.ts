import { Command, parse, printJson } from "../command.js";
import { Checkpoint, openCheckpoint } from "../../io/checkpoint.js";
import { UsageError } from "../../util/errors.js";
import { modelFixFacts } from "../../model/dimensions.js";

const usage = `usage: gptq inspect <dir> [--json]

Describes a checkpoint directory from its tensor headers and config files: the model family (from the
family table that quantize, eval and pad read), format (gptq, gptq_v2,
marlin, or fp for unquantized), bits, group size, symmetry, act-order, shards, and every quantized
linear (tensor prefix, in/out features, groups, act-order in use). For an unquantized checkpoint the
layers are its linear weights. Config files that contradict the tensors are reported with the fix.

options:
  --json   print one JSON document:
           {"model": {"modelType", "family", "summary" or "why"}, "format", "bits", "groupSize", "sym", "descAct",
            "shards", "layers":
            [{"name", "inFeatures", "outFeatures", "groups", "actOrder"}]}

example:
  gptq inspect ./Llama-2-7b-gptq
`;

export function inspectReport(ck: Checkpoint) {
  const q = ck.format === "fp" ? undefined : ck.config;
  const layers =
    ck.format === "fp"
      ? ck.linears.map((l) => ({
          name: l.name,
          inFeatures: l.inFeatures,
          outFeatures: l.outFeatures,
          groups: null,
          actOrder: false,
        }))
      : ck.layers.map((l) => ({
          name: l.name,
          inFeatures: l.inFeatures,
          outFeatures: l.outFeatures,
          groups: l.groups,
          actOrder: l.actOrder,
        }));
  const m = modelFixFacts(ck.dir);
  return {
    model: {
      modelType: m.modelType,
      family: m.family?.name ?? null,
      summary: m.family?.summary,
      why: m.why,
    },
    format: ck.format,
    bits: q?.bits ?? null,
    groupSize: q?.groupSize ?? null,
    sym: q?.sym ?? null,
    descAct: q?.descAct ?? null,
    shards: ck.store.shardNames,
    layers,
  };
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "))
    .join("\n");
}

export const inspectCommand: Command = {
  name: "inspect",
  summary: "describe a checkpoint: format, scheme, shards, every quantized layer",
  usage,
  run(argv) {
    const { values, positionals } = parse(argv, { json: { type: "boolean" } });
    if (positionals.length !== 1) throw new UsageError("expected one checkpoint directory");
    const ck = openCheckpoint(positionals[0]);
    try {
      for (const w of ck.warnings) process.stderr.write(`gptq inspect: warning: ${w}\n`);
      const r = inspectReport(ck);
      if (values.json) return printJson(r);
      const out: string[] = [];
      if (ck.format === "fp") out.push(`${ck.dir}: unquantized (fp), ${r.layers.length} linear weights`);
      else {
        const c = ck.config!;
        out.push(
          `${ck.dir}: ${ck.format}, ${c.bits}-bit, group size ${c.groupSize}, ${c.sym ? "symmetric" : "asymmetric"}, desc_act ${c.descAct}`,
        );
        out.push(`config: ${ck.configSources.join(", ")}`);
        if (ck.missingKeys.length)
          out.push(
            `note: the config does not spell out ${ck.missingKeys.join(", ")} (defaults assumed); vLLM needs all of bits, group_size, sym, desc_act: run \`gptq fix-config ${ck.dir}\``,
          );
      }
      const m = r.model;
      out.push(
        m.family
          ? `model: ${m.modelType}, family ${m.family} (${m.summary})`
          : `model: not one gptq quantize reads: ${m.why}`,
      );
      out.push(`shards: ${r.shards.join(", ")}`);
      if (r.layers.length) {
        const head =
          ck.format === "fp" ? ["linear", "in", "out"] : ["layer", "in", "out", "groups", "act-order"];
        const rows = r.layers.map((l) =>
          ck.format === "fp"
            ? [l.name, String(l.inFeatures), String(l.outFeatures)]
            : [
                l.name,
                String(l.inFeatures),
                String(l.outFeatures),
                String(l.groups),
                l.actOrder ? "yes" : "no",
              ],
        );
        out.push("", table([head, ...rows]));
      }
      process.stdout.write(out.join("\n") + "\n");
    } finally {
      ck.close();
    }
  },
};
