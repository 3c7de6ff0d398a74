from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.infra.settings import ClientSettings, Settings, SettingsError
from server.infra.storage import LocalStorage, storage_for


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert settings.port == 8000 and settings.host == "127.0.0.1"
    assert settings.max_upload_mb == 50
    assert settings.max_image_pixels == 50_000_000
    assert settings.database_url == f"sqlite:///{tmp_path / 'darkroom.db'}"
    assert settings.redis_url == ""
    with pytest.raises(SettingsError, match="REDIS_URL"):
        settings.require_redis()


def test_secret_is_generated_once_and_shared(tmp_path: Path) -> None:
    first = Settings.from_env({"DATA_DIR": str(tmp_path)})
    second = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert first.secret_key and first.secret_key == second.secret_key
    given = Settings.from_env({"DATA_DIR": str(tmp_path), "SECRET_KEY": "s3cret"})
    assert given.secret_key == "s3cret"


def test_bad_numbers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="MAX_UPLOAD_MB"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "MAX_UPLOAD_MB": "lots"})
    with pytest.raises(SettingsError, match="PORT"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "PORT": "-1"})


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path)})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_storage_dir_defaults_under_the_data_dir_and_may_be_a_shared_volume(
        tmp_path: Path) -> None:
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).storage_dir == tmp_path / "files"
    shared = tmp_path / "mnt" / "shared"
    given = Settings.from_env({"DATA_DIR": str(tmp_path), "STORAGE_DIR": str(shared)})
    assert given.storage_dir == shared


def test_uploads_go_past_the_page_cache_by_filesystem_unless_set(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path)}
    assert Settings.from_env(base).upload_direct_io is None  # auto
    assert Settings.from_env({**base, "UPLOAD_DIRECT_IO": " Auto "}).upload_direct_io is None
    assert Settings.from_env({**base, "UPLOAD_DIRECT_IO": "true"}).upload_direct_io is True
    off = Settings.from_env({**base, "UPLOAD_DIRECT_IO": "false"})
    assert off.upload_direct_io is False
    storage = storage_for(off)
    assert isinstance(storage, LocalStorage) and not storage.direct_io
    with pytest.raises(SettingsError, match="UPLOAD_DIRECT_IO must be auto, true or false"):
        Settings.from_env({**base, "UPLOAD_DIRECT_IO": "sometimes"})


def test_socketio_transports_and_auto_migrate(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path)}
    defaults = Settings.from_env(base)
    assert defaults.socketio_transports == ("polling", "websocket") and defaults.auto_migrate
    only_ws = Settings.from_env({**base, "SOCKETIO_TRANSPORTS": " WebSocket "})
    assert only_ws.socketio_transports == ("websocket",)
    with pytest.raises(SettingsError, match="SOCKETIO_TRANSPORTS"):
        Settings.from_env({**base, "SOCKETIO_TRANSPORTS": "carrier-pigeon"})
    assert not Settings.from_env({**base, "AUTO_MIGRATE": "false"}).auto_migrate


def test_client_commands_find_the_server_and_token() -> None:
    assert ClientSettings.from_env({}) == ClientSettings("http://127.0.0.1:8000", "")
    assert ClientSettings.from_env({"PORT": "9000", "ADMIN_TOKEN": "a"}) == \
        ClientSettings("http://127.0.0.1:9000", "a")
    given = ClientSettings.from_env({"DARKROOM_URL": "https://img.example.com/",
                                     "DARKROOM_TOKEN": "t", "ADMIN_TOKEN": "a"})
    assert given == ClientSettings("https://img.example.com", "t")


def test_socket_limits(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert settings.max_sockets_per_user == 20
    assert settings.socket_max_message_bytes == 64 * 1024
    given = Settings.from_env({"DATA_DIR": str(tmp_path), "MAX_SOCKETS_PER_USER": "3",
                               "SOCKET_MAX_MESSAGE_BYTES": "4096"})
    assert (given.max_sockets_per_user, given.socket_max_message_bytes) == (3, 4096)
    with pytest.raises(SettingsError, match="MAX_SOCKETS_PER_USER"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "MAX_SOCKETS_PER_USER": "0"})
    with pytest.raises(SettingsError, match="SOCKET_MAX_MESSAGE_BYTES"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "SOCKET_MAX_MESSAGE_BYTES": "10"})


def test_log_format_is_text_or_json(tmp_path: Path) -> None:
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).log_format == "text"
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "LOG_FORMAT": "JSON"}).log_format \
        == "json"
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "LOG_FORMAT": "xml"})


def test_a_generated_secret_is_flagged_once_the_database_is_shared(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path)}
    assert Settings.from_env(base).multi_host_warning() is None  # SQLite: one host
    shared = {**base, "DATABASE_URL": "postgresql://db/darkroom"}
    assert "SECRET_KEY" in (Settings.from_env(shared).multi_host_warning() or "")
    assert Settings.from_env({**shared, "SECRET_KEY": "k"}).multi_host_warning() is None


def test_one_worker_process_per_cpu_with_two_threads_by_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert settings.worker_processes == len(os.sched_getaffinity(0))
    # Two: one job's round trips overlap another's image work; four made no more images/s
    # and made the threads wait for the GIL, delaying each job's events (README).
    assert settings.worker_threads == 2
    given = Settings.from_env({"DATA_DIR": str(tmp_path), "WORKER_PROCESSES": "3",
                               "WORKER_THREADS": "4"})
    assert (given.worker_processes, given.worker_threads) == (3, 4)


def test_webp_method_is_libwebps_range(tmp_path: Path) -> None:
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).webp_method == 0
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "WEBP_METHOD": "4"}).webp_method == 4
    with pytest.raises(SettingsError, match="WEBP_METHOD"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "WEBP_METHOD": "7"})


def test_every_limit_has_a_setting(tmp_path: Path) -> None:
    # These were module constants (files per batch, JSON depth, digits, cron length,
    # webhooks per user, socket events, followed jobs) or a product of two (batch bytes).
    names = {"MAX_BATCH_FILES": "max_batch_files", "MAX_BATCH_MB": "max_batch_mb",
             "MAX_JSON_DEPTH": "max_json_depth", "MAX_NUMBER_DIGITS": "max_number_digits",
             "MAX_CRON_CHARS": "max_cron_chars", "MAX_WEBHOOKS_PER_USER": "max_webhooks_per_user",
             "SOCKET_EVENTS_PER_S": "socket_events_per_s",
             "SOCKET_EVENT_BURST": "socket_event_burst",
             "MAX_FOLLOWED_JOBS_PER_SOCKET": "max_followed_jobs_per_socket"}
    env = {"DATA_DIR": str(tmp_path)}
    defaults = Settings.from_env(env)
    assert {name: getattr(defaults, field) for name, field in names.items()} == {
        "MAX_BATCH_FILES": 100, "MAX_BATCH_MB": None, "MAX_JSON_DEPTH": 64,
        "MAX_NUMBER_DIGITS": 100, "MAX_CRON_CHARS": 200, "MAX_WEBHOOKS_PER_USER": 20,
        "SOCKET_EVENTS_PER_S": 5, "SOCKET_EVENT_BURST": 120,
        "MAX_FOLLOWED_JOBS_PER_SOCKET": 500}
    assert defaults == Settings(data_dir=defaults.data_dir, storage_dir=defaults.storage_dir,
                                database_url=defaults.database_url,
                                secret_key=defaults.secret_key,
                                worker_processes=defaults.worker_processes)
    given = Settings.from_env({**env, **{name: "300" for name in names}})
    assert all(getattr(given, field) == 300 for field in names.values())
    for name, bad in (*((name, "0") for name in names), ("MAX_NUMBER_DIGITS", "19"),
                      ("MAX_NUMBER_DIGITS", "4301"), ("MAX_CRON_CHARS", "8")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**env, name: bad})


def test_sessions_per_address_default_to_30_a_minute(tmp_path: Path) -> None:
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).rate_limit_sessions_per_min == 30
    assert Settings().rate_limit_sessions_per_min == 30


def test_every_variable_is_documented_and_every_cap_is_in_limits() -> None:
    # The "Done when": a README "Limits" section listing every limit with its
    # setting and default; files per batch, JSON depth, digits, cron length, webhooks per
    # user, socket events and followed jobs had no setting and no row.
    root = Path(__file__).resolve().parents[2]
    source = (root / "server" / "infra" / "settings.py").read_text()
    names = set(re.findall(r'env(?:\.get\(|, )"([A-Z][A-Z0-9_]+)"', source))
    assert {"MAX_BATCH_FILES", "RATE_LIMIT_EXEMPT_ADDRESSES", "MAX_NUMBER_DIGITS"} <= names
    readme = (root / "README.md").read_text()
    configuration = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    limits = readme.split("\n## Limits", 1)[1].split("\n## ", 1)[0]
    assert sorted(n for n in names if f"`{n}`" not in configuration) == []
    cap = re.compile(r"^MAX_|_PER_|^RATE_LIMIT_|_DEADLINE_S$|_TIME_LIMIT_S$|_TIMEOUT_S$")
    assert sorted(n for n in names if cap.search(n) and f"`{n}`" not in limits) == []
