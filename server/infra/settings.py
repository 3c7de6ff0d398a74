"""Settings: one frozen object, read from the environment once.

This module is the only reader of ``os.environ`` in the project. Every variable
it reads is documented in the README's Configuration table.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.core.client_address import (
    Network,
    TrustedProxies,
    parse_networks,
    parse_trusted_proxies,
)
from server.core.mail_limits import allowlist_entry


class SettingsError(ValueError):
    """An environment variable has a value we cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _bool_or_auto(env: Mapping[str, str], name: str) -> bool | None:
    """True, False, or None for ``auto`` (and when unset)."""
    if env.get(name, "").strip().lower() in ("", "auto"):
        return None
    try:
        return _bool(env, name)
    except SettingsError:
        raw = env.get(name, "").strip()
        raise SettingsError(f"{name} must be auto, true or false, got {raw!r}") from None


def _webp_method(env: Mapping[str, str]) -> int:
    """WEBP_METHOD: libwebp's speed/size trade-off, 0 (fastest) to 6 (smallest files)."""
    value = _int(env, "WEBP_METHOD", 0, minimum=0)
    if value > 6:
        raise SettingsError(f"WEBP_METHOD must be 0 to 6, got {value}")
    return value


def _cpus() -> int:
    """CPUs this process may run on: one worker process each by default (the Python parts
    of a job hold the GIL, so threads alone cannot use a second core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def _transports(env: Mapping[str, str]) -> tuple[str, ...]:
    """SOCKETIO_TRANSPORTS: `websocket` alone needs no sticky sessions behind a balancer."""
    raw = env.get("SOCKETIO_TRANSPORTS", "").strip()
    if not raw:
        return ("polling", "websocket")
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    if not names or set(names) - {"polling", "websocket"}:
        raise SettingsError(f"SOCKETIO_TRANSPORTS must list polling and/or websocket, got {raw!r}")
    return names


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (the first is the default), case-insensitive."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return allowed[0]
    if raw not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _trusted_proxies(env: Mapping[str, str]) -> TrustedProxies:
    """TRUSTED_PROXIES: which X-Forwarded-For entries name the client (core.client_address)."""
    try:
        return parse_trusted_proxies(env.get("TRUSTED_PROXIES", ""))
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_PROXIES: {exc}") from None


# Local tools and a proxy on this host (until TRUSTED_PROXIES names it) are not one client.
DEFAULT_EXEMPT_ADDRESSES = "127.0.0.0/8, ::1"


def _exempt_addresses(env: Mapping[str, str]) -> tuple[Network, ...]:
    """RATE_LIMIT_EXEMPT_ADDRESSES: client addresses per-address limits never count;
    ``none`` for no exemption."""
    raw = env.get("RATE_LIMIT_EXEMPT_ADDRESSES", "").strip() or DEFAULT_EXEMPT_ADDRESSES
    if raw.lower() == "none":
        return ()
    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise SettingsError(f"RATE_LIMIT_EXEMPT_ADDRESSES must list {exc}, or be none"
                            ) from None


def _number_digits(env: Mapping[str, str]) -> int:
    """MAX_NUMBER_DIGITS: 20 holds any 64-bit integer; past 4,300 Python's int() refuses."""
    value = _int(env, "MAX_NUMBER_DIGITS", 100, minimum=20)
    if value > 4300:
        raise SettingsError(f"MAX_NUMBER_DIGITS must be 20 to 4300, got {value}")
    return value


def _recipients(env: Mapping[str, str]) -> tuple[str, ...]:
    """EMAIL_ALLOWED_RECIPIENTS: addresses and @domains plain users may e-mail."""
    raw = env.get("EMAIL_ALLOWED_RECIPIENTS", "")
    entries = [entry for entry in raw.split(",") if entry.strip()]
    normalised = tuple(allowlist_entry(entry) or "" for entry in entries)
    bad = [entry.strip() for entry, ok in zip(entries, normalised, strict=True) if not ok]
    if bad:
        raise SettingsError("EMAIL_ALLOWED_RECIPIENTS must list addresses (ana@example.com) "
                            f"and domains (@example.com), not {', '.join(map(repr, bad))}")
    return tuple(dict.fromkeys(normalised))


def _tracing(env: Mapping[str, str]) -> bool:
    """Whether to export traces: an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT, or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and the SDK is not turned off (OTEL_SDK_DISABLED,
    OTEL_TRACES_EXPORTER=none), as the OpenTelemetry environment variables say."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())


def _secret(env: Mapping[str, str], data_dir: Path) -> str:
    """SECRET_KEY, or a random key kept in the data dir so every local process shares it."""
    given = env.get("SECRET_KEY", "").strip()
    if given:
        return given
    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(32)
    try:
        # O_EXCL: when web and worker start together, the first writer wins.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    return candidate


@dataclass(frozen=True)
class Settings:
    """Everything the web, worker and launcher processes are configured by."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    storage_dir: Path = Path("var/files")
    # Large uploads written past the page cache (O_DIRECT); None: where STORAGE_DIR is on a
    # local block-device filesystem (UPLOAD_DIRECT_IO=auto).
    upload_direct_io: bool | None = None
    redis_url: str = ""
    database_url: str = ""
    redis_prefix: str = "darkroom"
    secret_key: str = field(default="", repr=False)
    # False: the key was generated into DATA_DIR, so it is this host's alone.
    secret_key_given: bool = False
    admin_token: str = field(default="", repr=False)
    max_upload_mb: int = 50
    max_image_pixels: int = 50_000_000
    max_decode_mb: int = 256
    max_json_body_kb: int = 256
    max_task_payload_kb: int = 64
    max_form_fields: int = 20
    max_form_fields_kb: int = 64
    socket_connect_timeout_s: int = 10
    socket_handshakes_per_min: int = 120
    signed_url_ttl_s: int = 3600
    cors_origins: tuple[str, ...] = ()
    max_sockets_per_user: int = 20
    socket_max_message_bytes: int = 64 * 1024
    worker_processes: int = 1
    worker_threads: int = 2
    worker_heartbeat_timeout_ms: int = 20_000
    worker_forget_s: int = 600
    enable_test_tasks: bool = False
    sweep_interval_s: int = 30
    sweep_after_s: int = 60
    smtp_url: str = field(default="", repr=False)
    smtp_from: str = "darkroom@localhost"
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout_s: int = 10
    webhook_allow_private: bool = False
    webhook_deadline_s: int = 15
    webhook_max_in_flight_per_user: int = 50
    email_deadline_s: int = 30
    email_allowed_recipients: tuple[str, ...] = ()
    email_rate_per_user_per_hour: int = 20
    email_rate_per_hour: int = 200
    io_worker_threads: int = 8
    worker_pool: str = "images"
    rate_limit_uploads_per_min: int = 120
    rate_limit_tasks_per_min: int = 120
    rate_limit_sessions_per_min: int = 30
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    rate_limit_exempt_addresses: tuple[Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_EXEMPT_ADDRESSES))
    max_batch_files: int = 100
    # None: room for MAX_BATCH_FILES files of MAX_UPLOAD_MB each.
    max_batch_mb: int | None = None
    max_json_depth: int = 64
    max_number_digits: int = 100
    max_cron_chars: int = 200
    max_webhooks_per_user: int = 20
    auth_cache_s: int = 5
    auth_cache_entries: int = 10_000
    socket_events_per_s: int = 5
    socket_event_burst: int = 120
    max_followed_jobs_per_socket: int = 500
    high_priority_per_hour: int = 10
    schedule_min_interval_s: int = 300
    max_schedules_per_user: int = 100
    metrics_token: str = field(default="", repr=False)
    metrics_recount_s: int = 60
    retention_days: int = 30
    cleanup_cron: str = "0 * * * *"
    purge_cron: str = "30 3 * * *"
    schedule_poll_s: int = 5
    retry_max_attempts: int = 4
    retry_min_backoff_ms: int = 1000
    retry_max_backoff_ms: int = 60_000
    job_time_limit_s: int = 300
    public_url: str = ""
    log_level: str = "info"
    auto_migrate: bool = True
    socketio_transports: tuple[str, ...] = ("polling", "websocket")
    log_format: str = "text"
    socket_refresh_s: int = 20
    webp_method: int = 0
    worker_nice: int = 10
    progress_interval_ms: int = 50
    max_jobs_in_flight_per_user: int = 16
    deliveries_in_flight_per_user: int = 2
    webhook_backlog_per_user: int = 1000
    # OpenTelemetry (server.infra.tracing): the exporter reads the rest of OTEL_* itself.
    tracing: bool = False
    otel_service_name: str = ""

    def multi_host_warning(self) -> str | None:
        """Why this configuration would break once processes run on several hosts, if so."""
        if self.secret_key_given or self.database_url.startswith("sqlite"):
            return None
        return ("SECRET_KEY is not set, so this host signs file URLs with a key of its own "
                f"({self.data_dir / 'secret_key'}); with processes on several hosts, set one "
                "SECRET_KEY everywhere or links made on one host are refused by another")

    def require_redis(self) -> str:
        """REDIS_URL, or a clear error telling how to get one."""
        if not self.redis_url:
            raise SettingsError(
                "REDIS_URL is not set: use `make run`, which starts a private Redis, "
                "or point REDIS_URL at your own (redis://host:6379/0)"
            )
        return self.redis_url

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_decode_bytes(self) -> int:
        return self.max_decode_mb * 1024 * 1024

    @property
    def max_json_body_bytes(self) -> int:
        return self.max_json_body_kb * 1024

    @property
    def max_task_payload_bytes(self) -> int:
        return self.max_task_payload_kb * 1024

    @property
    def max_form_fields_bytes(self) -> int:
        return self.max_form_fields_kb * 1024

    @property
    def max_batch_bytes(self) -> int:
        """The files of one batch request, in all (MAX_BATCH_MB)."""
        mb = self.max_batch_mb if self.max_batch_mb is not None \
            else self.max_upload_mb * self.max_batch_files
        return mb * 1024 * 1024


    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (or the given mapping)."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("DATA_DIR", "").strip() or "var").resolve()
        default_db = f"sqlite:///{data_dir / 'darkroom.db'}"
        database_url = env.get("DATABASE_URL", "").strip() or default_db
        redis_url = env.get("REDIS_URL", "").strip()
        return cls(
            host=env.get("HOST", "").strip() or "127.0.0.1",
            port=_int(env, "PORT", 8000, minimum=0),
            data_dir=data_dir,
            storage_dir=Path(env.get("STORAGE_DIR", "").strip() or data_dir / "files").resolve(),
            upload_direct_io=_bool_or_auto(env, "UPLOAD_DIRECT_IO"),
            redis_url=redis_url,
            database_url=database_url,
            redis_prefix=env.get("REDIS_PREFIX", "").strip() or "darkroom",
            secret_key=_secret(env, data_dir),
            secret_key_given=bool(env.get("SECRET_KEY", "").strip()),
            admin_token=env.get("ADMIN_TOKEN", "").strip(),
            max_upload_mb=_int(env, "MAX_UPLOAD_MB", 50, minimum=1),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 50_000_000, minimum=1),
            max_decode_mb=_int(env, "MAX_DECODE_MB", 256, minimum=1),
            max_json_body_kb=_int(env, "MAX_JSON_BODY_KB", 256, minimum=1),
            max_task_payload_kb=_int(env, "MAX_TASK_PAYLOAD_KB", 64, minimum=1),
            max_form_fields=_int(env, "MAX_FORM_FIELDS", 20, minimum=0),
            max_form_fields_kb=_int(env, "MAX_FORM_FIELDS_KB", 64, minimum=1),
            socket_connect_timeout_s=_int(env, "SOCKET_CONNECT_TIMEOUT_S", 10, minimum=1),
            socket_handshakes_per_min=_int(env, "SOCKET_HANDSHAKES_PER_MIN", 120, minimum=0),
            signed_url_ttl_s=_int(env, "SIGNED_URL_TTL_S", 3600, minimum=60),
            worker_processes=_int(env, "WORKER_PROCESSES", _cpus(), minimum=1),
            worker_threads=_int(env, "WORKER_THREADS", 2, minimum=1),
            worker_heartbeat_timeout_ms=_int(env, "WORKER_HEARTBEAT_TIMEOUT_MS", 20_000,
                                             minimum=1000),
            worker_forget_s=_int(env, "WORKER_FORGET_S", 600, minimum=1),
            enable_test_tasks=_bool(env, "ENABLE_TEST_TASKS"),
            sweep_interval_s=_int(env, "SWEEP_INTERVAL_S", 30, minimum=1),
            sweep_after_s=_int(env, "SWEEP_AFTER_S", 60, minimum=1),
            smtp_url=env.get("SMTP_URL", "").strip(),
            smtp_from=env.get("SMTP_FROM", "").strip() or "darkroom@localhost",
            webhook_secret=env.get("WEBHOOK_SECRET", "").strip(),
            webhook_timeout_s=_int(env, "WEBHOOK_TIMEOUT_S", 10, minimum=1),
            webhook_allow_private=_bool(env, "WEBHOOK_ALLOW_PRIVATE"),
            webhook_deadline_s=_int(env, "WEBHOOK_DEADLINE_S", 15, minimum=1),
            webhook_max_in_flight_per_user=_int(env, "WEBHOOK_MAX_IN_FLIGHT_PER_USER", 50,
                                                minimum=1),
            email_deadline_s=_int(env, "EMAIL_DEADLINE_S", 30, minimum=1),
            email_allowed_recipients=_recipients(env),
            email_rate_per_user_per_hour=_int(env, "EMAIL_RATE_PER_USER_PER_HOUR", 20,
                                              minimum=0),
            email_rate_per_hour=_int(env, "EMAIL_RATE_PER_HOUR", 200, minimum=0),
            io_worker_threads=_int(env, "IO_WORKER_THREADS", 8, minimum=1),
            worker_pool=_choice(env, "WORKER_POOL", ("images", "io")),
            rate_limit_uploads_per_min=_int(env, "RATE_LIMIT_UPLOADS_PER_MIN", 120, minimum=0),
            rate_limit_tasks_per_min=_int(env, "RATE_LIMIT_TASKS_PER_MIN", 120, minimum=0),
            rate_limit_sessions_per_min=_int(env, "RATE_LIMIT_SESSIONS_PER_MIN", 30, minimum=0),
            trusted_proxies=_trusted_proxies(env),
            rate_limit_exempt_addresses=_exempt_addresses(env),
            max_batch_files=_int(env, "MAX_BATCH_FILES", 100, minimum=1),
            max_batch_mb=_int(env, "MAX_BATCH_MB", 0, minimum=1) or None,
            max_json_depth=_int(env, "MAX_JSON_DEPTH", 64, minimum=2),
            max_number_digits=_number_digits(env),
            max_cron_chars=_int(env, "MAX_CRON_CHARS", 200, minimum=9),
            max_webhooks_per_user=_int(env, "MAX_WEBHOOKS_PER_USER", 20, minimum=1),
            auth_cache_s=_int(env, "AUTH_CACHE_S", 5, minimum=0),
            auth_cache_entries=_int(env, "AUTH_CACHE_ENTRIES", 10_000, minimum=1),
            socket_events_per_s=_int(env, "SOCKET_EVENTS_PER_S", 5, minimum=1),
            socket_event_burst=_int(env, "SOCKET_EVENT_BURST", 120, minimum=1),
            max_followed_jobs_per_socket=_int(env, "MAX_FOLLOWED_JOBS_PER_SOCKET", 500,
                                              minimum=1),
            high_priority_per_hour=_int(env, "HIGH_PRIORITY_PER_HOUR", 10, minimum=0),
            schedule_min_interval_s=_int(env, "SCHEDULE_MIN_INTERVAL_S", 300, minimum=0),
            max_schedules_per_user=_int(env, "MAX_SCHEDULES_PER_USER", 100, minimum=1),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            metrics_recount_s=_int(env, "METRICS_RECOUNT_S", 60, minimum=0),
            retention_days=_int(env, "RETENTION_DAYS", 30, minimum=1),
            cleanup_cron=env.get("CLEANUP_CRON", "").strip() or "0 * * * *",
            purge_cron=env.get("PURGE_CRON", "").strip() or "30 3 * * *",
            schedule_poll_s=_int(env, "SCHEDULE_POLL_S", 5, minimum=1),
            cors_origins=tuple(o.strip() for o in env.get("CORS_ORIGINS", "").split(",")
                               if o.strip()),
            max_sockets_per_user=_int(env, "MAX_SOCKETS_PER_USER", 20, minimum=1),
            socket_max_message_bytes=_int(env, "SOCKET_MAX_MESSAGE_BYTES", 64 * 1024,
                                          minimum=1024),
            retry_max_attempts=_int(env, "RETRY_MAX_ATTEMPTS", 4, minimum=1),
            retry_min_backoff_ms=_int(env, "RETRY_MIN_BACKOFF_MS", 1000, minimum=1),
            retry_max_backoff_ms=_int(env, "RETRY_MAX_BACKOFF_MS", 60_000, minimum=1),
            job_time_limit_s=_int(env, "JOB_TIME_LIMIT_S", 300, minimum=1),
            public_url=env.get("PUBLIC_URL", "").strip().rstrip("/"),
            log_level=env.get("LOG_LEVEL", "").strip().lower() or "info",
            auto_migrate=_bool(env, "AUTO_MIGRATE", default=True),
            socketio_transports=_transports(env),
            log_format=_choice(env, "LOG_FORMAT", ("text", "json")),
            socket_refresh_s=_int(env, "SOCKET_REFRESH_S", 20, minimum=1),
            webp_method=_webp_method(env),
            worker_nice=_int(env, "WORKER_NICE", 10, minimum=0),
            progress_interval_ms=_int(env, "PROGRESS_INTERVAL_MS", 50, minimum=0),
            max_jobs_in_flight_per_user=_int(env, "MAX_JOBS_IN_FLIGHT_PER_USER", 16,
                                             minimum=0),
            deliveries_in_flight_per_user=_int(env, "DELIVERIES_IN_FLIGHT_PER_USER", 2,
                                               minimum=0),
            webhook_backlog_per_user=_int(env, "WEBHOOK_BACKLOG_PER_USER", 1000, minimum=0),
            tracing=_tracing(env),
            otel_service_name=env.get("OTEL_SERVICE_NAME", "").strip(),
        )


@dataclass(frozen=True)
class ClientSettings:
    """Where the ``darkroom`` client commands (dlq, watch) find a running Darkroom."""

    url: str = "http://127.0.0.1:8000"
    token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        """DARKROOM_URL (else http://127.0.0.1:$PORT) and DARKROOM_TOKEN (else ADMIN_TOKEN)."""
        env = os.environ if env is None else env
        port = _int(env, "PORT", 8000, minimum=0)
        return cls(
            url=(env.get("DARKROOM_URL", "").strip() or f"http://127.0.0.1:{port}").rstrip("/"),
            token=env.get("DARKROOM_TOKEN", "").strip() or env.get("ADMIN_TOKEN", "").strip(),
        )
