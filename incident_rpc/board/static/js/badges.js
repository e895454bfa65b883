// Severity and status at a glance: colour plus the word (never colour alone).

import { el } from "./dom.js";

export const OPEN = new Set(["new", "processing", "unknown"]);

export function severity(value) {
  return el("span", { class: `badge severity-${value}`, title: "severity" }, value);
}

export function status(value) {
  return el("span", { class: `badge status-${value}`, title: "status" }, value);
}
