# One-command set-up and runs. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Network waits: short, one retry, so an offline machine installs from local wheels in seconds.
PIP_NET := --timeout 15 --retries 1
# `make demo` uses this speech folder when it exists, else the audio packaged with pase.
SPEECH ?= ../shared/speech
TORCH_VERSION := 2.13.0
# Where pip finds torch; empty: decided by .ci/torch_source.sh (GPU -> CUDA build, else CPU build).
TORCH_INDEX ?=
# pytest's temporary files: inside the build tree, removed after a passing run.
TEST_TMP := $(CURDIR)/build/pytest

.PHONY: demo test lint bench bench-gpu clean

# torch is installed first, pinned, so pip never pulls a multi-GB CUDA build to satisfy "torch>=".
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PIP_NET) $$(PYTHON=$(PY) TORCH_VERSION=$(TORCH_VERSION) TORCH_INDEX=$(TORCH_INDEX) bash .ci/torch_source.sh)
	touch $@

# editable_mode=compat puts the checkout itself on sys.path (a .pth line) instead of an import
# hook: Python started in the clone's parent folder, where the clone `pase/` is a namespace
# package, then still finds the real package (the hook never got a say there).
EDITABLE := --config-settings editable_mode=compat -e

$(VENV)/.core: $(VENV)/.torch pyproject.toml
	$(PIP) install -q $(PIP_NET) $(EDITABLE) '.[eval]'
	touch $@

# The asr extra's decoder, pyctcdecode, declares numpy<2 though it runs on numpy 2: its own
# dependencies are installed first and it comes without them, so pip never downgrades numpy.
$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install -q $(PIP_NET) $(EDITABLE) '.[dev]'
	$(PIP) install -q $(PIP_NET) $(EDITABLE) '.[asr]'
	$(PIP) install -q $(PIP_NET) --no-deps 'pyctcdecode>=0.5'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(VENV)/bin/pase demo $(if $(wildcard $(SPEECH)),--data $(SPEECH)) --out demo_out

test: $(VENV)/.dev
	@echo "make test: the whole suite, about 10-15 minutes on 2 CPU cores (tests of real speech skip without ../shared/speech)"
	@mkdir -p $(dir $(TEST_TMP)) && $(PY) -m pytest -q -ra --basetemp=$(TEST_TMP) && rm -rf $(TEST_TMP) \
	  || { status=$$?; echo "make test: failed; the failed tests' folders are under $(TEST_TMP)"; exit $$status; }

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check pase tests bench recipes hubconf.py
	$(VENV)/bin/ruff format --check pase tests bench recipes hubconf.py
	$(VENV)/bin/mypy pase bench recipes hubconf.py

# Every benchmark under bench/ and its results; stop any training run first (they time the cores).
# onnx_speed.py times wav2vec2 Base beside PASE+: `transformers` is a bench-only dependency.
bench: $(VENV)/.dev
	$(PIP) install -q $(PIP_NET) 'transformers>=4.40'
	$(PY) bench/extract.py --throughput --out bench/results/extract.json
	$(PY) bench/targets.py --out bench/results/targets.json
	$(PY) bench/train.py --presets pase+,pase+cpu --out bench/results/train.json
	$(PY) bench/corpus.py --out bench/results/corpus.json
	$(PY) bench/onnx_speed.py --out bench/results/onnx.json
	$(PY) bench/streaming.py --out bench/results/streaming.json

# On a lent GPU machine, from the repository root (speech packed by bench/pack_speech.py first):
# CUDA tests, extraction and training throughput, then the reference recipe for the time left.
bench-gpu:
	bash bench/gpu_run.sh

clean:
	rm -rf $(VENV) demo_out build/pytest .pytest_cache .mypy_cache .ruff_cache
