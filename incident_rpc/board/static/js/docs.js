// The API reference, drawn from /openrpc.json: every action, who may call it, its
// params with types and limits, its answer, an example, and a "try it" form that
// posts to /rpc with the token signed in on the board (this tab's sessionStorage).

import { session } from "./api.js";
import { $, append, el } from "./dom.js";
import { describeSchema, SKIPPED } from "./forms.js";

const WHO = {
  null: "anyone, no token needed",
  reporter: "any signed-in user or key (a reporter: its own incidents only)",
  agent: "agents and admins",
  admin: "admins",
};

function example(schema = {}) {
  if (schema.enum) return schema.enum[0];
  if (schema.oneOf) return example(schema.oneOf[0]);
  const type = [schema.type ?? "string"].flat().find((t) => t !== "null") ?? "string";
  if (type === "integer" || type === "number") return schema.minimum ?? 1;
  if (type === "boolean") return true;
  if (type === "array") return [example(schema.items)];
  if (type === "object") return {};
  if (schema.format === "date-time") return "2026-01-17T18:30:00+00:00";
  return "text";
}

function exampleParams(method) {
  const params = {};
  for (const param of method.params) {
    if (param.required && !SKIPPED.has(param.name)) params[param.name] = example(param.schema);
  }
  return params;
}

function paramsTable(method) {
  const rows = method.params.map((param) => el("tr", {},
    el("td", {}, el("code", {}, param.name)),
    el("td", {}, param.required ? "required" : "optional"),
    el("td", {}, describeSchema(param.schema)),
    el("td", {}, param.schema?.description ?? "")));
  if (!rows.length) return el("p", {}, "No parameters.");
  return el("table", {}, el("thead", {}, el("tr", {},
    ["name", "", "type and limits", "notes"].map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, rows));
}

function resultList(schema = {}) {
  const properties = Object.entries(schema.properties ?? {});
  if (!properties.length) return el("p", {}, schema.type ? describeSchema(schema) : "An object (see the description).");
  return el("ul", {}, properties.map(([name, sub]) => el("li", {}, el("code", {}, name), `: ${describeSchema(sub)}`,
    sub.properties ? resultList(sub) : null, sub.items?.properties ? resultList(sub.items) : null)));
}

function tryIt(method) {
  const id = `try-${method.name}`;
  const input = el("textarea", { id, rows: 4, spellcheck: false }, JSON.stringify(exampleParams(method), null, 2));
  const output = el("pre", { class: "answer", "aria-live": "polite" });
  const form = el("form", { class: "try", dataset: { action: method.name } },
    el("label", { for: id }, "Params (JSON object; the action and your token are added)"), input,
    el("button", { type: "submit" }, `Send ${method.name}`), output);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let params;
    try {
      params = JSON.parse(input.value || "{}");
      if (typeof params !== "object" || params === null || Array.isArray(params)) throw new Error("not an object");
    } catch (error) {
      output.textContent = `The params are not a JSON object: ${error.message}`;
      return;
    }
    const body = { action: method.name, ...params };
    if (session.token && method["x-role"] != null) body.token = session.token;
    try {
      const response = await fetch("/rpc", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body), credentials: "omit", cache: "no-store" });
      output.textContent = `HTTP ${response.status}\n${JSON.stringify(await response.json(), null, 2)}`;
    } catch (error) {
      output.textContent = `No answer: ${error.message}`;
    }
  });
  return form;
}

function section(method) {
  const command = { action: method.name, ...(method["x-role"] != null ? { token: "<token>" } : {}), ...exampleParams(method) };
  return el("section", { class: "method", id: method.name, "aria-labelledby": `h-${method.name}` },
    el("h2", { id: `h-${method.name}` }, method.name),
    el("p", {}, method.description ?? method.summary ?? ""),
    el("p", {}, el("b", {}, "Who: "), WHO[method["x-role"]] ?? method["x-role"],
      method["x-monitor"] ? "; a monitor key on what it raised" : "",
      method["x-changes"] ? ". Changes data (takes request_id)." : ". Reads only."),
    el("h3", {}, "Params"), paramsTable(method),
    el("h3", {}, "Answer (data)"), resultList(method.result?.schema),
    el("h3", {}, "Example"), el("pre", {}, `POST /rpc\n${JSON.stringify(command, null, 2)}`),
    el("h3", {}, "Try it"), tryIt(method));
}

async function main() {
  $("#signed").textContent = session.token ? "signed in (from the board)" : "not signed in: sign in on the board to try actions";
  let document;
  try {
    const response = await fetch("/openrpc.json", { cache: "no-store" });
    document = await response.json();
  } catch (error) {
    $("#docs-message").textContent = `Could not read /openrpc.json: ${error.message}`;
    return;
  }
  append($("#toc"), document.methods.map((m) => el("li", {}, el("a", { href: `#${m.name}` }, m.name))));
  append($("#methods"), document.methods.map(section));
  if (location.hash) window.document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

main();
