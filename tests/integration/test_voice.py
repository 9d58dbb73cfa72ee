"""Voice out with a real espeak-ng: the ``voice.tts`` job, ``VoiceOut`` through a real async
plane (no worker: the dispatcher fails open and runs the job inline), and ``GET /audio``.

Slow and broken TTS engines are small shell scripts in the test's tmp dir that sleep, then
``exec`` the real espeak-ng (or never get that far)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from denis.assistant.voice import (
    VoiceOut,
    audio_key,
    audio_name,
    register_voice_jobs,
    synthesize,
)
from denis.async_plane import AsyncPlane, default_registry, open_async_plane
from denis.errors import DependencyUnavailableError, InvalidInputError
from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signals
from denis.resilience.metrics import Metrics
from denis.settings import AssistantSettings, Settings
from servers import require_program

pytestmark = pytest.mark.integration

CLOCK = MonotonicClock()
HELLO_EN = "The kitchen light is on."
HELLO_ES = "¿Qué temperatura hace en el salón? Veintiún grados."


@pytest.fixture(autouse=True)
def espeak() -> str:
    return require_program("espeak-ng")


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def tts(settings: AssistantSettings, text: str, lang: str) -> tuple[str, dict[str, Any]]:
    name = audio_name(audio_key(settings.data_dir), lang, text)
    result = synthesize(settings, settings.data_dir, {"text": text, "lang": lang, "name": name})
    return name, result


def wav_path(data_dir: Path, name: str) -> Path:
    return data_dir / "audio" / f"{name}.wav"


def alive(pid: int) -> bool:
    """Whether the process still runs (a zombie waiting for its reaper counts as gone)."""
    for _ in range(100):  # SIGKILL is delivered asynchronously: give it a moment
        try:
            status = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        if status.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        time.sleep(0.05)
    return True


def voice_latency(signals: Signals) -> float:
    value = signals.metrics.registry.get_sample_value(
        "denis_signal_total", {"signal": "voice.latency"}
    )
    return value or 0.0


# -- names -----------------------------------------------------------------------------


def test_the_naming_key_is_private_and_made_once(data_dir: Path) -> None:
    key = audio_key(data_dir)

    assert audio_key(data_dir) == key
    assert len(key) >= 32
    assert stat.S_IMODE((data_dir / "audio.key").stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["audio.key"]  # no temporary left over


def test_names_are_32_hex_and_depend_on_the_key_the_language_and_the_text() -> None:
    name = audio_name(b"k" * 32, "en", HELLO_EN)

    assert len(name) == 32
    assert int(name, 16) >= 0
    assert name == name.lower()
    assert audio_name(b"k" * 32, "en", HELLO_EN) == name
    others = {
        audio_name(b"j" * 32, "en", HELLO_EN),
        audio_name(b"k" * 32, "es", HELLO_EN),
        audio_name(b"k" * 32, "en", HELLO_EN + "!"),
    }
    assert name not in others
    assert len(others) == 3


# -- the job ---------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "text"), [("en", HELLO_EN), ("es", HELLO_ES)])
def test_espeak_makes_a_wav(make_settings, lang: str, text: str) -> None:
    settings = make_settings().assistant

    name, result = tts(settings, text, lang)

    audio = wav_path(settings.data_dir, name).read_bytes()
    assert audio[:4] == b"RIFF"
    assert audio[8:12] == b"WAVE"
    assert len(audio) > 10_000  # about a second of speech, not just a header
    assert result == {"name": name, "cached": False, "bytes": len(audio)}
    leftovers = [p.name for p in (settings.data_dir / "audio").iterdir()]
    assert leftovers == [f"{name}.wav"]  # the temporary file was renamed, not copied


def test_the_same_text_twice_is_one_file(make_settings) -> None:
    settings = make_settings().assistant

    first, made = tts(settings, HELLO_EN, "en")
    mtime_ns = wav_path(settings.data_dir, first).stat().st_mtime_ns
    second, again = tts(settings, HELLO_EN, "en")

    assert first == second
    assert (made["cached"], again["cached"]) == (False, True)
    assert wav_path(settings.data_dir, first).stat().st_mtime_ns == mtime_ns
    assert len(list((settings.data_dir / "audio").iterdir())) == 1


def test_a_missing_tts_program_is_a_clear_error(make_settings, tmp_path: Path) -> None:
    settings = make_settings(tts_command=str(tmp_path / "no-such-espeak")).assistant

    with pytest.raises(DependencyUnavailableError, match="not installed") as caught:
        tts(settings, HELLO_EN, "en")

    assert caught.value.dependency == "voice"
    assert not list((settings.data_dir / "audio").iterdir())


def test_a_failing_tts_program_leaves_no_file(make_settings, tmp_path: Path) -> None:
    broken = script(tmp_path, "broken-tts", "echo 'voice data missing' >&2; exit 3")
    settings = make_settings(tts_command=broken).assistant

    with pytest.raises(RuntimeError, match=r"exit 3.*voice data missing"):
        tts(settings, HELLO_EN, "en")

    assert not list((settings.data_dir / "audio").iterdir())


def test_a_hung_tts_program_is_killed_with_its_children(make_settings, tmp_path: Path) -> None:
    pid_file = tmp_path / "tts.pid"
    hung = script(tmp_path, "hung-tts", f"sleep 60 & echo $! > {pid_file}; wait")
    settings = make_settings(tts_command=hung, tts_timeout_s=1.0).assistant
    started_s = time.monotonic()

    with pytest.raises(DependencyUnavailableError, match="longer than"):
        tts(settings, HELLO_EN, "en")

    assert time.monotonic() - started_s < 30.0  # did not wait for the sleep (generous bound)
    child = int(pid_file.read_text(encoding="utf-8"))
    assert not alive(child)  # the wrapper's child was killed too
    assert not list((settings.data_dir / "audio").iterdir())


@pytest.mark.parametrize(
    "args",
    [
        {"text": "hi", "lang": "fr", "name": "0" * 32},
        {"text": "", "lang": "en", "name": "0" * 32},
        {"text": "hi", "lang": "en", "name": "../../audio"},
        {"text": "hi", "lang": "en", "name": "A" * 32},
    ],
)
def test_bad_job_arguments_are_refused(make_settings, args: dict[str, Any]) -> None:
    settings = make_settings().assistant

    with pytest.raises(InvalidInputError):
        synthesize(settings, settings.data_dir, args)


# -- VoiceOut through the async plane ----------------------------------------------------


OpenVoice = Callable[..., Awaitable[tuple[VoiceOut, Signals, AsyncPlane]]]


@pytest.fixture
async def open_voice(make_settings) -> AsyncIterator[OpenVoice]:
    async with AsyncExitStack() as stack:

        async def open_(**overrides: Any) -> tuple[VoiceOut, Signals, AsyncPlane]:
            settings: Settings = make_settings(**overrides)
            signals = Signals(Metrics(CollectorRegistry()))
            registry = default_registry()
            register_voice_jobs(registry, settings.assistant)
            plane = await stack.enter_async_context(
                open_async_plane(
                    settings.async_plane,
                    registry=registry,
                    signals=signals,
                    health=HealthBoard(signals),
                    clock=CLOCK,
                )
            )
            voice = VoiceOut(
                settings.assistant, dispatcher=plane.dispatcher, signals=signals, clock=CLOCK
            )
            return voice, signals, plane

        yield open_


async def test_speak_returns_the_url_of_a_real_wav(open_voice, data_dir: Path) -> None:
    voice, signals, _ = await open_voice()

    url = await voice.speak(HELLO_ES, "es", Deadline.start(CLOCK, 15.0), 0)

    assert url is not None
    name = url.removeprefix("/audio/").removesuffix(".wav")
    assert url == f"/audio/{name}.wav"
    assert wav_path(data_dir, name).read_bytes()[:4] == b"RIFF"
    assert voice_latency(signals) == 0


def jobs_journaled(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "jobs.sqlite3")) as db:
        return int(db.execute("SELECT count(*) FROM jobs WHERE name = 'voice.tts'").fetchone()[0])


async def test_a_cached_reply_needs_no_job(open_voice, data_dir: Path) -> None:
    voice, signals, _ = await open_voice()
    url = await voice.speak(HELLO_EN, "en", Deadline.start(CLOCK, 15.0), 0)
    assert jobs_journaled(data_dir) == 1

    again = await voice.speak(HELLO_EN, "en", Deadline.start(CLOCK, 0.1), 0)

    assert again == url  # even with no time to make anything
    assert jobs_journaled(data_dir) == 1
    assert len(list((data_dir / "audio").iterdir())) == 1
    assert voice_latency(signals) == 0


async def test_a_slow_tts_is_not_waited_for_and_serves_next_time(
    open_voice, tmp_path: Path, data_dir: Path
) -> None:
    slow = script(tmp_path, "slow-tts", 'sleep 2; exec espeak-ng "$@"')
    voice, signals, _ = await open_voice(tts_command=slow, tts_wait_s=0.3)
    started_s = time.monotonic()

    url = await voice.speak(HELLO_EN, "en", Deadline.start(CLOCK, 15.0), 0)

    assert url is None
    assert not any((data_dir / "audio").glob("*.wav"))  # it did not wait for the TTS ...
    assert time.monotonic() - started_s < 15.0  # ... nor hang (generous bound)
    assert voice_latency(signals) == 1
    # The job goes on in the background; the same reply, later, is served from its file.
    for _ in range(300):
        if (data_dir / "audio").is_dir() and any((data_dir / "audio").glob("*.wav")):
            break
        await asyncio.sleep(0.05)
    later = await voice.speak(HELLO_EN, "en", Deadline.start(CLOCK, 0.1), 0)
    assert later is not None
    assert voice_latency(signals) == 1


async def test_the_wait_never_outlasts_the_turn(open_voice, tmp_path: Path) -> None:
    slow = script(tmp_path, "slow-tts", 'sleep 5; exec espeak-ng "$@"')
    voice, signals, _ = await open_voice(tts_command=slow, tts_wait_s=30.0)
    turn = Deadline.start(CLOCK, 1.0)

    assert await voice.speak(HELLO_EN, "en", turn, 0) is None

    assert not turn.expired  # time was left to send the text reply
    assert voice_latency(signals) == 1


async def test_a_missing_tts_program_means_no_audio_not_an_error(
    open_voice, tmp_path: Path
) -> None:
    voice, signals, _ = await open_voice(tts_command=str(tmp_path / "no-such-espeak"))

    with capture_logs() as logs:
        for _ in range(3):
            assert await voice.speak(HELLO_EN, "en", Deadline.start(CLOCK, 15.0), 0) is None

    assert voice_latency(signals) == 3  # counted each time ...
    assert [entry["event"] for entry in logs] == ["voice.degraded"]  # ... logged once


async def test_too_many_hops_means_no_audio_not_an_error(open_voice) -> None:
    voice, signals, _ = await open_voice()

    assert await voice.speak(HELLO_EN, "en", Deadline.start(CLOCK, 15.0), 3) is None
    assert voice_latency(signals) == 1


async def test_a_language_without_a_voice_is_just_silent(open_voice) -> None:
    voice, _, _ = await open_voice()

    assert await voice.speak("Bonjour", "fr", Deadline.start(CLOCK, 15.0), 0) is None


# -- GET /audio ----------------------------------------------------------------------------


def test_get_audio_serves_the_wav(make_client, make_settings) -> None:
    client = make_client()
    name, _ = tts(make_settings().assistant, HELLO_EN, "en")
    audio = wav_path(make_settings().data_dir, name).read_bytes()

    response = client.get(f"/audio/{name}.wav")  # no bearer token: the name is the capability

    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.content == audio


@pytest.mark.parametrize(
    "path",
    [
        "/audio/" + "0" * 32 + ".wav",  # well-formed, but no such file
        "/audio/" + "A" * 32 + ".wav",
        "/audio/" + "0" * 31 + ".wav",
        "/audio/" + "0" * 33 + ".wav",
        "/audio/" + "0" * 32 + ".mp3",
        "/audio/" + "0" * 32,
        "/audio/audio.key",
        "/audio/..%2Faudio.key",
        "/audio/%2e%2e%2faudio.key",
        "/audio/..%2F..%2Fetc%2Fpasswd",
        "/audio/" + "0" * 32 + ".wav%00",
    ],
)
def test_bad_audio_names_are_404(make_client, data_dir: Path, path: str) -> None:
    client = make_client()
    audio_key(data_dir)  # something worth stealing next door

    response = client.get(path)

    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"]["code"] == "not_found"
    assert body["error"]["detail"]
