// Admin views: users and API keys, and every family of admin actions that the
// server describes but the board does not know by name (silences, notification
// channels, ...): their forms come from their params, their tables from their lists.

import { rpc } from "./api.js";
import { el, replace, toast, when } from "./dom.js";
import { actionForm } from "./forms.js";

const FAMILIES = [
  { prefix: "silence_", title: "Silences" },
  { prefix: "channel_", title: "Notification channels" },
];

export class Admin {
  constructor(methods) {
    this.methods = methods;
    this.node = document.getElementById("admin");
    this.refreshers = new Map(); // family prefix -> its table's refresh, while shown
  }

  // Live events of a family (silence_created, ...): redraw its table if it is shown.
  changed(events) {
    if (this.node.hidden) return;
    for (const [prefix, refresh] of this.refreshers) {
      if (events.some((event) => event.type.startsWith(prefix))) refresh();
    }
  }

  async show() {
    replace(this.node, el("h2", { id: "admin-title", tabindex: -1 }, "Administration"));
    this.node.append(await this.users(), await this.keys());
    for (const family of FAMILIES) {
      const names = this.methods.names().filter((name) => name.startsWith(family.prefix));
      if (names.length) this.node.append(await this.family(family, names));
    }
    this.node.querySelector("h2").focus({ preventScroll: true });
  }

  section(id, title, ...children) {
    return el("section", { class: "admin-part", id, "aria-labelledby": `${id}-title` },
      el("h3", { id: `${id}-title` }, title), children);
  }

  async users() {
    const box = this.section("users", "Users");
    const refresh = async () => {
      const table = el("table", {}, el("thead", {}, el("tr", {},
        ["username", "role", "disabled", "created", "new password"].map((h) => el("th", { scope: "col" }, h)))));
      const body = el("tbody");
      try {
        const { users } = await rpc("user_list");
        for (const user of users) body.append(this.userRow(user, refresh));
      } catch (error) {
        body.append(el("tr", {}, el("td", { colspan: 5 }, error.detail)));
      }
      table.append(body);
      put(box, table, heading);
    };
    const roles = this.methods.params("user_update").find((p) => p.name === "role")?.schema?.enum ?? [];
    this.userRoles = roles;
    const heading = el("h4", {}, "Create a user");
    box.append(heading, actionForm(this.methods.get("user_create"), {
      label: "Create user",
      onSubmit: async (params, form) => { await rpc("user_create", params); form.reset(); toast(`User ${params.username} created.`); refresh(); },
    }));
    await refresh();
    return box;
  }

  userRow(user, refresh) {
    const update = async (params, done) => {
      try {
        await rpc("user_update", { username: user.username, ...params });
        toast(done);
      } catch (error) {
        toast(`${user.username}: ${error.detail}`);
      }
      refresh();
    };
    const role = el("select", { "aria-label": `role of ${user.username}`,
      onchange: () => update({ role: role.value }, `${user.username} is now ${role.value}.`) },
    this.userRoles.map((value) => el("option", { value, selected: value === user.role }, value)));
    const disabled = el("input", { type: "checkbox", checked: user.disabled, "aria-label": `${user.username} disabled`,
      onchange: () => update({ disabled: disabled.checked }, `${user.username} ${disabled.checked ? "disabled" : "enabled"}.`) });
    const password = el("input", { type: "password", autocomplete: "new-password", minlength: 8, maxlength: 256,
      "aria-label": `new password for ${user.username}` });
    const reset = el("form", { class: "inline", onsubmit: (e) => {
      e.preventDefault();
      if (password.value) update({ password: password.value }, `New password set for ${user.username}; their sessions ended.`);
    } }, password, el("button", { type: "submit" }, "Set"));
    return el("tr", { dataset: { username: user.username } },
      el("td", {}, user.username), el("td", {}, role), el("td", {}, disabled), el("td", {}, when(user.created_at)), el("td", {}, reset));
  }

  async keys() {
    const box = this.section("keys", "API keys");
    const shown = el("div", { class: "secret", hidden: true, role: "status" });
    const refresh = async () => {
      const table = el("table", {}, el("thead", {}, el("tr", {},
        ["name", "role", "prefix", "created", "last used", "state", ""].map((h) => el("th", { scope: "col" }, h)))));
      const body = el("tbody");
      try {
        const { keys } = await rpc("key_list");
        for (const key of keys) {
          const revoke = key.revoked ? "" : el("button", { type: "button", onclick: async () => {
            if (!confirm(`Revoke key ${key.name} (${key.prefix}…)? It stops working at once.`)) return;
            try { await rpc("key_revoke", { id: key.id }); toast(`Key ${key.name} revoked.`); } catch (error) { toast(error.detail); }
            refresh();
          } }, "Revoke");
          body.append(el("tr", { dataset: { key: key.id } }, el("td", {}, key.name), el("td", {}, key.role), el("td", {}, el("code", {}, key.prefix)),
            el("td", {}, `${when(key.created_at)} by ${key.created_by}`), el("td", {}, when(key.last_used_at) || "never"),
            el("td", {}, key.revoked ? `revoked ${when(key.revoked_at)}` : "active"), el("td", {}, revoke)));
        }
      } catch (error) {
        body.append(el("tr", {}, el("td", { colspan: 7 }, error.detail)));
      }
      table.append(body);
      put(box, table, shown);
    };
    box.append(shown, el("h4", {}, "Create a key"), actionForm(this.methods.get("key_create"), {
      label: "Create key",
      onSubmit: async (params, form) => {
        const created = await rpc("key_create", params);
        form.reset();
        this.showOnce(shown, created);
        refresh();
      },
    }));
    await refresh();
    return box;
  }

  showOnce(box, created) {
    const value = el("input", { readonly: true, value: created.key, id: "new-key", "aria-label": "the new key", size: 50 });
    const copy = el("button", { type: "button", onclick: async () => {
      try {
        await navigator.clipboard.writeText(created.key);
      } catch {
        value.select();
        document.execCommand("copy");
      }
      toast("Key copied.");
    } }, "Copy");
    replace(box, el("p", {}, `Key ${created.name} (${created.role}). Copy it now: it is shown this once.`), value, " ", copy,
      " ", el("button", { type: "button", onclick: () => { box.hidden = true; box.replaceChildren(); } }, "Done"));
    box.hidden = false;
    value.focus();
    value.select();
  }

  // A family of actions: the list as a table, per-row actions taking only an id,
  // and a form for each of the others.
  async family({ prefix, title }, names) {
    const id = prefix.replace(/_$/, "s");
    const box = this.section(id, title);
    const list = names.find((name) => name.endsWith("_list"));
    const rowActions = names.filter((name) => {
      const required = this.methods.params(name).filter((p) => p.required);
      return name !== list && required.length === 1 && required[0].name === "id";
    });
    const table = el("div", { class: "family-table" });
    const refresh = async () => {
      if (!list) return;
      try {
        const data = await rpc(list);
        const items = Object.values(data).find(Array.isArray) ?? [];
        const columns = [...new Set(items.flatMap((item) => Object.keys(item)))];
        replace(table, el("table", {},
          el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)), rowActions.length ? el("th") : null)),
          el("tbody", {}, items.map((item) => el("tr", {},
            columns.map((c) => el("td", {}, cell(c, item[c]))),
            rowActions.length ? el("td", {}, rowActions.map((name) => el("button", { type: "button", onclick: async () => {
              try { await rpc(name, { id: item.id }); toast(`${name} ${item.id}: done.`); } catch (error) { toast(error.detail); }
              refresh();
            } }, name.slice(prefix.length)))) : null)))));
      } catch (error) {
        replace(table, el("p", { class: "message" }, error.detail));
      }
    };
    this.refreshers.set(prefix, refresh);
    box.append(table);
    for (const name of names.filter((n) => n !== list && !rowActions.includes(n))) {
      const method = this.methods.get(name);
      box.append(el("h4", {}, `${name}: ${method.summary ?? ""}`), actionForm(method, {
        label: name.slice(prefix.length).replaceAll("_", " "),
        onSubmit: async (params, form) => {
          const answer = await rpc(name, params);
          form.reset();
          toast(`${name}: done${answer && answer.id !== undefined ? ` (id ${answer.id})` : ""}.`);
          refresh();
        },
      }));
    }
    await refresh();
    return box;
  }
}

function cell(column, value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return el("code", {}, JSON.stringify(value));
  return /_at$/.test(column) ? when(value) : String(value);
}

// The section's table: replaced when there is one, else put before `before`.
function put(box, table, before) {
  const old = box.querySelector(":scope > table");
  if (old) old.replaceWith(table);
  else box.insertBefore(table, before);
}
