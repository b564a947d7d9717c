# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test check up up-distributed venv bench clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/changeflow demo

# The whole suite, its independent tests side by side (docs/development.md: how the worker count was chosen).
TEST_WORKERS ?= 4
test: $(INSTALLED)
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The inner loop: mypy, then the unit, integration, CLI and endpoint tests on SQLite, without the slow trials.
check: $(INSTALLED)
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy
	CHANGEFLOW_TEST_POSTGRES_URL= $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not postgres and not slow" \
		tests/unit tests/integration tests/cli tests/endpoint

# Ports of the Prefect UI / API and of the approval endpoint: `make up PORT=4300 ENDPOINT_PORT=4380`.
PORT ?= 4200
ENDPOINT_PORT ?= 4280
up: $(INSTALLED)
	$(BIN)/changeflow up --port $(PORT) --endpoint-port $(ENDPOINT_PORT)

# Prefect's scaled layout (docs/scaling.md): needs CHANGEFLOW_DATABASE_URL, CHANGEFLOW_PREFECT_DATABASE_URL
# (two PostgreSQL databases) and CHANGEFLOW_REDIS_URL; `up` names whatever is missing.
up-distributed: $(INSTALLED)
	$(BIN)/changeflow up --distributed --port $(PORT) --endpoint-port $(ENDPOINT_PORT)

bench: $(INSTALLED)
	$(BIN)/python benchmarks/write_throughput.py --count $${COUNT:-100000}

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
