# The front door: make demo | test | bench | lint | synth | layers | api
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration infra bench bench-api bench-drill bench-throughput clean install install-runtime layers synth api

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml scripts/install-system-deps.sh
	./scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $@

install: $(STAMP)

# An operator host: PostgreSQL client tools and a .venv with the runtime dependencies only.
install-runtime:
	./scripts/install.sh

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

NODE_STAMP := node_modules/.installed

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

test: lint $(NODE_STAMP) layers
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/drill.py

# The monthly restore drill's measured RTO against a bare pg_restore, on the same data.
bench-drill: $(STAMP)
	$(BIN)/python bench/drill.py

# PostgreSQL dump and restore throughput per vCPU: the Lambda/Fargate sizing table (docs/fargate.md).
bench-throughput: $(STAMP)
	$(BIN)/python bench/throughput.py

# The admin API's part alone: status latency and AWS calls at 10 and 500 sets, handlers' cold import.
bench-api: $(STAMP)
	$(BIN)/python bench/api.py

layers: $(STAMP)
	$(BIN)/python -m layers.build

synth: $(STAMP) $(NODE_STAMP) layers
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true npx --no-install cdk synth --quiet

# The admin API offline on 127.0.0.1:8080, as on AWS (token: ADMIN_TOKEN, else one is generated).
api: $(STAMP) $(NODE_STAMP) layers
	$(BIN)/python scripts/api_server.py

infra: $(STAMP) $(NODE_STAMP) layers
	$(BIN)/pytest -q tests/infra

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build node_modules cdk.out
