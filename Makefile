# Two commands work on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv if missing and install the tested, pinned dependency set.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Everything stays inside the project and offline: no hub downloads at run or test time.
export HF_HOME := $(CURDIR)/.hf_home
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench check-html clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The embedded default: toy MoE (pretrained once, then cached), base / RoMA / oracle / C3PO on the
# eight toy benchmarks through lm-eval, report in reports/demo/.  A second run reuses everything.
demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/roma-eval demo

# The fast lane first (every method, the pipeline and lm-eval round trips on tiny models), then the rest.
test: test-fast
	$(PY) -m pytest -q -m slow

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/roma_vs_hf.py
	$(PY) bench/shim_startup.py
	$(PY) bench/pca_projection.py
	$(PY) bench/roma_cache.py
	$(PY) bench/oracle_batching.py
	OMP_WAIT_POLICY=PASSIVE $(PY) bench/c3po_cost.py

# Loads the demo report in headless Chromium (apt-get install chromium) and fails on any page error.
check-html: $(STAMP)
	$(PY) tests/report/chromium_check.py reports/demo/report/report.html

clean:
	rm -rf $(VENV) .hf_home reports/demo
