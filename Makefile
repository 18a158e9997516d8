# refundcore: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGIN_DIRS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench sandbox postgres redis browser screenshots clean

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

# The journal's PostgreSQL tests start a throwaway server from Debian's package; on a
# fresh machine (as root) it is installed here. REFUNDCORE_SKIP_POSTGRES=1 skips them.
postgres:
	@if [ "$${REFUNDCORE_SKIP_POSTGRES:-}" != 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
		else \
			echo "PostgreSQL is needed for the journal tests: sudo apt-get install postgresql," \
			     "or set REFUNDCORE_SKIP_POSTGRES=1"; exit 1; \
		fi; \
	fi

# The Celery tests run real workers against Debian's redis-server as the broker (each
# test starts its own on loopback); on a fresh machine (as root) it is installed here.
# REFUNDCORE_SKIP_CELERY=1 skips those tests.
redis:
	@if [ "$${REFUNDCORE_SKIP_CELERY:-}" != 1 ] && ! [ -x /usr/bin/redis-server ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		else \
			echo "redis-server is needed for the Celery tests: sudo apt-get install redis-server," \
			     "or set REFUNDCORE_SKIP_CELERY=1"; exit 1; \
		fi; \
	fi

# The console's browser test drives Debian's headless Chromium through its chromedriver
# (never a downloaded browser); on a fresh machine (as root) both are installed here.
# REFUNDCORE_SKIP_BROWSER=1 skips that test.
browser:
	@if [ "$${REFUNDCORE_SKIP_BROWSER:-}" != 1 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "Chromium is needed for the console's browser test:" \
			     "sudo apt-get install chromium chromium-driver, or set REFUNDCORE_SKIP_BROWSER=1"; exit 1; \
		fi; \
	fi

unit: setup postgres redis browser
	$(BIN)/python -m pytest

# The README's console screenshots (docs/images/), taken by the browser test in a
# scratch folder (a test run never writes into the checkout) and copied here.
screenshots: setup browser
	@shots=$$(mktemp -d) && \
		REFUNDCORE_SCREENSHOTS=$$shots $(BIN)/python -m pytest -q -p no:randomly tests/web/test_browser.py && \
		mkdir -p docs/images && cp $$shots/console-*.png docs/images/ && rm -rf $$shots && \
		ls -l docs/images/console-*.png

test: lint typecheck unit

bench: setup postgres redis
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
