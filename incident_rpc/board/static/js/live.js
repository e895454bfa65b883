// Live changes through the WebSocket /ws: the token (and `since`, when resuming) in
// the first message, never in the URL; a dropped socket reconnects with the last
// event id seen, so nothing is missed or seen twice. Events are handed on in
// batches, one batch per animation frame, so a burst never blocks the page.

const BATCH = 250; // events handed to the page per frame
const REFUSED = /token/i; // 1008 reasons about the token: sign in again, do not loop

export class Live {
  constructor({ onEvents, onState, onRefused }) {
    Object.assign(this, { onEvents, onState, onRefused });
    this.position = null; // the last event id seen (or the greeting's position)
    this.queue = [];
    this.scheduled = false;
    this.attempt = 0;
    this.socket = null;
  }

  start(token) {
    this.token = token;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    this.socket?.close(1000);
    this.socket = null;
    this.onState("offline");
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    this.socket = socket;
    socket.onopen = () => {
      const hello = { token: this.token };
      if (this.position !== null) hello.since = this.position;
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = (close) => {
      if (socket !== this.socket || this.stopped) return;
      if (close.code === 1008 && REFUSED.test(close.reason)) {
        this.onState("offline");
        this.onRefused(close.reason);
        return;
      }
      this.onState("reconnecting");
      const delay = Math.min(5000, 200 * 2 ** this.attempt++) + Math.random() * 200;
      this.retry = setTimeout(() => this.connect(), delay);
    };
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.type === "subscribed") {
      if (this.position === null) this.position = message.position;
      this.attempt = 0;
      this.onState("live");
      return;
    }
    if (typeof message.id !== "number" || (this.position !== null && message.id <= this.position)) {
      return;
    }
    this.position = message.id;
    this.queue.push(message);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    const batch = this.queue.splice(0, BATCH);
    this.onEvents(batch);
    if (this.queue.length) requestAnimationFrame(() => this.flush());
    else this.scheduled = false;
  }
}
