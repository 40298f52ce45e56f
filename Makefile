# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv first, with
# python3 (3.11 or newer; make PYTHON=python3.12 picks another).
# make demo DEMO_ARGS=--force redoes every stage; DEMO_ARGS=--small is the few-minute version.
# make gpu-check: the first command on a GPU machine (under 10 minutes on one H100; without a
# usable GPU it stops in one line, and python -m tools.gpu_check --device cpu runs the tiny CPU
# shapes instead): kernels' numerics, train MFU and memory against the plan, decode against the
# HBM roofline -> runs/gpu-check/report.{json,md}.
# make venv-cu12: .venv afresh with a torch built for CUDA 12, for NVIDIA drivers older than R580.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip install -q --disable-pip-version-check
# PyTorch's own CUDA 12 indexes, tried in this order: which of them holds torch 2.13.0 could not be
# checked from here (docs/gpu.md, 'An older driver')
CU12_INDEXES := cu129 cu128 cu126
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: test demo bench gpu-check venv-cu12 clean

$(VENV)/installed: requirements.txt
	@$(PYTHON) tools/check_python.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

# torch first, from PyTorch's index; then requirements.txt, whose torch==2.13.0 the installed
# 2.13.0+cu12x satisfies (a local version label is ignored by ==), so pip keeps it.
venv-cu12:
	@$(PYTHON) tools/check_python.py
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	@for cu in $(CU12_INDEXES); do \
	    echo "torch==2.13.0 from https://download.pytorch.org/whl/$$cu"; \
	    $(PIP) torch==2.13.0 --index-url https://download.pytorch.org/whl/$$cu && exit 0; \
	done; \
	echo "no torch 2.13.0 in PyTorch's indexes $(CU12_INDEXES) (or download.pytorch.org is" \
	    "unreachable): upgrade the NVIDIA driver to R580 or newer and run make" \
	    "(docs/gpu.md, 'An older driver')" >&2; exit 1
	$(PIP) -r requirements.txt
	$(PY) -c "import torch; print('torch', torch.__version__, 'for CUDA', torch.version.cuda)"
	touch $(VENV)/installed

test: $(VENV)/installed
	$(PY) -m pytest -q tests

demo: $(VENV)/installed
	$(PY) demo.py $(DEMO_ARGS)

bench: $(VENV)/installed
	$(PY) -m tools.bench

gpu-check: $(VENV)/installed
	$(PY) -m tools.gpu_check --device cuda $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
