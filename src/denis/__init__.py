"""Denis: a self-hosted voice and chat assistant for the home that contains its failures.

Layout (one package per containment zone, see ``../shared/DESIGN.md``):

- ``resilience``: breaker, deadline, hop guard, clock, signals and metrics, used by every zone.
- ``sync_plane``: zone 1, the request path (rate limiting, gates, the turn pipeline).
- ``api``: the only package that imports the web framework.
- ``app``: the one place that wires zones together.
"""

__version__ = "0.1.0"
