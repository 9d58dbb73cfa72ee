// Wires the page: token (store.js), connection (connection.js), conversation (chat.js), status
// panel and charts (panel.js, chart.js), telemetry upload (telemetry.js) and voice (voice.js).
// Exposes `window.denisDebug` for the browser tests: state(), attempts, queue(), sent, config.

import { ChatView } from "./chat.js";
import { LineChart } from "./chart.js";
import { loadConfig } from "./config.js";
import { Connection } from "./connection.js";
import { StatusPanel } from "./panel.js";
import { adoptFragmentToken, forgetToken, getToken, saveToken } from "./store.js";
import { Telemetry } from "./telemetry.js";
import { Voice } from "./voice.js";

const STATE_TEXT = {
  connecting: "Connecting…",
  open: "Connected",
  http: "Connected (fallback)",
  offline: "Offline",
  login: "Not logged in",
};
const STATE_HELP = {
  connecting: "Reaching Denis.",
  open: "Live connection.",
  http: "The live connection is down or slow; messages go over plain HTTP meanwhile.",
  offline: "Denis can't be reached. Messages you send now wait and go out when it's back.",
  login: "Enter your login token to talk to Denis.",
};

const $ = (selector) => document.querySelector(selector);

adoptFragmentToken();
const config = loadConfig();
const telemetry = new Telemetry({ config, getToken });
const panel = new StatusPanel($("#telemetry"));
const latencyChart = new LineChart($("#latency-chart"), [
  { name: "round trip", color: "--chart-rtt" },
  { name: "reply", color: "--chart-reply" },
]);
const queueChart = new LineChart($("#queue-chart"), [{ name: "queued jobs", color: "--chart-queue" }]);

const chat = new ChatView($("#messages"), { onResend: (text) => sendText(text) });
const input = $("#message-input");
const tokenForm = $("#token-form");
const sentAt = new Map();

const connection = new Connection({
  config,
  getToken,
  telemetry,
  events: {
    state: showState,
    status: showStatus,
    reply(item, body) {
      if (item) {
        chat.setState(item, "done");
        const started = sentAt.get(item.id);
        if (started !== undefined) latencyChart.add("reply", Date.now() - started);
        sentAt.delete(item.id);
      }
      chat.addReply(item, body);
      voice.onReply(item, body);
    },
    error(item, code, retryAfterS) {
      chat.addError(item, code, retryAfterS);
      voice.onFailure(item);
    },
    uncertain(item) {
      chat.markUncertain(item);
      voice.onFailure(item);
    },
    unauthorized: askForToken,
  },
});

const voice = new Voice({
  button: $("#mic"),
  stateLabel: $("#voice-state"),
  telemetry,
  timeoutMs: config.request_timeout_ms,
  onTranscript: (text) => sendText(text),
});

telemetry.onEvent((event) => {
  if (event.type === "rtt") {
    latencyChart.add("round trip", event.value, event.at);
    showRtt();
  }
});

function sendText(text) {
  const item = connection.send(text);
  sentAt.set(item.id, Date.now());
  chat.addMine(item);
  if (item.state !== "queued") chat.setState(item, item.state);
  watch(item);
  return item;
}

// The outbox changes an item's state behind the view's back (queued → sending): follow it
// until it is answered, cheaply, for the note under the message.
function watch(item) {
  const timer = setInterval(() => {
    if (item.state === "done" || item.state === "uncertain") clearInterval(timer);
    else chat.setState(item, item.state);
  }, 250);
}

function showRtt() {
  const rtt = connection.rtt();
  const open = connection.state() === "open";
  let text = open ? "—" : "— (no live connection)";
  if (rtt !== null) text = open ? `${rtt} ms` : `${rtt} ms (too slow: using HTTP)`;
  $("#rtt").textContent = text;
}

function showState(state) {
  if (state === "offline") panel.markStale();
  showRtt();
  const pill = $("#connection-state");
  pill.textContent = STATE_TEXT[state];
  pill.dataset.state = state;
  pill.title = STATE_HELP[state];
  const quiet = state === "open" || state === "connecting" || state === "login";
  $("#connection-help").textContent = quiet ? "" : STATE_HELP[state];
}

function showStatus(status) {
  panel.render(status);
  const queues = status && typeof status.queues === "object" && status.queues ? status.queues : {};
  const total = Object.values(queues).reduce((sum, n) => sum + (Number(n) || 0), 0);
  queueChart.add("queued jobs", total);
  showRtt();
}

function askForToken(message) {
  tokenForm.hidden = false;
  showState("login");
  $("#token-error").textContent =
    typeof message === "string" ? message : getToken() ? "Denis didn't accept that token." : "";
  $("#token-input").focus();
}

tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token-input").value.trim();
  if (!token) {
    $("#token-error").textContent = "Paste the token that `denis token create` printed.";
    return;
  }
  saveToken(token);
  $("#token-input").value = "";
  tokenForm.hidden = true;
  connection.restart();
  input.focus();
});

$("#change-token").addEventListener("click", () => {
  forgetToken();
  connection.stop();
  askForToken("");
});

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  if (text.length > 4000) {
    chat.addNotice("That message is too long for Denis. Please shorten it (4000 characters at most).", "error", "too_large");
    return;
  }
  input.value = "";
  sendText(text);
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
  }
});

window.addEventListener("error", (event) => telemetry.record("error", { detail: `page: ${event.message}` }));

window.denisDebug = {
  state: () => connection.state(),
  get attempts() {
    return [...connection.attempts];
  },
  queue: () => connection.outbox.pending().map(({ id, text, state, transport }) => ({ id, text, state, transport })),
  get sent() {
    return connection.sent;
  },
  config,
  telemetry: () => telemetry.stats(),
  voiceState: () => voice.state,
};

showState("connecting");
telemetry.start();
if (getToken()) connection.start();
else askForToken("");
