# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: install demo test lint clean

install: $(STAMP)

# (Re)create the virtual environment whenever the dependency lists change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev,methods]"
	touch $(STAMP)

# A real sweep on the embedded default model: baseline + RTN at 8/4/3/2 bits.
# Exit code 1 means "the gate failed": a finding about the model, not a broken demo.
demo: install
	$(VENV)/bin/qharness run --model default --methods rtn --bits 8,4,3,2 \
		--suite tasks/default.yaml --out results/demo --overwrite || [ $$? -eq 1 ]
	@echo "Report: results/demo/report.md"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check harness tests tasks bench
	$(VENV)/bin/ruff format --check harness tests tasks bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
