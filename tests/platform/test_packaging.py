"""How Hallmark is installed: the venv holds exactly the locked versions, hallmark-key is a
distribution of its own without the server's dependencies, and no library warning reaches
a user's terminal."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
BIN = Path(sys.executable).parent  # the venv's scripts (not resolved: a venv's python is a symlink)
SERVER_PACKAGES = ("core", "hsm", "ca", "idp", "signing", "licenses", "admin", "hallmark")
KEYAGENT_NEEDS = {"click", "cryptography", "python-pkcs11", "pyhanko", "asn1crypto", "werkzeug"}


def _lockcheck():
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "scripts" / "lockcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lockcheck = _lockcheck()


# -- the locks ----------------------------------------------------------------------------------


def test_pip_freeze_of_this_venv_is_the_test_lock():
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout
    present = {}
    for line in frozen.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            present[canonicalize_name(name)] = version
    assert lockcheck.differences(lockcheck.locked(LOCKS / "test.txt"), present) == []


def test_the_three_locks_agree_on_every_version():
    test, runtime, key = (lockcheck.locked(LOCKS / f"{name}.txt") for name in ("test", "runtime", "keyagent"))
    assert runtime and key and set(runtime) <= set(test) and set(key) <= set(runtime)
    assert {name: test[name] for name in runtime} == runtime
    assert {name: runtime[name] for name in key} == key
    assert not {"flask", "sqlalchemy", "alembic"} & set(key)


def test_every_lock_line_is_pinned_with_a_hash():
    for lock in LOCKS.glob("*.txt"):
        text = lock.read_text(encoding="utf-8")
        pins = [line for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
        assert pins and all("==" in line for line in pins), lock.name
        assert text.count("==") <= text.count("--hash=sha256:"), lock.name


def test_the_lock_check_names_each_difference():
    lock = {"flask": "3.1.3", "requests": "2.34.2", "six": "1.17.0"}
    present = {"flask": "3.1.3", "requests": "2.33.0", "left-over": "1.0", "pip": "26.3", "setuptools": "65.5.0", "hallmark": "0.1.0"}
    assert lockcheck.differences(lock, present) == [
        "not in the lock: left-over==1.0",
        "wrong version: requests==2.33.0, the lock says 2.34.2",
        "missing: six==1.17.0",
    ]
    # the installers count once the lock names them
    assert "wrong version: setuptools==65.5.0, the lock says 84.0.0" in lockcheck.differences({**lock, "setuptools": "84.0.0"}, present)


def test_a_marker_that_does_not_hold_here_leaves_its_line_out(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "colorama==0.4.6 ; sys_platform == 'win32' \\\n    --hash=sha256:00\nclick==8.3.1 \\\n    --hash=sha256:11\n",
        encoding="utf-8",
    )
    assert lockcheck.locked(lock) == ({"click": "8.3.1"} if sys.platform != "win32" else {"colorama": "0.4.6", "click": "8.3.1"})


# -- no warning on a user's terminal ------------------------------------------------------------


def test_hallmark_help_in_process_writes_nothing_to_stderr():
    from hallmark.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.stdout
    assert result.stderr == ""


@pytest.mark.slow
@pytest.mark.parametrize("program", ["hallmark", "hallmark-key"])
def test_help_as_a_program_writes_nothing_to_stderr(program):
    """Library imports (pyHanko's on cryptography 51) may warn; the programs route that to logging."""
    result = subprocess.run([str(BIN / program), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0 and "Usage:" in result.stdout
    assert result.stderr == ""


# -- two distributions --------------------------------------------------------------------------


def _copy_sources(target: Path) -> tuple[Path, Path]:
    """The two projects' sources, away from the work tree (builds write build/ and *.egg-info)."""
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "*.mo")
    server = target / "server"
    server.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, server / name)
    for package in SERVER_PACKAGES:
        shutil.copytree(ROOT / package, server / package, ignore=ignore)
    shutil.copytree(ROOT / "keyagent", server / "keyagent", ignore=ignore)  # in the tree, as in a clone, but not in the wheel
    return server, server / "keyagent"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    place = tmp_path_factory.mktemp("wheels")
    server, keyagent = _copy_sources(place)
    out = place / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(server),
            str(keyagent),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return {"hallmark": next(out.glob("hallmark-*.whl")), "hallmark-key": next(out.glob("hallmark_key-*.whl"))}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        return Parser().parsestr(archive.read(name).decode()), archive.read(entry_points).decode(), archive.namelist()


@pytest.mark.slow
def test_hallmark_key_requires_neither_flask_nor_sqlalchemy(wheels):
    metadata, entry_points, names = _metadata(wheels["hallmark-key"])
    assert metadata["Name"] == "hallmark-key"
    required = {canonicalize_name(Requirement(r).name) for r in metadata.get_all("Requires-Dist")}
    assert required == KEYAGENT_NEEDS
    assert "hallmark-key = keyagent.cli:main" in entry_points
    assert {n.split("/")[0] for n in names if not n.startswith("hallmark_key-")} == {"keyagent"}
    assert "keyagent/cli.py" in names and "keyagent/pyproject.toml" not in names


@pytest.mark.slow
def test_the_server_wheel_holds_no_keyagent(wheels):
    metadata, entry_points, names = _metadata(wheels["hallmark"])
    assert metadata["Name"] == "hallmark"
    assert not [n for n in names if n.startswith("keyagent/")]
    assert "hallmark-key" not in entry_points and "hallmark = hallmark.cli:main" in entry_points
    required = {canonicalize_name(Requirement(r).name) for r in metadata.get_all("Requires-Dist") if "extra ==" not in r}
    assert {"requests", "flask", "sqlalchemy"} <= required


@pytest.mark.slow
def test_hallmark_key_in_a_fresh_venv(wheels, tmp_path):
    """What a user's PC gets from the hallmark-key lock and wheel: a working program, no Flask, no SQLAlchemy, no server code."""
    uv, venv = str(BIN / "uv"), tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, capture_output=True, timeout=60)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "--require-hashes", "-r", str(LOCKS / "keyagent.txt")]
    # uv's cache makes this work offline once the packages have been downloaded; otherwise from the index.
    if subprocess.run([*install, "--offline"], capture_output=True, timeout=120).returncode != 0:
        done = subprocess.run(install, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.skip(f"the locked packages are neither in uv's cache nor reachable: {done.stderr.strip()[:300]}")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "--offline", str(wheels["hallmark-key"])],
        check=True,
        timeout=60,
    )
    helped = subprocess.run([str(venv / "bin" / "hallmark-key"), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert helped.returncode == 0 and "enroll" in helped.stdout and helped.stderr == ""
    for module in ("flask", "sqlalchemy", "hsm", "core", "hallmark"):
        absent = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert absent.returncode != 0 and f"No module named '{module}'" in absent.stderr


# -- the checks before pytest -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The server's packages, hallmark-key and the configuration, to break on purpose."""
    place = tmp_path_factory.mktemp("checks")
    server, _ = _copy_sources(place)
    return server


def _checker(tree: Path, *command: str) -> subprocess.CompletedProcess:
    env = {"PATH": str(BIN), "PYTHONPATH": str(tree), "HOME": str(tree), "LANG": "C.UTF-8"}
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/leak.py", "import hallmark.cli\n", "Nothing imports hallmark (the composition root) BROKEN"),
        ("ca/leak.py", "from idp import accounts\n", "Layers: hallmark > admin > licenses > idp | signing > ca > core | hsm BROKEN"),
        ("signing/leak.py", "import idp.oidc.tokens\n", "idp and signing are independent of each other BROKEN"),
        ("licenses/leak.py", "from ca import trust\n", "licenses may import core, hsm and signing only (not idp, not ca directly) BROKEN"),
        ("keyagent/leak.py", "from hsm import softhsm\n", "keyagent imports nothing of the server (it talks to it over HTTP) BROKEN"),
        ("idp/leak.py", "import admin\n", "Only hallmark imports admin BROKEN"),
    ],
)
def test_an_import_against_the_layer_table_fails_lint_imports(tree_copy, module, line, contract):
    leak = tree_copy / module
    leak.write_text(line, encoding="utf-8")
    try:
        result = _checker(tree_copy, "lint-imports", "--no-cache")
    finally:
        leak.unlink()
    assert result.returncode != 0
    assert contract in result.stdout, result.stdout[-2000:]
    assert module.replace("/", ".").removesuffix(".py") in result.stdout


@pytest.mark.slow
def test_an_undeclared_import_fails_deptry(tree_copy):
    leak = tree_copy / "core" / "leak.py"
    leak.write_text("import pytest\nimport leftpad_nowhere\n", encoding="utf-8")  # a test-only package, and one nothing declares
    try:
        result = _checker(tree_copy, "deptry", ".")
    finally:
        leak.unlink()
    report = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # deptry colours its report
    assert result.returncode != 0
    assert "core/leak.py:1:8: DEP004 'pytest' imported but declared as a dev dependency" in report
    assert "core/leak.py:2:8: DEP001 'leftpad_nowhere' imported but missing from the dependency definitions" in report
