# Two commands: `make run` and `make test`. Both install what is missing and are safe to repeat.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HALLMARK_INSTANCE ?= $(CURDIR)/instance

# Runtime tools: SoftHSM2 (the embedded HSM), OpenSC (pkcs11-tool), openssl,
# poppler (pdfsig), qpdf and NSS tools (judges for signed PDFs), and CJK fonts for
# the department name drawn on demo seals.
DEB_RUNTIME := softhsm2 opensc openssl poppler-utils qpdf libnss3-tools fonts-noto-cjk
# The tests drive Debian's chromium (Playwright cannot download browsers here) and
# need CJK fonts to render Chinese pages; they start their own PostgreSQL 15 when
# HALLMARK_TEST_POSTGRES=1 (CI sets it), and in that pass put Debian's nginx in front of
# two nodes (tests/platform/test_multinode.py, started by the tests on 127.0.0.1).
DEB_MULTINODE := postgresql nginx
DEB_TEST := chromium $(if $(filter 1,$(HALLMARK_TEST_POSTGRES)),$(DEB_MULTINODE),)
# The benchmarks load servers with wrk and run the peer OIDC provider on node (Debian's
# nodejs and npm unless a node with npm is on PATH already, e.g. from NodeSource).
DEB_BENCH := wrk
DEB_NODE := nodejs npm
# Debian's python3 needs python3-venv for `python3 -m venv`.
DEB_VENV := $(shell $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || echo python3-venv)

# Exact versions with hashes (requirements/*.txt, written by `make lock`). The venv gets
# the locked versions only (--require-hashes --no-deps), then the two distributions of
# this repository, hallmark (the server) and hallmark-key (keyagent/), editable.
RUNTIME_LOCK := requirements/runtime.txt
TEST_LOCK := requirements/test.txt
PROJECTS := pyproject.toml keyagent/pyproject.toml
PIP_LOCKED = $(PY) -m pip install --quiet --require-hashes --no-deps
# One after the other: a venv made before hallmark-key had its own distribution has the
# hallmark-key script in hallmark's record, which reinstalling hallmark removes.
PIP_PROJECTS = $(PY) -m pip install --quiet --no-deps -e . && $(PY) -m pip install --quiet --no-deps -e ./keyagent

# Benchmarks in bench/, each against its peer (docs/benchmarks.md). BENCH_ARGS=--quick for smoke runs.
BENCHMARKS := hsm_sign serve ocsp sign token login licences licences_import soak
BENCH_ARGS ?=
BENCH_PEER := bench/peers/oidc-provider

# Steps run in the order written, also under `make -j`.
.NOTPARALLEL:
.PHONY: run test multinode check deps deps-runtime deps-bench venv venv-runtime lock bench clean-instance

# The identity provider on :8000 plus two demo halls (:8001, :8002) and examples/approval (:8003-8005); see examples/run.py.
run: deps-runtime venv-runtime
	$(VENV)/bin/hallmark init
	$(PY) examples/run.py

# The checks first, each failing with its own message, then the suite. pytest's exit
# status is make's: 5 (no tests collected) fails too.
test: deps venv check
	$(PY) -m pytest

# Only the multi-node and fault tests (docs/operations.md): two nodes on one PostgreSQL and one
# SoftHSM2 token behind nginx, then PostgreSQL, the HSM token and workers failing under load.
# They are part of `make test` when HALLMARK_TEST_POSTGRES=1.
multinode: deps-runtime venv
	@scripts/ensure-debian-packages.sh $(DEB_MULTINODE)
	HALLMARK_TEST_POSTGRES=1 $(PY) -m pytest -p no:cacheprovider -n 0 --no-cov tests/platform/test_multinode.py tests/platform/test_faults.py

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry .
	cd keyagent && ../$(VENV)/bin/deptry .

deps: deps-runtime
	@scripts/ensure-debian-packages.sh $(DEB_TEST)

deps-runtime:
	@scripts/ensure-debian-packages.sh $(DEB_RUNTIME) $(DEB_VENV)

# `make test` needs the test lock, `make run` the runtime lock; the versions they share
# are the same (the test lock is resolved within the runtime lock), so either order works.
# A venv is reinstalled only when a lock or a pyproject.toml is newer than its stamp.
venv: $(VENV)/.installed-test
venv-runtime: $(VENV)/.installed-runtime

$(VENV)/.installed-test: $(TEST_LOCK) $(PROJECTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(TEST_LOCK)
	$(PIP_PROJECTS)
	$(PY) scripts/lockcheck.py --prune $(TEST_LOCK)
	@touch $@

$(VENV)/.installed-runtime: $(RUNTIME_LOCK) $(PROJECTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(RUNTIME_LOCK)
	$(PIP_PROJECTS)
	@touch $@

# Refresh the locks to the newest releases pyproject.toml allows, then the whole test
# run on them: commit the new requirements/*.txt only when this passes.
lock: venv
	scripts/lock.sh
	$(MAKE) test

deps-bench:
	@scripts/ensure-debian-packages.sh $(DEB_BENCH)
	@command -v node >/dev/null && command -v npm >/dev/null || scripts/ensure-debian-packages.sh $(DEB_NODE)
	@test -f $(BENCH_PEER)/node_modules/oidc-provider/package.json || (cd $(BENCH_PEER) && npm ci --no-audit --no-fund) \
		|| { echo "the peer OIDC provider did not install; run:  (cd $(BENCH_PEER) && npm ci)" >&2; exit 1; }

# Every benchmark, one after the other (they share 2 CPUs; see docs/benchmarks.md).
bench: deps-runtime deps-bench venv
	@set -e; for b in $(BENCHMARKS); do echo "== bench/$$b.py $(BENCH_ARGS)"; $(PY) bench/$$b.py $(BENCH_ARGS); done

clean-instance:
	rm -rf $(HALLMARK_INSTANCE)
