// The incident list: newest first, in keyset pages (get_all's cursor), with the
// filters get_all takes (read from describe, so new ones appear by themselves), and
// live changes applied in place. Rows are links (#/incident/ID): keyboard friendly.

import { rpc } from "./api.js";
import { el, flash, replace, when } from "./dom.js";
import * as badges from "./badges.js";
import { SKIPPED, typeOf } from "./forms.js";

const PAGE = 50;
const NOT_FILTERS = new Set([...SKIPPED, "limit", "cursor"]);
const NONE = "(none)"; // typed into a nullable filter: "has no value"

// Whether an incident passes one filter, when the board can tell (else undefined).
function passes(incident, name, wanted) {
  if (name === "acknowledged") return (incident.acknowledged_at != null) === wanted;
  if (name === "silenced") return (incident.silenced_by != null) === wanted;
  if (name in incident) return incident[name] === wanted;
  return undefined;
}

export class IncidentList {
  constructor({ methods, onOpen }) {
    this.methods = methods;
    this.onOpen = onOpen;
    this.rows = new Map(); // id -> {incident, node}
    this.list = document.getElementById("incidents");
    this.more = document.getElementById("more");
    this.note = document.getElementById("list-note");
    this.end = document.getElementById("list-end");
    this.form = document.getElementById("filters");
    this.cursor = null;
    this.generation = 0;
    this.more.onclick = () => this.page();
    new IntersectionObserver((seen) => {
      if (seen.some((entry) => entry.isIntersecting) && this.cursor && !this.loading) this.page();
    }).observe(this.more);
    this.buildFilters();
  }

  buildFilters() {
    const params = this.methods.params("get_all").filter((p) => !NOT_FILTERS.has(p.name));
    this.filterParams = params;
    const controls = params.map((param) => {
      const { main, nullable } = typeOf(param.schema);
      const id = `filter-${param.name}`;
      let input;
      if (param.schema?.enum || main === "boolean") {
        const values = param.schema.enum ?? ["true", "false"];
        input = el("select", { id, name: param.name }, el("option", { value: "" }, "any"),
          values.map((value) => el("option", { value }, main === "boolean" ? (value === "true" ? "yes" : "no") : value)));
      } else {
        input = el("input", { id, name: param.name, type: "search",
          placeholder: nullable ? `name, or ${NONE}` : "", autocomplete: "off" });
      }
      return el("div", { class: "field" }, el("label", { for: id }, param.name.replace("_", " ")), input);
    });
    const hasText = params.some((p) => ["q", "text", "search"].includes(p.name));
    replace(this.form, controls,
      hasText ? null : el("p", { class: "hint" }, "No free-text search: the API (get_all) has none yet."));
    let typing = 0;
    const changed = (event) => {
      clearTimeout(typing);
      typing = setTimeout(() => this.reload(), event.target.tagName === "SELECT" ? 0 : 300);
    };
    this.form.addEventListener("input", changed);
    this.form.addEventListener("change", changed);
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.reload(); });
  }

  filters() {
    const chosen = {};
    for (const param of this.filterParams) {
      const raw = this.form.elements[param.name].value.trim();
      if (!raw) continue;
      const { main } = typeOf(param.schema);
      if (main === "boolean") chosen[param.name] = raw === "true";
      else if (raw === NONE) chosen[param.name] = null;
      else chosen[param.name] = main === "integer" ? Number(raw) : raw;
    }
    return chosen;
  }

  // true, false, or undefined when a filter is one the board cannot check itself.
  matches(incident) {
    let known = true;
    for (const [name, wanted] of Object.entries(this.filters())) {
      const result = passes(incident, name, wanted);
      if (result === false) return false;
      if (result === undefined) known = false;
    }
    return known ? true : undefined;
  }

  async reload() {
    this.generation += 1;
    this.rows.clear();
    this.list.replaceChildren();
    this.cursor = null;
    this.note.textContent = "";
    await this.page(true);
  }

  async page(first = false) {
    if (this.loading && !first) return;
    const generation = this.generation;
    this.loading = true;
    this.more.hidden = true;
    try {
      const params = { ...this.filters(), limit: PAGE };
      if (this.cursor) params.cursor = this.cursor;
      const data = await rpc("get_all", params);
      if (generation !== this.generation) return;
      for (const incident of data.incidents) {
        if (!this.rows.has(incident.id)) this.list.append(this.row(incident));
      }
      if (first && !performance.getEntriesByName("board:first-page").length) {
        requestAnimationFrame(() => performance.mark("board:first-page")); // drawn: bench/board.py
      }
      this.cursor = data.next_cursor;
      this.more.hidden = !this.cursor;
      this.end.textContent = this.rows.size ? (this.cursor ? "" : "No more incidents.") : "No incidents match.";
    } catch (error) {
      if (generation === this.generation) this.note.textContent = `Could not load incidents: ${error.detail ?? error.message}`;
    } finally {
      if (generation === this.generation) this.loading = false;
    }
  }

  row(incident) {
    const node = el("li", { class: "incident", dataset: { id: incident.id } });
    this.rows.set(incident.id, { incident, node });
    this.draw(node, incident);
    return node;
  }

  draw(node, incident) {
    const acknowledged = incident.acknowledged_at != null;
    replace(node, el("a", { href: `#/incident/${incident.id}`, class: "row-link" },
      el("span", { class: "id" }, `#${incident.id}`),
      badges.severity(incident.severity),
      badges.status(incident.status),
      el("span", { class: "title" }, incident.title || incident.description),
      el("span", { class: "meta" },
        incident.source,
        incident.assignee ? ` · ${incident.assignee}` : " · unassigned",
        badges.OPEN.has(incident.status) ? (acknowledged ? " · acknowledged" : " · not acknowledged") : "",
        incident.occurrences > 1 ? ` · ×${incident.occurrences}` : "",
        ` · ${when(incident.created_at)}`)));
    node.classList.toggle("unacknowledged", !acknowledged && badges.OPEN.has(incident.status));
  }

  // Whether `incident` belongs at or above the last loaded row (else a later page has it).
  withinLoaded(incident) {
    if (!this.cursor) return true;
    const last = this.list.lastElementChild;
    const oldest = last && this.rows.get(Number(last.dataset.id))?.incident;
    return !oldest || newer(incident, oldest) >= 0;
  }

  place(node, incident) {
    for (let other = this.list.firstElementChild; other; other = other.nextElementSibling) {
      if (other === node) continue;
      const shown = this.rows.get(Number(other.dataset.id))?.incident;
      if (shown && newer(incident, shown) > 0) {
        this.list.insertBefore(node, other);
        return;
      }
    }
    this.list.append(node);
  }

  // A batch of live events: the last state of each incident wins.
  apply(events) {
    const latest = new Map();
    for (const event of events) if (event.data?.id !== undefined) latest.set(event.data.id, event.data);
    let unknown = 0;
    // Newest last, so that each insert lands above the ones before it.
    const incoming = [...latest.values()].sort((a, b) => newer(a, b));
    for (const incident of incoming) {
      const shown = this.rows.get(incident.id);
      const verdict = this.matches(incident);
      if (shown) {
        if (verdict === false) {
          shown.node.remove();
          this.rows.delete(incident.id);
          continue;
        }
        if (incident.version < shown.incident.version) continue;
        shown.incident = incident;
        this.draw(shown.node, incident);
        flash(shown.node);
      } else if (verdict === true && this.withinLoaded(incident)) {
        const node = this.row(incident);
        this.place(node, incident);
        flash(node);
      } else if (verdict === undefined) {
        unknown += 1;
      }
    }
    if (unknown) this.note.replaceChildren(`${unknown} changed incidents may match these filters. `,
      el("button", { type: "button", onclick: () => this.reload() }, "Reload"));
    if (this.rows.size) this.end.textContent = this.cursor ? "" : "No more incidents.";
  }
}

// >0 when a is newer than b (created_at, then id), as get_all orders them.
function newer(a, b) {
  const at = Date.parse(a.created_at) - Date.parse(b.created_at);
  return at !== 0 ? at : a.id - b.id;
}
