/**
 * What the mixture-of-experts families share: reading the routing keys of config.json, and naming each
 * expert's projections. An expert projection is one linear of the decoder layer, named
 * `experts.<e>.<name>` ("experts.3.w1"), so loading, quantizing and writing treat it as any other.
 */
import { ConfigFields } from "./fields.js";
import { ExpertsConfig, FamilySpec, LinearSpec, ModelConfig } from "./types.js";

/** num_local_experts (num_experts in Qwen3-MoE's published configs), num_experts_per_tok, and the top-k rule. */
export function readExperts(f: ConfigFields, normalizeTopK: boolean): ExpertsConfig {
  const countKey = f.raw.num_local_experts != null ? "num_local_experts" : "num_experts";
  const count = f.int(countKey);
  const topK = f.int("num_experts_per_tok");
  if (topK > count) f.fail(`num_experts_per_tok ${topK} is more than ${countKey} ${count}`);
  return { count, topK, normalizeTopK };
}

/** One expert projection: a linear of the layer, and which expert it belongs to. */
export interface ExpertLinear extends LinearSpec {
  expert: number;
}

/** every expert projection of a layer, expert by expert, each expert's in the family's order */
export function expertLinears(family: FamilySpec, c: ModelConfig): ExpertLinear[] {
  const spec = family.experts;
  if (!spec || !c.experts) return [];
  const out: ExpertLinear[] = [];
  for (let e = 0; e < c.experts.count; e++)
    for (const l of spec.linears)
      out.push({
        name: `experts.${e}.${l.name}`,
        module: `${spec.expert(e)}.${l.name}`,
        role: l.role,
        expert: e,
      });
  return out;
}

/** the expert a layer linear's name belongs to ("experts.3.w1" -> 3), or undefined for a shared projection */
export function expertOf(name: string): number | undefined {
  const m = /^experts\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : undefined;
}
