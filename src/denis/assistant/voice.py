"""Voice out: replies spoken by espeak-ng into ``<data_dir>/audio/<name>.wav``, served by the API
at ``/audio/<name>.wav``.

Owns: the ``voice.tts`` job (queue ``tts``; a worker runs it, or the API inline when no worker
can), the audio file names, the per-install naming secret (``<data_dir>/audio.key``, 0600), and
``VoiceOut``, which the responder asks for a reply's audio URL.
A name is 32 hex characters of HMAC-SHA256(secret, lang + text): an identical reply reuses one
file (made once, then served from the cache), and nobody who lacks the secret can guess the name
of someone else's reply, which is what lets ``/audio`` go without a bearer token.
Degrades: espeak-ng missing, failing or slower than what is left of the turn → the reply goes
out as text only (the caller marks it ``voice``), counted as ``voice.latency`` each time and
logged once per state change; a slow job keeps running (bounded by ``tts_timeout_s``, then its
process group is killed) and its file serves the same reply next time. Never raises into a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import structlog

from denis.async_plane import Dispatcher, JobContext, JobRegistry, Queue
from denis.errors import DenisError, DependencyUnavailableError, InvalidInputError
from denis.resilience import Clock, Deadline, Signal, Signals
from denis.settings import AssistantSettings

__all__ = [
    "AUDIO_DIR",
    "TTS_JOB",
    "VOICES",
    "VoiceOut",
    "audio_key",
    "audio_name",
    "audio_url",
    "register_voice_jobs",
    "synthesize",
]

AUDIO_DIR = "audio"
TTS_JOB = "voice.tts"
VOICES = {"en": "en", "es": "es"}  # reply language → espeak-ng voice
VOICE_DEPENDENCY = "voice"
_KEY_FILE = "audio.key"
_KEY_BYTES = 32
_NAME = re.compile(r"[0-9a-f]{32}")
_MAX_TEXT_CHARS = 4000
_WAV_HEADER_BYTES = 44
_REPLY_MARGIN_S = 0.3  # kept back from the turn's deadline to send the reply
_MIN_WAIT_S = 0.05
_log = structlog.get_logger("denis.assistant")


# -- names ---------------------------------------------------------------------------------


def audio_key(data_dir: Path) -> bytes:
    """The per-install naming secret, created (0600) on first use; safe against a race."""
    path = data_dir / _KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=".audio.key.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp makes it 0600
            out.write(secrets.token_bytes(_KEY_BYTES))
        with contextlib.suppress(FileExistsError):  # another process made one first: use it
            path.hardlink_to(tmp)
    finally:
        tmp.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < _KEY_BYTES:
        raise OSError(f"{path} is damaged (shorter than {_KEY_BYTES} bytes)")
    return key


def audio_name(secret: bytes, lang: str, text: str) -> str:
    digest = hmac.new(secret, f"{lang}\n{text}".encode(), hashlib.sha256).hexdigest()
    return digest[:32]


def audio_url(name: str) -> str:
    return f"/audio/{name}.wav"


# -- the job -------------------------------------------------------------------------------


def synthesize(settings: AssistantSettings, data_dir: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Make ``<data_dir>/audio/<name>.wav`` unless it exists: espeak-ng into a temporary file,
    then an atomic rename, so a reader never sees half a file."""
    text, lang, name = _checked(args)
    folder = data_dir / AUDIO_DIR
    final = folder / f"{name}.wav"
    if final.is_file():
        return {"name": name, "cached": True}
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _run_tts(settings, [*_tts_argv(settings), "-v", VOICES[lang]], text, tmp)
        size = tmp.stat().st_size
        if size <= _WAV_HEADER_BYTES:
            raise RuntimeError("the TTS program wrote no audio")
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": name, "cached": False, "bytes": size}


def _checked(args: dict[str, Any]) -> tuple[str, str, str]:
    text, lang, name = args.get("text"), args.get("lang"), args.get("name")
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT_CHARS:
        raise InvalidInputError(f"text must be 1-{_MAX_TEXT_CHARS} characters")
    if lang not in VOICES:
        raise InvalidInputError(f"no voice for language {lang!r}")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidInputError("name must be 32 lowercase hex characters")
    return text, str(lang), name


def _tts_argv(settings: AssistantSettings) -> list[str]:
    try:
        argv = shlex.split(settings.tts_command)
    except ValueError:
        argv = []
    if not argv:
        raise DependencyUnavailableError(
            "no usable TTS program is configured (DENIS_TTS_COMMAND)", dependency=VOICE_DEPENDENCY
        )
    return argv


def _run_tts(settings: AssistantSettings, command: list[str], text: str, out_path: Path) -> None:
    """Run the TTS program in its own process group; on timeout the whole group is killed
    (a wrapper script's children too, so none keeps running or holds our pipes)."""
    argv = [*command, "-b", "1", "-w", str(out_path), "--stdin"]
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv from the operator's own setting, no shell
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise DependencyUnavailableError(
            f"the TTS program {command[0]!r} is not installed or not runnable",
            dependency=VOICE_DEPENDENCY,
        ) from exc
    try:
        _, err = proc.communicate(text.encode(), timeout=settings.tts_timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise DependencyUnavailableError(
            f"the TTS program took longer than {settings.tts_timeout_s:g} s and was stopped",
            dependency=VOICE_DEPENDENCY,
        ) from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-200:]
        raise RuntimeError(f"the TTS program failed (exit {proc.returncode}): {tail}")


def register_voice_jobs(registry: JobRegistry, settings: AssistantSettings) -> None:
    def tts(ctx: JobContext, args: dict[str, Any]) -> Any:
        return synthesize(settings, ctx.data_dir, args)

    registry.add(TTS_JOB, Queue.TTS, tts)


# -- the API side --------------------------------------------------------------------------


class VoiceOut:
    """Asks for a reply's audio within the turn; the text reply never waits long for it."""

    def __init__(
        self,
        settings: AssistantSettings,
        *,
        dispatcher: Dispatcher,
        signals: Signals,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        self._signals = signals
        self._clock = clock
        self._secret: bytes | None = None
        self._trouble: str | None = None  # why voice is degraded, while it is

    async def speak(self, text: str, lang: str, deadline: Deadline, hops: int) -> str | None:
        """The reply's audio URL, or None (counted as ``voice.latency``) when there is none in
        time. Never raises, except ``CancelledError``."""
        if lang not in VOICES or not text.strip() or len(text) > _MAX_TEXT_CHARS:
            return None
        try:
            async with asyncio.timeout(max(deadline.remaining_s() - _REPLY_MARGIN_S, _MIN_WAIT_S)):
                name, cached = await asyncio.to_thread(self._lookup, text, lang)
            trouble = None if cached else await self._make(name, text, lang, deadline, hops)
        except (DenisError, OSError) as exc:  # OSError includes TimeoutError
            trouble = _reason(exc)
        if trouble is not None:
            self._silent(trouble)
            return None
        if self._trouble is not None:
            self._trouble = None
            self._signals.note(Signal.RECOVERED, dependency=VOICE_DEPENDENCY, ended="voice")
        return audio_url(name)

    async def _make(
        self, name: str, text: str, lang: str, deadline: Deadline, hops: int
    ) -> str | None:
        """Run ``voice.tts`` for at most the wait budget; what went wrong, or None when the
        file is there."""
        wait_s = min(self._settings.tts_wait_s, deadline.remaining_s() - _REPLY_MARGIN_S)
        if wait_s < _MIN_WAIT_S:
            return "no time left to speak the reply"
        outcome = await self._dispatcher.submit(
            TTS_JOB,
            {"text": text, "lang": lang, "name": name},
            deadline=Deadline.start(self._clock, wait_s),
            hops=hops,
            wait=True,
        )
        if outcome.unsettled:
            return "the reply was not spoken in time"
        if outcome.state != "done":
            return f"the TTS job {outcome.state}: {(outcome.error or 'no error given')[:200]}"
        if not await asyncio.to_thread(self._audio_path(name).is_file):
            return "the spoken reply is missing"
        return None

    def _lookup(self, text: str, lang: str) -> tuple[str, bool]:
        if self._secret is None:
            self._secret = audio_key(self._settings.data_dir)
        name = audio_name(self._secret, lang, text)
        return name, self._audio_path(name).is_file()

    def _audio_path(self, name: str) -> Path:
        return self._settings.data_dir / AUDIO_DIR / f"{name}.wav"

    def _silent(self, reason: str) -> None:
        self._signals.count(Signal.VOICE_LATENCY)
        if self._trouble != reason:
            self._trouble = reason
            _log.warning("voice.degraded", reason=reason)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DenisError):
        return exc.detail[:200]
    if isinstance(exc, TimeoutError):
        return "the audio folder did not answer in time"
    return f"the audio folder is unavailable ({type(exc).__name__})"
