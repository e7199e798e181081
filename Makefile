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
DEMO_CONFIG ?= demo
SD := $(VENV)/bin/serdistill
# The main job on the embedded default corpus, EmoDB (real speech, shipped with serdistill):
# its manifest and features, a model bundle, predictions for held-out files beside their
# labels, then the paper's protocol cut down to 3-fold speaker cross-validation x 1 trial
# (Table 1's settings) and the report's Table 1. The demo preset keeps all of it within 10
# minutes on 2 cores; every step resumes or reuses what a previous run finished.
demo: venv
	$(SD) corpus emodb -o $(DEMO_DIR)/emodb.csv
	$(SD) extract $(DEMO_DIR)/emodb.csv -o $(DEMO_DIR)/features.parquet
	test -f $(DEMO_DIR)/model/bundle.json || $(SD) train $(DEMO_DIR)/emodb.csv --config $(DEMO_CONFIG) --features $(DEMO_DIR)/features.parquet -o $(DEMO_DIR)/model
	$(SD) predict $(DEMO_DIR)/model $(DEMO_DIR)/emodb.csv --split test --labels -o $(DEMO_DIR)/predictions.csv -q
	@$(PY) -c "import pandas as pd, os; t = pd.read_csv('$(DEMO_DIR)/predictions.csv'); t['file'] = t['file'].map(os.path.basename); print('Held-out (test) files: prediction, its label and the students\' std'); print(t.iloc[::23][['file', 'arousal', 'arousal_label', 'arousal_std', 'valence', 'valence_label', 'dominance', 'dominance_label']].round(2).to_string(index=False))"
	$(SD) experiment $(DEMO_DIR)/emodb.csv --config $(DEMO_CONFIG) --features $(DEMO_DIR)/features.parquet -o $(DEMO_DIR)/run

# lint and format (ruff, pyproject.toml's rules), types (mypy) and the docstrings' examples of src/, then the tests
test: venv
	$(PY) -m ruff check src
	$(PY) -m ruff format --check src
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules src/serdistill
	$(PY) -m pytest -q

bench: venv
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
