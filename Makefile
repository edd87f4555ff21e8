# Two entry points for a fresh machine: `make demo` and `make test`.
# torch is pinned here (not in setup.cfg) so that pip takes the CPU wheel
# instead of resolving a multi-GB CUDA build; the library itself needs torch>=2.1.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vaefilter demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_speed.py --quick
	$(PY) benchmarks/bench_likelihood.py --quick
	$(PY) benchmarks/bench_detection.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
