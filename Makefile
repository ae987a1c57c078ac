# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit bench clean venv audit lock

venv: $(STAMP)

# The service's pins (requirements.txt, all that production installs) and the development and test
# tools (requirements-dev.txt), both hash-checked.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

## Start everything: embedded Postgres (unless DATABASE_URL is set), localpiston
## (unless PISTON_URL is set), web and dispatcher. Prints a ready-to-paste curl.
run: $(STAMP)
	$(PY) -m devstack

## Lint, type-check, then every test suite (unit, integration, e2e) in parallel on real Postgres.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -n 2 -q -p no:cacheprovider tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

## Benchmarks (docs/performance.md); BENCH_ARGS=--quick for a run of about a minute.
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) -m bench $(BENCH_ARGS)

## Known vulnerabilities in the pinned dependencies (pip-audit; needs PyPI's JSON API). docs/security.md
TOOLS := .venv-tools
$(TOOLS)/.installed: requirements-audit.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-audit.txt
	touch $@

audit: $(TOOLS)/.installed
	@# --strict: a package pip-audit could not look up fails the audit instead of passing silently.
	$(TOOLS)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r requirements.txt -r requirements-dev.txt || { \
	  echo "make audit: FAILED. Either a vulnerability is listed above, or pip-audit could not reach its database"; \
	  echo "(every package 'not found on PyPI': https://pypi.org/pypi/<name>/<version>/json is unreachable here)."; exit 1; }

## Re-pin requirements.txt and requirements-dev.txt with hashes from their .in files, at the versions
## installed in .venv; requirements-dev.in is constrained by requirements.txt, so shared packages agree.
COMPILE := $(TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
  --no-emit-find-links -c $(TOOLS)/constraints.txt
lock: $(TOOLS)/.installed
	$(PY) -m pip freeze --all > $(TOOLS)/constraints.txt
	$(COMPILE) -o requirements.txt requirements.in
	$(COMPILE) -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) $(TOOLS) .run .pytest_cache .ruff_cache .mypy_cache
