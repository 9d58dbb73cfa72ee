"""Redis commands from concurrent turns, pipelined on one connection: one write per batch.

Every command issued while the event loop runs one round of callbacks joins the same batch;
the batch is written at the start of the next round, in one write, on the batcher's one
connection. Replies come back in order (Redis answers a connection's commands in the order it
read them), are parsed by ``hiredis`` as the bytes arrive, and each caller gets its own reply
or its own error reply. Batches do not wait for each other: a second batch is written while
the first is still being answered. Nothing is reordered and every command stays what it was (a
Lua script stays one atomic step on the server): only round trips and writes are shared.

Why our own: redis-py sends each command of each caller on its own round trip and has no way
to gather independent callers (its ``Pipeline`` gathers one caller's commands, and adds a
``SCRIPT EXISTS`` round trip to every execute with scripts). A first version of this module
batched through redis-py's pooled connections (``send_packed_command`` and ``read_response``
per reply): the pool's checks on every checkout, a task and a timer per batch and redis-py's
per-reply wrapper cost more CPU than the commands themselves (``benchmarks/RESULTS.md``,
eighth round). Here one ``asyncio.Protocol`` owns the socket, ``hiredis.Reader`` (the parser
redis-py itself uses when installed) turns bytes into replies, and redis-py gives the URL
parsing and the exception classes. Commands are packed by ``hiredis`` too (``pack``), tested
byte for byte against redis-py's packer.

Containment:
- Every batch has a deadline (``timeout_s`` from its write to its last reply), watched by one
  timer re-armed at the oldest unanswered batch's deadline; connecting, authenticating,
  selecting the database and loading the scripts have one too. Past it, every command still
  waiting on the connection fails with ``TimeoutError`` (later batches cannot be answered
  before an earlier one), and the connection is aborted, never reused half-read; the next call
  connects again. A lost connection fails every waiting command with ``ConnectionError`` at
  once.
- No retries here (the ``RedisLink`` around each operation decides what a failure means).
- A caller that stops waiting (cancelled) leaves its batch alone: its command was sent, or is
  sent with its batch, and its reply is read and discarded.
- ``aclose`` writes what is queued, waits for every reply on the wire (each bounded by its
  batch's timer) and closes the connection.
- Written data is not held back while Redis reads slowly (no flow control): what can pile up is
  what callers send in ``timeout_s``, after which the connection is aborted and its buffer freed.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

__all__ = ["Arg", "BatchedScript", "CommandBatcher", "pack"]

Arg = str | bytes | int | float


class _Waiter(Protocol):
    """Who gets a command's reply: an ``asyncio.Future`` a caller awaits, a script's waiter
    (``_ScriptWaiter``), or ``_NOBODY`` for a command nobody waits for."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class CommandBatcher:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._address = _Address.parse(url)
        self._queue: list[bytes] = []  # packed commands of the coming batch
        self._waiters: list[_Waiter] = []  # their callers, in the same order
        self._link: _RespLink | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._running_loop: asyncio.AbstractEventLoop | None = None
        self._scripts: list[str] = []  # sources, loaded on connecting
        self.batches = 0  # written so far; with ``commands``, the mean batch size
        self.commands = 0

    async def call(self, *args: Arg) -> Any:
        """Send one command with whatever else this round of the loop sends; its reply.

        Raises the command's own error reply (``ResponseError``), or the connection's failure
        (``TimeoutError``, ``ConnectionError``, ...); ``TypeError`` for an argument that is not
        ``str``, ``bytes``, ``int`` or ``float`` (nothing is sent).
        """
        return await self.call_packed(pack((args,)))

    def call_packed(self, packed: bytes) -> asyncio.Future[Any]:
        """``call`` for one command packed already (``pack``): the future of its reply."""
        future: asyncio.Future[Any] = self._loop().create_future()
        self._enqueue(packed, future)
        return future

    def send_nowait(self, *args: Arg) -> None:
        """Queue a command whose reply nobody waits for: it goes out with this round's batch,
        after every command queued before it and before every command queued after it; its
        reply, error or failure is dropped."""
        self._enqueue(pack((args,)), _NOBODY)

    def _enqueue(self, packed: bytes, waiter: _Waiter) -> None:
        if not self._queue:
            self._loop().call_soon(self._flush)
        self._queue.append(packed)
        self._waiters.append(waiter)

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The loop this batcher runs on, found once (each ``get_running_loop`` costs a
        ``getpid`` system call on Python 3.11); a batcher serves one loop, as its socket does."""
        loop = self._running_loop
        if loop is None:
            loop = self._running_loop = asyncio.get_running_loop()
        return loop

    def script(self, source: str) -> BatchedScript:
        """A script run on this batcher's connection, loaded on every (re)connect (and at once
        when the connection is up already)."""
        if source not in self._scripts:
            self._scripts.append(source)
            if self._link is not None and not self._link.closed:
                self.send_nowait("SCRIPT", "LOAD", source)
        return BatchedScript(self, source)

    async def aclose(self) -> None:
        """Send what is queued, wait for every reply on the wire, close the connection."""
        self._flush()
        if self._connecting is not None:  # it writes the queue once connected, or fails it
            await asyncio.wait([self._connecting])  # bounded by ``timeout_s``
        link, self._link = self._link, None
        if link is not None:
            await link.drain()
            link.close()

    def _flush(self) -> None:
        if not self._queue:
            return
        link = self._link
        if link is None or link.closed:
            if self._connecting is None:
                self._connecting = self._loop().create_task(self._connect())
            return  # the connection, once made, writes the queue; failed, fails it
        queue, waiters = self._queue, self._waiters
        self._queue, self._waiters = [], []
        self.batches += 1
        self.commands += len(waiters)
        try:
            link.send(b"".join(queue), waiters)
        except Exception as exc:  # noqa: BLE001 - no caller is left waiting on a broken link
            link.abort()
            for future in waiters:
                _fail(future, exc)

    async def _connect(self) -> None:
        link: _RespLink | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                link = await self._address.open(self.timeout_s)
                # AUTH and SELECT as the URL says, then every script loaded: a script sent
                # without waiting (``BatchedScript.send_nowait``) is then never missing.
                hello = [*self._address.hello, *(("SCRIPT", "LOAD", s) for s in self._scripts)]
                if hello:
                    greeted = [link.loop.create_future() for _ in hello]
                    link.send(pack(hello), list(greeted))
                    for future in greeted:
                        await future  # a refused AUTH or SELECT raises here
        except BaseException as exc:
            if link is not None:
                link.abort()
            waiters, self._queue, self._waiters = self._waiters, [], []
            failure = exc if isinstance(exc, Exception) else RedisConnectionError("closed")
            for waiter in waiters:
                _fail(waiter, failure)
            if not isinstance(exc, Exception):
                raise
        else:
            self._link = link
            self._flush()
        finally:
            self._connecting = None


class _RespLink(asyncio.Protocol):
    """One connection to Redis: writes batches, hands each reply to the next waiting caller,
    fails everything waiting when a batch's timer rings or the connection drops."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.closed = False
        self._timeout_s = timeout_s
        self._transport: asyncio.Transport  # set once connected, before ``open`` returns
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._waiting: deque[_Waiter] = deque()
        # The batches not yet fully answered: (number of the batch's last reply, its deadline).
        self._batches: deque[tuple[int, float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None  # rings at the oldest batch's deadline
        self._drained: asyncio.Future[None] | None = None  # for ``drain``: nothing left waiting
        self._sent = 0  # commands written so far
        self._answered = 0  # replies read so far

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def send(self, packed: bytes, waiters: list[_Waiter]) -> None:
        self._transport.write(packed)
        self._waiting.extend(waiters)
        self._sent += len(waiters)
        deadline = self.loop.time() + self._timeout_s
        self._batches.append((self._sent, deadline))
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(deadline, self._check_deadlines)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()
                self._answered += 1
                if future.done():  # its caller stopped waiting
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(_error_reply(reply))
                else:
                    future.set_result(reply)
        except (InvalidResponse, IndexError):  # garbage, or a reply nobody asked for
            self._fail_all(InvalidResponse("Redis sent a reply out of step"))
            self.abort()
            return
        batches = self._batches
        while batches and batches[0][0] <= self._answered:
            batches.popleft()
        if not waiting and self._drained is not None:
            _succeed(self._drained)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f": {exc}" if exc is not None else " (closed by Redis)"
        self._fail_all(RedisConnectionError(f"connection to Redis lost{why}"))

    def _check_deadlines(self) -> None:
        """One timer for all batches (one each cost more than their commands): re-armed at the
        oldest unanswered batch's deadline, and past it, everything waiting fails."""
        self._watchdog = None
        if not self._batches:
            return
        deadline = self._batches[0][1]
        if self.loop.time() < deadline:
            self._watchdog = self.loop.call_at(deadline, self._check_deadlines)
            return
        self._fail_all(TimeoutError(f"Redis did not answer within {self._timeout_s} s"))
        self.abort()

    def _fail_all(self, exc: Exception) -> None:
        self.closed = True
        self._batches.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            _fail(self._waiting.popleft(), exc)
        if self._drained is not None:
            _succeed(self._drained)

    async def drain(self) -> None:
        """Until every command written has had its reply, or the connection failed."""
        if self._waiting:
            self._drained = self.loop.create_future()
            await self._drained

    def abort(self) -> None:
        self.closed = True
        self._transport.abort()

    def close(self) -> None:
        self.closed = True
        self._transport.close()


class _Address:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL (parsed by
    redis-py): host and port or socket path, TLS, and the AUTH and SELECT to send first."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.path: str | None = options.get("path")
        self.tls = options.get("connection_class") is SSLConnection
        self.hello: list[tuple[Arg, ...]] = []
        password, username = options.get("password"), options.get("username")
        if password is not None:
            login = (username, password) if username else (password,)
            self.hello.append(("AUTH", *login))
        if db := int(options.get("db", 0)):
            self.hello.append(("SELECT", db))
        if options.get("connection_class") is UnixDomainSocketConnection and self.path is None:
            raise ValueError("a unix:// Redis URL needs a socket path")

    @classmethod
    def parse(cls, url: str) -> _Address:
        return cls(parse_url(url))

    async def open(self, timeout_s: float) -> _RespLink:
        loop = asyncio.get_running_loop()

        def protocol() -> _RespLink:
            return _RespLink(loop, timeout_s)

        try:
            if self.path is not None:
                _, link = await loop.create_unix_connection(protocol, self.path)
            else:
                tls = ssl.create_default_context() if self.tls else None
                _, link = await loop.create_connection(protocol, self.host, self.port, ssl=tls)
        except OSError as exc:
            where = self.path or f"{self.host}:{self.port}"
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
        return link


def pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """Commands in the Redis protocol (RESP arrays of bulk strings), text as UTF-8, numbers as
    redis-py writes them: ``hiredis``'s packer (1.0 µs for a turn's admission script, against
    3.0 for the same loop in Python)."""
    return b"".join(_pack_one(tuple(args)) for args in commands)


def _pack_one(args: tuple[Arg, ...]) -> bytes:
    # hiredis's stub types the argument as a 1-tuple (it takes any length) and returns Any.
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def _error_reply(reply: ResponseError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return reply


class _Nobody:
    """The waiter of a command sent with ``send_nowait``: already done, so its reply is
    dropped like a cancelled caller's."""

    def done(self) -> bool:
        return True

    def set_result(self, result: Any, /) -> None:  # noqa: ARG002 - dropped
        return

    def set_exception(self, exception: BaseException, /) -> None:  # noqa: ARG002 - dropped
        return


_NOBODY = _Nobody()


def _succeed(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: _Waiter, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class BatchedScript:
    """A Lua script run by ``EVALSHA``; by ``EVAL`` once when Redis does not have it (a
    restarted or flushed server), which also loads it again."""

    def __init__(self, batcher: CommandBatcher, source: str) -> None:
        self._batcher = batcher
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> asyncio.Future[Any]:
        """The future of the script's reply (a plain function, not a coroutine: one frame
        fewer for every turn to suspend and resume through)."""
        future: asyncio.Future[Any] = self._batcher._loop().create_future()  # noqa: SLF001
        waiter = _ScriptWaiter(future, self, keys, args)
        self._batcher._enqueue(self._packed(self._sha, keys, args), waiter)  # noqa: SLF001
        return future

    def send_nowait(self, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Run it without waiting (``CommandBatcher.send_nowait``), in order with the rest.
        Scripts are loaded on connecting, so Redis has it, unless someone ran ``SCRIPT FLUSH``
        on the live server: then it is sent again by ``EVAL`` when that error comes back, after
        the commands queued meanwhile."""
        waiter = _ScriptWaiter(None, self, keys, args)
        self._batcher._enqueue(self._packed(self._sha, keys, args), waiter)  # noqa: SLF001

    def resend(self, keys: Sequence[str], args: Sequence[Arg], waiter: _Waiter) -> None:
        """By ``EVAL``, for ``waiter``: a missing script's second try."""
        self._batcher._enqueue(self._packed(None, keys, args), waiter)  # noqa: SLF001

    def _packed(self, sha: str | None, keys: Sequence[str], args: Sequence[Arg]) -> bytes:
        """By ``EVALSHA`` with ``sha``, by ``EVAL`` with the source without it."""
        head = ("EVAL", self._source) if sha is None else ("EVALSHA", sha)
        return _pack_one((*head, len(keys), *keys, *args))


class _ScriptWaiter:
    """The waiter of a script: its caller's future gets the reply (no future: the script was
    sent with ``send_nowait`` and the reply is dropped), except that a missing script is sent
    again by ``EVAL`` for the same waiting (which also loads it)."""

    __slots__ = ("_args", "_future", "_keys", "_script")

    def __init__(
        self,
        future: asyncio.Future[Any] | None,
        script: BatchedScript,
        keys: Sequence[str],
        args: Sequence[Arg],
    ) -> None:
        self._future, self._script, self._keys, self._args = future, script, keys, args

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def set_result(self, result: Any, /) -> None:
        if self._future is not None:
            self._future.set_result(result)

    def set_exception(self, exception: BaseException, /) -> None:
        if isinstance(exception, NoScriptError):
            self._script.resend(self._keys, self._args, self._future or _NOBODY)
        elif self._future is not None:
            self._future.set_exception(exception)
