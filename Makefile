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
# HALLMARK_TEST_POSTGRES=1 (CI sets it).
DEB_TEST := chromium $(if $(filter 1,$(HALLMARK_TEST_POSTGRES)),postgresql,)
# Debian's python3 needs python3-venv for `python3 -m venv`.
DEB_VENV := $(shell $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || echo python3-venv)

.PHONY: run test deps deps-runtime venv bench clean-instance

# The identity provider on :8000 plus two demo halls (:8001, :8002); see examples/run.py.
run: deps-runtime venv
	$(VENV)/bin/hallmark init
	$(PY) examples/run.py

test: deps venv
	$(PY) -m pytest

deps: deps-runtime
	@scripts/ensure-debian-packages.sh $(DEB_TEST)

deps-runtime:
	@scripts/ensure-debian-packages.sh $(DEB_RUNTIME) $(DEB_VENV)

venv: $(VENV)/.installed

# Reinstall only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

bench: deps venv
	$(PY) bench/hsm_sign.py && $(PY) bench/token.py && $(PY) bench/login.py

clean-instance:
	rm -rf $(HALLMARK_INSTANCE)
