/**
 * Most kernels' rules have one shape: supported bits, symmetric or not, allowed group sizes, K and N
 * multiples, act-order or not. A `ShapeRules` table states them; `shapeRule` turns it into a
 * KernelRule whose verdict names the first failing rule and complete fixes.
 */
import { Bits } from "../formats/types.js";
import { Remedy, dividingGroup, groupText, lcm, nearestGroups, nextMultiple, verdict } from "./remedy.js";
import { KernelQuery, KernelRule, KernelVerdict } from "./types.js";

export interface GroupRule {
  /** in words, for the reason: "-1, 32, 64 or 128" */
  text: string;
  accepts(groupSize: number, K: number): boolean;
  /** group sizes to suggest instead, best first */
  suggest(groupSize: number, K: number): number[];
}

export interface ShapeRules {
  name: string;
  description: string;
  bits: readonly Bits[];
  symOnly?: boolean;
  /** absent: any group size */
  groups?: GroupRule;
  /** K of one shard must be a multiple of this */
  kMultiple?: number;
  /** partial groups unsupported: the group size must divide K */
  groupDividesK?: boolean;
  /** why a K that is not a multiple of kMultiple fails, when it is not an outright refusal */
  kNote?: string;
  nMultiple?: number;
  /** "no": never; "no-k-split": not when K is split across ranks; "no-k-split-channelwise": not with group -1 and K split */
  actOrder: "yes" | "no" | "no-k-split" | "no-k-split-channelwise";
}

export function oneOf(allowed: readonly number[]): GroupRule {
  const shown = allowed.map(String);
  return {
    text: shown.length > 1 ? `${shown.slice(0, -1).join(", ")} or ${shown[shown.length - 1]}` : shown[0],
    accepts: (g) => allowed.includes(g),
    suggest: (g) => nearestGroups(g, allowed),
  };
}

function actOrderFails(r: ShapeRules, q: KernelQuery): string | undefined {
  if (!q.actOrder) return undefined;
  const split = q.kSplitAcrossRanks === true && (q.tpRanks ?? 2) > 1;
  if (r.actOrder === "no") return "act-order (g_idx) is not supported";
  if (r.actOrder === "no-k-split" && split)
    return "act-order is not supported when in_features is split across tensor-parallel ranks";
  if (r.actOrder === "no-k-split-channelwise" && split && q.groupSize === -1)
    return "act-order with one group per column is not supported when in_features is split across tensor-parallel ranks";
  return undefined;
}

/** K padded so that it meets the K multiple and, where required, a multiple of the group. */
function paddedK(r: ShapeRules, K: number, groupSize: number): number {
  let m = r.kMultiple ?? 1;
  if (r.groupDividesK && groupSize !== -1) m = lcm(m, groupSize);
  return nextMultiple(K, m);
}

export function evaluate(r: ShapeRules, q: KernelQuery): KernelVerdict {
  const K = q.inFeatures;
  const N = q.outFeatures;
  const failures: string[] = [];
  const base: Remedy = {};
  if (!r.bits.includes(q.bits)) {
    failures.push(`${q.bits}-bit is not supported (only ${r.bits.join(", ")})`);
    base.bits = r.bits.includes(4) ? [4] : r.bits;
  }
  if (r.symOnly && !q.sym) {
    failures.push("asymmetric zero points are not supported (symmetric only)");
    base.sym = true;
  }
  let g = q.groupSize;
  if (r.groups && !r.groups.accepts(g, K)) {
    failures.push(`group size ${groupText(g)} is not supported (only ${r.groups.text})`);
    g = r.groups.suggest(g, K)[0] ?? g;
    base.groupSize = g;
  }
  const kMul = r.kMultiple ?? 1;
  if (K % kMul !== 0)
    failures.push(`in_features ${K} is not a multiple of ${kMul}${r.kNote ? ` (${r.kNote})` : ""}`);
  else if (r.groupDividesK && g !== -1 && K % g !== 0)
    failures.push(`group size ${g} does not divide in_features ${K} (no partial groups)`);
  const act = actOrderFails(r, q);
  if (N % (r.nMultiple ?? 1) !== 0) {
    failures.push(`out_features ${N} is not a multiple of ${r.nMultiple}`);
    base.padOut = nextMultiple(N, r.nMultiple!);
  }
  if (act) {
    failures.push(act);
    base.noActOrder = true;
  }
  const remedies: Remedy[] = [];
  const Kp = paddedK(r, K, g);
  if (Kp !== K) {
    // A smaller group that divides K avoids padding when the group, not the K multiple, is the problem.
    const alt = r.groupDividesK && K % kMul === 0 ? dividingGroup(K, g === -1 ? K : g) : undefined;
    const altOk = alt !== undefined && (!r.groups || r.groups.accepts(alt, K));
    if (altOk) remedies.push({ ...base, groupSize: alt });
    remedies.push({ ...base, padIn: Kp });
  } else remedies.push(base);
  return verdict(q, failures, remedies);
}

export function shapeRule(r: ShapeRules): KernelRule {
  return { name: r.name, description: r.description, ours: false, supports: (q) => evaluate(r, q) };
}
