# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 3000
PYTEST_ARGS ?=

.PHONY: venv demo test ui bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Seed the embedded LIMS with synthetic sessions and materialize every asset for every partition.
demo: $(STAMP)
	$(BIN)/release-platform demo

## Run the test suite (PostgreSQL and browser tests run when a server / Chromium are present).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Serve the Dagster UI (with its daemon) on 127.0.0.1:$(PORT) over the same instance as `make demo`.
ui: $(STAMP)
	$(BIN)/release-platform ui --port $(PORT)

clean:
	rm -rf .release_platform
