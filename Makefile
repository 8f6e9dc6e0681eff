# ums — the two commands:  make run  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/ums.toml

.PHONY: run test install install-test peers lint typecheck unit acceptance bench clean

## make run: install what is needed and start the server with the example config
run: install
	$(BIN)/ums serve --config $(CONFIG)

## make test: install test dependencies (Debian peers included) and run the full suite
test: install-test peers lint typecheck
	$(BIN)/python -m pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Debian packages the acceptance tests talk to (installed only when missing)
peers:
	bash scripts/install-peers.sh

lint: install-test
	$(BIN)/ruff check ums tests bench
	$(BIN)/ruff format --check ums tests bench

typecheck: install-test
	$(BIN)/mypy ums

unit: install-test
	$(BIN)/python -m pytest tests/unit tests/test_layers.py

acceptance: install-test peers
	$(BIN)/python -m pytest -m acceptance

bench: install-test peers
	$(BIN)/python bench/sip_cps.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
