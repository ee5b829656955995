# Two entry points: `make demo` and `make test`. Both create (or reuse) .venv and install
# what they need. TORCH pins the CPU build that this project's machines carry on disk;
# override it elsewhere (e.g. `make test TORCH=torch`).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test lint browser fuzz bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/mmrobust demo --out demo_out

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

# Headless Chromium for the browser test of the HTML report (tests/audit/test_compare.py): installed
# with apt when missing and possible; otherwise a warning, and that test skips.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will be skipped"; \
	else echo "warning: no /usr/bin/chromium and no apt-get as root to install it; the browser test will be skipped"; fi

test: lint browser
	$(PY) -m pytest -n 2

# The long property-based fuzzing run (tests/faults/test_fuzz.py with the `long` hypothesis profile); the short,
# derandomised `ci` profile of the same tests runs in `make test`.
fuzz: $(VENV)/.installed
	MMROBUST_FUZZ=long $(PY) -m pytest tests/faults/test_fuzz.py -p no:xdist --hypothesis-show-statistics

bench: $(VENV)/.installed
	$(PY) benchmarks/audit_cost.py
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/dropout_cost.py
	$(PY) benchmarks/sweep_overhead.py
	$(PY) benchmarks/audit_scale.py
	$(PY) benchmarks/sweep_scale.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache .mypy_cache
