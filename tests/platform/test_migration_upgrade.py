"""A database made by the previous release upgrades in place to one migration history per package.

The previous release (the commit before issue 12's refactors, when every
package's revisions lived in ``core/migrations``) is unpacked from git into a
temporary folder and run as its own ``hallmark`` process: it initialises an
instance and adds an account and a seal (whose certificate the CA issues). Then
this tree's ``hallmark db upgrade`` moves that database to the per-package
branches, and the rows, the audit chain and the app are all still there. On
SQLite, and on PostgreSQL where the suite runs it (HALLMARK_TEST_POSTGRES=1).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ROOT, hallmark_env

PREVIOUS_RELEASE = "e9dc182"  # the last release before issue 12 (20866d8 reformatted it and broke init): at 0007, one history
pytestmark = pytest.mark.slow


def _previous_release(folder):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to unpack the previous release from")
    archive = subprocess.run(["git", "archive", "--format=tar", PREVIOUS_RELEASE], cwd=ROOT, capture_output=True, timeout=60)
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE} is not in this clone: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _run(code_root, instance, database_url, *args, stdin=None):
    env = hallmark_env(instance, PYTHONPATH=str(code_root), PYTHONWARNINGS="ignore", HALLMARK_DATABASE_URL=database_url)
    result = subprocess.run(
        [sys.executable, "-m", "hallmark.cli", *args], env=env, cwd=code_root, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"hallmark {' '.join(args)} ({code_root}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _rows(database_url, query):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def test_previous_release_database_upgrades_with_its_data(tmp_path, database_url):
    old = _previous_release(tmp_path / "previous")
    instance = tmp_path / "instance"
    probe = subprocess.run(
        [sys.executable, "-c", "import hallmark.cli, core.db; print(core.db.__file__)"],
        env={**os.environ, "PYTHONPATH": str(old)},
        cwd=old,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == str(old / "core" / "db.py"), "the previous release's code must be the one that runs"

    _run(old, instance, database_url, "init")
    _run(
        old,
        instance,
        database_url,
        "idp",
        "account",
        "add",
        "--username",
        "upgrade.alice",
        "--display-name",
        "升级测试",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    _run(
        old,
        instance,
        database_url,
        "sign",
        "seal",
        "add",
        "--department",
        "示范市市场监督管理局",
        "--credit-code",
        "91350100M000100Y43",
        "--name",
        "升级测试章",
    )
    database = database_url
    assert _rows(database, "SELECT version_num FROM alembic_version") == [("0007",)]
    accounts = _rows(database, "SELECT id, username, display_name, password_hash FROM idp_accounts ORDER BY id")
    certificates = _rows(database, "SELECT serial, authority, profile, status, der FROM ca_certificates ORDER BY serial")
    seals = _rows(database, "SELECT name, department, credit_code, certificate_serial, key_uri FROM signing_seals")
    audit_events = _rows(database, "SELECT seq, hash FROM audit_events ORDER BY seq")
    assert [row[1] for row in accounts] == ["upgrade.alice"] and seals[0][0] == "升级测试章"
    assert seals[0][3] in {row[0] for row in certificates}

    out = _run(ROOT, instance, database_url, "db", "upgrade")

    from hallmark import components

    heads = set(components.head_revisions())
    assert {row[0] for row in _rows(database, "SELECT version_num FROM alembic_version")} == heads
    assert all(head in out for head in heads)
    assert _rows(database, "SELECT id, username, display_name, password_hash FROM idp_accounts ORDER BY id") == accounts
    assert _rows(database, "SELECT serial, authority, profile, status, der FROM ca_certificates ORDER BY serial") == certificates
    assert _rows(database, "SELECT name, department, credit_code, certificate_serial, key_uri FROM signing_seals") == seals
    assert _rows(database, "SELECT seq, hash FROM audit_events ORDER BY seq")[: len(audit_events)] == audit_events
    assert "audit trail intact" in _run(ROOT, instance, database_url, "audit", "verify")
    _run(ROOT, instance, database_url, "idp", "account", "disable", "upgrade.alice")  # the new code finds the old account
    assert _rows(database, "SELECT status FROM idp_accounts WHERE username = 'upgrade.alice'") == [("disabled",)]
    assert "升级测试章" in _run(ROOT, instance, database_url, "sign", "seal", "list")
    # Upgrading again is a no-op.
    _run(ROOT, instance, database_url, "db", "upgrade")
    assert {row[0] for row in _rows(database, "SELECT version_num FROM alembic_version")} == heads
