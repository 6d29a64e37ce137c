# `make demo` and `make test` each set up everything they need on a fresh machine:
# a virtual environment in .venv, torch/torchvision at the pinned releases (installed first so no
# other requirement pulls a newer torch), then this project in editable mode.
# A stamp file per install step keeps repeated runs fast; editing setup.py reinstalls.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: | $(BIN)/python
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.project-installed: setup.py $(VENV)/.torch-installed
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test-installed: setup.py $(VENV)/.project-installed
	$(PIP) install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.project-installed
	$(BIN)/nni-covid3d demo

# One intra-op thread per process: the suite runs several processes at once (DDP ranks, NNI
# trials), and oversubscribed small 3D ops on a 2-core machine are many times slower.
test: $(VENV)/.test-installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_output
