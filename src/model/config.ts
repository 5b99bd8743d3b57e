/**
 * A model's config.json, read by its family's entry in the family table (families/): normalised, with
 * defaults filled in as transformers fills them.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { GptqError } from "../util/errors.js";
import { parseJsonStrict } from "../util/json.js";
import { familyForModelType, supportedModelTypes } from "./families/index.js";
import { ModelConfig } from "./families/types.js";

export type { ModelConfig, RopeScaling } from "./families/types.js";

export function readModelConfig(dir: string): ModelConfig {
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new GptqError(`${dir}: no config.json`);
  const raw = parseJsonStrict(readFileSync(path, "utf8"), path);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new GptqError(`${path}: expected a JSON object`);
  return parseModelConfig(raw as Record<string, unknown>, path);
}

export function parseModelConfig(raw: Record<string, unknown>, where = "config.json"): ModelConfig {
  const modelType = String(raw.model_type ?? "");
  const family = familyForModelType(modelType);
  if (!family)
    throw new GptqError(
      `${where}: model_type "${modelType}" is not supported (supported: ${supportedModelTypes().join(", ")})`,
    );
  return family.parseConfig(raw, where);
}
