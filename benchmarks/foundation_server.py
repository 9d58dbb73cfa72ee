"""``denis serve`` with the sync plane's ``BasicResponder``: the pipeline issue 2 measures.

Since the assistant (issue 5) became ``create_app``'s default responder, ``denis serve``
answers with intent recognition, graph routes and tool jobs: section 6's subject, not
section 1's. This runs exactly what ``denis serve`` runs (settings from the environment,
``configure_logging``, ``denis.api.serve``), with the foundation's responder.

With ``DENIS_BENCH_DROP_TRACES=1`` (for attribution only, never a result on its own) each
turn's DecisionTrace is still built and handed to the graph zone's recorder, which then drops
it instead of buffering it for the writer: the difference is what writing traces costs.

Run: ``python benchmarks/foundation_server.py`` (``harness.FoundationProcess`` does).
"""

from __future__ import annotations

import os

from denis.api import serve
from denis.app import create_app
from denis.graph.traces import TraceRecorder
from denis.resilience.logs import configure_logging
from denis.settings import Settings
from denis.sync_plane import BasicResponder


def main() -> None:
    if os.environ.get("DENIS_BENCH_DROP_TRACES") == "1":
        TraceRecorder.record = lambda _self, _trace: None  # type: ignore[method-assign]
    settings = Settings()
    configure_logging(os.environ.get("DENIS_LOG_LEVEL", "INFO"))
    serve(create_app(settings, responder=BasicResponder()), settings.api)


if __name__ == "__main__":
    main()
