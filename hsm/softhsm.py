"""Provisioning a SoftHSM2 token of our own: a config file and an initialised token.

Production uses whatever token the HSM vendor provisions; this is for the embedded
default and for tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hsm.errors import HSMError

DEFAULT_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def default_module() -> str:
    for path in DEFAULT_MODULE_CANDIDATES:
        if os.path.exists(path):
            return path
    return DEFAULT_MODULE_CANDIDATES[0]


def write_config(directory: Path) -> Path:
    """Create ``directory/softhsm2.conf`` and its token directory; return the config path."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    os.chmod(tokens, 0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n")
    return conf


def token_labels(conf: Path) -> list[str]:
    out = _util(conf, "--show-slots").stdout
    return [
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Label:") and line.split(":", 1)[1].strip()
    ]


def init_token(conf: Path, label: str, user_pin: str, so_pin: str) -> None:
    # PINs go through argv of a short-lived child; softhsm2-util has no other non-interactive way.
    _util(conf, "--init-token", "--free", "--label", label, "--pin", user_pin, "--so-pin", so_pin)


def _util(conf: Path, *args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise HSMError("softhsm2-util is not installed (Debian: apt-get install softhsm2)")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    result = subprocess.run([tool, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise HSMError(f"softhsm2-util {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result
