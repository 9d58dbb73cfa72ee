// The conversation view: the person's messages (with where each stands: waiting to be sent,
// sending, or uncertain with a "Send again" button), Denis's replies with a badge per degraded
// zone, and errors as friendly sentences (errors.js). An error answering one message sits right
// under that message (`data-for` = the message id, and the message is `aria-describedby` it), so
// with several messages in flight it is clear which one failed; only an error with no id (or
// for a message this view never showed) is a line of its own at the end. The list is an ARIA
// log, so screen readers announce each new entry; the view keeps the newest entry in sight.

import { friendlyError } from "./errors.js";

const BADGES = {
  sync: ["basic mode", "Denis answered without its usual responder."],
  async: ["no workers", "Background workers are down; Denis did the job itself."],
  graph: ["legacy mode", "The knowledge graph is down; Denis used its local cache."],
  voice: ["no voice", "Spoken replies are unavailable right now."],
  home: ["home unreachable", "Denis couldn't reach your home's devices."],
  llm: ["no AI model", "The language model is unavailable; Denis used simple answers."],
};

const NOTES = {
  queued: "Waiting — will be sent when Denis is reachable",
  sending: "Sending…",
  uncertain: "",
  failed: "",
};

export class ChatView {
  constructor(list, { onResend }) {
    this.list = list;
    this.onResend = onResend;
    this.bubbles = new Map();
  }

  addMine(item) {
    const entry = this.entry("me");
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = item.text;
    const note = document.createElement("p");
    note.className = "note";
    entry.append(label("You"), text, note);
    entry.dataset.id = item.id;
    this.bubbles.set(item.id, { entry, note });
    this.setState(item, item.state);
    this.show(entry);
  }

  setState(item, state) {
    const bubble = this.bubbles.get(item.id);
    if (!bubble) return;
    bubble.entry.dataset.state = state;
    bubble.note.textContent = NOTES[state] ?? "";
  }

  addReply(item, body) {
    this.answered(item);
    const entry = this.entry("denis");
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = typeof body.reply === "string" ? body.reply : "";
    entry.append(label("Denis"), text);
    const degraded = Array.isArray(body.degraded) ? body.degraded : [];
    if (degraded.length) {
      const badges = document.createElement("ul");
      badges.className = "badges";
      badges.setAttribute("aria-label", "Degraded");
      for (const zone of degraded) {
        const [name, why] = BADGES[zone] || [`${zone} degraded`, `The ${zone} part of Denis is degraded.`];
        const badge = document.createElement("li");
        badge.className = "badge";
        badge.dataset.zone = String(zone);
        badge.textContent = name;
        badge.title = why;
        badges.append(badge);
      }
      entry.append(badges);
    }
    this.show(entry);
    return entry;
  }

  addError(item, code, retryAfterS) {
    const sentence = friendlyError(code, retryAfterS);
    const bubble = item ? this.bubbles.get(item.id) : undefined;
    if (!bubble) {
      this.addNotice(sentence, "error", code);
      return;
    }
    this.setState(item, "failed");
    const entry = this.entry("error");
    entry.id = `error-${item.id}`;
    entry.dataset.for = item.id;
    if (code) entry.dataset.code = String(code);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = sentence;
    entry.append(text);
    bubble.entry.setAttribute("aria-describedby", entry.id);
    // Under the message, after anything already tied to it (a second error replaces the first).
    if (bubble.error) bubble.error.remove();
    bubble.error = entry;
    this.show(entry, bubble.entry);
  }

  addNotice(sentence, kind = "info", code = "") {
    const entry = this.entry(kind);
    if (code) entry.dataset.code = String(code);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = sentence;
    entry.append(text);
    this.show(entry);
  }

  markUncertain(item) {
    const bubble = this.bubbles.get(item.id);
    if (!bubble) return;
    this.setState(item, "uncertain");
    bubble.note.textContent = `${friendlyError("uncertain")} `;
    const again = document.createElement("button");
    again.type = "button";
    again.className = "link";
    again.textContent = "Send again";
    again.addEventListener("click", () => {
      again.remove();
      bubble.note.textContent = "Sent again below.";
      this.onResend(item.text);
    });
    bubble.note.append(again);
  }

  answered(item) {
    if (item) this.setState(item, "done");
  }

  entry(kind) {
    const entry = document.createElement("li");
    entry.className = `entry ${kind}`;
    return entry;
  }

  /** Adds an entry at the end, or right after `after`; keeps the end in sight if it was. */
  show(entry, after = null) {
    const nearBottom =
      this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 80 || !this.list.childElementCount;
    if (after && after.parentNode === this.list) after.after(entry);
    else this.list.append(entry);
    if (nearBottom) this.list.scrollTop = this.list.scrollHeight;
  }
}

function label(name) {
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = name;
  return who;
}
