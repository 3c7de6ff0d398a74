from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings, SettingsError


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


def test_log_format_is_text_or_json(tmp_path: Path) -> None:
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).log_format == "text"
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "LOG_FORMAT": "JSON"}).log_format \
        == "json"
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "LOG_FORMAT": "xml"})
