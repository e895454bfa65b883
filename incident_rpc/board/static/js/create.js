// The create form, built from `create`'s params, so it offers what the server takes.

import { rpc } from "./api.js";
import { el, replace } from "./dom.js";
import { actionForm } from "./forms.js";

export function createView(methods, onCreated) {
  const section = document.getElementById("create");
  if (!methods.has("create")) return;
  const form = actionForm(methods.get("create"), {
    label: "Create incident",
    skip: ["date"],
    onSubmit: async (params, node) => {
      const incident = await rpc("create", params);
      node.reset();
      onCreated(incident);
    },
  });
  replace(section, el("h2", { id: "create-title" }, "New incident"), form);
}
