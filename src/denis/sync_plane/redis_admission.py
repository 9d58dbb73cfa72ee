"""A turn's admission on Redis in one script: its rate-limit windows in order, then its budget
reservation, one atomic step and one command.

The pipeline admits a turn in three checks (the client address's window, the user's window, the
day's token budget), each stopping the turn when refused. Sent one by one, each costs the turn a
round trip and the event loop a suspension and a resumption of the whole request: measured on
Redis, four awaited commands a turn left Denis at 0.48 of the bare route's throughput, one
script a turn at 0.62 (``benchmarks/RESULTS.md``, eighth round). So on Redis the three checks
are one Lua script, in the same order and with the same stops: a refused window leaves the later
windows and the budget untouched, a refused budget leaves the windows counted (they were hit).

The windows are ``limits``'s fixed window, on its keys: the keys are ``RateLimitItem.key_for``
under ``denis:rl``, and a window's counter is added to and given its TTL when the hit created it,
exactly the ``incr`` of ``limits``'s own Redis storage (a contract test runs ``limits``'s
``FixedWindowRateLimiter`` on its own ``RedisStorage`` against the same keys). ``limits``'s
strategy object is not in the call path because it makes one storage call per window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from denis.sync_plane.constants import BUDGET_KEY_TTL_S, BUDGET_PREFIX, RATE_LIMIT_PREFIX
from denis.sync_plane.limiter import RateRule, RateVerdict
from denis.sync_plane.redis_batch import Arg, CommandBatcher

__all__ = ["AdmissionReply", "BudgetAsk", "RedisAdmission", "rate_key"]

# KEYS: the windows in order, then the budget's key when ARGV[1] is 1.
# ARGV: 1 or 0 (a budget asked or not), each window's amount and length, then the budget's
# tokens wanted, daily limit and key TTL. Returns {0, tokens used} admitted, {i, TTL of window i}
# refused by the i-th window, {-1, tokens used} refused by the budget.
_ADMIT = """
local windows = #KEYS - tonumber(ARGV[1])
for i = 1, windows do
  local count = redis.call('INCRBY', KEYS[i], 1)
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
  if count > tonumber(ARGV[2 * i]) then return {i, redis.call('TTL', KEYS[i])} end
end
if ARGV[1] == '0' then return {0, 0} end
local key, at = KEYS[windows + 1], 2 * windows + 2
local used = tonumber(redis.call('GET', key) or '0')
local want = tonumber(ARGV[at])
if used + want > tonumber(ARGV[at + 1]) then return {-1, used} end
used = redis.call('INCRBY', key, want)
redis.call('EXPIRE', key, ARGV[at + 2])
return {0, used}
"""


def rate_key(rule: RateRule, key: str) -> str:
    """The Redis key of ``key``'s current window under ``rule``: ``limits``'s name for it."""
    return f"{RATE_LIMIT_PREFIX}:{rule.item.key_for(rule.name, key)}"


# Per-turn values, never mutated; not ``frozen`` for speed (see ``pipeline.TurnRequest``).
@dataclass(slots=True)
class BudgetAsk:
    key: str  # the user's day, e.g. ``alice:20261205``
    tokens: int
    limit: int


@dataclass(slots=True)
class AdmissionReply:
    """What the script said: ``refused_by`` is the index of the refusing window in the checks
    given, ``-1`` for the budget, ``None`` when admitted; ``value`` is then that window's
    seconds left, or the tokens used today."""

    refused_by: int | None
    value: int

    @classmethod
    def read(cls, raw: Sequence[int]) -> AdmissionReply:
        """The script's reply, ``[code, value]``."""
        code, value = raw
        if code == 0:
            return cls(None, int(value))
        return cls(-1 if code == -1 else int(code) - 1, int(value))

    def rate_verdict(self) -> RateVerdict:
        """The refusing window's verdict: ``Retry-After`` is the seconds its window has left."""
        return RateVerdict(allowed=False, retry_after_s=max(1.0, self.value), backend="redis")


class RedisAdmission:
    def __init__(self, batcher: CommandBatcher) -> None:
        self._script = batcher.script(_ADMIT)

    async def admit(
        self, checks: Sequence[tuple[RateRule, str]], budget: BudgetAsk | None
    ) -> AdmissionReply:
        return AdmissionReply.read(await self.send(checks, budget))

    def send(
        self, checks: Sequence[tuple[RateRule, str]], budget: BudgetAsk | None
    ) -> asyncio.Future[Any]:
        """``admit`` without reading the reply: the future of the script's raw reply, for
        ``AdmissionReply.read``. A plain function, so a turn awaits the reply through one
        coroutine frame fewer (each is paid on every suspension and resumption)."""
        keys = [rate_key(rule, key) for rule, key in checks]
        args: list[Arg] = [0 if budget is None else 1]
        for rule, _ in checks:
            args += (rule.amount, rule.window_s)
        if budget is not None:
            keys.append(f"{BUDGET_PREFIX}:{budget.key}")
            args += (budget.tokens, budget.limit, BUDGET_KEY_TTL_S)
        return self._script(keys, args)

    async def hit(self, rule: RateRule, key: str) -> RateVerdict:
        """One window on its own (the ``RateLimiter`` interface)."""
        reply = await self.admit(((rule, key),), None)
        return _ALLOWED if reply.refused_by is None else reply.rate_verdict()

    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        """The budget on its own (the ``BudgetStore`` interface's reserve)."""
        reply = await self.admit((), BudgetAsk(key, tokens, limit))
        return reply.refused_by is None, reply.value


_ALLOWED = RateVerdict(allowed=True, backend="redis")
