"""Files at rest: ``hallmark init`` makes the instance owner-only, the SQLite database included.

The database holds password hashes, session secrets, audit trail and licence
faces: it must not be readable by other users of the machine, whatever the umask
(``0644`` files were the finding). Checked on the real command in a fresh folder,
in a folder that already existed (a mounted volume), and on an instance made
before the fix (a world-readable database is tightened by running init again).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.conftest import run_hallmark


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(instance: Path) -> list[Path]:
    return [p for p in (instance / name for name in ("hallmark.db", "hallmark.db-wal", "hallmark.db-shm")) if p.exists()]


def test_init_creates_an_owner_only_instance_and_database(tmp_path):
    instance = tmp_path / "instance"
    result = run_hallmark(instance, "init")
    assert result.returncode == 0, result.stdout + result.stderr
    assert mode(instance) == 0o700
    assert (instance / "hallmark.db").exists()
    for path in database_files(instance):
        assert mode(path) == 0o600, f"{path.name} has mode {oct(mode(path))}"
    for name in ("hallmark.toml", "hsm-pins.json"):
        assert mode(instance / name) == 0o600, f"{name} has mode {oct(mode(instance / name))}"
    assert mode(instance / "softhsm" / "tokens") == 0o700


def test_init_in_an_existing_folder_still_makes_the_database_owner_only(tmp_path):
    instance = tmp_path / "volume"
    instance.mkdir(mode=0o755)
    os.chmod(instance, 0o755)  # as a mounted volume would be, whatever the umask
    result = run_hallmark(instance, "init")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in database_files(instance):
        assert mode(path) == 0o600, f"{path.name} has mode {oct(mode(path))}"


def test_init_tightens_a_world_readable_database_left_by_an_older_init(tmp_path):
    instance = tmp_path / "instance"
    assert run_hallmark(instance, "init").returncode == 0
    database = instance / "hallmark.db"
    os.chmod(database, 0o644)
    again = run_hallmark(instance, "init")
    assert again.returncode == 0, again.stdout + again.stderr
    assert mode(database) == 0o600
    assert "owner-only" in again.stdout
