// The page's own telemetry (round trips, reconnects, errors, voice latency, connection states):
// kept in a bounded buffer (the oldest events are dropped past `telemetry_max_events`, counted
// in `dropped`) and uploaded in batches of at most 100 to POST /telemetry every
// `telemetry_upload_ms`. A failed upload (no answer, 5xx, 429, 401, a server without the
// endpoint) keeps the events and the next try waits longer (up to a minute); a batch the server
// refuses as malformed (413/422) is dropped so it cannot block the ones after it. An accepted
// batch leaves the buffer by sequence number, so events recorded (or dropped) while it was in
// flight are neither lost nor sent twice; only an upload with no answer at all may have reached
// the server and is sent again (telemetry is at-least-once there, never chats). Details are
// short strings and never carry the token or message text.

import { requestJson } from "./http.js";

const MAX_BATCH = 100;
const MAX_DETAIL_CHARS = 120;
const MAX_BACKOFF_MS = 60000;

export class Telemetry {
  constructor({ config, getToken }) {
    this.config = config;
    this.getToken = getToken;
    this.buffer = [];
    this.seq = 0;
    this.dropped = 0;
    this.uploaded = 0;
    this.failedUploads = 0;
    this.peakBuffered = 0; // the most events ever held at once (never above the bound)
    this.listeners = [];
    this.inFlight = false;
    this.timer = null;
    this.delayMs = config.telemetry_upload_ms;
  }

  /** Adds one event; never throws, never grows past the bound. */
  record(type, { value, detail } = {}) {
    const event = { type, at: Date.now() };
    if (Number.isFinite(value)) event.value = Math.round(value);
    if (detail !== undefined) event.detail = String(detail).slice(0, MAX_DETAIL_CHARS);
    this.seq += 1;
    this.buffer.push({ seq: this.seq, event });
    const excess = this.buffer.length - this.config.telemetry_max_events;
    if (excess > 0) {
      this.buffer.splice(0, excess);
      this.dropped += excess;
    }
    this.peakBuffered = Math.max(this.peakBuffered, this.buffer.length);
    for (const listener of this.listeners) listener(event);
  }

  onEvent(listener) {
    this.listeners.push(listener);
  }

  start() {
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.upload().finally(() => this.schedule()), this.delayMs);
  }

  async upload() {
    const token = this.getToken();
    if (this.inFlight || !token || this.buffer.length === 0) return;
    this.inFlight = true;
    const batch = this.buffer.slice(0, MAX_BATCH);
    const lastSeq = batch[batch.length - 1].seq;
    try {
      const result = await requestJson("/telemetry", {
        method: "POST",
        token,
        body: { events: batch.map((entry) => entry.event) },
        timeoutMs: this.config.request_timeout_ms,
      });
      if (result.ok || result.status === 413 || result.status === 422) {
        this.buffer = this.buffer.filter((entry) => entry.seq > lastSeq);
        if (result.ok) this.uploaded += batch.length;
        else this.dropped += batch.length;
        this.delayMs = this.config.telemetry_upload_ms;
      } else {
        this.failedUploads += 1;
        this.delayMs = Math.min(MAX_BACKOFF_MS, this.delayMs * 2);
      }
    } finally {
      this.inFlight = false;
    }
  }

  stats() {
    return {
      buffered: this.buffer.length,
      peakBuffered: this.peakBuffered,
      maxEvents: this.config.telemetry_max_events,
      dropped: this.dropped,
      uploaded: this.uploaded,
      failedUploads: this.failedUploads,
    };
  }
}
