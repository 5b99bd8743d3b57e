// gemma2: see test/helpers/tiny.ts for what every family passes.
import { familyTests } from "../../helpers/tiny.js";

familyTests("gemma2");
