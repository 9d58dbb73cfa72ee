"""The web app in a real headless Chromium against a real ``denis serve`` process.

Each test opens ``/?<fast clock>#token=...`` (the page takes its backoff and polling periods from
the query string, so a reconnect schedule of 1, 2, 4 … s runs as 0.2, 0.4, 0.8 … s) and reads
the page's test hooks (``window.denisDebug``) and the server's own counters (``/metrics``) to
prove what happened. Screenshots of the main states land in ``tests/artifacts/browser/``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import screenshot
from fake_llm import FakeLlm
from servers import DenisProcess, RedisServer, create_token, require_program

pytestmark = [pytest.mark.browser, pytest.mark.integration]

FAST = "backoff_base_ms=200&backoff_cap_ms=1600&status_poll_ms=300&telemetry_upload_ms=300"
HELLO = "Hello! I'm Denis. Ask me to switch a light, open the garage or check the temperature."
JITTER_LOW = 0.75  # js/backoff.js: a delay is 75-100 % of its step


def open_app(page: Any, denis: DenisProcess, token: str, query: str = FAST) -> None:
    page.goto(f"{denis.url}/?{query}#token={token}")
    wait_state(page, "open")


def wait_state(page: Any, state: str, timeout_ms: int = 15_000) -> None:
    page.wait_for_function(
        "s => window.denisDebug && window.denisDebug.state() === s", arg=state, timeout=timeout_ms
    )


def say(page: Any, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def replies(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#messages .entry.denis .text").all_inner_texts()]


def wait_replies(page: Any, count: int) -> list[str]:
    page.wait_for_function(
        "n => document.querySelectorAll('#messages .entry.denis').length >= n", arg=count
    )
    return replies(page)


def metric(denis: DenisProcess, token: str, name: str, **labels: str) -> float:
    text = httpx.get(
        f"{denis.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$", re.MULTILINE)
    match = pattern.search(text) if wanted else re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def metric_total(denis: DenisProcess, token: str, name: str) -> float:
    """The sum of a metric's samples over all its labels (0 when it has none yet)."""
    text = httpx.get(
        f"{denis.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).text
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def eventually(page: Any, check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Polls ``check`` until it holds. Waits through the page (``wait_for_timeout``), so the
    Playwright route handlers keep running meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(100)


def sigkill(denis: DenisProcess) -> None:
    assert denis.proc is not None
    denis.proc.kill()
    denis.proc.wait(timeout=10)
    denis.proc = None


@pytest.fixture
def denis(denis_factory: Callable[..., DenisProcess]) -> DenisProcess:
    return denis_factory()


@pytest.fixture
def user_token(denis: DenisProcess) -> str:
    return create_token(denis.data_dir, "browser")


def test_a_conversation_round_trip_over_the_websocket(
    page: Any, denis: DenisProcess, user_token: str
) -> None:
    open_app(page, denis, user_token)
    assert "token" not in page.url  # taken out of the address bar at once
    assert page.evaluate("localStorage.getItem('denis.token')") == user_token

    say(page, "turn on the kitchen light")
    assert wait_replies(page, 1) == ["Done: the kitchen light is on (100 %)."]
    assert page.input_value("#message-input") == ""  # the box is ready for the next one
    assert page.evaluate("denisDebug.queue()") == []
    assert page.evaluate("denisDebug.sent") == 1
    assert metric(denis, user_token, "denis_chat_requests_total", outcome="ok") == 1

    # The panel is live (the WebSocket's ready/status frames) and the page's telemetry arrives.
    page.wait_for_selector("#zones li[data-name='sync']")
    page.wait_for_selector("#breakers li[data-name='graph'] .pill.ok")
    page.wait_for_function("() => denisDebug.telemetry().uploaded > 0")
    assert metric(denis, user_token, "denis_client_rtt_seconds_count") >= 1
    assert page.evaluate("denisDebug.telemetry().failedUploads") == 0
    screenshot(page, "01-conversation")

    # The system's dark setting, switched while the page is open: the page and its charts follow.
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 20, 24)"
    page.wait_for_timeout(100)  # the charts redraw on the next animation frame
    screenshot(page, "01-conversation-dark")


def test_killed_server_page_reconnects_on_the_backoff_schedule_and_delivers_once(
    page: Any, denis: DenisProcess, user_token: str
) -> None:
    open_app(page, denis, user_token)
    say(page, "hello")
    wait_replies(page, 1)
    base_ms, cap_ms = 200, 1600

    before_kill = len(page.evaluate("denisDebug.attempts"))
    sigkill(denis)
    wait_state(page, "offline")
    first_attempt = len(page.evaluate("denisDebug.attempts"))
    say(page, "turn on the bedroom light")
    queued = page.evaluate("denisDebug.queue()")
    assert [(m["text"], m["state"]) for m in queued] == [("turn on the bedroom light", "queued")]
    page.wait_for_selector("#messages .entry.me[data-state='queued']")
    assert "can't be reached" in page.inner_text("#connection-help")
    screenshot(page, "02-offline-message-queued")
    # Every state the pill shows from here on: a failed attempt must not flip it to "Connecting…"
    # (it did, and the help line went blank between two attempts).
    page.evaluate(
        """() => {
          window.shownStates = [];
          const pill = document.querySelector('#connection-state');
          new MutationObserver(() => window.shownStates.push(pill.dataset.state))
            .observe(pill, {attributes: true, childList: true, characterData: true, subtree: true});
        }"""
    )
    # Let the page try a few times while nothing listens: 0.2 + 0.4 + 0.8 + 1.6 + 1.6 s.
    page.wait_for_function(
        "n => denisDebug.attempts.length >= n", arg=first_attempt + 5, timeout=20_000
    )
    assert set(page.evaluate("window.shownStates")) <= {"offline"}
    assert "can't be reached" in page.inner_text("#connection-help")
    assert page.evaluate("denisDebug.sent") == 1  # the queued message has not gone anywhere

    denis.start()  # the same port and data dir
    page.wait_for_function(
        "() => [...document.querySelectorAll('#messages .entry.denis .text')]"
        ".some(e => e.textContent.includes('bedroom'))",
        timeout=20_000,
    )
    wait_state(page, "open")
    time.sleep(1)  # a doubled send would have had time to produce a second answer
    assert replies(page) == [HELLO, "Done: the bedroom light is on (100 %)."]
    assert page.evaluate("denisDebug.sent") == 2
    assert page.evaluate("denisDebug.queue()") == []
    # Server side, the restarted process ran exactly one turn: the queued message, once.
    assert metric(denis, user_token, "denis_chat_requests_total", outcome="ok") == 1

    # Attempts since the kill: the k-th in a row to fail (k = 1, 2, …) was followed by a wait of
    # min(cap, base·2^k), jittered down by at most 25 %. The upper bound only proves the page did
    # not stall (a refused connection takes a moment to report); the lower bound is the schedule.
    attempts = page.evaluate("denisDebug.attempts")[before_kill:]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) >= 5
    for k, gap in enumerate(gaps, start=1):
        step = min(cap_ms, base_ms * 2**k)
        assert gap >= JITTER_LOW * step - 20, (k, gaps)
        assert gap <= step + 3000, (k, gaps)
    assert max(gaps) >= JITTER_LOW * cap_ms  # it grew to the cap
    screenshot(page, "03-reconnected-delivered-once")


def test_websocket_blocked_page_works_over_http(
    context: Any, denis: DenisProcess, user_token: str
) -> None:
    refused: list[str] = []

    def refuse(ws: Any) -> None:  # a proxy or firewall that kills every WebSocket
        refused.append(ws.url)
        ws.close(code=1011, reason="blocked")

    context.route_web_socket(re.compile(r".*/chat$"), refuse)
    page = context.new_page()
    page.goto(f"{denis.url}/?{FAST}#token={user_token}")
    wait_state(page, "http")
    assert "Connected (fallback)" in page.inner_text("#connection-state")

    say(page, "turn on the kitchen light")
    assert wait_replies(page, 1) == ["Done: the kitchen light is on (100 %)."]
    page.wait_for_selector("#zones li[data-name='graph']")  # from polling GET /status
    assert refused  # the page kept trying the WebSocket
    assert page.evaluate("denisDebug.sent") == 1
    assert metric(denis, user_token, "denis_chat_requests_total", outcome="ok") == 1
    screenshot(page, "04-websocket-blocked-http-fallback")


def test_slow_websocket_falls_back_to_http_and_returns_when_fast(
    context: Any, denis: DenisProcess, user_token: str
) -> None:
    """A socket whose pongs stop coming (a congested link) counts as slower than the threshold:
    chats go over HTTP; when pongs come back, the page returns to the socket."""
    link = {"drop_pongs": False}

    def relay(ws: Any) -> None:
        server = ws.connect_to_server()
        ws.on_message(server.send)

        def to_page(message: str | bytes) -> None:
            if link["drop_pongs"] and isinstance(message, str) and '"pong"' in message:
                return
            ws.send(message)

        server.on_message(to_page)

    context.route_web_socket(re.compile(r".*/chat$"), relay)
    page = context.new_page()
    open_app(page, denis, user_token, f"{FAST}&ping_ms=200&http_fallback_rtt_ms=600")

    link["drop_pongs"] = True
    wait_state(page, "http")
    say(page, "turn on the kitchen light")
    assert wait_replies(page, 1) == ["Done: the kitchen light is on (100 %)."]
    screenshot(page, "05-slow-websocket-http")

    link["drop_pongs"] = False
    wait_state(page, "open")
    say(page, "turn off the kitchen light")
    assert wait_replies(page, 2)[1] == "Done: the kitchen light is off."
    assert page.evaluate("denisDebug.sent") == 2
    assert metric(denis, user_token, "denis_chat_requests_total", outcome="ok") == 2


def test_backend_errors_are_friendly_sentences(
    page: Any, denis_factory: Callable[..., DenisProcess], tmp_path: Path
) -> None:
    denis = denis_factory({"DENIS_RATE_LIMIT_USER": "2/minute"})
    token = create_token(denis.data_dir, "browser")
    open_app(page, denis, token)
    for text in ("hello", "what can you do", "turn on the kitchen light"):
        say(page, text)
    page.wait_for_selector("#messages .entry.error[data-code='rate_limited']")
    error = page.inner_text("#messages .entry.error")
    assert error.startswith("You're sending messages faster than Denis can take them.")
    assert "Try again in" in error
    # The error sits right under the message it answers (the third), tied to it by its id.
    message_id = page.get_attribute("#messages .entry.error", "data-for")
    mine = f"#messages .entry.me[data-id='{message_id}']"
    assert page.inner_text(f"{mine} .text") == "turn on the kitchen light"
    assert page.get_attribute(mine, "data-state") == "failed"
    assert page.get_attribute(mine, "aria-describedby") == f"error-{message_id}"
    assert (
        page.evaluate(
            "id => document.querySelector(`.entry.me[data-id='${id}']`).nextElementSibling.id",
            message_id,
        )
        == f"error-{message_id}"
    )
    assert page.locator("#messages .entry.error").count() == 1
    assert not re.search(r"[{}\[\]]|rate_limited|Traceback", page.inner_text("#messages"))
    screenshot(page, "06-rate-limited")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "06-rate-limited-dark")
    page.emulate_media(color_scheme="light")

    denis.stop()
    wait_state(page, "offline")
    assert page.inner_text("#connection-state") == "Offline"
    assert "can't be reached" in page.inner_text("#connection-help")
    say(page, "are you there")
    page.wait_for_selector("#messages .entry.me[data-state='queued']")
    assert "will be sent when Denis is reachable" in page.inner_text("#messages")
    screenshot(page, "07-server-stopped")


def test_panel_shows_the_redis_breaker_opening_when_redis_dies(
    page: Any, denis_factory: Callable[..., DenisProcess], redis_server: RedisServer
) -> None:
    denis = denis_factory(
        {"DENIS_REDIS_URL": redis_server.url, "DENIS_REDIS_BREAKER_COOLDOWN_S": "300"}
    )
    token = create_token(denis.data_dir, "browser")
    open_app(page, denis, token)
    page.wait_for_selector("#breakers li[data-name='redis'] .pill.ok")
    assert page.inner_text("#breakers li[data-name='redis'] .pill") == "closed"

    redis_server.kill()
    for n in range(1, 5):  # each turn asks the rate limiter, which fails over to memory
        say(page, f"hello {n}")
        wait_replies(page, n)
    page.wait_for_selector("#breakers li[data-name='redis'] .pill.bad", timeout=10_000)
    assert page.inner_text("#breakers li[data-name='redis'] .pill") == "open"
    assert "redis breaker open" in page.inner_text("#status-summary")
    page.wait_for_selector("#signals li:has-text('breaker.opened')")
    screenshot(page, "08-redis-breaker-open")


def test_a_token_entered_by_hand(page: Any, denis: DenisProcess, user_token: str) -> None:
    page.goto(f"{denis.url}/?{FAST}")
    page.wait_for_selector("#token-form:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "token-input"
    assert page.inner_text("#connection-state") == "Not logged in"
    screenshot(page, "09-token-form")

    page.fill("#token-input", "not-a-token")
    page.press("#token-input", "Enter")
    page.wait_for_selector("#token-error:has-text('didn')")
    assert page.is_visible("#token-form")

    page.fill("#token-input", user_token)
    page.click("#token-form button[type=submit]")
    wait_state(page, "open")
    assert page.is_hidden("#token-form")
    say(page, "hello")
    assert wait_replies(page, 1) == [HELLO]


def test_phone_sized_screen(browser: Any, denis: DenisProcess, user_token: str) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        open_app(page, denis, user_token)
        page.keyboard.press("Tab")  # from the top, the keyboard meets the skip link first
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "message-input"
        say(page, "what is the temperature in the living room")
        wait_replies(page, 1)
        # Nothing wider than the screen, the box and its buttons reachable.
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        for selector in ("#message-input", "#send", "#mic"):
            box = page.locator(selector).bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= 360
        screenshot(page, "10-phone")
    finally:
        context.close()


def test_reconnect_storm_the_page_obeys_the_1013_retry_hint(
    context: Any, denis_factory: Callable[..., DenisProcess]
) -> None:
    """The server lets a client open 2 sockets per 3 s window; the page's sockets are cut (by the
    relay, as a flaky network would) until the third is refused with 1013 and a retry hint. The
    page must wait at least that long: one refusal, not a storm of them."""
    denis = denis_factory({"DENIS_WS_RECONNECT_LIMIT": "2", "DENIS_WS_RECONNECT_WINDOW_S": "3"})
    token = create_token(denis.data_dir, "browser")
    routes: list[Any] = []
    closes: list[tuple[int | None, str | None]] = []

    def relay(ws: Any) -> None:
        server = ws.connect_to_server()

        def closed(code: int | None, reason: str | None) -> None:
            closes.append((code, reason))
            ws.close(code=code, reason=reason)

        server.on_close(closed)
        routes.append(ws)

    context.route_web_socket(re.compile(r".*/chat$"), relay)
    page = context.new_page()
    open_app(page, denis, token)
    for connections in (1, 2):  # cut the page's socket: it reconnects after ~0.2 s
        assert len(routes) == connections
        routes[-1].close(code=4001, reason="cut")
        page.wait_for_function("n => denisDebug.attempts.length > n", arg=connections)
    wait_state(page, "open", timeout_ms=20_000)

    refusals = [(code, reason) for code, reason in closes if code == 1013]
    assert len(refusals) == 1, closes
    retry_after_s = json.loads(refusals[0][1] or "{}")["retry_after_s"]
    assert retry_after_s >= 1
    attempts = page.evaluate("denisDebug.attempts")
    assert len(attempts) == 4  # two cut, one refused, one after the hint
    assert attempts[3] - attempts[2] >= retry_after_s * 1000
    assert metric(denis, token, "denis_signal_total", signal="ws.reconnect_storm") == 1
    say(page, "hello")
    assert wait_replies(page, 1) == [HELLO]


def test_a_failing_telemetry_upload_keeps_a_bounded_buffer_and_delivers_it_once(
    page: Any, denis: DenisProcess, user_token: str
) -> None:
    """POST /telemetry answers 503 (only that route is intercepted; the server is real). A long
    outage: the page keeps its events, never more than its bound, and tries again later. A short
    one (one refused upload): the refused events go out in a later batch. Throughout, every
    event the server got came in exactly one accepted batch, and the server's count of round
    trips is the number of round trips in those batches."""
    outage = {"on": False, "refuse": 0}
    accepted: list[list[dict[str, Any]]] = []  # the events of each batch the server took
    refused: list[list[dict[str, Any]]] = []

    def telemetry(route: Any) -> None:
        events = json.loads(route.request.post_data or "{}")["events"]
        if outage["on"] or outage["refuse"] > 0:
            outage["refuse"] = max(0, outage["refuse"] - 1)
            refused.append(events)
            body = '{"error": {"code": "unavailable", "detail": "test outage"}}'
            route.fulfill(status=503, content_type="application/json", body=body)
            return
        response = route.fetch()
        if response.status == 200:
            accepted.append(events)
        route.fulfill(response=response)

    page.route("**/telemetry", telemetry)
    bound = 20
    open_app(page, denis, user_token, f"{FAST}&ping_ms=100&telemetry_max_events={bound}")
    page.wait_for_function("() => denisDebug.telemetry().uploaded > 0")

    # A long outage: pings every 0.1 s fill the buffer past its bound while uploads fail (the
    # tries come 0.3, then 0.6, 1.2 s … apart: the wait doubles).
    outage["on"] = True
    before = page.evaluate("denisDebug.telemetry()")
    page.wait_for_function(
        "n => { const t = denisDebug.telemetry(); return t.failedUploads >= n && t.dropped > 0 }",
        arg=before["failedUploads"] + 3,
    )
    during = page.evaluate("denisDebug.telemetry()")
    assert during["uploaded"] == before["uploaded"]  # nothing got through the outage
    assert during["maxEvents"] == bound
    assert during["peakBuffered"] == bound  # it filled up, and never held more
    assert 0 < during["buffered"] <= bound
    assert page.evaluate("denisDebug.state()") == "open"  # the chat never noticed
    screenshot(page, "11-telemetry-upload-failing")
    outage["on"] = False
    page.wait_for_function(
        "n => denisDebug.telemetry().uploaded > n", arg=during["uploaded"], timeout=15_000
    )

    # A short outage: one upload refused, the next one (0.6 s later) carries its events.
    dropped = page.evaluate("denisDebug.telemetry().dropped")
    outage["refuse"] = 1
    eventually(page, lambda: outage["refuse"] == 0)
    batch = refused[-1]
    assert batch
    eventually(page, lambda: all(any(e in b for b in accepted) for e in batch))
    assert page.evaluate("denisDebug.telemetry().dropped") == dropped  # nothing lost here
    assert page.evaluate("denisDebug.telemetry().peakBuffered") <= bound

    def rtt_events() -> int:
        return sum(1 for batch in accepted for event in batch if event["type"] == "rtt")

    # Exactly once: the server's round-trip count is what the accepted batches held, and the
    # page counts as uploaded just the events of those batches.
    eventually(
        page,
        lambda: (
            metric(denis, user_token, "denis_client_rtt_seconds_count") == rtt_events()
            and page.evaluate("denisDebug.telemetry().uploaded") == sum(map(len, accepted))
        ),
    )
    keys = [json.dumps(event, sort_keys=True) for batch in accepted for event in batch]
    assert len(keys) == len(set(keys)), "an event was uploaded twice"


def test_a_message_whose_connection_died_is_uncertain_and_not_sent_twice(
    page: Any, denis_factory: Callable[..., DenisProcess], fake_llm: FakeLlm
) -> None:
    """The server dies (SIGKILL) while it works on a message (a slow LLM turn): the page can't
    know whether it was acted on, says so and offers "Send again", and does not re-send it by
    itself when the server is back. "Send again" sends it once more, as a new message."""
    fake_llm.mode, fake_llm.delay_s = "slow", 60.0
    denis = denis_factory({"DENIS_LLM_URL": fake_llm.url})
    token = create_token(denis.data_dir, "browser")
    open_app(page, denis, token)
    text = "tell me a story about a purple giraffe"
    say(page, text)
    eventually(page, lambda: len(fake_llm.seen()) == 1)  # the server is working on it
    sigkill(denis)

    uncertain = "#messages .entry.me[data-state='uncertain']"
    page.wait_for_selector(f"{uncertain} .note button:has-text('Send again')")
    assert "may or may not have received" in page.inner_text(f"{uncertain} .note")
    first_id = page.get_attribute(uncertain, "data-id")
    assert page.evaluate("denisDebug.queue()") == []  # not waiting to go out again
    screenshot(page, "12-uncertain")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "12-uncertain-dark")
    page.emulate_media(color_scheme="light")

    fake_llm.mode = "normal"
    denis.start()
    wait_state(page, "open")
    page.wait_for_timeout(1000)  # an automatic re-send would have gone out by now
    assert page.evaluate("denisDebug.sent") == 1
    assert len(fake_llm.seen()) == 1
    assert metric_total(denis, token, "denis_chat_requests_total") == 0
    assert replies(page) == []

    page.click(f"{uncertain} .note button:has-text('Send again')")
    assert wait_replies(page, 1) == [f"echo: {text}"]
    ids = page.eval_on_selector_all("#messages .entry.me", "es => es.map(e => e.dataset.id)")
    assert len(ids) == 2
    assert ids[0] == first_id
    assert ids[1] != first_id
    assert page.evaluate("denisDebug.sent") == 2
    assert len(fake_llm.seen()) == 2
    assert metric(denis, token, "denis_chat_requests_total", outcome="ok") == 1
    assert "Sent again below." in page.inner_text(f"#messages .entry.me[data-id='{first_id}']")
    screenshot(page, "13-sent-again")


# Stand-ins for what headless Chromium lacks: speech recognition (a fake that "hears" a
# sentence when started), and spies on audio playback and speech synthesis (which record what
# they were asked; playback then runs for real, synthesis "ends" at once). The voice state is
# recorded on every change (MutationObserver with old values, so no change is missed).
VOICE_STANDINS = """
(() => {
  window.__voice = { heard: "what time is it", played: [], spoken: [], states: [] };
  class FakeRecognition extends EventTarget {
    start() {
      setTimeout(() => {
        const result = Object.assign([{ transcript: window.__voice.heard, confidence: 0.9 }],
                                     { isFinal: true });
        const event = Object.assign(new Event("result"), { results: [result], resultIndex: 0 });
        this.dispatchEvent(event);
        if (this.onresult) this.onresult(event);
        const end = new Event("end");
        this.dispatchEvent(end);
        if (this.onend) this.onend(end);
      }, 100);
    }
    stop() {}
    abort() {}
  }
  window.SpeechRecognition = FakeRecognition;
  window.webkitSpeechRecognition = FakeRecognition;
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    window.__voice.played.push(this.src);
    return play.call(this);
  };
  SpeechSynthesis.prototype.speak = function (utterance) {
    window.__voice.spoken.push(utterance.text);
    setTimeout(() => utterance.dispatchEvent(new Event("end")), 50);
  };
  document.addEventListener("DOMContentLoaded", () => {
    const label = document.getElementById("voice-state");
    const states = window.__voice.states;
    states.push(label.dataset.state);
    new MutationObserver((records) => {
      records.forEach((record, i) => {
        const next = i + 1 < records.length ? records[i + 1].oldValue : label.dataset.state;
        if (next !== states[states.length - 1]) states.push(next);
      });
    }).observe(label, { attributeFilter: ["data-state"], attributeOldValue: true });
  });
})();
"""


def speak_to_denis(context: Any, denis: DenisProcess, token: str) -> Any:
    context.add_init_script(VOICE_STANDINS)
    page = context.new_page()
    page.set_default_timeout(15_000)
    open_app(page, denis, token)
    assert page.is_enabled("#mic")
    page.click("#mic")
    page.wait_for_selector("#messages .entry.me:has-text('what time is it')")
    wait_replies(page, 1)
    return page


def test_voice_a_spoken_question_is_answered_with_the_replys_audio(
    context: Any, denis: DenisProcess, user_token: str
) -> None:
    require_program("espeak-ng")
    page = speak_to_denis(context, denis, user_token)
    page.wait_for_function("() => window.__voice.played.length > 0")
    played = page.evaluate("window.__voice.played")
    assert len(played) == 1
    assert re.fullmatch(rf"{re.escape(denis.url)}/audio/[0-9a-f]{{32}}\.wav", played[0])
    audio = httpx.get(played[0], timeout=5)
    assert audio.status_code == 200
    assert audio.content[:4] == b"RIFF"
    page.wait_for_function(
        "() => denisDebug.voiceState() === 'idle'"
    )  # the audio played to its end
    assert page.evaluate("window.__voice.spoken") == []  # no fallback to speech synthesis
    states = page.evaluate("window.__voice.states")
    assert states == ["idle", "listening", "thinking", "speaking", "idle"]
    assert page.locator("#messages .entry.denis .badge[data-zone='voice']").count() == 0
    eventually(page, lambda: metric(denis, user_token, "denis_voice_latency_seconds_count") >= 1)
    screenshot(page, "14-voice-audio")


def test_voice_without_server_audio_the_browser_speaks_the_reply(
    context: Any, denis_factory: Callable[..., DenisProcess]
) -> None:
    denis = denis_factory({"DENIS_TTS_COMMAND": "/nonexistent/tts"})
    token = create_token(denis.data_dir, "browser")
    page = speak_to_denis(context, denis, token)
    reply = replies(page)[0]
    page.wait_for_function("() => window.__voice.spoken.length > 0")
    assert page.evaluate("window.__voice.spoken") == [reply]
    assert page.evaluate("window.__voice.played") == []
    page.wait_for_function("() => denisDebug.voiceState() === 'idle'")
    states = page.evaluate("window.__voice.states")
    assert states == ["idle", "listening", "thinking", "speaking", "idle"]
    assert page.locator("#messages .entry.denis .badge[data-zone='voice']").count() == 1
    eventually(page, lambda: metric(denis, token, "denis_voice_latency_seconds_count") >= 1)
    screenshot(page, "15-voice-speech-synthesis")
