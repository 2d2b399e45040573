# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: install demo test lint clean report-check bench

install: $(STAMP)

# (Re)create the virtual environment whenever the dependency lists change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev,methods,ray]"
	touch $(STAMP)

# A real sweep on the embedded default model: baseline + RTN at 8/4/3/2 bits.
# Exit code 1 means "the gate failed": a finding about the model, not a broken demo.
demo: install
	$(VENV)/bin/qharness run --model default --methods rtn --bits 8,4,3,2 \
		--suite tasks/default.yaml --out results/demo --overwrite || [ $$? -eq 1 ]
	@echo "Reports: results/demo/report.md and results/demo/report.html"

# Render a run's report.html in headless Chromium (Debian's package): every image loads,
# no console errors, no request leaves the page; writes RUN/report.png.
RUN ?= results/demo
report-check: install
	$(PY) -m harness.report.browser $(RUN)

# Sweep speed and memory against the forward-pass floor and lm-eval (~45 min on 2 cores):
# prints the figures and writes bench/results.json.
bench: install
	$(PY) bench/sweep.py

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check harness tests tasks bench
	$(VENV)/bin/ruff format --check harness tests tasks bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
