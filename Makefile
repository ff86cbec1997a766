# `make test` and `make bench` need nothing but Python 3.11+: the venv is created and the
# project installed with its dev extra on first use; tests start their own Redis, and
# `make test` installs Debian's chromium for the dashboard's browser tests when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean

# The demo's model replays recorded replies, streamed in small pieces as a provider would;
# costs are priced like gpt-4o-mini (USD/1k tokens).
DEMO_ENV := OTEL_TRACES_EXPORTER=$${OTEL_TRACES_EXPORTER:-console} \
	AGENTIC_MODEL__REPLAY_CHUNK_DELAY=$${AGENTIC_MODEL__REPLAY_CHUNK_DELAY:-0.003} \
	AGENTIC_TRACES_FILE=$${AGENTIC_TRACES_FILE:-.agentic/traces.jsonl} \
	AGENTIC_MODEL__PROMPT_PRICE_PER_1K=$${AGENTIC_MODEL__PROMPT_PRICE_PER_1K:-0.00015} \
	AGENTIC_MODEL__COMPLETION_PRICE_PER_1K=$${AGENTIC_MODEL__COMPLETION_PRICE_PER_1K:-0.0006}

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs the example pipeline: the Redis at AGENTIC_REDIS_URL / REDIS_URL if it answers, else an
# embedded one; a worker process per task type; progress per stage with each subtask's model
# output as it streams in (--follow), then a summary.
demo: $(STAMP)
	@mkdir -p .agentic
	$(DEMO_ENV) $(BIN)/agentic pipeline run examples/calculator/spec.json --metrics-port 0 --follow

test: $(STAMP)
	ops/install-test-deps.sh
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/queue_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
