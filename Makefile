# `make run` and `make test` do all the set-up on a fresh machine (Python 3.11+ and pip).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A development instance under ./var with a generated root key file, unless a passphrase or
# key file is configured in the environment or .env; then the console (or the messengers).
run: $(STAMP)
	@if [ -z "$$TIPLINE_PASSPHRASE$$TIPLINE_PASSPHRASE_FILE$$TIPLINE_ROOT_KEY_FILE" ] && \
	   ! grep -qsE '^TIPLINE_(PASSPHRASE|PASSPHRASE_FILE|ROOT_KEY_FILE)=' .env; then \
	   export TIPLINE_ROOT_KEY_FILE=var/root.key; fi; \
	 $(BIN)/tipline init --dev && \
	 if [ -n "$$TIPLINE_TELEGRAM_TOKEN$$TIPLINE_SIGNAL_API_URL" ] || \
	    grep -qsE '^TIPLINE_(TELEGRAM_TOKEN|SIGNAL_API_URL)=' .env; then \
	   exec $(BIN)/tipline run; else exec $(BIN)/tipline console; fi

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n 2 -m "not serial"
	$(BIN)/pytest -m serial

bench: $(STAMP)
	$(BIN)/python bench/bench_intake.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
