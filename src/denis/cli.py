"""The ``denis`` command: ``up``, ``serve``, ``token create``, ``status``, ``gate check``."""

from __future__ import annotations

import json
import os
import sys

import typer

from denis.settings import Settings

__all__ = ["main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Denis, the home assistant.")
token_app = typer.Typer(no_args_is_help=True, help="Manage bearer tokens.")
gate_app = typer.Typer(no_args_is_help=True, help="Try the request gates.")
app.add_typer(token_app, name="token")
app.add_typer(gate_app, name="gate")

LAUNCH_TOKEN_FILE = "launch.token"  # noqa: S105 - a file name, not a secret


def _settings(host: str | None = None, port: int | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    return Settings(**overrides)  # type: ignore[arg-type]


def _serve(settings: Settings) -> None:
    from denis.api import serve  # noqa: PLC0415 - keep 'denis token' fast
    from denis.app import create_app  # noqa: PLC0415
    from denis.resilience.logs import configure_logging  # noqa: PLC0415

    configure_logging(os.environ.get("DENIS_LOG_LEVEL", "INFO"))
    serve(create_app(settings), settings.api)


def launch_token(settings: Settings) -> str:
    """The owner's login token for the printed URL, created on first run and kept (0600)."""
    from denis.sync_plane import TokenStore  # noqa: PLC0415

    store = TokenStore(settings.data_dir)
    path = settings.data_dir / LAUNCH_TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if store.is_valid(token):
            return token
    token = store.create("owner", admin=True, label="launch")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


@app.command()
def up(host: str | None = None, port: int | None = None) -> None:
    """Start Denis on the embedded defaults and print the URL to open."""
    settings = _settings(host, port)
    token = launch_token(settings)
    print(f"\nDenis is starting. Open this URL (it logs you in):\n\n"
          f"    http://{settings.host}:{settings.port}/#token={token}\n", flush=True)  # fmt: skip
    _serve(settings)


@app.command()
def serve(host: str | None = None, port: int | None = None) -> None:
    """Start the API server only."""
    _serve(_settings(host, port))


@token_app.command("create")
def token_create(
    user: str = typer.Option(..., help="Who the token is for."),
    admin: bool = typer.Option(False, "--admin", help="Allow admin endpoints."),
) -> None:
    """Create a token; it is printed once and stored hashed."""
    from denis.sync_plane import TokenStore  # noqa: PLC0415

    try:
        print(TokenStore(_settings().data_dir).create(user, admin=admin))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc


@app.command()
def status(url: str | None = None) -> None:
    """Each zone's mode, breaker states and queue lengths, as a table."""
    import httpx  # noqa: PLC0415

    settings = _settings()
    base = url or f"http://{settings.host}:{settings.port}"
    token_path = settings.data_dir / LAUNCH_TOKEN_FILE
    token = os.environ.get("DENIS_TOKEN") or (
        token_path.read_text(encoding="utf-8").strip() if token_path.exists() else ""
    )
    try:
        response = httpx.get(
            f"{base}/status", headers={"Authorization": f"Bearer {token}"}, timeout=3
        )
    except httpx.HTTPError as exc:
        print(f"Denis does not answer at {base}: {type(exc).__name__}", file=sys.stderr)
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        print(f"{base}/status answered {response.status_code}: {response.text}", file=sys.stderr)
        raise typer.Exit(1)
    print(_status_table(response.json()))


def _status_table(data: dict[str, dict[str, object]]) -> str:
    rows = [("ZONE", "MODE", "DETAILS")]
    for name, zone in data.get("zones", {}).items():
        assert isinstance(zone, dict)  # noqa: S101
        details = ", ".join(f"{k}={v}" for k, v in zone.items() if k != "mode")
        rows.append((name, str(zone.get("mode")), details))
    rows.append(("", "", ""))
    rows.append(("BREAKER", "STATE", ""))
    rows.extend((name, str(state), "") for name, state in data.get("breakers", {}).items())
    if data.get("queues"):
        rows.append(("", "", ""))
        rows.append(("QUEUE", "LENGTH", ""))
        rows.extend((name, str(length), "") for name, length in data["queues"].items())
    width = max(len(r[0]) for r in rows) + 2
    return "\n".join(f"{a:<{width}}{b:<12}{c}".rstrip() for a, b, c in rows)


@gate_app.command("check")
def gate_check() -> None:
    """Read texts on stdin (one per line, plain or a JSON string); print one verdict per line."""
    from denis.sync_plane import RuleInjectionDetector  # noqa: PLC0415

    detector = RuleInjectionDetector()
    for line in sys.stdin:
        text = line.rstrip("\n")
        if text.startswith('"'):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                decoded = text
            text = decoded if isinstance(decoded, str) else text
        verdict = detector.inspect(text)
        print(
            json.dumps({"blocked": verdict.blocked, "score": verdict.score, "layer": verdict.layer})
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
