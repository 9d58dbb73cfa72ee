"""Zone 3, the graph: intents' tool routes, policies, the home, and DecisionTrace.

Owns: the ``GraphStore`` interface with two implementations (Neo4j over Bolt, embedded
LadybugDB), the model, home files (YAML), the legacy cache, the resolver the assistant calls
on the request path, and the DecisionTrace buffer and writer.
Depends on: ``denis.resilience``; the ``neo4j`` driver and ``ladybug`` (imported here only,
their errors translated at this edge).
Degrades: the graph down, hung or its pool exhausted → **legacy mode** (5 failures open the
breaker for 30 s, then a half-open probe): graph operations are skipped and answers come from
the local cache (persisted, so a restart during an outage still works). DecisionTrace never
blocks: it goes to a bounded buffer, then the graph, else a local log, else it is counted
as dropped.
Emits: ``neo4j.connect_error``, ``neo4j.query_timeout``, ``neo4j.pool_exhausted``,
``neo4j.write_queue``, ``decisiontrace.dropped``.
"""

from denis.graph.loader import default_home, parse_home, read_home_file
from denis.graph.model import Area, DecisionTrace, Device, HomeGraph, Policy, PolicyDecision, Route
from denis.graph.plane import GraphZone, open_graph_store, open_graph_zone
from denis.graph.resolver import GRAPH_ZONE, GraphResolver, Resolved
from denis.graph.store import GraphError, GraphStore

__all__ = [
    "GRAPH_ZONE",
    "Area",
    "DecisionTrace",
    "Device",
    "GraphError",
    "GraphResolver",
    "GraphStore",
    "GraphZone",
    "HomeGraph",
    "Policy",
    "PolicyDecision",
    "Resolved",
    "Route",
    "default_home",
    "open_graph_store",
    "open_graph_zone",
    "parse_home",
    "read_home_file",
]
