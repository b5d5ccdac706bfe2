# One-command set-up and runs. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SPEECH ?= ../shared/speech
TORCH := torch==2.13.0
# Where pip finds torch; e.g. https://download.pytorch.org/whl/cpu for CPU-only wheels elsewhere.
TORCH_INDEX ?=

.PHONY: demo test lint bench bench-gpu train-demo clean

# torch is installed first, pinned, so pip never pulls a multi-GB CUDA build to satisfy "torch>=".
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.core: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[eval]'
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(VENV)/bin/pase demo --data $(SPEECH) --out demo_out

test: $(VENV)/.dev
	$(PY) -m pytest -q -ra

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check pase tests bench recipes hubconf.py
	$(VENV)/bin/ruff format --check pase tests bench recipes hubconf.py
	$(VENV)/bin/mypy pase bench recipes hubconf.py

bench: $(VENV)/.dev
	$(PY) bench/extract.py --throughput --out bench/results/extract.json
	$(PY) bench/targets.py --out bench/results/targets.json
	$(PY) bench/train.py --presets pase+,pase+cpu --out bench/results/train.json
	$(PY) bench/corpus.py --out bench/results/corpus.json

# On a lent GPU machine, from the repository root (speech packed by bench/pack_speech.py first):
# CUDA tests, extraction and training throughput, then the reference recipe for the time left.
bench-gpu:
	bash bench/gpu_run.sh

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
