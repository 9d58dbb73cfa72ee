"""``denis serve`` with the sync plane's ``BasicResponder``: the pipeline issue 2 measures.

Since the assistant (issue 5) became ``create_app``'s default responder, ``denis serve``
answers with intent recognition, graph routes and tool jobs: section 6's subject, not
section 1's. This runs exactly what ``denis serve`` runs (settings from the environment,
``configure_logging``, ``denis.api.serve``), with the foundation's responder.

For attribution only (``bench_attribution.py``; never a result on its own, and never how
Denis runs): ``DENIS_BENCH_SKIP`` names steps of the turn, comma-separated, that this process
replaces with a no-op, so that the difference to the whole pipeline is what a step costs:

- ``traces``: each turn's DecisionTrace is still built and handed to the graph zone's
  recorder, which drops it instead of buffering it for the writer;
- ``record``: no DecisionTrace is built, no turn counter or latency histogram updated;
- ``injection``: the injection gate (rules and classifier) passes every text unread;
- ``limits``: both rate-limit checks answer "allowed" without counting;
- ``budget``: no reservation and no settle;
- ``deadline``: the turn runs without its ``asyncio.timeout``;
- ``headers``: responses go without the security headers (``SECURITY_HEAD``);
- ``feature_cache``: not a step but the classifier's feature cache (``CachedFeatures``): every
  text is hashed whole by ``features``, as a text of new words is; the benchmark repeats one
  text, whose words the cache always holds.

``DENIS_BENCH_DROP_TRACES=1`` is the older spelling of ``DENIS_BENCH_SKIP=traces``.

Run: ``python benchmarks/foundation_server.py`` (``harness.FoundationProcess`` does).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from denis.api import serve
from denis.app import create_app
from denis.resilience.logs import configure_logging
from denis.settings import Settings
from denis.sync_plane import BasicResponder

__all__ = ["SKIPPABLE", "main"]


def _skip_traces() -> None:
    from denis.graph.traces import TraceRecorder  # noqa: PLC0415

    TraceRecorder.record = lambda _self, _trace: None  # type: ignore[method-assign]


def _skip_record() -> None:
    from denis.app import TracedPipeline  # noqa: PLC0415

    TracedPipeline._record = lambda *_args: None  # type: ignore[method-assign]  # noqa: SLF001


def _skip_injection() -> None:
    from denis.sync_plane.injection import GateVerdict, InjectionGate  # noqa: PLC0415

    passed = GateVerdict(blocked=False, score=0.0, layer="skipped")
    InjectionGate.check = lambda _self, _text: passed  # type: ignore[method-assign]


def _skip_admission() -> None:
    """The rate limits and the budget: one step since they are one script on Redis."""
    from denis.sync_plane.admission import AdmissionGate  # noqa: PLC0415
    from denis.sync_plane.budget import BudgetGate, Reservation  # noqa: PLC0415

    free = Reservation("skipped", 0, "memory"), False

    async def admit(
        _self: object, _user: str, _addr: str, _tokens: int, _d: object
    ) -> tuple[Reservation, bool]:
        return free

    AdmissionGate.admit = admit  # type: ignore[method-assign,assignment]
    BudgetGate.settle = lambda _self, _reservation, _used: None  # type: ignore[method-assign]


def _skip_deadline() -> None:
    from denis.sync_plane.pipeline import ChatPipeline, TurnReply  # noqa: PLC0415

    async def run(self: ChatPipeline, request: object, deadline: object) -> TurnReply:
        return await self._handle(request, deadline)  # type: ignore[arg-type]

    ChatPipeline.run = run  # type: ignore[method-assign,assignment]


def _skip_headers() -> None:
    import denis.api.http_protocol  # noqa: PLC0415

    # under denis serve the protocol writes them (TraceMiddleware adds none)
    denis.api.http_protocol.SECURITY_HEAD = b""


def _skip_feature_cache() -> None:
    from denis.sync_plane.injection_model import CachedFeatures, features  # noqa: PLC0415

    def whole(self: CachedFeatures, text: str) -> set[int]:
        return features(text, self._buckets)

    CachedFeatures.__call__ = whole  # type: ignore[method-assign]


SKIPPABLE: dict[str, Callable[[], None]] = {
    "traces": _skip_traces,
    "record": _skip_record,
    "injection": _skip_injection,
    "admission": _skip_admission,
    "deadline": _skip_deadline,
    "headers": _skip_headers,
    "feature_cache": _skip_feature_cache,
}


def main() -> None:
    skip = {s for s in os.environ.get("DENIS_BENCH_SKIP", "").split(",") if s}
    if os.environ.get("DENIS_BENCH_DROP_TRACES") == "1":
        skip.add("traces")
    unknown = skip - SKIPPABLE.keys()
    if unknown:
        raise SystemExit(f"DENIS_BENCH_SKIP: unknown steps {sorted(unknown)}")
    for step in sorted(skip):
        SKIPPABLE[step]()
    settings = Settings()
    configure_logging(os.environ.get("DENIS_LOG_LEVEL", "INFO"))
    serve(create_app(settings, responder=BasicResponder()), settings.api)


if __name__ == "__main__":
    main()
