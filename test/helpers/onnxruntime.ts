/** onnxruntime-node for the export tests: loaded when installed, else a skip reason said once on stderr. */
import { OnnxRuntime, loadOnnxRuntime } from "../../src/export/onnx-runtime.js";

const load = await loadOnnxRuntime();

export const ORT: OnnxRuntime | undefined = load.runtime;

export function skipUnlessOnnxRuntime(): string | false {
  if (load.runtime) return false;
  const reason = `SKIPPED: ${load.reason} (the ONNX export tests run the exported models with it)`;
  console.warn(reason);
  return reason;
}
