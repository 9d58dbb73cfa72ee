"""Denis's configuration, read once from ``DENIS_*`` environment variables.

``Settings`` is built in ``main()`` only; each zone receives just its slice (``settings.sync``,
``settings.api``, ...). Every timeout, TTL and threshold has a finite default: "wait forever" is
never a valid setting. Unset URLs mean the embedded default (for Redis: in-memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ApiSettings",
    "AssistantSettings",
    "AsyncSettings",
    "BreakerSettings",
    "GraphSettings",
    "Settings",
    "SyncSettings",
]

_RATE_UNITS = ("second", "minute", "hour", "day")


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """The sync plane's slice: rate limits, budget, Redis, gates, responder."""

    data_dir: Path
    redis_url: str | None
    redis_timeout_s: float
    redis_breaker: BreakerSettings
    rate_limit_user: str
    rate_limit_client: str
    memory_limiter_max_keys: int
    budget_tokens_per_day: int
    budget_reply_reserve_tokens: int
    responder_breaker: BreakerSettings
    responder_timeout_s: float
    injection_rules: str = "default"  # default | strict | off | path to a JSON/YAML rules file
    injection_threshold: float | None = None  # None: the threshold the model was trained with


@dataclass(frozen=True, slots=True)
class AsyncSettings:
    """The async plane's slice: broker, workers, retries, journal, disk guard."""

    data_dir: Path
    broker_url: str | None  # None: kombu's filesystem transport under data_dir
    broker_timeout_s: float
    broker_breaker: BreakerSettings
    job_time_limit_s: float
    job_soft_time_limit_s: float
    retry_backoff_s: float
    journal_stale_after_s: float
    housekeeping_interval_s: float
    worker_heartbeat_s: float
    disk_max_percent: float
    queue_high_water: int
    inline_timeout_s: float


@dataclass(frozen=True, slots=True)
class GraphSettings:
    """The graph zone's slice: which store, its limits, the legacy cache, DecisionTrace."""

    data_dir: Path
    url: str | None  # bolt:// or neo4j:// → Neo4j; None → the embedded store
    embedded_path: Path | None  # None: <data_dir>/graph/db; ":memory:" for an ephemeral graph
    user: str | None
    password: str | None
    query_timeout_s: float
    pool_size: int
    acquire_timeout_s: float
    breaker: BreakerSettings
    cache_refresh_s: float
    trace_buffer_size: int
    trace_batch_size: int
    trace_flush_s: float


@dataclass(frozen=True, slots=True)
class AssistantSettings:
    """The assistant's slice: the home (demo or Home Assistant), tools, the LLM, voice, history."""

    data_dir: Path
    ha_url: str | None  # None: the built-in demo home
    ha_token: str | None
    ha_timeout_s: float
    ha_breaker: BreakerSettings
    ha_media_player: str | None  # entity id replies are played on (``ha_playback``)
    public_url: str | None  # how Home Assistant reaches Denis's audio files
    llm_url: str | None  # None: intents only
    llm_model: str
    llm_api_key: str | None
    llm_timeout_s: float
    llm_max_tokens: int
    llm_breaker: BreakerSettings
    tool_timeout_s: float
    tts_command: str
    tts_timeout_s: float
    tts_wait_s: float
    conversation_turns: int
    conversation_ttl_s: float
    conversation_max_sessions: int


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The HTTP/WebSocket edge's slice."""

    host: str
    port: int
    data_dir: Path
    chat_timeout_s: float
    max_body_bytes: int
    max_text_chars: int
    ws_max_frame_bytes: int
    ws_auth_timeout_s: float
    ws_status_s: float  # how often an authenticated socket gets the /status snapshot
    ws_reconnect_limit: int  # WS connections one client address may open per window
    ws_reconnect_window_s: float
    ws_max_frames_per_s: float  # per connection; a burst of twice this is allowed
    ws_max_connections_per_client: int  # open WS connections at once per client address
    cors_origins: tuple[str, ...]  # origins allowed cross-origin access (and WS); none by default


class Settings(BaseSettings):
    """All of Denis's settings; environment variable = ``DENIS_`` + field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="DENIS_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8084, ge=1, le=65535)
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "denis")

    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.1, gt=0, le=5)
    redis_breaker_threshold: int = Field(default=3, ge=1, le=100)
    redis_breaker_cooldown_s: float = Field(default=5.0, gt=0, le=600)

    rate_limit_user: str = "30/minute"
    rate_limit_client: str = "120/minute"
    memory_limiter_max_keys: int = Field(default=100_000, ge=100)
    budget_tokens_per_day: int = Field(default=200_000, ge=1)
    budget_reply_reserve_tokens: int = Field(default=64, ge=0)

    chat_timeout_s: float = Field(default=15.0, gt=0, le=600)
    responder_timeout_s: float = Field(default=10.0, gt=0, le=600)
    responder_breaker_threshold: int = Field(default=5, ge=1, le=100)
    responder_breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3600)
    injection_rules: str = "default"
    injection_threshold: float | None = Field(default=None, gt=0, le=1)

    broker_url: str | None = None
    broker_timeout_s: float = Field(default=0.3, gt=0, le=10)
    broker_breaker_threshold: int = Field(default=3, ge=1, le=100)
    broker_breaker_cooldown_s: float = Field(default=5.0, gt=0, le=600)
    job_time_limit_s: float = Field(default=300.0, gt=0, le=3600)
    job_soft_time_limit_s: float = Field(default=290.0, gt=0, le=3600)
    job_retry_backoff_s: float = Field(default=2.0, ge=0, le=300)
    journal_stale_after_s: float = Field(default=30.0, gt=0, le=86400)
    housekeeping_interval_s: float = Field(default=10.0, gt=0, le=3600)
    worker_heartbeat_s: float = Field(default=2.0, gt=0, le=60)
    queue_disk_max_percent: float = Field(default=95.0, ge=0, le=100)
    queue_high_water: int = Field(default=1000, ge=1)
    job_inline_timeout_s: float = Field(default=10.0, gt=0, le=600)

    graph_url: str | None = None
    graph_embedded_path: str | None = None
    graph_user: str | None = None
    graph_password: str | None = None
    graph_query_timeout_s: float = Field(default=2.0, gt=0, le=60)
    graph_pool_size: int = Field(default=20, ge=1, le=500)
    graph_acquire_timeout_s: float = Field(default=2.0, gt=0, le=60)
    graph_breaker_threshold: int = Field(default=5, ge=1, le=100)
    graph_breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3600)
    graph_cache_refresh_s: float = Field(default=30.0, gt=0, le=86400)
    trace_buffer_size: int = Field(default=10_000, ge=1)
    # 1,000: in a busy API process, about 5 % less CPU per turn than 200 (fewer transactions; a
    # batch is about 20 ms of the graph's one thread). benchmarks/RESULTS.md section 1.
    trace_batch_size: int = Field(default=1000, ge=1)
    trace_flush_s: float = Field(default=0.5, gt=0, le=60)

    ha_url: str | None = None
    ha_token: str | None = None
    ha_timeout_s: float = Field(default=3.0, gt=0, le=60)
    ha_breaker_threshold: int = Field(default=5, ge=1, le=100)
    ha_breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3600)
    ha_media_player: str | None = None
    public_url: str | None = None
    llm_url: str | None = None
    llm_model: str = "default"
    llm_api_key: str | None = None
    llm_timeout_s: float = Field(default=8.0, gt=0, le=120)
    llm_max_tokens: int = Field(default=256, ge=1, le=8192)
    llm_breaker_threshold: int = Field(default=5, ge=1, le=100)
    llm_breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3600)
    tool_timeout_s: float = Field(default=5.0, gt=0, le=120)
    tts_command: str = "espeak-ng"
    tts_timeout_s: float = Field(default=10.0, gt=0, le=120)
    tts_wait_s: float = Field(default=2.0, ge=0, le=60)
    conversation_turns: int = Field(default=6, ge=1, le=100)
    conversation_ttl_s: float = Field(default=900.0, gt=0, le=86400)
    conversation_max_sessions: int = Field(default=10_000, ge=1)

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_text_chars: int = Field(default=4000, ge=1)
    ws_max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    ws_auth_timeout_s: float = Field(default=10.0, gt=0, le=300)
    ws_status_s: float = Field(default=2.0, gt=0, le=3600)
    ws_reconnect_limit: int = Field(default=10, ge=1, le=10_000)
    ws_reconnect_window_s: float = Field(default=60.0, gt=0, le=3600)
    ws_max_frames_per_s: float = Field(default=20.0, gt=0, le=10_000)
    ws_max_connections_per_client: int = Field(default=16, ge=1, le=10_000)
    cors_origins: str = ""  # comma-separated, e.g. "https://home.example,http://10.0.0.5:8084"

    @field_validator(
        "redis_url", "broker_url", "graph_url", "ha_url", "ha_token", "ha_media_player",
        "public_url", "llm_url", "llm_api_key",
    )  # fmt: skip
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("rate_limit_user", "rate_limit_client")
    @classmethod
    def _rate_is_n_per_unit(cls, value: str) -> str:
        count, _, unit = value.partition("/")
        if not count.strip().isdigit() or int(count) < 1 or unit.strip() not in _RATE_UNITS:
            raise ValueError(f"expected N/unit with unit one of {_RATE_UNITS}, got {value!r}")
        return value

    @property
    def sync(self) -> SyncSettings:
        return SyncSettings(
            data_dir=self.data_dir,
            redis_url=self.redis_url,
            redis_timeout_s=self.redis_timeout_s,
            redis_breaker=BreakerSettings(
                self.redis_breaker_threshold, self.redis_breaker_cooldown_s
            ),
            rate_limit_user=self.rate_limit_user,
            rate_limit_client=self.rate_limit_client,
            memory_limiter_max_keys=self.memory_limiter_max_keys,
            budget_tokens_per_day=self.budget_tokens_per_day,
            budget_reply_reserve_tokens=self.budget_reply_reserve_tokens,
            responder_breaker=BreakerSettings(
                self.responder_breaker_threshold, self.responder_breaker_cooldown_s
            ),
            responder_timeout_s=self.responder_timeout_s,
            injection_rules=self.injection_rules,
            injection_threshold=self.injection_threshold,
        )

    @property
    def async_plane(self) -> AsyncSettings:
        return AsyncSettings(
            data_dir=self.data_dir,
            broker_url=self.broker_url,
            broker_timeout_s=self.broker_timeout_s,
            broker_breaker=BreakerSettings(
                self.broker_breaker_threshold, self.broker_breaker_cooldown_s
            ),
            job_time_limit_s=self.job_time_limit_s,
            job_soft_time_limit_s=min(self.job_soft_time_limit_s, self.job_time_limit_s * 0.97),
            retry_backoff_s=self.job_retry_backoff_s,
            journal_stale_after_s=self.journal_stale_after_s,
            housekeeping_interval_s=self.housekeeping_interval_s,
            worker_heartbeat_s=self.worker_heartbeat_s,
            disk_max_percent=self.queue_disk_max_percent,
            queue_high_water=self.queue_high_water,
            inline_timeout_s=self.job_inline_timeout_s,
        )

    @property
    def graph(self) -> GraphSettings:
        return GraphSettings(
            data_dir=self.data_dir,
            url=self.graph_url,
            embedded_path=Path(self.graph_embedded_path) if self.graph_embedded_path else None,
            user=self.graph_user,
            password=self.graph_password,
            query_timeout_s=self.graph_query_timeout_s,
            pool_size=self.graph_pool_size,
            acquire_timeout_s=self.graph_acquire_timeout_s,
            breaker=BreakerSettings(self.graph_breaker_threshold, self.graph_breaker_cooldown_s),
            cache_refresh_s=self.graph_cache_refresh_s,
            trace_buffer_size=self.trace_buffer_size,
            trace_batch_size=self.trace_batch_size,
            trace_flush_s=self.trace_flush_s,
        )

    @property
    def assistant(self) -> AssistantSettings:
        return AssistantSettings(
            data_dir=self.data_dir,
            ha_url=self.ha_url.rstrip("/") if self.ha_url else None,
            ha_token=self.ha_token,
            ha_timeout_s=self.ha_timeout_s,
            ha_breaker=BreakerSettings(self.ha_breaker_threshold, self.ha_breaker_cooldown_s),
            ha_media_player=self.ha_media_player,
            public_url=self.public_url.rstrip("/") if self.public_url else None,
            llm_url=self.llm_url.rstrip("/") if self.llm_url else None,
            llm_model=self.llm_model,
            llm_api_key=self.llm_api_key,
            llm_timeout_s=self.llm_timeout_s,
            llm_max_tokens=self.llm_max_tokens,
            llm_breaker=BreakerSettings(self.llm_breaker_threshold, self.llm_breaker_cooldown_s),
            tool_timeout_s=self.tool_timeout_s,
            tts_command=self.tts_command,
            tts_timeout_s=self.tts_timeout_s,
            tts_wait_s=self.tts_wait_s,
            conversation_turns=self.conversation_turns,
            conversation_ttl_s=self.conversation_ttl_s,
            conversation_max_sessions=self.conversation_max_sessions,
        )

    @property
    def api(self) -> ApiSettings:
        return ApiSettings(
            host=self.host,
            port=self.port,
            data_dir=self.data_dir,
            chat_timeout_s=self.chat_timeout_s,
            max_body_bytes=self.max_body_bytes,
            max_text_chars=self.max_text_chars,
            ws_max_frame_bytes=self.ws_max_frame_bytes,
            ws_auth_timeout_s=self.ws_auth_timeout_s,
            ws_status_s=self.ws_status_s,
            ws_reconnect_limit=self.ws_reconnect_limit,
            ws_reconnect_window_s=self.ws_reconnect_window_s,
            ws_max_frames_per_s=self.ws_max_frames_per_s,
            ws_max_connections_per_client=self.ws_max_connections_per_client,
            cors_origins=tuple(
                origin.strip().rstrip("/")
                for origin in self.cors_origins.split(",")
                if origin.strip()
            ),
        )
