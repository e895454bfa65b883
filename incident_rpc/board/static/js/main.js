// The board's start: sign-in, the views (#/, #/incident/ID, #/new, #/admin) and
// the live channel that feeds them.

import { ApiError, Methods, onExpired, rpc, session } from "./api.js";
import { $, toast } from "./dom.js";
import { Admin } from "./admin.js";
import { createView } from "./create.js";
import { IncidentList } from "./list.js";
import { Live } from "./live.js";
import { Panel } from "./panel.js";
import { Stats } from "./stats.js";

const VIEWS = ["signin", "board", "create", "admin"];
let app = null; // {methods, me, list, panel, stats, live, admin} while signed in

function show(view) {
  for (const name of VIEWS) document.getElementById(name).hidden = name !== view;
  $("#nav").hidden = view === "signin";
}

function signInPage(message = "") {
  stop();
  show("signin");
  $("#signin-message").textContent = message;
  $("#signin-form").elements.username.focus();
}

function stop() {
  if (!app) return;
  app.live.stop();
  app.stats.stop();
  app.panel.close();
  app = null;
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  const message = $("#signin-message");
  message.textContent = "";
  try {
    const answer = await rpc("authorization", {
      username: form.elements.username.value, password: form.elements.password.value,
    });
    session.token = answer.token;
    form.reset();
    await start();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const wait = error.data.retry_after;
    message.textContent = wait ? `Too many failed sign-ins: try again in ${wait} s.` : `Sign-in failed: ${error.detail}.`;
  }
}

async function signOut() {
  try {
    await rpc("logout");
  } catch {
    // the token may be dead already: signed out either way
  }
  session.token = null;
  signInPage("Signed out.");
}

async function start() {
  const [document, me] = await Promise.all([rpc("describe"), rpc("whoami")]);
  const methods = new Methods(document);
  stop();
  const panel = new Panel({ methods, me, onClose: () => { location.hash = "#/"; } });
  const list = new IncidentList({ methods, onOpen: (id) => { location.hash = `#/incident/${id}`; } });
  const stats = new Stats({ methods, me });
  const live = new Live({
    onEvents: (events) => {
      // Other kinds of event (silence_created, ...) carry another object as data.
      const incidents = events.filter((event) => isIncidentEvent(event));
      list.apply(incidents);
      for (const event of incidents) panel.changed(event.data, event);
      if (incidents.length) stats.changed();
      if (incidents.length < events.length) app?.admin.changed(events.filter((e) => !isIncidentEvent(e)));
    },
    onState: (state) => { const badge = $("#live"); badge.dataset.state = state; badge.textContent = state; },
    onRefused: (reason) => expire(reason),
  });
  app = { methods, me, list, panel, stats, live, admin: new Admin(methods) };
  $("#me").textContent = `${me.username} (${me.role})`;
  $("#nav-admin").hidden = me.role !== "admin";
  $("#nav-new").hidden = !methods.allows(me.role, "create");
  createView(methods, (incident) => { location.hash = `#/incident/${incident.id}`; });
  live.start(session.token);
  stats.start();
  list.reload();
  route();
}

const INCIDENT_EVENTS = new Set(["added", "updated", "acknowledged", "resolved", "assigned", "commented"]);

// An event about an incident: a known type, or a later one whose data has an
// incident's fields.
function isIncidentEvent(event) {
  const data = event.data;
  if (!data || typeof data !== "object") return false;
  if (INCIDENT_EVENTS.has(event.type)) return true;
  return ["status", "severity", "version", "description"].every((field) => field in data);
}

function expire(reason) {
  session.token = null;
  signInPage(`Your session has ended (${reason}). Sign in again.`);
}

function route() {
  if (!app) return;
  const hash = location.hash || "#/";
  const incident = hash.match(/^#\/incident\/(\d+)$/);
  if (hash === "#/new") {
    show("create");
    $("#create input, #create textarea, #create select")?.focus();
  } else if (hash === "#/admin" && app.me.role === "admin") {
    show("admin");
    app.admin.show().catch((error) => toast(error.detail ?? error.message));
  } else {
    show("board");
    if (incident) app.panel.open(Number(incident[1]));
    else app.panel.close();
  }
}

onExpired((reason) => expire(reason));
window.addEventListener("hashchange", route);
$("#signin-form").addEventListener("submit", signIn);
$("#signout").addEventListener("click", signOut);
if (session.token) {
  start().catch((error) => {
    if (error.status !== 401) signInPage(`The board could not start: ${error.detail ?? error.message}`);
  });
} else {
  signInPage();
}
