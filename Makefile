# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv first.
# make demo DEMO_ARGS=--force redoes every stage; DEMO_ARGS=--small is the few-minute version.
# make gpu-check: the first command on a GPU machine (under 10 minutes on one H100; without a usable GPU it
# stops in one line, and python -m tools.gpu_check --device cpu runs the tiny CPU shapes instead): kernels' numerics,
# train MFU and memory against the plan, decode against the HBM roofline -> runs/gpu-check/report.{json,md}.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: test demo bench gpu-check clean

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

test: .venv/installed
	$(PY) -m pytest -q tests

demo: .venv/installed
	$(PY) demo.py $(DEMO_ARGS)

bench: .venv/installed
	$(PY) -m tools.bench

gpu-check: .venv/installed
	$(PY) -m tools.gpu_check --device cuda $(GPU_CHECK_ARGS)

clean:
	rm -rf .venv runs .pytest_cache
