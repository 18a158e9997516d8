# refundcore: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGIN_DIRS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench sandbox clean

$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(PLUGIN_DIRS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(addprefix -e ./,$(PLUGIN_DIRS))
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/refundcore demo

sandbox: setup
	$(BIN)/refundcore sandbox

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
