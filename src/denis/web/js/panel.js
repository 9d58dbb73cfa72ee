// The telemetry panel: each zone's mode, every breaker's state, queue lengths and the recent
// signals, from whichever status the page last got (a WebSocket push or a GET /status poll),
// plus a one-line summary of what is degraded and why. Everything is written with textContent:
// nothing from the server is ever parsed as HTML.

const MAX_SIGNALS = 12;
const BREAKER_LABEL = { closed: "closed", open: "open", half_open: "half-open" };

export class StatusPanel {
  constructor(root) {
    this.summary = root.querySelector("#status-summary");
    this.zones = root.querySelector("#zones");
    this.breakers = root.querySelector("#breakers");
    this.queues = root.querySelector("#queues");
    this.signals = root.querySelector("#signals");
    this.updated = root.querySelector("#status-updated");
    this.root = root;
    this.lastSummary = "";
    this.updatedAt = null;
  }

  /** Denis unreachable: say the panel shows the last known status, not the current one. */
  markStale() {
    this.root.classList.add("stale");
    const when = this.updatedAt ? ` (last update ${this.updatedAt.toLocaleTimeString()})` : "";
    this.lastSummary = `Denis can't be reached: this status may be out of date${when}.`;
    this.summary.textContent = this.lastSummary;
    this.summary.dataset.tone = "bad";
  }

  render(status) {
    const zones = objectOr(status.zones);
    const breakers = objectOr(status.breakers);
    const queues = objectOr(status.queues);
    fill(this.zones, Object.entries(zones), ([name, zone]) => {
      const mode = zone && typeof zone.mode === "string" ? zone.mode : "unknown";
      return row(name, modeLabel(mode), mode === "normal" ? "ok" : "warn");
    });
    fill(this.breakers, Object.entries(breakers), ([name, state]) =>
      row(name, BREAKER_LABEL[state] || String(state), breakerTone(state)),
    );
    fill(this.queues, Object.entries(queues), ([name, length]) =>
      row(name, String(length), Number(length) > 0 ? "info" : "ok"),
    );
    const signals = Array.isArray(status.signals) ? status.signals.slice(-MAX_SIGNALS).reverse() : [];
    fill(this.signals, signals, signalRow, "No recent signals");
    this.root.classList.remove("stale");
    this.setSummary(zones, breakers);
    this.updatedAt = new Date();
    this.updated.textContent = `Updated ${this.updatedAt.toLocaleTimeString()}`;
  }

  setSummary(zones, breakers) {
    const problems = [];
    for (const [name, zone] of Object.entries(zones)) {
      if (zone && zone.mode && zone.mode !== "normal") problems.push(`${name} zone in ${modeLabel(zone.mode)} mode`);
    }
    for (const [name, state] of Object.entries(breakers)) {
      if (state !== "closed") problems.push(`${name} breaker ${BREAKER_LABEL[state] || state}`);
    }
    const text = problems.length ? `Degraded: ${problems.join(", ")}.` : "Everything is working normally.";
    if (text === this.lastSummary) return; // the live region speaks only when it changes
    this.lastSummary = text;
    this.summary.textContent = text;
    this.summary.dataset.tone = problems.length ? "warn" : "ok";
  }
}

function modeLabel(mode) {
  return String(mode).replaceAll("_", "-");
}

function objectOr(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

function breakerTone(state) {
  if (state === "closed") return "ok";
  return state === "open" ? "bad" : "warn";
}

function fill(list, entries, makeRow, emptyText = "None") {
  const rows = entries.map(makeRow);
  if (rows.length === 0) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = emptyText;
    rows.push(empty);
  }
  list.replaceChildren(...rows);
}

function row(name, value, tone) {
  const item = document.createElement("li");
  item.dataset.name = name;
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  const badge = document.createElement("span");
  badge.className = `pill ${tone}`;
  badge.textContent = value;
  item.append(label, badge);
  return item;
}

function signalRow(signal) {
  const item = document.createElement("li");
  const time = document.createElement("time");
  const at = new Date(signal && signal.at);
  time.textContent = Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString();
  if (!Number.isNaN(at.getTime())) time.dateTime = at.toISOString();
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = String((signal && signal.signal) || "signal");
  item.append(time, name);
  const fields = signal && signal.fields && typeof signal.fields === "object" ? signal.fields : {};
  const summary = Object.entries(fields)
    .slice(0, 3)
    .map(([key, value]) => `${key}=${fieldText(value)}`)
    .join(" ");
  if (summary) {
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = summary.slice(0, 80);
    item.append(detail);
  }
  return item;
}

function fieldText(value) {
  if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? "…" : String(v))).join(",");
  return value !== null && typeof value === "object" ? "…" : String(value);
}
