/** Direct conversions between stored formats, through the unpacked form (exact: no value is recomputed). */
import { GptqVersion, LayerShape, packGptq, unpackGptq } from "./gptq.js";
import { packMarlin, unpackMarlin } from "./marlin.js";
import { GptqTensors, MarlinTensors } from "./types.js";

export function gptqToMarlin(t: GptqTensors, shape: LayerShape, version: GptqVersion): MarlinTensors {
  return packMarlin(unpackGptq(t, shape, version));
}

export function marlinToGptq(
  t: MarlinTensors,
  shape: { inFeatures: number; outFeatures: number; groupSize: number },
  version: GptqVersion,
): GptqTensors {
  return packGptq(unpackMarlin(t, shape), version);
}
