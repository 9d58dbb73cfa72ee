"""Bearer tokens, stored hashed in the data dir.

Tokens are 256-bit random strings, so a fast SHA-256 is enough (no password stretching); the
file holds only hashes, and lookups compare digests with ``hmac.compare_digest``. The file is
replaced atomically and re-read when it changes, so ``denis token create`` works while a
server runs, and several API processes share it. A token that is not known is always checked
against the file as it is now (a new token works at once); a known one is trusted for up to
``recheck_s`` (1 s) before the file is looked at again, so a token taken out of the file by
hand stops working within a second, and a turn does not pay for a ``stat`` system call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from denis.errors import UnauthorizedError

__all__ = ["Principal", "TokenStore"]

TOKEN_PREFIX = "denis_"  # noqa: S105 - a prefix, not a secret
_MAX_TOKEN_CHARS = 200


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    admin: bool
    token_id: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, data_dir: Path, *, recheck_s: float = 1.0) -> None:
        self._path = data_dir / "tokens.json"
        self._recheck_s = recheck_s
        self._checked_at = -recheck_s  # monotonic time of the last look at the file
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, Principal] = {}

    def create(self, user: str, *, admin: bool = False, label: str = "") -> str:
        if not user or len(user) > 64 or not user.replace("-", "").replace("_", "").isalnum():
            raise ValueError("a user name is 1-64 letters, digits, '-' or '_'")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = {
            "id": secrets.token_hex(6),
            "user": user,
            "admin": admin,
            "label": label,
            "sha256": _digest(token),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            records = self._read()
            if label:
                records = [r for r in records if r.get("label") != label]
            records.append(record)
            self._write(records)
        return token

    def authenticate(self, token: str | None) -> Principal:
        if not token or len(token) > _MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
            raise UnauthorizedError("a valid bearer token is required")
        wanted = _digest(token)
        found = None
        if time.monotonic() - self._checked_at < self._recheck_s:
            found = self._find(wanted)
        if found is None:
            self._refresh()
            found = self._find(wanted)
        if found is None:
            raise UnauthorizedError("a valid bearer token is required")
        return found

    def _find(self, wanted: str) -> Principal | None:
        found: Principal | None = None
        for digest, principal in self._by_digest.items():
            if hmac.compare_digest(digest, wanted):
                found = principal
        return found

    def is_valid(self, token: str) -> bool:
        try:
            self.authenticate(token)
        except UnauthorizedError:
            return False
        return True

    def _refresh(self) -> None:
        self._checked_at = time.monotonic()
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._by_digest = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._by_digest = {
            str(r["sha256"]): Principal(str(r["user"]), bool(r["admin"]), str(r["id"]))
            for r in self._read()
        }
        self._stamp = stamp

    def _read(self) -> list[dict[str, object]]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        return [r for r in data.get("tokens", []) if isinstance(r, dict)]

    def _write(self, records: list[dict[str, object]]) -> None:
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"tokens": records}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self._path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self._path.with_suffix(".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
