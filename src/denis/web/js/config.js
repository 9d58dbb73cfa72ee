// Run-time settings of the page. Defaults are the design's (backoff 1 s doubling to 30 s, HTTP
// fallback above 5 s of WebSocket round trip); the query string may override them, which is how
// the browser tests run the same code on a fast clock, e.g.
//   /?backoff_base_ms=100&backoff_cap_ms=1000&http_fallback_rtt_ms=800&status_poll_ms=500
// Unknown or out-of-range values are ignored (a typo never breaks the page).

const DEFAULTS = Object.freeze({
  backoff_base_ms: 1000, // first reconnect delay; doubles each failed attempt
  backoff_cap_ms: 30000, // never wait longer than this between attempts (before a 1013 hint)
  http_fallback_rtt_ms: 5000, // a WebSocket slower than this sends chats over HTTP instead
  ping_ms: 2000, // how often the open WebSocket is pinged to measure its round trip
  status_poll_ms: 2000, // how often GET /status is polled when no live status arrives
  request_timeout_ms: 20000, // every HTTP request is aborted after this (chat timeout is 15 s)
  telemetry_upload_ms: 5000, // how often buffered telemetry is uploaded
  telemetry_max_events: 500, // the page keeps at most this many unsent events (oldest dropped)
  healthy_pongs: 2, // fast pongs in a row before chats go back to the WebSocket
});

const LIMITS = {
  backoff_base_ms: [10, 60000],
  backoff_cap_ms: [10, 600000],
  http_fallback_rtt_ms: [50, 120000],
  ping_ms: [50, 60000],
  status_poll_ms: [100, 600000],
  request_timeout_ms: [500, 120000],
  telemetry_upload_ms: [100, 600000],
  telemetry_max_events: [10, 10000],
  healthy_pongs: [1, 20],
};

export function loadConfig(search = window.location.search) {
  const query = new URLSearchParams(search);
  const config = { ...DEFAULTS };
  for (const [name, [low, high]] of Object.entries(LIMITS)) {
    const raw = query.get(name);
    if (raw === null) continue;
    const value = Number(raw);
    if (Number.isFinite(value) && value >= low && value <= high) config[name] = value;
  }
  // Tests only: point the WebSocket elsewhere (e.g. a dead port) to prove the HTTP fallback.
  const wsUrl = query.get("ws_url");
  config.ws_url = wsUrl && /^wss?:\/\//.test(wsUrl) ? wsUrl : defaultWsUrl();
  return Object.freeze(config);
}

function defaultWsUrl() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}/chat`;
}
