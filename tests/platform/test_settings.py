"""Settings: one module, environment over instance file over defaults."""

from __future__ import annotations

import stat

import pytest

from core import settings
from core.settings import ConfigError


def test_defaults_live_in_the_instance(tmp_path):
    s = settings.load(tmp_path, environ={})
    assert s.database_url == f"sqlite:///{tmp_path / 'hallmark.db'}"
    assert s.softhsm2_conf == str(tmp_path / "softhsm" / "softhsm2.conf")
    assert s.pin_source == f"file:{tmp_path / 'hsm-pins.json'}"
    assert s.public_url == "http://127.0.0.1:8000"


def test_environment_overrides_file(tmp_path):
    (tmp_path / "hallmark.toml").write_text('public_url = "https://file.example"\ntoken_label = "from-file"\nworkers = 3\n')
    env = {
        "HALLMARK_PUBLIC_URL": "https://id.example.gov.cn",
        "HALLMARK_DATABASE_URL": "postgresql+psycopg://u@db/h",
        "HALLMARK_WORKERS": "4",
    }
    s = settings.load(tmp_path, environ=env)
    assert s.public_url == "https://id.example.gov.cn"
    assert s.token_label == "from-file"
    assert s.database_url == "postgresql+psycopg://u@db/h"
    assert s.workers == 4


def test_instance_chosen_by_environment(tmp_path):
    s = settings.load(environ={"HALLMARK_INSTANCE": str(tmp_path)})
    assert s.instance == tmp_path


@pytest.mark.parametrize(
    "content, message",
    [
        ("colour = 'blue'\n", "unknown setting(s) colour"),
        ("public_url = [\n", "not valid TOML"),
        ("public_url = 'ftp://x'\n", "public_url must be an http(s) URL"),
        ("workers = 'many'\n", "workers must be a whole number"),
    ],
)
def test_bad_settings_are_named(tmp_path, content, message):
    (tmp_path / "hallmark.toml").write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.load(tmp_path, environ={})


def test_pin_sources(tmp_path, monkeypatch):
    pins = tmp_path / "pins.json"
    pins.write_text('{"user_pin": "123456"}')
    assert settings.load(tmp_path, environ={"HALLMARK_PIN_SOURCE": f"file:{pins}"}).user_pin() == "123456"
    from_env = settings.load(tmp_path, environ={"HALLMARK_PIN_SOURCE": "env:MY_PIN"})
    monkeypatch.delenv("MY_PIN", raising=False)
    with pytest.raises(ConfigError, match="MY_PIN, which is not set"):
        from_env.user_pin()
    monkeypatch.setenv("MY_PIN", "654321")
    assert from_env.user_pin() == "654321"
    with pytest.raises(ConfigError, match="must be 'file:PATH' or 'env:VARIABLE'"):
        settings.load(tmp_path, environ={"HALLMARK_PIN_SOURCE": "123456"}).user_pin()
    with pytest.raises(ConfigError, match="does not exist; run 'hallmark init'"):
        settings.load(tmp_path, environ={"HALLMARK_PIN_SOURCE": f"file:{tmp_path / 'none'}"}).user_pin()


def test_secrets_kept_out_of_repr(tmp_path):
    (tmp_path / "hallmark.toml").write_text('secret_key = "s3cr3t-value"\nlookup_key = "l00kup-value"\n')
    text = repr(settings.load(tmp_path, environ={}))
    assert "s3cr3t" not in text and "l00kup" not in text


def test_database_password_masked_for_display(tmp_path):
    s = settings.load(tmp_path, environ={"HALLMARK_DATABASE_URL": "postgresql+psycopg://hallmark:hunter2@db:5432/h"})
    assert "hunter2" not in s.database_url_for_display()


def test_init_files_are_owner_only(initialised_instance):
    for name in ("hallmark.toml", "hsm-pins.json"):
        mode = stat.S_IMODE((initialised_instance / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"


def test_a_renamed_setting_still_loads_under_its_new_name_with_a_warning(tmp_path, caplog):
    """An instance written before back-channel logout moved onto the outbox has logout_retry_seconds."""
    from hallmark import components

    (tmp_path / "hallmark.toml").write_text("logout_retry_seconds = 30\n")
    with caplog.at_level("WARNING", logger="hallmark.settings"):
        loaded = components.load_settings(tmp_path, environ={})
    assert loaded.section("core").outbox_seconds == 30
    assert "logout_retry_seconds is now called outbox_seconds" in caplog.text

    from_env = components.load_settings(tmp_path, environ={"HALLMARK_LOGOUT_RETRY_SECONDS": "7"})
    assert from_env.section("core").outbox_seconds == 7  # the environment over the file, as for every setting
    (tmp_path / "hallmark.toml").write_text("logout_retry_seconds = 30\noutbox_seconds = 9\n")
    assert components.load_settings(tmp_path, environ={}).section("core").outbox_seconds == 9  # the new name wins
    (tmp_path / "hallmark.toml").write_text("")
    assert components.load_settings(tmp_path, environ={"HALLMARK_LOGOUT_RETRY_SECONDS": "7"}).section("core").outbox_seconds == 7
