# The one place the project's commands live: README, CI and developers all call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit venv kafka-jars bench clean

## demo: set up and run the main job on the embedded default (no Kafka, private PostgreSQL)
demo: venv
	$(BIN)/processor demo

## test: set up everything on a fresh machine, then lint, type-check and run the whole test suite
test: venv kafka-jars lint typecheck
	$(BIN)/pytest -p no:cacheprovider

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## kafka-jars: fetch Apache Kafka from Maven Central once (cached under .cache/)
kafka-jars: venv
	$(BIN)/processor dev kafka fetch

lint: venv
	$(BIN)/ruff check processor tests bench

typecheck: venv
	$(BIN)/mypy

bench: venv kafka-jars
	$(BIN)/python bench/log_throughput.py

clean:
	rm -rf $(VENV) .cache var .mypy_cache .ruff_cache
