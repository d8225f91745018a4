# Two entry points do all set-up on a fresh machine:
#   make demo   - a sample training run under torchdiag, then its HTML report
#   make test   - the test suite
# Both create .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned as a pair: a torchvision built for another torch fails to import.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) samples/quickstart.py --output demo/quickstart/run.json
	$(VENV)/bin/torchdiag report demo/quickstart/run.json --format text
	$(VENV)/bin/torchdiag report demo/quickstart/run.json -o demo/quickstart/report.html
	@echo "Report: demo/quickstart/report.html"

test: $(VENV)/.installed
	$(VENV)/bin/ruff check torchdiag tests samples benchmarks scripts
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/overhead.py

gpu-check: $(VENV)/.installed
	$(PY) scripts/gpu_check.py
	$(PY) scripts/gpu_scenarios.py

clean:
	rm -rf $(VENV) demo torchdiag_runs
