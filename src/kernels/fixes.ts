/**
 * Fixes as things a user can do: the structured remedies of a kernel verdict spelled, for one model,
 * as gptq-ts commands (`gptq pad ... --multiple N`, `gptq quantize ... --group-size 64`) or kernels that
 * accept the layer as it is. A remedy that needs a dimension gptq-ts cannot pad (heads; hidden_size under
 * LayerNorm) is not offered; the verdict's note says why instead.
 */
import { nextMultiple } from "./remedy.js";
import { KernelQuery, KernelVerdict, Remedy } from "./types.js";

/** The model dimension behind one side of a linear layer. */
export interface ModelDimension {
  /** "intermediate_size", "hidden_size", "num_key_value_heads x head_dim" */
  name: string;
  /** `gptq pad` can zero-pad it keeping the function */
  paddable: boolean;
  /** the `gptq pad` option that pads it (default --multiple: the MLP intermediate) */
  padFlag?: "--multiple" | "--hidden-multiple";
  /** why it cannot be padded (when not paddable) */
  why?: string;
}

export interface FixContext {
  /** the checkpoint checked */
  dir: string;
  /** it is quantized: any change means quantizing the unquantized model again */
  quantized: boolean;
  /** `gptq quantize` takes this model (its family is in the table); otherwise scheme changes are notes */
  quantizable: boolean;
  /** the scheme checked (planned or stored) */
  scheme: { bits: number; groupSize: number; sym: boolean; actOrder: boolean };
  /** the dimension behind a layer's side, undefined when unknown */
  dimension(layer: string, side: "in" | "out"): ModelDimension | undefined;
  /** why quantize cannot run this model, for notes */
  notQuantizableWhy?: string;
  /** whether tensor parallelism splits this layer's in_features (a projection back to the hidden size); undefined when unknown */
  rowParallel?(layer: string): boolean | undefined;
}

/** The `--multiple` that pads `size` to exactly `to`: the smallest power of two that does, else `to`. */
export function padMultiple(size: number, to: number): number {
  for (let m = 1; m <= to; m *= 2) if (nextMultiple(size, m) === to) return m;
  return to;
}

interface Rendered {
  fix?: string;
  note?: string;
}

function quantizeFlags(ctx: FixContext, r: Remedy): string {
  const bits = r.bits?.[0] ?? ctx.scheme.bits;
  const group = r.groupSize ?? ctx.scheme.groupSize;
  const sym = r.sym || ctx.scheme.sym;
  const act = ctx.scheme.actOrder && !r.noActOrder;
  return `--bits ${bits} --group-size ${group}${sym ? "" : " --asym"}${act ? " --desc-act" : ""}`;
}

function schemeWords(r: Remedy): string[] {
  const w: string[] = [];
  if (r.bits) w.push(`${r.bits[0]} bits`);
  if (r.sym) w.push("symmetric zero points");
  if (r.groupSize !== undefined) w.push(`group size ${r.groupSize}`);
  if (r.noActOrder) w.push("no act-order");
  return w;
}

/** One remedy as a command, or the reason it cannot be carried out. */
function renderRemedy(
  r: Remedy,
  q: KernelQuery,
  layer: { name: string; inFeatures: number; outFeatures: number },
  ctx: FixContext,
): Rendered {
  if (r.other) return { note: r.other };
  const ranks = q.tpRanks ?? 1;
  const pads: { multiple: number; to: number; dim: string; flag: string }[] = [];
  for (const side of ["in", "out"] as const) {
    const perRank = side === "in" ? r.padIn : r.padOut;
    if (perRank === undefined) continue;
    const split = side === "in" ? q.kSplitAcrossRanks === true : q.kSplitAcrossRanks !== true;
    const to = perRank * (split ? ranks : 1);
    const size = side === "in" ? layer.inFeatures : layer.outFeatures;
    const dim = ctx.dimension(layer.name, side);
    if (!dim || !dim.paddable)
      return {
        note: `${side}_features ${size}${dim ? ` is ${dim.name}, which` : ""} cannot be padded to ${to}: ${dim?.why ?? "gptq pad does not know this layer's dimension"}`,
      };
    pads.push({ multiple: padMultiple(size, to), to, dim: dim.name, flag: dim.padFlag ?? "--multiple" });
  }
  const schemeChange = r.bits || r.sym || r.groupSize !== undefined || r.noActOrder;
  if (!ctx.quantizable && (schemeChange || ctx.quantized || pads.length))
    return {
      note: `${ctx.quantized ? "quantizing again" : "quantizing"}${pads.length ? " after padding" : ""}${schemeChange ? ` with ${schemeWords(r).join(", ")}` : ""} would fix it, but ${ctx.notQuantizableWhy ?? "gptq quantize does not take this model"}`,
    };
  const fp = ctx.quantized ? "<fp-model>" : ctx.dir;
  const steps: string[] = [];
  let src = fp;
  if (pads.length) {
    const flags = [...new Set(pads.map((p) => p.flag))].map(
      (flag) => `${flag} ${Math.max(...pads.filter((p) => p.flag === flag).map((p) => p.multiple))}`,
    );
    src = "<padded>";
    steps.push(`gptq pad ${fp} ${src} ${flags.join(" ")}`);
  }
  if (!pads.length && !schemeChange && !ctx.quantized) return {};
  steps.push(`gptq quantize ${src} --out <out> ${quantizeFlags(ctx, r)}`);
  const cmd = steps.join(", then ");
  return { fix: ctx.quantized ? `re-quantize from the unquantized model: ${cmd}` : cmd };
}

/** `v` with its fix spelled as commands and kernels for this model, and a note for what cannot be done. */
export function actionableVerdict(
  v: KernelVerdict,
  q: KernelQuery,
  layer: { name: string; inFeatures: number; outFeatures: number },
  ctx: FixContext,
): KernelVerdict {
  if (v.ok) return { ok: true };
  const fixes: string[] = [];
  const notes: string[] = [];
  for (const r of v.remedies ?? []) {
    const x = renderRemedy(r, q, layer, ctx);
    if (x.fix && !fixes.includes(x.fix)) fixes.push(x.fix);
    if (x.note && !notes.includes(x.note)) notes.push(x.note);
  }
  // a verdict without structured remedies keeps its own fix only when it is already a command
  if (!v.remedies && v.fix && /^gptq /.test(v.fix)) fixes.push(v.fix);
  if (v.alternatives?.length) fixes.push(`use kernel ${v.alternatives.slice(0, 3).join(" or ")}`);
  const out: KernelVerdict = { ok: false, reason: v.reason };
  if (fixes.length) out.fix = fixes.join("; or ");
  if (notes.length) out.note = notes.join("; ");
  return out;
}
