/**
 * Building blocks of kernel rules: each rule lists the checks that fail and the changes that make the
 * layer pass, so every verdict carries the first reason and a complete fix.
 */
import { KernelQuery, KernelVerdict, Remedy } from "./types.js";

export type { Remedy };

export function nextMultiple(x: number, m: number): number {
  return Math.ceil(x / m) * m;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

export function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

function ranks(q: KernelQuery): number {
  return q.tpRanks ?? 1;
}

function padText(q: KernelQuery, dim: "in" | "out", to: number): string {
  const split = dim === "in" ? q.kSplitAcrossRanks === true : q.kSplitAcrossRanks !== true;
  const r = split ? ranks(q) : 1;
  return r > 1 ? `pad ${dim}_features to ${to * r} (${to} per rank)` : `pad ${dim}_features to ${to}`;
}

export function describeRemedy(q: KernelQuery, r: Remedy): string {
  const parts: string[] = [];
  if (r.bits) parts.push(`quantize with ${r.bits.join(" or ")} bits`);
  if (r.sym) parts.push("quantize symmetric (--sym)");
  if (r.groupSize !== undefined) parts.push(`use group size ${r.groupSize}`);
  if (r.padIn !== undefined) parts.push(padText(q, "in", r.padIn));
  if (r.padOut !== undefined) parts.push(padText(q, "out", r.padOut));
  if (r.noActOrder)
    parts.push("quantize without act-order (or with static groups, which keeps g_idx = k // group)");
  if (r.other) parts.push(r.other);
  return parts.join(" and ");
}

/** ok when nothing failed; otherwise the first failure and every remedy, best first. */
export function verdict(q: KernelQuery, failures: string[], remedies: Remedy[]): KernelVerdict {
  if (!failures.length) return { ok: true };
  const fixes = remedies.map((r) => describeRemedy(q, r)).filter((f) => f.length > 0);
  const kept = remedies.filter((r) => describeRemedy(q, r).length > 0);
  return fixes.length
    ? { ok: false, reason: failures[0], fix: fixes.join("; or "), remedies: kept }
    : { ok: false, reason: failures[0] };
}

export function groupText(g: number): string {
  return g === -1 ? "-1 (one group per column)" : String(g);
}

/**
 * Among `allowed` group sizes, the ones to suggest instead of `g`: nearest first, smaller (finer, as
 * accurate or more) before larger; -1 last.
 */
export function nearestGroups(g: number, allowed: readonly number[]): number[] {
  const pos = allowed.filter((a) => a > 0);
  const below = pos.filter((a) => g === -1 || a <= g).sort((a, b) => b - a);
  const above = pos.filter((a) => g !== -1 && a > g).sort((a, b) => a - b);
  return [...below, ...above, ...(allowed.includes(-1) ? [-1] : [])];
}

/** The largest power-of-two group size, at least `min` and at most `g`, that divides K. */
export function dividingGroup(K: number, g: number, min = 16): number | undefined {
  for (let p = 1 << 30; p >= min; p >>= 1) if (p <= g && K % p === 0) return p;
  return undefined;
}
