# serdistill: two set-up commands for a fresh machine, `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEB_PACKAGES := espeak-ng sox libsndfile1 chromium chromium-driver

.PHONY: demo test bench deps venv clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null || exit 1; \
	  else \
	    echo "serdistill needs these Debian packages:$$missing"; \
	    echo "Install them with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,plots]'
	@touch $(STAMP)

venv: deps $(STAMP)

DEMO_DIR ?= demo
DEMO_CONFIG ?= configs/quick.toml
# 2 of the quick config's 3 trials keep the whole demo within 10 minutes on 2 cores
DEMO_TRIALS ?= 2
SD := $(VENV)/bin/serdistill
# The main job on the embedded default corpus: build it, extract its features, train a model
# bundle and predict a few files with it, then run the paper's protocol (quick config) and
# print the report's Table 1. Every step resumes or reuses what a previous run finished.
demo: venv
	$(SD) corpus synthetic $(DEMO_DIR)/corpus -o $(DEMO_DIR)/corpus/manifest.csv
	$(SD) extract $(DEMO_DIR)/corpus/manifest.csv -o $(DEMO_DIR)/features.parquet
	test -f $(DEMO_DIR)/model/bundle.json || $(SD) train $(DEMO_DIR)/corpus/manifest.csv --config $(DEMO_CONFIG) --features $(DEMO_DIR)/features.parquet -o $(DEMO_DIR)/model
	$(SD) predict $(DEMO_DIR)/model $$(ls $(DEMO_DIR)/corpus/audio/*.wav | head -n 5) -o $(DEMO_DIR)/predictions.csv
	@column -s, -t < $(DEMO_DIR)/predictions.csv 2>/dev/null || cat $(DEMO_DIR)/predictions.csv
	$(SD) experiment $(DEMO_DIR)/corpus/manifest.csv --config $(DEMO_CONFIG) --features $(DEMO_DIR)/features.parquet -o $(DEMO_DIR)/run --trials $(DEMO_TRIALS)

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
