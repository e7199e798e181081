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

With ``--pool-extract N`` (default: every EmoDB file; 0 skips it) the same question for
feature extraction, run first (before the shared matrix exists, which forked workers would
inherit): ``FeatureExtractor(num_workers=2)`` (a ``concurrent.futures`` pool, forked, one
per call, one openSMILE per worker) against loky's process pool running the same worker
initialiser on the same chunks, kept for the second call. Each runs two calls: all N files,
then the first 64 again. Printed: wall seconds of each call (workers started included),
peak PSS, and whether the features are bit-identical.
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
    group.add_argument("--pool-extract", type=int, default=-1, metavar="N",
                       help="EmoDB files for the extraction comparison (default: all; 0: skip it)")


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

    files = int(getattr(args, "pool_extract", -1))
    extraction = _extraction(files) if files else []  # first: its forked pool must not inherit the matrix
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
    rows = _compare(("LocalEngine (ours)", ours_s, ours_peak), ("joblib loky (temp folder on disk)", loky_s, loky_peak),
                    base, "ours / joblib", "same teachers" if same else "teachers differ")
    return extraction + rows


def _extraction(count: int) -> list[dict]:
    """FeatureExtractor's forked pool against loky's process pool, on the same files and chunks."""
    import math

    from joblib.externals.loky import ProcessPoolExecutor

    from benchmarks.bench_accuracy import emodb_root
    from serdistill.base.lifecycle import started_on_main_thread
    from serdistill.data import features
    from serdistill.data.features import FeatureExtractor, FeatureSet

    files = sorted(str(f) for f in (emodb_root() / "audio").glob("*.flac"))
    files = files if count < 0 else files[:count]
    calls = [files, files[:64]]
    print(f"  extraction: {len(files)} EmoDB files then {len(calls[1])} again, ComParE_2016, 2 workers", flush=True)

    def ours():
        seconds, out = [], []
        extractor = FeatureExtractor(FeatureSet.ComParE_2016, num_workers=2, verbose=False)
        for call in calls:
            tic = time.perf_counter()
            out.append(extractor.process_files(call).to_numpy(dtype=np.float32))
            seconds.append(time.perf_counter() - tic)
        return seconds, out

    def loky():
        extractor = FeatureExtractor(FeatureSet.ComParE_2016)  # its defaults, for the worker's checks
        initargs = (FeatureSet.ComParE_2016, extractor.min_duration, extractor.allow_truncated, extractor.min_level,
                    started_on_main_thread())
        seconds, out = [], []
        pool = ProcessPoolExecutor(2, initializer=features._init_worker, initargs=initargs)
        try:
            for call in calls:
                tic = time.perf_counter()
                size = max(1, min(features._CHUNK_MAX, math.ceil(len(call) / 8)))  # as FeatureExtractor._submit
                tasks = list(enumerate(call))
                futures = [pool.submit(features._run_chunk, tasks[k:k + size]) for k in range(0, len(tasks), size)]
                values = np.empty((len(call), features.feature_dim(FeatureSet.ComParE_2016)), np.float32)
                for future in futures:
                    for job, outcome in future.result():
                        values[job] = outcome.features
                seconds.append(time.perf_counter() - tic)
                out.append(values)
        finally:
            pool.shutdown(wait=True)
        return seconds, out

    base = _tree_pss_now()
    ours_s, ours_peak, ours_out = _measure(ours)
    loky_s, loky_peak, loky_out = _measure(loky)
    same = all(np.array_equal(a, b) for a, b in zip(ours_out, loky_out))
    return _compare(("extraction: FeatureExtractor, forked (ours)", ours_s, ours_peak),
                    ("extraction: loky pool, kept", loky_s, loky_peak), base, "extraction: ours / loky",
                    "same features" if same else "features differ")


def _compare(ours: tuple, other: tuple, base: int, ratio: str, same: str) -> list[dict]:
    """Rows of ours and the other way ((label, [seconds of each batch], peak PSS)), and ours / other."""
    rows = [{"engine": label, "batch_1_s": round(seconds[0], 1), "batch_2_s": round(seconds[1], 1),
             "peak_pss_gb": round(peak / 1e9, 2), "above_start_gb": round((peak - base) / 1e9, 2)}
            for label, seconds, peak in (ours, other)]
    (_, s_a, p_a), (_, s_b, p_b) = ours, other
    rows.append({"engine": ratio, "batch_1_s": round(s_a[0] / s_b[0], 2), "batch_2_s": round(s_a[1] / s_b[1], 2),
                 "peak_pss_gb": round(p_a / p_b, 2), "above_start_gb": "", "same_result": same})
    return rows


def _tree_pss_now() -> int:
    from benchmarks.bench_scale import _tree_pss

    return _tree_pss()
