"""The OpenAPI document, made to say what the API really accepts and answers.

FastAPI's generated schema knows nothing of bodies read by hand (``/chat``, ``/jobs``,
``/telemetry`` parse their bytes themselves, to count them and cap their depth), of the bearer
token, or of the error body, and it declares FastAPI's own 422 shape, which Denis never sends.
``describe`` fills those in: request bodies from the same pydantic models the handlers use
(with the text and size limits), the reply shapes, a bearer security scheme on every protected
operation, and every error status answered with ``{"error": {"code", "detail"}}``.

The document is not served (``openapi_url=None``: no unauthenticated surface that lists the
API); ``app.openapi()`` builds it once, and the fuzz tests (``tests/fuzz``) drive the API from
it. Building it touches no dependency and cannot fail a request.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from denis.api.body import ChatMessage
from denis.api.jobs import JobRequest
from denis.api.telemetry import MAX_EVENTS, TelemetryBatch

__all__ = ["describe", "install_openapi"]

DEFAULT_MAX_TEXT_CHARS = 4000  # Settings.max_text_chars's default; the schema shows that one

_REF = "#/components/schemas/"
_ERROR = {"$ref": _REF + "Error"}
_PUBLIC = frozenset({"/healthz", "/readyz"})
_ADMIN_PREFIXES = ("/admin/", "/jobs")

# Statuses every protected operation may answer, and the extra ones per route.
_COMMON = {
    "401": "unauthorized: no valid bearer token",
    "413": "too_large: the body is over the size limit",
    "422": "invalid_input: a malformed request",
    "429": "rate_limited (with Retry-After)",
    "503": "unavailable (with Retry-After)",
}
_EXTRA: dict[str, dict[str, str]] = {
    "/chat": {
        "403": "budget_exceeded or injection_blocked",
        "408": "timeout (with Retry-After)",
        "508": "hop_limit",
    },
    "/jobs": {"403": "forbidden: not an admin token", "408": "timeout", "508": "hop_limit"},
    "/admin/": {"403": "forbidden: not an admin token", "404": "not_found", "408": "timeout"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "detail"],
                "properties": {"code": {"type": "string"}, "detail": {"type": "string"}},
            }
        },
    },
    "ChatReply": {
        "type": "object",
        "required": ["reply", "lang", "intent", "trace_id", "degraded", "audio_url"],
        "properties": {
            "reply": {"type": "string"},
            "lang": {"type": "string"},
            "intent": {"type": "string"},
            "trace_id": {"type": "string"},
            "degraded": {"type": "array", "items": {"type": "string"}},
            "audio_url": {"type": ["string", "null"]},
        },
    },
    "Status": {
        "type": "object",
        "required": ["zones", "breakers", "queues"],
        "properties": {
            "zones": {"type": "object"},
            "breakers": {"type": "object"},
            "queues": {"type": "object"},
        },
    },
    "JobOutcome": {
        "type": "object",
        "required": ["key", "state", "queue", "inline"],
        "properties": {
            "key": {"type": "string"},
            "state": {"type": "string"},
            "queue": {"type": "string"},
            "inline": {"type": "boolean"},
            "error": {"type": ["string", "null"]},
        },
    },
}

_BODIES: dict[tuple[str, str], str] = {
    ("/chat", "post"): "ChatRequest",
    ("/jobs", "post"): "JobRequest",
    ("/telemetry", "post"): "TelemetryBatch",
}

_OK: dict[tuple[str, str], dict[str, Any]] = {
    ("/chat", "post"): {"$ref": _REF + "ChatReply"},
    ("/healthz", "get"): {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    ("/readyz", "get"): {
        "type": "object",
        "required": ["status", "degraded"],
        "properties": {
            "status": {"const": "ready"},
            "degraded": {"type": "array", "items": {"type": "string"}},
        },
    },
    ("/status", "get"): {"$ref": _REF + "Status"},
    ("/jobs", "post"): {"$ref": _REF + "JobOutcome"},
    ("/admin/dlq", "get"): {
        "type": "object",
        "required": ["dead_letters"],
        "properties": {"dead_letters": {"type": "array", "items": {"type": "object"}}},
    },
    ("/admin/dlq", "delete"): {
        "type": "object",
        "required": ["purged"],
        "properties": {"purged": {"type": "integer", "minimum": 0}},
    },
    ("/admin/dlq/replay", "post"): {
        "type": "object",
        "required": ["replayed"],
        "properties": {"replayed": {"type": "array"}},
    },
    ("/admin/dlq/{key}/replay", "post"): {
        "type": "object",
        "required": ["replayed"],
        "properties": {"replayed": {"type": "array"}},
    },
    ("/telemetry", "post"): {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "integer", "minimum": 0}},
    },
}


def _model_schemas() -> dict[str, Any]:
    """The request models' JSON schemas, their ``$defs`` lifted into the components."""
    found: dict[str, Any] = {}
    for name, model in (
        ("ChatRequest", ChatMessage),
        ("JobRequest", JobRequest),
        ("TelemetryBatch", TelemetryBatch),
    ):
        schema = model.model_json_schema(ref_template=_REF + "{model}")
        found.update(schema.pop("$defs", {}))
        found[name] = schema
    chat = found["ChatRequest"]
    chat["required"] = ["text"]
    chat["properties"]["text"].update(minLength=1, maxLength=DEFAULT_MAX_TEXT_CHARS)
    found["TelemetryBatch"]["properties"]["events"]["maxItems"] = MAX_EVENTS
    return found


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(path: str) -> dict[str, Any]:
    statuses = {"503": _COMMON["503"]} if path in _PUBLIC else dict(_COMMON)
    for prefix, extra in _EXTRA.items():
        if path.startswith(prefix):
            statuses.update(extra)
    return {status: _json(_ERROR, text) for status, text in statuses.items()}


def describe(generated: dict[str, Any]) -> dict[str, Any]:
    """``generated`` (FastAPI's schema) with Denis's bodies, replies, auth and errors."""
    schema = copy.deepcopy(generated)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)  # FastAPI's 422 shape: never sent
    schemas.pop("ValidationError", None)
    schemas.update(_model_schemas())
    schemas.update(copy.deepcopy(_SCHEMAS))
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if (path, method) in _BODIES:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF + _BODIES[path, method]}}
                    },
                }
            ok: dict[str, Any] = _json(_OK.get((path, method), {}), "OK")
            if path == "/metrics":
                ok = {
                    "description": "Prometheus text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            operation["responses"] = {"200": ok, **_errors(path)}
            if path == "/readyz":
                operation["responses"]["503"]["description"] = "starting (with Retry-After)"
            if path not in _PUBLIC:
                operation["security"] = [{"bearer": []}]
            if path.startswith(_ADMIN_PREFIXES):
                operation["description"] = "Admin token only (403 forbidden for a user token)."
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the described schema (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(
                get_openapi(title=app.title, version=app.version, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
