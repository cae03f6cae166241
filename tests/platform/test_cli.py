"""The ``hallmark`` command as a user meets it: clear messages, no tracebacks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_hallmark, run_hallmark_process


@pytest.mark.slow
def test_init_twice_changes_nothing(tmp_path):
    """End to end: ``hallmark`` started as its own process, as a user starts it."""
    instance = tmp_path / "inst"
    first = run_hallmark_process(instance, "init")
    assert first.returncode == 0, first.stderr
    assert "instance ready" in first.stdout
    ours = [instance / "hallmark.toml", instance / "hsm-pins.json", instance / "softhsm" / "softhsm2.conf"]
    snapshot = [(p.read_bytes(), p.stat().st_mtime_ns) for p in ours]
    second = run_hallmark_process(instance, "init")
    assert second.returncode == 0
    assert "already initialised; nothing changed" in second.stdout
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in ours] == snapshot
    pins = json.loads((instance / "hsm-pins.json").read_text())
    assert pins["user_pin"] not in first.stdout + first.stderr


def test_hsm_status_keys_and_create(initialised_instance):
    status = run_hallmark(initialised_instance, "hsm", "status")
    assert status.returncode == 0 and "status  ok" in status.stdout
    created = run_hallmark(initialised_instance, "hsm", "create-key", "cli-key", "--algorithm", "ec-p384")
    assert created.returncode == 0, created.stderr
    uri = created.stdout.strip()
    assert uri.startswith("pkcs11:token=hallmark;object=cli-key;id=%")
    listed = run_hallmark(initialised_instance, "hsm", "keys")
    assert uri in listed.stdout and "ec-p384" in listed.stdout
    again = run_hallmark(initialised_instance, "hsm", "create-key", "cli-key")
    assert again.returncode == 1 and "a key labelled 'cli-key' already exists" in again.stderr
    verify = run_hallmark(initialised_instance, "audit", "verify")
    assert verify.returncode == 0


@pytest.mark.parametrize(
    "overrides, args, message",
    [
        ({"HALLMARK_PIN_SOURCE": "env:BAD_PIN", "BAD_PIN": "000000"}, ("hsm", "status"), "refused the user PIN (wrong PIN)"),
        (
            {"HALLMARK_PKCS11_MODULE": "/opt/vendor/libmissing.so"},
            ("hsm", "status"),
            "cannot load the PKCS#11 module '/opt/vendor/libmissing.so': no such file",
        ),
        ({"HALLMARK_TOKEN_LABEL": "elsewhere"}, ("hsm", "keys"), "no token labelled 'elsewhere'"),
        ({"HALLMARK_PIN_SOURCE": "env:UNSET_PIN"}, ("hsm", "status"), "UNSET_PIN, which is not set"),
        (
            {"HALLMARK_DATABASE_URL": "postgresql+psycopg://hallmark:topsecret@127.0.0.1:1/hallmark"},
            ("audit", "verify"),
            "cannot reach the database at postgresql+psycopg://hallmark:***@127.0.0.1:1/hallmark",
        ),
        ({"HALLMARK_DATABASE_URL": "nosuchdb://x"}, ("audit", "verify"), "is not usable"),
        ({}, ("hsm", "create-key", "k", "--algorithm", "dsa-1024"), "Invalid value for '--algorithm'"),
    ],
)
def test_bad_configuration_gives_one_clear_line(initialised_instance, overrides, args, message):
    result = run_hallmark(initialised_instance, *args, **overrides)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "000000" not in result.stderr and "topsecret" not in result.stderr


def test_serve_without_instance_says_what_to_do(tmp_path):
    result = run_hallmark(tmp_path / "missing", "serve")
    assert result.returncode == 1 and "run 'hallmark init' first" in result.stderr


def test_invalid_identifier_reason_reaches_the_user():
    from core.identifiers import InvalidIdentifier, validate_credit_code, validate_resident_id

    with pytest.raises(InvalidIdentifier, match="check character"):
        validate_resident_id("110105194912310021")
    with pytest.raises(InvalidIdentifier, match="check character"):
        validate_credit_code("91350100M000100Y44")
