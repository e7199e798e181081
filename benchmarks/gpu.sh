#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU (docs/performance.md, "On a GPU"):
# the CUDA tests, then MC dropout, a teacher epoch and stacked against separate students
# (students of one epoch of MSP-Podcast's 34,280 training rows) on the GPU.
# About 5 minutes on a recent GPU. Needs a Python whose torch is a CUDA build and that
# imports serdistill (pip install -e . there, or PYTHONPATH=src); PY picks it (default:
# .venv/bin/python if present, else python3). Tables and JSON go to $OUT (default: .).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-.}
export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYCODE'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"benchmarks/gpu.sh: torch {torch.__version__} sees no CUDA device; run it where one is, "
             "with a CUDA build of torch (PY=/path/to/python).")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}", flush=True)
PYCODE
"$PY" -m pytest -q -p no:cacheprovider tests/integration/test_cuda.py tests/unit/test_mc_dropout.py -rs 2>&1 | tee "$OUT/gpu-tests.txt"
"$PY" -m benchmarks mc_dropout --mc-dropout-device cuda --json "$OUT/gpu-mc_dropout.json" 2>&1 | tee "$OUT/gpu-mc_dropout.txt"
"$PY" -m benchmarks training --training-device cuda --json "$OUT/gpu-training.json" 2>&1 | tee "$OUT/gpu-training.txt"
"$PY" -m benchmarks stacked --stacked-device cuda --stacked-rows 34280 --json "$OUT/gpu-stacked.json" 2>&1 | tee "$OUT/gpu-stacked.txt"
