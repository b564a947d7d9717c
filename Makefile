# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test up venv bench clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/changeflow demo

test: $(INSTALLED)
	$(BIN)/mypy
	$(BIN)/pytest

up: $(INSTALLED)
	$(BIN)/changeflow up

bench: $(INSTALLED)
	$(BIN)/python benchmarks/write_throughput.py --count $${COUNT:-100000}

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
