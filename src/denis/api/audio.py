"""``GET /audio/{name}.wav``: the spoken replies made by the assistant's ``voice.tts`` job.

No bearer token on purpose: a browser's ``<audio src>`` (and a Home Assistant media player)
cannot send an ``Authorization`` header. The file's name is the capability instead: 32 hex
characters of an HMAC under a per-install secret (``denis.assistant.voice.audio_name``), so it
cannot be guessed from the reply's text. Anything that is not exactly such a name (upper case,
another extension, ``..``, a slash) is the same 404 as a file that does not exist, with the
standard error body, so the route never reaches outside ``<data_dir>/audio``.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import FileResponse

from denis.api.deps import ServicesDep
from denis.errors import NotFoundError

__all__ = ["AUDIO_DIR", "router"]

AUDIO_DIR = "audio"  # under the data dir; the same folder ``denis.assistant.voice`` writes
_NAME = re.compile(r"[0-9a-f]{32}\.wav")

router = APIRouter()


@router.get("/audio/{filename}", include_in_schema=False)
async def audio(filename: str, services: ServicesDep) -> FileResponse:
    if _NAME.fullmatch(filename) is None:
        raise NotFoundError("no such audio file")
    path = services.settings.data_dir / AUDIO_DIR / filename
    if not path.is_file():  # a stat of a name we built ourselves: no thread hop needed
        raise NotFoundError("no such audio file")
    return FileResponse(path, media_type="audio/wav")
