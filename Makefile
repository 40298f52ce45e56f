# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv first.
# make demo DEMO_ARGS=--force redoes every stage; DEMO_ARGS=--small is the few-minute version.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: test demo bench clean

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

test: .venv/installed
	$(PY) -m pytest -q tests

demo: .venv/installed
	$(PY) demo.py $(DEMO_ARGS)

bench: .venv/installed
	$(PY) bench.py

clean:
	rm -rf .venv runs .pytest_cache
