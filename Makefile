# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit bench clean venv

venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

## Start everything: embedded Postgres (unless DATABASE_URL is set), localpiston
## (unless PISTON_URL is set), web and dispatcher. Prints a ready-to-paste curl.
run: $(STAMP)
	$(PY) -m devstack

## Lint, then every test suite (unit, integration, e2e) in parallel on real Postgres.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 -q -p no:cacheprovider tests

lint: $(STAMP)
	$(PY) -m ruff check .

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache
