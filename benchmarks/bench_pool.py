"""The local pool against joblib/loky: the same training tasks, their time and peak memory.

Issue 16 asks whether ``LocalEngine`` (our spawned pool with its memory-mapping pickler)
should give way to joblib's loky backend (a reusable executor that memory-maps large array
arguments into a temporary folder, here on disk). Both run the same module-level task,
``fit_teacher`` of one 4 x 512 teacher for ``--pool-steps`` steps of 256 on a shared
in-memory matrix of ``--pool-rows`` x 6,373 float32 (1 torch thread per task), as two
batches of 4 tasks on 2 workers (the teachers, then a second stage, on workers that are
started once). Printed per engine: seconds of each batch and the peak PSS of this process
and its workers (sampled every 20 ms, a page shared by several processes counted once),
and whether the two engines trained bit-identical teachers. The ratio is ours against
joblib's, measured in this run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np

D = 6373


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pool")
    group.add_argument("--pool-rows", type=int, default=24000, metavar="N",
                       help="rows of the shared matrix (default 24,000: 612 MB)")
    group.add_argument("--pool-steps", type=int, default=40, metavar="N", help="training steps per task (default 40)")


def train_task(seed: int, *, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, steps: int) -> dict:
    """One teacher on the shared arrays (a module-level function: both pools pickle it by name)."""
    import torch

    from serdistill.method.config import TeacherConfig, TrainConfig
    from serdistill.method.training import fit_teacher

    torch.set_num_threads(1)
    result = fit_teacher(X, y, X_dev, y_dev, dropout=0.5, seed=seed,
                         config=TeacherConfig(steps=steps, min_epochs=None), train=TrainConfig(batch_size=256))
    return {k: v.detach().cpu() for k, v in result.model.state_dict().items()}


def _measure(run) -> tuple[list[float], int, list]:
    from benchmarks.bench_scale import _tree_pss

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss())
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        seconds, results = run()
    finally:
        done.set()
        thread.join()
    return seconds, peak[0], results


def run(args: argparse.Namespace) -> list[dict]:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    from serdistill.runtime.engine import LocalEngine

    n, steps = int(getattr(args, "pool_rows", 24000)), int(getattr(args, "pool_steps", 40))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, D), dtype=np.float32)
    y = rng.standard_normal((n, 1)).astype(np.float32)
    X_dev, y_dev = X[:2000].copy(), y[:2000].copy()
    shared = {"X": X, "y": y, "X_dev": X_dev, "y_dev": y_dev, "steps": steps}
    batches = [[1, 2, 3, 4], [5, 6, 7, 8]]
    print(f"  {n} x {D} float32 shared ({X.nbytes / 1e9:.2f} GB), 2 batches of 4 tasks on 2 workers, "
          f"{steps} steps each", flush=True)

    def ours():
        engine = LocalEngine(2)
        seconds, results = [], []
        try:
            for batch in batches:
                tic = time.perf_counter()
                results += engine.map(train_task, batch, shared=shared)
                seconds.append(time.perf_counter() - tic)
        finally:
            engine.close()
        return seconds, results

    folder = tempfile.mkdtemp(prefix="serdistill-joblib-", dir=os.environ.get("TMPDIR", "/var/tmp"))

    def joblibs():
        seconds, results = [], []
        try:
            with Parallel(n_jobs=2, backend="loky", max_nbytes="1M", mmap_mode="r", temp_folder=folder) as parallel:
                for batch in batches:
                    tic = time.perf_counter()
                    results += parallel(delayed(train_task)(seed, **shared) for seed in batch)
                    seconds.append(time.perf_counter() - tic)
        finally:
            get_reusable_executor().shutdown(wait=True)
            shutil.rmtree(folder, ignore_errors=True)
        return seconds, results

    base = _tree_pss_now()
    ours_s, ours_peak, ours_results = _measure(ours)
    loky_s, loky_peak, loky_results = _measure(joblibs)
    same = all(all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a) for a, b in zip(ours_results, loky_results))
    rows = [
        {"engine": "LocalEngine (ours)", "batch_1_s": round(ours_s[0], 1), "batch_2_s": round(ours_s[1], 1),
         "peak_pss_gb": round(ours_peak / 1e9, 2), "above_start_gb": round((ours_peak - base) / 1e9, 2)},
        {"engine": "joblib loky (temp folder on disk)", "batch_1_s": round(loky_s[0], 1),
         "batch_2_s": round(loky_s[1], 1), "peak_pss_gb": round(loky_peak / 1e9, 2),
         "above_start_gb": round((loky_peak - base) / 1e9, 2)},
        {"engine": "ours / joblib", "batch_1_s": round(ours_s[0] / loky_s[0], 2),
         "batch_2_s": round(ours_s[1] / loky_s[1], 2), "peak_pss_gb": round(ours_peak / loky_peak, 2),
         "above_start_gb": "", "same_teachers": "yes" if same else "no"},
    ]
    return rows


def _tree_pss_now() -> int:
    from benchmarks.bench_scale import _tree_pss

    return _tree_pss()
