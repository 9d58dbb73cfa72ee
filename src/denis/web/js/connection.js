// The page's link to Denis: the WebSocket /chat, its reconnects, the HTTP fallback and the
// outbox. What it guarantees and how it degrades:
//
// - WebSocket first. After the `auth` frame the server answers `ready` (or `auth_ok` on servers
//   without the live-status protocol); the socket is then pinged every `ping_ms` and each pong
//   gives the round trip. A socket that closes is reopened after 1, 2, 4, 8 … s (capped at
//   30 s, jittered: backoff.js); a close 1013 carries a retry hint, and the page waits at least
//   that long. A close 1008 "unauthorized" stops the reconnects until a new token is entered.
// - HTTP fallback. While the socket is down, or slower than `http_fallback_rtt_ms` (a pong that
//   late, or missing), chats go to POST /chat and the panel polls GET /status. A poll is also
//   the reachability probe: nothing is POSTed until a poll has succeeded since the socket went
//   down. Chats return to the socket after `healthy_pongs` fast pongs in a row.
// - States (`state()`): "open" (socket up and fast), "http" (fallback), "connecting" (no answer
//   yet either way), "offline" (neither answers).
//
// Exactly once, at most once: the server keeps no record of message ids, so a message it
// received twice would be acted on twice (a door unlocked twice, two timers). Each message is
// therefore handed to ONE transport ONE time. A message that never left the page (typed while
// offline, or the socket was not open) waits in the outbox and goes out once, on whichever
// transport comes up first, never lost. A message handed over whose transport then failed
// before an answer (socket closed, POST with no response) may or may not have been acted on:
// it is marked "uncertain", NOT re-sent automatically (at-most-once), and the page says so and
// offers "Send again", which sends it as a new message with a new id if the person chooses.
// A late reply to an uncertain message is still shown. Every HTTP request has a deadline.

import { backoffDelayMs, retryHintMs } from "./backoff.js";
import { errorCode } from "./errors.js";
import { requestJson } from "./http.js";
import { Outbox } from "./outbox.js";

const CLOSE_TRY_AGAIN_LATER = 1013;
const CLOSE_POLICY = 1008;

export class Connection {
  constructor({ config, getToken, events, telemetry }) {
    this.config = config;
    this.getToken = getToken;
    this.events = events; // {state, reply, error, uncertain, status, unauthorized}
    this.telemetry = telemetry;
    this.outbox = new Outbox();
    this.sessionId = `web-${this.outbox.prefix}`;
    this.attempts = []; // Date.now() of every WebSocket attempt (a test hook)
    this.sent = 0; // chats handed to a transport, both kinds (a test hook)
    this.ws = null;
    this.wsAuthed = false;
    this.wsSlow = false;
    this.fastPongs = 0;
    this.pings = new Map();
    this.failures = 0; // consecutive failed attempts: the backoff step
    this.reconnectTimer = null;
    this.httpReachable = null; // null: unknown since the socket went down
    this.httpBusy = false;
    this.polling = false;
    this.lastPushAt = 0;
    this.stopped = true;
    this.lastState = null;
    this.timers = [];
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.lastState = null; // the view may have shown something else meanwhile: say it again
    this.emitState();
    this.timers.push(setInterval(() => this.ping(), this.config.ping_ms));
    this.timers.push(setInterval(() => this.poll(), this.config.status_poll_ms));
    this.connect();
    this.poll();
  }

  stop() {
    this.stopped = true;
    this.timers.forEach(clearInterval);
    this.timers = [];
    clearTimeout(this.reconnectTimer);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.wsAuthed = false;
    for (const item of this.outbox.orphan("ws")) this.events.uncertain(item);
    this.emitState();
  }

  /** Restart after a new token was entered. */
  restart() {
    this.stop();
    this.failures = 0;
    this.httpReachable = null;
    this.start();
  }

  state() {
    if (this.wsAuthed && !this.wsSlow) return "open";
    if (this.httpReachable === true) return "http";
    if (this.httpReachable === false) return "offline";
    return "connecting";
  }

  /** The socket's last round trip in ms; null without an authenticated socket. */
  rtt() {
    return this.wsAuthed ? (this.lastRttMs ?? null) : null;
  }

  send(text) {
    const item = this.outbox.add(text);
    this.pump();
    return item;
  }

  // -- WebSocket --------------------------------------------------------------------------

  connect() {
    if (this.stopped || this.ws) return;
    const token = this.getToken();
    if (!token) return;
    this.attempts.push(Date.now());
    let ws;
    try {
      ws = new WebSocket(this.config.ws_url);
    } catch {
      this.scheduleReconnect(null);
      return;
    }
    this.ws = ws;
    const openTimer = setTimeout(() => ws.close(4000, "no answer"), this.config.request_timeout_ms);
    ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "auth", token })));
    ws.addEventListener("message", (event) => {
      clearTimeout(openTimer);
      this.onFrame(ws, event.data);
    });
    ws.addEventListener("close", (event) => {
      clearTimeout(openTimer);
      this.onClose(ws, event);
    });
  }

  onFrame(ws, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "ready":
      case "auth_ok":
        this.onAuthed(frame);
        break;
      case "pong":
        this.onPong(frame);
        break;
      case "status":
        if (frame.status && typeof frame.status === "object") {
          this.lastPushAt = Date.now();
          this.events.status(frame.status);
        }
        break;
      case "reply":
        this.onAnswer(frame.id, (item) => this.events.reply(item, frame));
        break;
      case "error":
        this.onErrorFrame(frame);
        break;
      default:
        break;
    }
  }

  onAuthed(frame) {
    if (frame.status && typeof frame.status === "object") {
      this.lastPushAt = Date.now();
      this.events.status(frame.status);
    }
    if (this.wsAuthed) return; // "auth_ok" then "ready": one socket, authenticated once
    this.wsAuthed = true;
    this.wsSlow = false;
    this.fastPongs = 0;
    this.lastRttMs = null;
    this.failures = 0;
    this.telemetry.record("ws_state", { detail: "open" });
    this.emitState();
    this.ping();
    this.pump();
  }

  onErrorFrame(frame) {
    const code = frame.error && frame.error.code;
    if (code === "unauthorized" && !this.wsAuthed) return; // the 1008 close follows
    this.telemetry.record("error", { detail: String(code || "unknown") });
    if (frame.id === null || frame.id === undefined) {
      this.events.error(null, code, frame.retry_after_s);
      return;
    }
    this.onAnswer(frame.id, (item) => this.events.error(item, code, frame.retry_after_s));
  }

  onAnswer(id, show) {
    const item = this.outbox.get(id);
    if (item === null) show(null); // an answer we have no record of is still shown, never dropped
    else if (this.outbox.settle(id)) show(item);
    this.pump();
  }

  onClose(ws, event) {
    if (this.ws !== ws) return;
    const wasAuthed = this.wsAuthed;
    this.ws = null;
    this.wsAuthed = false;
    this.wsSlow = false;
    this.pings.clear();
    // Probe again before any POST. A failed attempt while offline leaves it offline: it tells
    // nothing new, and "connecting" between two attempts made the status flicker.
    if (this.httpReachable !== false) this.httpReachable = null;
    for (const item of this.outbox.orphan("ws")) this.events.uncertain(item);
    this.telemetry.record("ws_state", { detail: `closed ${event.code}` });
    if (event.code === CLOSE_POLICY && event.reason === "unauthorized") {
      this.onUnauthorized();
      return;
    }
    if (wasAuthed) this.failures = 0;
    this.scheduleReconnect(event.code === CLOSE_TRY_AGAIN_LATER ? event.reason : null);
    this.emitState();
    this.poll();
  }

  scheduleReconnect(retryReason) {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    let delay = backoffDelayMs(this.failures, this.config.backoff_base_ms, this.config.backoff_cap_ms);
    const hint = retryHintMs(retryReason);
    if (hint !== null) delay = Math.max(delay, hint + Math.round(Math.random() * hint * 0.1));
    this.failures += 1;
    this.nextAttemptAt = Date.now() + delay;
    this.telemetry.record("reconnect", { value: delay, detail: hint ? "1013" : "backoff" });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  ping() {
    const ws = this.ws;
    if (!ws || !this.wsAuthed || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    for (const [id, sentAt] of this.pings) {
      if (now - sentAt > this.config.http_fallback_rtt_ms) {
        this.pings.delete(id);
        this.telemetry.record("rtt", { value: now - sentAt, detail: "no pong yet" });
        this.markSlow(now - sentAt); // no pong in time: at least as slow as it has waited
      }
    }
    this.pingCount = (this.pingCount || 0) + 1;
    const id = `p${this.pingCount}`;
    this.pings.set(id, now);
    ws.send(JSON.stringify({ type: "ping", id, t: now }));
  }

  onPong(frame) {
    const sentAt = this.pings.get(frame.id);
    if (sentAt === undefined) return; // too late: already counted as slow
    this.pings.delete(frame.id);
    const rttMs = Date.now() - sentAt;
    this.lastRttMs = rttMs;
    this.telemetry.record("rtt", { value: rttMs });
    if (rttMs > this.config.http_fallback_rtt_ms) {
      this.markSlow(rttMs);
      return;
    }
    this.fastPongs += 1;
    if (this.wsSlow && this.fastPongs >= this.config.healthy_pongs) {
      this.wsSlow = false;
      this.telemetry.record("ws_state", { detail: "fast again" });
      this.emitState();
      this.pump();
    }
  }

  markSlow(rttMs) {
    this.lastRttMs = rttMs;
    this.fastPongs = 0;
    if (this.wsSlow) return;
    this.wsSlow = true;
    this.telemetry.record("ws_state", { value: rttMs, detail: "slow" });
    this.emitState();
    this.poll();
  }

  // -- HTTP -------------------------------------------------------------------------------

  async poll() {
    const pushIsLive = Date.now() - this.lastPushAt < Math.max(5000, 2.5 * this.config.status_poll_ms);
    if (this.stopped || this.polling || (this.state() === "open" && pushIsLive)) return;
    const token = this.getToken();
    if (!token) return;
    this.polling = true;
    const result = await requestJson("/status", {
      token,
      timeoutMs: Math.min(this.config.request_timeout_ms, Math.max(3000, this.config.status_poll_ms * 2)),
    });
    this.polling = false;
    if (this.stopped) return;
    if (result.status === 401) {
      this.onUnauthorized();
      return;
    }
    this.httpReachable = result.ok;
    if (result.ok && result.body) this.events.status(result.body);
    this.emitState();
    this.pump();
  }

  pump() {
    const state = this.state();
    if (state === "open") this.pumpWs();
    else if (state === "http") this.pumpHttp();
  }

  pumpWs() {
    for (const item of this.outbox.queued()) {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return; // still queued: nothing left the page
      const frame = { type: "chat", id: item.id, text: item.text, session_id: this.sessionId };
      ws.send(JSON.stringify(frame));
      this.outbox.handOver(item, "ws");
      this.sent += 1;
    }
  }

  async pumpHttp() {
    if (this.httpBusy) return;
    this.httpBusy = true;
    try {
      for (;;) {
        const item = this.outbox.queued()[0];
        if (!item || this.state() !== "http") return;
        this.outbox.handOver(item, "http");
        this.sent += 1;
        const result = await requestJson("/chat", {
          method: "POST",
          token: this.getToken(),
          body: { text: item.text, session_id: this.sessionId },
          timeoutMs: this.config.request_timeout_ms,
        });
        this.onHttpResult(item, result);
      }
    } finally {
      this.httpBusy = false;
    }
  }

  onHttpResult(item, result) {
    if (result.ok && result.body && typeof result.body.reply === "string") {
      if (this.outbox.settle(item.id)) this.events.reply(item, result.body);
      return;
    }
    if (result.status === 0) {
      // No answer: the request may have reached the server. At most once: not re-sent.
      item.state = "uncertain";
      this.httpReachable = null;
      this.telemetry.record("error", { detail: `http ${result.code}` });
      this.events.uncertain(item);
      this.emitState();
      this.poll();
      return;
    }
    const code = errorCode(result.body);
    this.telemetry.record("error", { detail: String(code) });
    if (this.outbox.settle(item.id)) this.events.error(item, code, result.retryAfterS);
    if (result.status === 401) this.onUnauthorized();
  }

  /** The token was refused: stop everything until a new one is entered (restart()). */
  onUnauthorized() {
    if (this.stopped) return;
    this.stop();
    this.events.unauthorized();
  }

  emitState() {
    const state = this.state();
    if (state === this.lastState) return;
    this.lastState = state;
    this.telemetry.record("ws_state", { detail: `page ${state}` });
    this.events.state(state);
  }
}
