// The header's numbers, from the `stats` action: open incidents by severity,
// unacknowledged, MTTA and MTTR. Hidden when the server has no `stats`.

import { rpc } from "./api.js";
import { duration, el, replace } from "./dom.js";

const EVERY = 30000; // ms between refreshes, besides those that live changes ask for
const AT_MOST = 2000; // ms between refreshes asked for by live changes

export class Stats {
  constructor({ methods, me }) {
    this.node = document.getElementById("stats");
    this.enabled = methods.allows(me.role, "stats");
    this.windowed = methods.takes("stats", "since"); // MTTA and MTTR of today (UTC)
    this.node.hidden = true;
    this.last = 0;
  }

  start() {
    if (!this.enabled) return;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), EVERY);
  }

  stop() {
    clearInterval(this.timer);
    clearTimeout(this.soon);
    this.node.hidden = true;
  }

  changed() {
    if (!this.enabled || this.soon) return;
    const wait = Math.max(0, this.last + AT_MOST - Date.now());
    this.soon = setTimeout(() => { this.soon = null; this.refresh(); }, wait);
  }

  async refresh() {
    this.last = Date.now();
    try {
      const today = new Date();
      today.setUTCHours(0, 0, 0, 0);
      this.draw(await rpc("stats", this.windowed ? { since: today.toISOString() } : {}));
    } catch {
      this.node.hidden = true; // numbers are a convenience; the board works without them
    }
  }

  draw(data) {
    const open = data.open ?? {};
    const severities = Object.entries(open.by_severity ?? {});
    const figure = (label, value, extra = "") => el("span", { class: `figure ${extra}`, dataset: { figure: label } },
      el("b", {}, String(value ?? "–")), ` ${label}`);
    const time = (label, part) => part && el("span", { class: "figure", dataset: { figure: label } }, el("b", {}, duration(part.mean)), ` ${label}`,
      part.p50 !== undefined ? el("small", {}, ` (p50 ${duration(part.p50)})`) : null);
    replace(this.node,
      figure("open", open.total),
      figure("unacknowledged", open.unacknowledged, "warn"),
      severities.map(([name, count]) => figure(name, count, `severity-text-${name}`)),
      time(this.windowed ? "MTTA today" : "MTTA", data.mtta),
      time(this.windowed ? "MTTR today" : "MTTR", data.mttr));
    this.node.hidden = false;
  }
}
