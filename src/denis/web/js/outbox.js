// Messages the person wrote, each with a client id, from typed to answered. A message is handed
// to one transport at most once: "queued" (never left the page: safe to send on whichever
// transport comes up first) → "sending" (handed to the WebSocket or to POST /chat) → "done"
// (a reply or an error answer arrived for its id) or "uncertain" (the transport failed after
// the hand-over: the server may have acted on it). See connection.js for why an uncertain
// message is never re-sent automatically.

export class Outbox {
  constructor(random = () => crypto.getRandomValues(new Uint32Array(2))) {
    const words = random();
    this.prefix = `m${words[0].toString(36)}${words[1].toString(36)}`;
    this.counter = 0;
    this.items = new Map();
  }

  add(text) {
    this.counter += 1;
    const item = { id: `${this.prefix}-${this.counter}`, text, state: "queued", transport: null };
    this.items.set(item.id, item);
    return item;
  }

  get(id) {
    return this.items.get(id) || null;
  }

  queued() {
    return [...this.items.values()].filter((item) => item.state === "queued");
  }

  pending() {
    return [...this.items.values()].filter((i) => i.state === "queued" || i.state === "sending");
  }

  handOver(item, transport) {
    item.state = "sending";
    item.transport = transport;
    item.sentAt = Date.now();
  }

  /** Marks the item answered; false when it was already (a second answer is ignored). */
  settle(id) {
    const item = this.items.get(id);
    if (!item || item.state === "done") return false;
    item.state = "done"; // kept (text and all), so a second answer for the id is recognised
    return true;
  }

  /** Items handed to a transport that just failed them: they become uncertain. */
  orphan(transport) {
    const lost = [];
    for (const item of this.items.values()) {
      if (item.state === "sending" && item.transport === transport) {
        item.state = "uncertain";
        lost.push(item);
      }
    }
    return lost;
  }
}
