// Forms built from an action's OpenRPC params (JSON Schemas): one control per
// parameter, with the limits the server checks. Used for the create form and for
// admin actions the board does not know in advance (silences, channels, ...).

import { el } from "./dom.js";

export const SKIPPED = new Set(["token", "request_id"]);

export function typeOf(schema = {}) {
  const types = [schema.type ?? []].flat();
  return { main: types.find((t) => t !== "null") ?? "any", nullable: types.includes("null") };
}

// "string, 1-200 characters", "integer, 1..1000", "one of: low, medium, ..."
export function describeSchema(schema = {}) {
  const { main, nullable } = typeOf(schema);
  const parts = [schema.enum ? `one of: ${schema.enum.join(", ")}` : main];
  if (schema.format) parts.push(schema.format);
  const range = (low, high, unit) => {
    if (low !== undefined && high !== undefined) return `${low}..${high}${unit}`;
    if (low !== undefined) return `at least ${low}${unit}`;
    if (high !== undefined) return `at most ${high}${unit}`;
    return null;
  };
  parts.push(range(schema.minLength, schema.maxLength, " characters"));
  parts.push(range(schema.minimum, schema.maximum, ""));
  parts.push(range(schema.minItems, schema.maxItems, " items"));
  if (schema.items) parts.push(`of ${describeSchema(schema.items)}`);
  if (schema.oneOf) parts.push(schema.oneOf.map(describeSchema).join(" or "));
  if (nullable) parts.push("or null");
  return parts.filter(Boolean).join(", ");
}

function control(param, id) {
  const schema = param.schema ?? {};
  const { main } = typeOf(schema);
  const common = { id, name: param.name, required: param.required && main !== "boolean" };
  if (schema.enum) {
    return el("select", common,
      param.required ? null : el("option", { value: "" }, "(not set)"),
      schema.enum.map((value) => el("option", { value }, value)));
  }
  if (main === "boolean") {
    return el("select", common, el("option", { value: "" }, "(not set)"),
      el("option", { value: "true" }, "yes"), el("option", { value: "false" }, "no"));
  }
  if (main === "integer" || main === "number") {
    return el("input", { ...common, type: "number", step: main === "integer" ? 1 : "any",
      min: schema.minimum, max: schema.maximum });
  }
  if (main === "string") {
    if (/password/.test(param.name)) {
      return el("input", { ...common, type: "password", autocomplete: "new-password",
        maxlength: schema.maxLength, minlength: schema.minLength });
    }
    if ((schema.maxLength ?? 0) > 1000) {
      return el("textarea", { ...common, rows: 3, maxlength: schema.maxLength, minlength: schema.minLength });
    }
    return el("input", { ...common, type: "text", autocomplete: "off", maxlength: schema.maxLength,
      minlength: schema.minLength, placeholder: schema.format === "date-time" ? "2026-01-17T18:30:00+00:00" : null });
  }
  // objects, arrays, anything: JSON (an array of simple values may be comma-separated)
  return el("textarea", { ...common, rows: 2, class: "json",
    placeholder: main === "array" ? "JSON array, or values separated by commas" : "JSON" });
}

export class FormError extends Error {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

function parseValue(param, raw) {
  const schema = param.schema ?? {};
  const { main } = typeOf(schema);
  if (schema.enum || (main === "string" && !schema.oneOf)) return raw;
  if (main === "boolean") return raw === "true";
  if (main === "integer" || main === "number") {
    const number = Number(raw);
    if (!Number.isFinite(number)) throw new FormError(param.name, "not a number");
    return number;
  }
  try {
    return JSON.parse(raw);
  } catch {
    if (main === "array") return raw.split(",").map((part) => part.trim()).filter(Boolean);
    if (main === "object") throw new FormError(param.name, "not valid JSON");
    return raw; // e.g. a string where a value or a list is allowed
  }
}

// A form for `method`; onSubmit(params) gets what was filled in (blank: left out).
export function actionForm(method, { skip = [], label = "Send", onSubmit, values = {} } = {}) {
  const params = method.params.filter((p) => !SKIPPED.has(p.name) && !skip.includes(p.name));
  const form = el("form", { class: "action-form", dataset: { action: method.name } });
  const message = el("p", { class: "message", role: "alert" });
  for (const param of params) {
    const id = `f-${method.name}-${param.name}`;
    const input = control(param, id);
    if (values[param.name] !== undefined) input.value = values[param.name];
    form.append(el("div", { class: "field" },
      el("label", { for: id }, param.name, param.required ? " *" : ""),
      input,
      el("small", {}, describeSchema(param.schema))));
  }
  const button = el("button", { type: "submit" }, label);
  form.append(el("div", { class: "buttons" }, button), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    const answer = {};
    try {
      for (const param of params) {
        const raw = form.elements[param.name].value;
        if (raw.trim() === "") continue;
        answer[param.name] = parseValue(param, raw);
      }
      button.disabled = true;
      await onSubmit(answer, form);
    } catch (error) {
      message.textContent = error.detail ?? error.message;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
