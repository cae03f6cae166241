#!/usr/bin/env bash
# Refresh the lock files in requirements/ to the newest releases that pyproject.toml allows.
# `make lock` runs this, then the whole `make test`; the new locks are a reviewed commit.
#
# uv, not pip-tools: its resolver takes a second instead of minutes, it writes the hashes
# that `pip install --require-hashes` checks, and one tool does the whole refresh.
# --universal: one lock for every platform (markers where a dependency differs), so the
# Docker image and a developer's machine install the same versions.
# The test and hallmark-key locks are constrained by the runtime lock, so a version
# is the same in all three.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
common=(--generate-hashes --universal --python-version 3.11 --upgrade --quiet --custom-compile-command "make lock")
"$UV" pip compile "${common[@]}" pyproject.toml -o requirements/runtime.txt
"$UV" pip compile "${common[@]}" pyproject.toml --extra test -c requirements/runtime.txt -o requirements/test.txt
"$UV" pip compile "${common[@]}" keyagent/pyproject.toml -c requirements/runtime.txt -o requirements/keyagent.txt
