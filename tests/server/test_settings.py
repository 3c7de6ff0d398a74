from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.settings import ClientSettings, Settings, SettingsError


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


def test_one_worker_process_per_cpu_by_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert settings.worker_processes == len(os.sched_getaffinity(0))
    given = Settings.from_env({"DATA_DIR": str(tmp_path), "WORKER_PROCESSES": "3"})
    assert given.worker_processes == 3


def test_webp_method_is_libwebps_range(tmp_path: Path) -> None:
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).webp_method == 0
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "WEBP_METHOD": "4"}).webp_method == 4
    with pytest.raises(SettingsError, match="WEBP_METHOD"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "WEBP_METHOD": "7"})
