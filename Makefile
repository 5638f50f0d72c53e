# eisam-rec: every target builds the virtualenv first, so a fresh clone needs nothing else typed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCALE ?= cpu
STAMP := $(VENV)/.installed

.PHONY: install test test-all reproduce tables figures bench bench-optim bench-decode clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build comes from the local wheel cache; any other request pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(PY) -m pytest tests

test-all: $(STAMP)
	EISAM_SLOW=1 WANDB_MODE=offline WANDB_SILENT=true $(PY) -m pytest tests

bench-optim: $(STAMP)
	$(PY) scripts/bench_optim.py

bench-decode: $(STAMP)
	$(PY) scripts/bench_decode.py

bench: bench-optim bench-decode

clean:
	rm -rf $(VENV) .cache
