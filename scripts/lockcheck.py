"""Does this Python's environment hold exactly the versions of a lock file?

    python scripts/lockcheck.py requirements/test.txt           # report differences, exit 1 if any
    python scripts/lockcheck.py --prune requirements/test.txt   # first uninstall what the lock does not name

Compared: every distribution installed, by normalised name and version, against every
``name==version`` line of the lock whose environment marker holds here. Not compared:
this repository's own editable distributions (hallmark, hallmark-key) and the installers
(pip, setuptools, wheel) unless the lock names them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

OWN = frozenset({"hallmark", "hallmark-key"})
INSTALLERS = frozenset({"pip", "setuptools", "wheel"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\#]+?))?\s*\\?\s*$")


def locked(path: Path) -> dict[str, str]:
    """{normalised name: version} for the lines of the lock that apply to this interpreter."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        found = _PIN.match(line)
        if found is None:
            continue
        name, version, marker = found.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(name)] = version
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(lock: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per difference; empty when the environment is the lock."""
    ignored = OWN | (INSTALLERS - set(lock))
    lines = []
    for name in sorted(set(lock) | set(present)):
        if name in ignored:
            continue
        want, have = lock.get(name), present.get(name)
        if want == have:
            continue
        if have is None:
            lines.append(f"missing: {name}=={want}")
        elif want is None:
            lines.append(f"not in the lock: {name}=={have}")
        else:
            lines.append(f"wrong version: {name}=={have}, the lock says {want}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--prune", action="store_true", help="uninstall distributions the lock does not name, first")
    args = parser.parse_args()
    lock = locked(args.lock)
    if args.prune:
        strays = [line.split(": ", 1)[1].split("==")[0] for line in differences(lock, installed()) if line.startswith("not in the lock")]
        if strays:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *strays], check=True)
    problems = differences(lock, installed())
    for line in problems:
        print(f"{args.lock}: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
