// One incident: every field, its comments, its history, and the actions the
// caller's role allows. A change sends the `version` the panel shows (where the
// action takes one), so a stale panel gets "changed by someone else" and reloads
// instead of overwriting. While a form is being filled in, live changes do not
// redraw the panel: they say that the incident changed meanwhile.

import { rpc } from "./api.js";
import { el, flash, replace, when } from "./dom.js";
import * as badges from "./badges.js";

const FIELDS = [
  "id", "title", "description", "status", "severity", "source", "assignee",
  "acknowledged_at", "acknowledged_by", "created_by", "created_at", "updated_at",
  "resolved_at", "resolved_by", "resolution", "dedup_key", "occurrences", "last_seen_at",
  "version", "details",
];
const TIMES = /_at$/;
const STALE = "Changed by someone else meanwhile; reloaded. Check it and try again.";

export class Panel {
  constructor({ methods, me, onClose }) {
    Object.assign(this, { methods, me, onClose });
    this.node = document.getElementById("panel");
    this.id = null;
    this.dirty = false;
    this.busy = 0; // commands and loads in flight
    this.ownComments = 0; // comments sent from here whose live event is still to come
    const touched = (event) => {
      if (event.target.closest(".actions, .comment-form")) this.dirty = true;
    };
    this.node.addEventListener("input", touched);
    this.node.addEventListener("change", touched);
    this.node.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.onClose();
    });
  }

  may(action) { return this.methods.allows(this.me.role, action); }

  async open(id, notice = "") {
    this.busy += 1;
    try {
      await this.load(id, notice);
    } finally {
      this.busy -= 1;
    }
  }

  async load(id, notice) {
    this.id = id;
    this.dirty = false;
    this.node.hidden = false;
    this.node.parentElement.classList.add("with-panel");
    if (!this.incident || this.incident.id !== id) replace(this.node, el("p", { class: "note" }, "Loading…"));
    try {
      const [incident, comments, history] = await Promise.all([
        rpc("get", { id }), rpc("comments", { id }), rpc("history", { id }),
      ]);
      if (this.id !== id) return;
      this.incident = incident;
      this.render(incident, comments.comments, history.events, notice);
    } catch (error) {
      if (this.id !== id) return;
      this.incident = null;
      replace(this.node, this.heading(`Incident #${id}`),
        el("p", { class: "message", role: "alert" }, error.status === 404 ? "No such incident (or not yours to read)." : error.detail));
    }
  }

  close() {
    this.id = null;
    this.incident = null;
    this.node.hidden = true;
    this.node.parentElement.classList.remove("with-panel");
    this.node.replaceChildren();
  }

  heading(text) {
    return el("div", { class: "panel-head" },
      el("h2", { tabindex: -1, id: "panel-title" }, text),
      el("button", { type: "button", class: "close", "aria-label": "Close the incident", onclick: () => this.onClose() }, "×"));
  }

  render(incident, comments, history, notice) {
    this.message = el("p", { class: "message", role: "alert", id: "panel-message" }, notice);
    replace(this.node,
      this.heading(`#${incident.id} ${incident.title || ""}`.trim()),
      el("p", { class: "badges" }, badges.severity(incident.severity), " ", badges.status(incident.status)),
      this.message,
      this.actions(incident),
      el("h3", {}, "Fields"),
      this.fields(incident),
      el("h3", {}, `Comments (${comments.length})`),
      this.comments(comments),
      el("h3", {}, "History"),
      this.history(history));
    this.node.querySelector("h2").focus({ preventScroll: true });
  }

  fields(incident) {
    const names = [...FIELDS.filter((name) => name in incident), ...Object.keys(incident).filter((n) => !FIELDS.includes(n))];
    return el("dl", { class: "fields" }, names.map((name) => {
      const value = incident[name];
      let shown;
      if (value === null || value === undefined) shown = el("span", { class: "none" }, "—");
      else if (typeof value === "object") shown = el("pre", {}, JSON.stringify(value, null, 2));
      else shown = TIMES.test(name) ? when(value) : String(value);
      return el("div", { class: "pair", dataset: { field: name } }, el("dt", {}, name.replaceAll("_", " ")), el("dd", {}, shown));
    }));
  }

  comments(list) {
    const box = el("div", { class: "comments" },
      el("ol", {}, list.map((c) => el("li", {},
        el("div", { class: "meta" }, `${c.author} · ${when(c.created_at)}`),
        el("div", { class: "text" }, c.text)))));
    if (this.may("comment")) {
      const text = el("textarea", { id: "comment-text", name: "text", rows: 2, maxlength: 10000, required: true });
      box.append(el("form", { class: "comment-form", onsubmit: (e) => { e.preventDefault(); this.act("comment", { text: text.value }); } },
        el("label", { for: "comment-text" }, "Add a comment"), text,
        el("button", { type: "submit" }, "Comment")));
    }
    return box;
  }

  history(events) {
    return el("ol", { class: "timeline" }, events.map((event) => el("li", {},
      el("div", { class: "meta" }, `${when(event.at)} · ${event.type} · ${event.actor}`),
      el("ul", { class: "changes" }, Object.entries(event.changes || {}).map(([field, change]) =>
        el("li", {}, `${field}: `, Array.isArray(change) && change.length === 2
          ? `${show(change[0])} → ${show(change[1])}` : show(change)))))));
  }

  actions(incident) {
    const box = el("div", { class: "actions" });
    const open = badges.OPEN.has(incident.status);
    if (this.may("acknowledge") && open && !incident.acknowledged_at) {
      box.append(el("button", { type: "button", id: "do-acknowledge", onclick: () => this.act("acknowledge") }, "Acknowledge"));
    }
    if (this.may("update")) {
      const statuses = this.methods.params("update").find((p) => p.name === "status")?.schema?.enum ?? [];
      const select = el("select", { id: "status-select", name: "status" },
        statuses.map((value) => el("option", { value, selected: value === incident.status }, value)));
      box.append(el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); this.act("update", { status: select.value }); } },
        el("label", { for: "status-select" }, "Status"), select, el("button", { type: "submit", id: "do-status" }, "Change status")));
    }
    if (this.may("assign")) {
      const who = el("input", { id: "assignee-input", name: "assignee", value: incident.assignee ?? "", placeholder: "username; empty: nobody", autocomplete: "off" });
      box.append(el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); this.act("assign", { assignee: who.value.trim() || null }); } },
        el("label", { for: "assignee-input" }, "Assignee"), who, el("button", { type: "submit", id: "do-assign" }, "Assign")));
    }
    if (this.may("resolve") && incident.status !== "completed") {
      const resolution = el("textarea", { id: "resolution", name: "resolution", rows: 2, maxlength: 10000 });
      box.append(el("form", { class: "resolve", onsubmit: (e) => { e.preventDefault(); this.act("resolve", resolution.value.trim() ? { resolution: resolution.value } : {}); } },
        el("label", { for: "resolution" }, "Resolution"), resolution, el("button", { type: "submit", id: "do-resolve" }, "Resolve")));
    }
    return box;
  }

  async act(action, params = {}) {
    const incident = this.incident;
    const command = { id: incident.id, ...params };
    if (this.methods.takes(action, "version")) command.version = incident.version;
    this.message.textContent = "";
    if (action === "comment") this.ownComments += 1; // its event may come before the answer
    this.busy += 1;
    try {
      const answer = await rpc(action, command);
      if (answer?.id === incident.id && answer.version !== undefined) this.incident = answer;
      this.dirty = false;
      await this.open(incident.id, `${action}: done.`);
    } catch (error) {
      if (action === "comment") this.ownComments -= 1;
      if (error.status === 409) {
        await this.open(incident.id, STALE);
      } else {
        this.message.textContent = `${action} failed: ${error.detail}`;
      }
    } finally {
      this.busy -= 1;
    }
  }

  // A live change to the open incident.
  changed(incident, event) {
    if (!this.incident || incident.id !== this.id) return;
    if (this.dirty) {
      this.message.textContent = `Changed meanwhile by ${event.actor} (${event.type}); what you send now will be refused as stale.`;
      return;
    }
    if (event.type === "commented" && event.actor === this.me.username && this.ownComments > 0) {
      this.ownComments -= 1; // ours, drawn already
      return;
    }
    this.latest = { incident, event };
    clearTimeout(this.refresh);
    this.refresh = setTimeout(() => this.catchUp(), 150);
  }

  // Redraw for the last live change, unless the panel shows it already. Waits while
  // a command or a load is in flight: its answer may well be that very change.
  catchUp() {
    if (this.busy) {
      this.refresh = setTimeout(() => this.catchUp(), 150);
      return;
    }
    const { incident, event } = this.latest;
    if (!this.incident || incident.id !== this.incident.id || this.dirty) return;
    if (incident.version > this.incident.version || event.type === "commented") {
      this.open(incident.id, `Updated live: ${event.type} by ${event.actor}.`).then(() => flash(this.node));
    }
  }
}

function show(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
