/** The W4A16 kernel family: block shapes, weight layout, launch geometry, tuning, and the launcher. */
export * from "./configs.js";
export * from "./layout.js";
export * from "./launch.js";
export * from "./tuning.js";
export * from "./linear.js";
