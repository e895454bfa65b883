// The public API, and nothing else: every action through POST /rpc, the token
// in sessionStorage (no cookie, so no CSRF surface), the method list from describe.

const TOKEN = "incident_rpc.token";
const RANK = { reporter: 1, monitor: 1, agent: 2, admin: 3 };

export class ApiError extends Error {
  constructor(envelope) {
    super(envelope.error || `HTTP ${envelope.status}`);
    this.status = envelope.status;
    this.data = envelope.data || {};
    this.errors = this.data.errors || null;
  }

  // "title: too long; id: required" from data.errors, else the sentence.
  get detail() {
    if (!this.errors) return this.message;
    const parts = Object.entries(this.errors).map(
      ([field, messages]) => `${field}: ${[messages].flat(Infinity).join(", ")}`,
    );
    return `${this.message} (${parts.join("; ")})`;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN, value);
    else sessionStorage.removeItem(TOKEN);
  },
};

let expired = () => {};
export function onExpired(callback) { expired = callback; }

export async function rpc(action, params = {}) {
  const body = { action, ...params };
  const token = session.token;
  if (token && action !== "authorization") body.token = token;
  let response;
  try {
    response = await fetch("/rpc", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError({ status: 0, error: "the server cannot be reached; check the connection" });
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    envelope = { status: response.status, error: `unexpected answer (HTTP ${response.status})` };
  }
  if (!envelope.success) {
    const error = new ApiError(envelope);
    if (error.status === 401 && body.token) expired(error.message);
    throw error;
  }
  return envelope.data;
}

// The OpenRPC document as a Map of name -> method, and who may call what.
export class Methods {
  constructor(document) {
    this.byName = new Map(document.methods.map((method) => [method.name, method]));
  }

  has(name) { return this.byName.has(name); }
  get(name) { return this.byName.get(name); }
  names() { return [...this.byName.keys()]; }
  params(name) { return this.get(name)?.params ?? []; }
  takes(name, param) { return this.params(name).some((p) => p.name === param); }

  // Whether `role` may call the action (the server decides; this only hides buttons).
  allows(role, name) {
    const method = this.get(name);
    if (!method) return false;
    const needed = method["x-role"];
    return needed == null || (RANK[role] ?? 0) >= (RANK[needed] ?? 99);
  }
}
