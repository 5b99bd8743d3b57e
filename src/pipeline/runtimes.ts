/**
 * Which runtimes will take what `quantize` writes, from the kernel registry: the kernels that accept
 * every layer (shapes, scheme, and the loaders' rules on the file), and for Marlin output, the Marlin
 * kernels that cannot run it (vLLM's gptq_marlin needs out_features % 64, the original IST-DASLab /
 * AutoGPTQ Marlin out_features % 256).
 */
import { StoredFormat } from "../formats/types.js";
import { CheckLayer, CheckScheme, checkLayers, checkpointProblems } from "../kernels/check.js";
import { KERNELS } from "../kernels/registry.js";

export interface RuntimeSummary {
  /** kernels and loaders that accept every layer */
  accept: string[];
  /** the others, with how many layers they accept and the first reason */
  refuse: { name: string; layersOk: number; layers: number; reason: string }[];
}

export function runtimeSummary(
  dir: string,
  format: StoredFormat,
  layers: readonly CheckLayer[],
  scheme: CheckScheme,
  meta: Record<string, unknown>,
): RuntimeSummary {
  const problems = checkpointProblems({
    dir,
    format,
    missingKeysBySource: {}, // quantize writes all four of vLLM's keys
    config: { sym: scheme.sym, meta },
  });
  const reports = checkLayers(layers, scheme, KERNELS, 1, problems);
  const out: RuntimeSummary = { accept: [], refuse: [] };
  for (const k of KERNELS) {
    const failing = reports.filter((r) => !r.kernels[k.name].ok);
    if (!failing.length) out.accept.push(k.name);
    else
      out.refuse.push({
        name: k.name,
        layersOk: reports.length - failing.length,
        layers: reports.length,
        reason: `${failing[0].name}: ${failing[0].kernels[k.name].reason}`,
      });
  }
  return out;
}

/** The Marlin kernels whose shape rules refuse some layer of a Marlin checkpoint, as one warning. */
export function marlinWarning(layers: readonly CheckLayer[], scheme: CheckScheme): string | undefined {
  const reports = checkLayers(
    layers,
    scheme,
    KERNELS.filter((k) => k.name === "marlin" || k.name === "marlin-ist"),
  );
  const parts: string[] = [];
  for (const name of ["marlin-ist", "marlin"]) {
    const failing = reports.filter((r) => !r.kernels[name].ok);
    if (failing.length)
      parts.push(
        `kernel ${name} (${name === "marlin" ? "vLLM gptq_marlin" : "AutoGPTQ / IST-DASLab Marlin"}) cannot run ${failing.length} of ${reports.length} layers (first: ${failing[0].name}: ${failing[0].kernels[name].reason})`,
      );
  }
  return parts.length
    ? `the Marlin files will be written, but ${parts.join("; ")}; gptq check says which kernels can`
    : undefined;
}
