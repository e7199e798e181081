"""MSP-Podcast size on this machine: unit costs measured, a trial and the paper's protocol extrapolated; peak memory.

Synthetic features of the MSP-Podcast v1.6 partition sizes (34,280 train, 5,958
development, 10,124 test, plus 10,124 unlabelled; 6,373 random float32 values each) are
written once as a Parquet table with ``write_features`` (in a child process, so its memory
does not count), then a second child process does what ``serdistill train`` and
``serdistill experiment`` do before training, through the real code:
``load_dataset(manifest, features=...)`` (the raw matrix on disk once it is >= 256 MiB),
``Dataset.normaliser()`` and ``Dataset.arrays`` of the four splits. On those arrays it times,
with the real training code:

- ``fit_teacher`` and ``fit_baseline`` (4 x 512, dropout 0.5, SGD), one epoch on the first
  ``--scale-steps`` batches of the train split, at the batch size of ``configs/paper.toml``
  (256) and of ``configs/quick.toml`` (64);
- ``fit_student`` (2 x 512, NAdam, Eq. 1), one epoch alternating unlabelled and labelled
  batches (labelled and unlabelled rows in the ratio 34,280 : 10,124), same batch sizes;
- the development scoring after each epoch (the whole development split, measured apart);
- ``mc_dropout`` of one teacher, 100 and 30 passes, on ``--scale-mc-rows`` segments;
- ``StudentEnsemble.predict`` of 5 students on the test split.

A full epoch is extrapolated linearly from the measured steps (steps per epoch x time per
step + the development scoring), MC passes linearly from the measured rows to
train + test + unlabelled; a trial and the protocols are then sums of those unit costs
(per attribute: the baseline, 5 teachers, MC of each teacher on train, test and unlabelled,
and (grid points + 5) x 5 student fits; x 3 attributes; checkpoint writes and the
deterministic "no MC dropout" passes are left out, a few seconds). Every row says whether
it is measured or extrapolated. The memory row compares the child's peak RSS (``ru_maxrss``,
from its start to its end: loading, normalising, all timings) with the feature matrix it
loaded. ``--scale-fraction F`` shrinks every partition (a quick run; below 256 MiB the raw
matrix is read into memory rather than held on disk).

Issue 17's savings, from the same unit costs: (1) one training per alpha/beta ratio (the
full grid's selection, exactly); (2) early stopping with ``--scale-patience`` epochs (the
fraction of epochs each model kind runs is measured on EmoDB in this run, the largest real
data here: MSP-Podcast's epochs are 67 times longer, so this is an assumption, stated in
the row); (3) successive halving of the grid (reported apart: it does not keep the full
grid's selection); and, under all three, the cost of a training step: weights stored
input-major (``serdistill.method.models._linear``) and NAdam's square root kept in a buffer
(``serdistill.method.training.NAdam``). Every training step is timed both ways, alternating,
twice (the faster of each pair of runs counts), and the cost before issue 17 uses the steps
timed with ``nn.Linear``'s (out, in) weights and ``torch.optim.NAdam``. Stacked students are not in these CPU figures: on this CPU they are
slower than one at a time (``python -m benchmarks stacked``). The target compares the last
full-grid row with the cost before issue 17 (every grid point trained, fixed epochs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D = 6373
#: MSP-Podcast v1.6 partitions (and as many unlabelled segments as the test set).
SIZES = {"train": 34280, "development": 5958, "test": 10124, "unlabeled": 10124}
TARGET_MEMORY = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale")
    group.add_argument("--scale-fraction", type=float, default=1.0, metavar="F",
                       help="shrink every partition to this fraction (default 1: the v1.6 sizes)")
    group.add_argument("--scale-steps", type=int, default=200, metavar="N",
                       help="training steps timed per model kind and batch size (default 200)")
    group.add_argument("--scale-mc-rows", type=int, default=8192, metavar="N",
                       help="segments of the timed MC-dropout runs (default 8,192: one block of [mc] block_rows)")
    group.add_argument("--scale-run", type=int, nargs="*", metavar="WORKERS",
                       help="also measure the peak memory of a whole train run cut to 1 epoch per model, "
                            "in one process (1) and/or on a local pool (2, ...): ~6 min each at full size")
    group.add_argument("--scale-experiment", type=int, default=0, metavar="TRIALS",
                       help="also measure the peak memory of a whole experiment of TRIALS trials cut to 1 epoch per "
                            "model, on the default local pool (one process per CPU, at most one per trial): "
                            "~25 min for 2 trials at full size")
    group.add_argument("--scale-patience", type=int, default=10, metavar="P",
                       help="early stopping for the 'after' rows: the epochs the paper preset's models run with "
                            "patience P, measured on EmoDB in this run (~2 min; 0: leave those rows out)")
    group.add_argument("--scale-dir", type=Path, default=None, metavar="DIR",
                       help="keep the synthetic Parquet table here and reuse it (default: a temporary folder, removed)")


def run(args: argparse.Namespace) -> list[dict]:
    fraction = float(getattr(args, "scale_fraction", 1.0))
    if not 0 < fraction <= 1:
        raise ValueError(f"--scale-fraction must be in (0, 1]; got {fraction}.")
    sizes = {k: max(64, int(round(v * fraction))) for k, v in SIZES.items()}
    steps = max(4, int(getattr(args, "scale_steps", 200)))
    mc_rows = max(64, int(getattr(args, "scale_mc_rows", 8192)))
    keep = getattr(args, "scale_dir", None)
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="serdistill-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        stem = "scale-" + "-".join(str(sizes[k]) for k in SIZES)
        features, manifest = folder / f"{stem}.parquet", folder / f"{stem}.csv"
        tic = time.perf_counter()
        if not (features.is_file() and manifest.is_file()):
            _child("write", {"sizes": sizes, "features": str(features), "manifest": str(manifest)})
            print(f"  wrote {features} ({features.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - tic:.0f} s",
                  flush=True)
        result = _child("measure", {"features": str(features), "manifest": str(manifest), "steps": steps,
                                    "mc_rows": mc_rows})
        patience = int(getattr(args, "scale_patience", 10) or 0)
        if patience > 0:  # (2): how many epochs early stopping leaves, on the largest real data here
            from benchmarks.bench_epochs import epochs_used

            print(f"  early stopping: the paper preset's models on EmoDB, patience {patience} (~2 min) ...", flush=True)
            result["early_stops"] = {"patience": patience, "used": epochs_used(patience)}
        runs = []
        for workers in getattr(args, "scale_run", None) or []:
            print(f"  a whole cut-down train run, {workers} process(es) ...", flush=True)
            runs.append(_child("run", {"features": str(features), "manifest": str(manifest), "workers": workers}))
        trials = int(getattr(args, "scale_experiment", 0) or 0)
        if trials > 0:
            workers = 1 if trials == 1 else min(trials, os.cpu_count() or 1)  # one trial runs in the command
            print(f"  a whole cut-down experiment, {trials} trial(s) on {workers} process(es) ...", flush=True)
            runs.append({**_child("experiment", {"features": str(features), "manifest": str(manifest),
                                                 "workers": workers, "trials": trials}), "trials": trials})
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return _rows(result, sizes, fraction, steps, mc_rows) + [_run_row(run, fraction) for run in runs]


def _run_row(run: dict, fraction: float) -> dict:
    """The memory row of one whole cut-down run: its peak against the matrix it trains on."""
    matrix, peak = run["matrix_used_bytes"], run["peak_pss"]
    where = "in one process" if run["workers"] == 1 else f"on a local pool of {run['workers']} processes"
    what = f"experiment of {run['trials']} trial(s)" if "trials" in run else "train run"
    row = {"item": f"whole {what} (cut down: 1 epoch each, 1 grid point) {where}: peak PSS (this process's "
                   f"ru_maxrss {run['ru_maxrss'] / 1e9:.2f} GB), matrix trained on {run['rows_used']} x {D} = "
                   f"{matrix / 1e9:.2f} GB", "how": f"measured ({run['seconds']:.0f} s)",
           "value": f"{peak / 1e9:.2f} GB = {peak / matrix:.2f}x",
           "target": f"peak memory of a run < {TARGET_MEMORY:g}x the feature matrix it uses (got {peak / 1e9:.2f} GB "
                     f"for {matrix / 1e9:.2f} GB = {peak / matrix:.2f}x)",
           "passed": peak < TARGET_MEMORY * matrix}
    if fraction < 1:
        row.pop("passed")
        row["target"] = "(information only with --scale-fraction < 1) " + row["target"]
    return row


# ---------------------------------------------------------------------------------------
# Child processes


def _child(kind: str, params: dict) -> dict:
    """Run ``_main(kind, params)`` in a fresh Python: its peak memory is its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", kind, json.dumps(params)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _maxrss() -> int:
    """This process's peak resident memory, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _write(params: dict) -> dict:
    import pandas as pd

    from serdistill.data.feature_table import write_features

    sizes = params["sizes"]
    n = sum(sizes.values())
    rng = np.random.default_rng(0)
    splits = np.concatenate([[k] * v for k, v in sizes.items()])
    files = [f"/synthetic/scale/seg{i:06d}.wav" for i in range(n)]
    labels = rng.uniform(1, 7, size=(n, 3))
    labels[splits == "unlabeled"] = np.nan
    frame = pd.DataFrame({"file": files, "speaker": [f"s{i % 1000}" for i in range(n)], "split": splits,
                          "arousal": labels[:, 0], "valence": labels[:, 1], "dominance": labels[:, 2]})
    frame.to_csv(params["manifest"], index=False)
    X = np.empty((n, D), dtype=np.float32)
    for start in range(0, n, 4096):  # openSMILE-like scales: a spread of means and stds
        X[start:start + 4096] = rng.standard_normal((min(4096, n - start), D), dtype=np.float32)
    X *= rng.uniform(0.1, 10, D).astype(np.float32)
    X += rng.uniform(-5, 5, D).astype(np.float32)
    table = pd.DataFrame(X, index=pd.Index(files, name="file"), columns=[f"f{j}" for j in range(D)], copy=False)
    table.attrs["serdistill"] = {"feature_set": "ComParE_2016", "synthetic": True}
    write_features(table, params["features"])
    return {"rows": n}


def _measure(params: dict) -> dict:
    import pandas as pd
    import torch

    from benchmarks.bench_training import _peak
    from serdistill.method.config import load_config
    from serdistill.data.dataset import load_dataset
    from serdistill.method.ensemble import StudentEnsemble
    from serdistill.data.manifest import Manifest
    from serdistill.method.mc_dropout import mc_dropout
    from serdistill.method.models import MLP
    from serdistill.data.storage import is_on_disk
    from serdistill.method.training import fit_baseline, fit_student, fit_teacher, predict_mlp

    out: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__}
    say = lambda text: print(f"  {text}", file=sys.stderr, flush=True)  # noqa: E731
    rss0 = _maxrss()
    tic = time.perf_counter()
    manifest = Manifest.from_frame(pd.read_csv(params["manifest"]), check_files=False)
    data = load_dataset(manifest, features=params["features"], verbose=False)
    out["load_s"] = time.perf_counter() - tic
    out["on_disk"] = is_on_disk(data.X)
    out["matrix_bytes"] = int(data.X.nbytes)
    out["rows"], out["dim"] = data.X.shape
    tic = time.perf_counter()
    normaliser = data.normaliser()
    arrays = {s: data.arrays(s, normaliser=normaliser) for s in SIZES}
    out["normalise_s"] = time.perf_counter() - tic
    out["rss_start"], out["rss_loaded"] = rss0, _maxrss()
    say(f"loaded {out['rows']} x {out['dim']} ({out['matrix_bytes'] / 1e9:.2f} GB, on disk: {out['on_disk']}) in "
        f"{out['load_s']:.1f} s, normalised 4 splits in {out['normalise_s']:.1f} s; peak RSS {out['rss_loaded'] / 1e9:.2f} GB")

    X, y = arrays["train"]
    X_dev, y_dev = arrays["development"]
    X_test, X_u = arrays["test"][0], arrays["unlabeled"][0]
    y, y_dev = y[:, :1], y_dev[:, :1]
    out["peak_gflop_s"] = _peak(torch)
    say(f"fp32 matmul peak {out['peak_gflop_s']:.0f} GFLOP/s")
    paper, quick = load_config(ROOT / "configs" / "paper.toml"), load_config(ROOT / "configs" / "quick.toml")
    steps = params["steps"]
    rng = np.random.default_rng(1)

    def timed(fit, B: int, **kw) -> float:
        """Seconds of one epoch of ``fit`` (its own clock) on the given rows, tiny development set."""
        train = paper.train.__class__(**{**paper.train.to_dict(), "batch_size": B, "device": "cpu"})
        seconds: list[float] = []
        fit(train=train, seed=0, on_epoch=lambda info: seconds.append(info["seconds"]), **kw)
        return seconds[0]

    one = lambda section: section.__class__(**{**section.to_dict(), "epochs": 1})  # noqa: E731
    tiny_dev = (X_dev[:16], y_dev[:16])
    units: dict[str, float] = {}
    from serdistill.method import models, training

    # this code: weights stored input-major, NAdam with its root buffer; before issue 17: nn.Linear's (out, in)
    # weights and torch's NAdam
    layouts = {"": (models._linear, training.NAdam),
               "_before": (lambda a, b: torch.nn.utils.skip_init(torch.nn.Linear, a, b), torch.optim.NAdam)}
    for B in sorted({paper.train.batch_size, quick.train.batch_size}, reverse=True):
        n = min(len(X), steps * B)
        n_l = min(len(X), max(B, steps * B // 2))
        n_u = min(len(X_u), max(B, int(n_l * len(X_u) / len(X))))
        target = rng.standard_normal((n_l, 512), dtype=np.float32)
        target_u = rng.standard_normal((n_u, 512), dtype=np.float32)
        # both weight layouts, alternating, twice: each unit cost is the faster of its two runs
        for rep, suffix in enumerate(["_before", "", "_before", ""]):
            models._linear, training.NAdam = layouts[suffix]
            try:
                if rep < 2:  # warm-up: the first call of a shape pays allocations and kernel selection
                    fit_teacher(X[:4 * B], y[:4 * B], *tiny_dev, dropout=0.5, config=one(paper.teacher),
                                train=paper.train.__class__(**{**paper.train.to_dict(), "batch_size": B}), seed=0)
                found = {
                    "teacher": timed(fit_teacher, B, X=X[:n], y=y[:n], X_dev=tiny_dev[0], y_dev=tiny_dev[1],
                                     dropout=0.5, config=one(paper.teacher)) / math.ceil(n / B),
                    "baseline": timed(fit_baseline, B, X=X[:n], y=y[:n], X_dev=tiny_dev[0], y_dev=tiny_dev[1],
                                      config=one(paper.baseline)) / math.ceil(n / B),
                    "student": timed(fit_student, B, X=X[:n_l], y=y[:n_l], X_dev=tiny_dev[0], y_dev=tiny_dev[1],
                                     target=target, alpha=0.5, beta=0.5, X_unlabelled=X_u[:n_u],
                                     target_unlabelled=target_u, config=one(paper.student))
                    / (2 * max(math.ceil(n_l / B), math.ceil(n_u / B))),
                }
            finally:
                models._linear, training.NAdam = layouts[""]
            for kind, value in found.items():
                key = f"{kind}_step_{B}{suffix}"
                units[key] = min(units.get(key, math.inf), value)
        for suffix, label in (("_before", "steps as before issue 17"), ("", "steps now")):
            say(f"batch {B}, {label}: teacher {1e3 * units[f'teacher_step_{B}{suffix}']:.0f} ms/step, baseline "
                f"{1e3 * units[f'baseline_step_{B}{suffix}']:.0f} ms/step, student "
                f"{1e3 * units[f'student_step_{B}{suffix}']:.0f} ms/step ({n} and {n_l} + {n_u} rows)")

    teacher = MLP(D, paper.teacher.hidden, dropout=0.5, generator=torch.Generator().manual_seed(0)).eval()
    student = MLP(D, paper.student.hidden, generator=torch.Generator().manual_seed(1)).eval()
    for name, model in (("teacher", teacher), ("student", student)):
        predict_mlp(model, X_dev[:256])
        tic = time.perf_counter()
        predict_mlp(model, X_dev)
        units[f"dev_score_{name}"] = time.perf_counter() - tic
    m = min(params["mc_rows"], len(X))
    for passes in sorted({paper.mc.passes, quick.mc.passes}):
        mc_dropout(teacher, X[:256], passes=passes)
        tic = time.perf_counter()
        mc_dropout(teacher, X[:m], passes=passes, block_rows=paper.mc.block_rows)
        units[f"mc_row_{passes}"] = (time.perf_counter() - tic) / m
        say(f"MC dropout, {passes} passes: {1e3 * units[f'mc_row_{passes}'] * 1000:.0f} ms per 1,000 segments ({m} timed)")
    students = StudentEnsemble(paper)
    students.models_ = [MLP(D, paper.student.hidden, generator=torch.Generator().manual_seed(10 + i)).eval()
                        for i in range(len(paper.teacher.dropouts))]
    students.n_features_in_, students.n_outputs_ = D, 1
    students.predict(X_test[:64])
    tic = time.perf_counter()
    students.predict(X_test)
    units["ensemble_predict_test"] = time.perf_counter() - tic
    out["units"] = units
    out["mc_rows"] = m
    out["rss_peak"] = _maxrss()
    return out


# ---------------------------------------------------------------------------------------
# The tables


def _epoch(units: dict, kind: str, B: int, n: int, n_u: int = 0) -> float:
    """Extrapolated seconds of one epoch: steps x time per step + development scoring."""
    if kind == "student":
        steps = 2 * max(math.ceil(n / B), math.ceil(n_u / B)) if n_u else math.ceil(n / B)
        return steps * units[f"student_step_{B}"] + units["dev_score_student"]
    return math.ceil(n / B) * units[f"{kind}_step_{B}"] + units["dev_score_teacher"]


def grid_trainings(config, *, per_ratio: bool = True) -> int:
    """Student grid points trained: one per distinct alpha/beta ratio with a scale-free optimizer
    (docs/experiment.md), else every point."""
    from serdistill.method.training import SCALE_FREE_OPTIMIZERS, loss_weights

    points = config.student.grid()
    if per_ratio and config.student.optimizer in SCALE_FREE_OPTIMIZERS:
        return len({loss_weights(a, b)[0] for a, b in points})
    return len(points)


def protocol_cost(units: dict, config, sizes: dict[str, int], *, per_ratio: bool = True,
                  epochs_used: dict[str, float] | None = None, halving: bool = False) -> dict[str, float]:
    """Seconds of one trial of ``config`` (all attributes), by part, from the unit costs.

    ``per_ratio=False``: as before each ratio was trained once (every grid point trained).
    ``epochs_used``: early stopping, as the fraction of its epochs each model kind runs
    (``{"baseline": f, "teacher": f, "student": f}``; 1 without early stopping).
    ``halving``: the ts_test grid searched by successive halving (its rounds' epochs,
    :func:`serdistill.method.ensemble.halving_plan`) instead of every ratio in full.
    """
    from serdistill.method.ensemble import halving_plan

    from serdistill.method.training import Schedule, n_batches

    used = {"baseline": 1.0, "teacher": 1.0, "student": 1.0, **(epochs_used or {})}
    B = config.train.batch_size
    N = len(config.teacher.dropouts)
    n, n_test, n_u = sizes["train"], sizes["test"], sizes["unlabeled"]
    grid = grid_trainings(config, per_ratio=per_ratio)

    def epochs(section, n_l: int, n_un: int = 0) -> int:
        """The epochs ``section`` trains on n_l labelled (+ n_un unlabelled) rows: its ``epochs``,
        or those its step budget gives at this size (the presets with ``steps``)."""
        return Schedule.of(section, max(n_batches(n_l, B), n_batches(n_un, B) if n_un else 0)).epochs

    E = epochs(config.student, n, n_test)
    # the grid's student epochs per student: every ratio in full, or halving's rounds
    grid_epochs = (sum(k * e for k, e in halving_plan(grid, E, config.student.halving_factor)) if halving
                   else grid * E)
    attributes = len(config.attributes)
    top = int(round(0.75 * n_test))
    others = ((n, n_u), (n + n_test, 0), (n, top), (n, 0), (n, n_test))  # unlabeled, pseudo, top 75%, none, no MC
    student_epochs = (grid_epochs * _epoch(units, "student", B, n, n_test)     # ts_test grid
                      + sum(epochs(config.student, a, b) * _epoch(units, "student", B, a, b) for a, b in others))
    parts = {
        "baseline": used["baseline"] * epochs(config.baseline, n) * _epoch(units, "baseline", B, n),
        "teachers": used["teacher"] * N * epochs(config.teacher, n) * _epoch(units, "teacher", B, n),
        "mc": N * (n + n_test + n_u) * units[f"mc_row_{config.mc.passes}"],
        "students": used["student"] * N * student_epochs,
        "predict": (grid + 5) * units["ensemble_predict_test"],
    }
    return {k: attributes * v for k, v in parts.items()}


def _before_units(units: dict) -> dict:
    """The unit costs before issue 17: the steps timed with nn.Linear's (out, in) weights and torch's NAdam."""
    return {**units, **{k.removesuffix("_before"): v for k, v in units.items() if k.endswith("_before")}}


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _rows(result: dict, sizes: dict, fraction: float, steps: int, mc_rows: int) -> list[dict]:
    from serdistill.method.config import load_config

    u = result["units"]
    paper, quick = load_config(ROOT / "configs" / "paper.toml"), load_config(ROOT / "configs" / "quick.toml")
    Bp, Bq = paper.train.batch_size, quick.train.batch_size
    n, n_test, n_u = sizes["train"], sizes["test"], sizes["unlabeled"]
    size = f"{n} train + {sizes['development']} dev + {n_test} test + {n_u} unlabelled"
    print(f"  {size} x {D}; {result['threads']} torch threads, {result['cpus']} CPUs; fraction {fraction:g}",
          flush=True)
    rows: list[dict] = [
        {"item": "fp32 matmul peak (4096^3 torch.mm)", "how": "measured", "value": f"{result['peak_gflop_s']:.0f} GFLOP/s"},
        {"item": f"load_dataset from Parquet ({result['rows']} x {result['dim']})", "how": "measured",
         "seconds": result["load_s"]},
        {"item": "normaliser + arrays of the 4 splits", "how": "measured", "seconds": result["normalise_s"]},
    ]
    units_before = _before_units(u)
    for B in (Bp, Bq):
        for kind in ("teacher", "baseline", "student"):
            rows.append({"item": f"{kind} step, batch {B}", "how": f"measured (~{steps} steps, faster of 2 runs)",
                         "seconds": u[f"{kind}_step_{B}"]})
            if f"{kind}_step_{B}_before" in u:
                rows.append({"item": f"{kind} step, batch {B}, as before issue 17 (weights (out, in), torch's NAdam)",
                             "how": f"measured (~{steps} steps, faster of 2 runs)", "seconds": units_before[f"{kind}_step_{B}"],
                             "value": f"now {u[f'{kind}_step_{B}'] / units_before[f'{kind}_step_{B}']:.2f}x"})
    rows += [
        {"item": f"development scoring, teacher ({sizes['development']} segments)", "how": "measured",
         "seconds": u["dev_score_teacher"]},
        {"item": f"development scoring, student ({sizes['development']} segments)", "how": "measured",
         "seconds": u["dev_score_student"]},
        {"item": f"StudentEnsemble.predict, 5 students x {n_test} test segments", "how": "measured",
         "seconds": u["ensemble_predict_test"]},
    ]
    for B, label in ((Bp, "paper"), (Bq, "quick")):
        rows.append({"item": f"teacher epoch, batch {B} ({label}), {n} segments + dev", "how": "extrapolated",
                     "seconds": _epoch(u, "teacher", B, n)})
        rows.append({"item": f"baseline epoch, batch {B} ({label})", "how": "extrapolated",
                     "seconds": _epoch(u, "baseline", B, n)})
        rows.append({"item": f"student epoch, batch {B} ({label}), {n} labelled + {n_test} unlabelled", "how": "extrapolated",
                     "seconds": _epoch(u, "student", B, n, n_test)})
    rows_mc = n + n_test + n_u
    for passes in sorted({paper.mc.passes, quick.mc.passes}, reverse=True):
        rows.append({"item": f"MC dropout, 1 teacher x {passes} passes x {rows_mc} segments", "how":
                     f"extrapolated ({result['mc_rows']} segments timed)", "seconds": u[f"mc_row_{passes}"] * rows_mc})
    protocols = [("quick", quick, {}), ("paper, every grid point trained, fixed epochs, steps as before issue 17 (before)",
                                        paper, {"per_ratio": False, "units": units_before}),
                 ("paper, every grid point trained, fixed epochs, steps now", paper, {"per_ratio": False}),
                 (f"paper, (1) one training per alpha/beta ratio ({grid_trainings(paper)} of "
                  f"{len(paper.student.grid())} points)", paper, {})]
    stops = result.get("early_stops")
    if stops:
        detail = ", ".join(f"{k} {v:.0%}" for k, v in stops["used"].items())
        protocols.append((f"paper, (1) + (2) early stopping, patience {stops['patience']} (epochs run, measured on "
                          f"EmoDB in this run: {detail})", paper, {"epochs_used": stops["used"]}))
        protocols.append(("paper, (1) + (2) + (3) successive halving of the grid (not the full grid's selection)",
                          paper, {"epochs_used": stops["used"], "halving": True}))
    protocols.append(("paper, (1) + (3) successive halving, fixed epochs (not the full grid's selection)", paper,
                      {"halving": True}))
    totals = {}
    for label, config, options in protocols:
        parts = protocol_cost(options.pop("units", u), config, sizes, **options)
        trial = sum(parts.values())
        detail = ", ".join(f"{k} {_hours(v)}" for k, v in parts.items())
        rows.append({"item": f"one trial, {label} protocol (3 attributes): {detail}", "how": "extrapolated",
                     "seconds": trial, "value": _hours(trial)})
        trials = config.protocol.trials
        rows.append({"item": f"{label} protocol, {trials} trials", "how": "extrapolated", "seconds": trial * trials,
                     "value": _hours(trial * trials)})
        totals[label] = trial * trials
    before = next(v for k, v in totals.items() if "(before)" in k)
    kept = [(k, v) for k, v in totals.items() if k.startswith("paper") and "halving" not in k and "(before)" not in k]
    label, after = kept[-1]
    rows.append({"item": "paper protocol, full grid's selection: after / before", "how": "extrapolated",
                 "value": f"{after / before:.3f}x ({_hours(after)} against {_hours(before)})",
                 "target": f"the paper protocol with the full grid's selection at or below 1/4 of its cost before "
                           f"issue 17 (got {after / before:.3f}x with {label.split(' (epochs')[0].removeprefix('paper, ')})",
                 "passed": after <= before / 4})
    for k, v in totals.items():
        if "halving" in k:
            rows.append({"item": f"{k.split(' (not')[0]}: after / before", "how": "extrapolated",
                         "value": f"{v / before:.2f}x ({_hours(v)})"})
    matrix = result["matrix_bytes"]
    peak = result["rss_peak"]
    rows.append({"item": f"peak RSS after loading + normalising (matrix {matrix / 1e9:.2f} GB, on disk: {result['on_disk']})",
                 "how": "measured", "value": f"{result['rss_loaded'] / 1e9:.2f} GB = {result['rss_loaded'] / matrix:.2f}x"})
    rows.append({"item": "peak RSS of the whole measuring run (load, normalise, all timings)", "how": "measured",
                 "value": f"{peak / 1e9:.2f} GB = {peak / matrix:.2f}x",
                 "target": f"peak memory of the measuring run (load, normalise, timings; not a whole TSModel.fit) < "
                           f"{TARGET_MEMORY:g}x the feature matrix (got {peak / 1e9:.2f} GB "
                           f"for a {matrix / 1e9:.2f} GB matrix = {peak / matrix:.2f}x)",
                 "passed": peak < TARGET_MEMORY * matrix})
    if fraction < 1:  # the interpreter and torch (~0.8 GB) dwarf a small matrix: information only
        rows[-1].pop("passed")
        rows[-1]["target"] = "(information only with --scale-fraction < 1) " + rows[-1]["target"]
    return rows


def _load(params: dict) -> dict:
    """Peak RSS of load_dataset + normaliser + arrays of the 4 splits alone, and a SHA-256 of the results.

    Any serdistill works here (e.g. ``PYTHONPATH=/tmp/before/src`` for an older one), to
    compare the memory of two versions on the same table and check their results are equal.
    """
    import hashlib

    import pandas as pd

    import serdistill
    from serdistill.data.dataset import load_dataset
    from serdistill.data.manifest import Manifest

    out: dict = {"serdistill": serdistill.__file__, "rss_start": _maxrss()}
    tic = time.perf_counter()
    manifest = Manifest.from_frame(pd.read_csv(params["manifest"]), check_files=False)
    data = load_dataset(manifest, features=params["features"], verbose=False)
    out.update(load_s=time.perf_counter() - tic, rss_loaded=_maxrss(), matrix_bytes=int(data.X.nbytes))
    tic = time.perf_counter()
    normaliser = data.normaliser()
    arrays = {s: data.arrays(s, normaliser=normaliser) for s in SIZES if data.has(s)}
    out.update(normalise_s=time.perf_counter() - tic, rss_peak=_maxrss())
    digest = hashlib.sha256(json.dumps(normaliser.to_dict()).encode())
    for X, y in arrays.values():
        digest.update(np.ascontiguousarray(X).tobytes())
        digest.update(np.ascontiguousarray(y).tobytes())
    out.update(sha256=digest.hexdigest(), peak_x_matrix=out["rss_peak"] / out["matrix_bytes"])
    return out


def _tree_pss() -> int:
    """Proportional set size of this process and its descendants, bytes: shared pages counted once."""
    import glob

    total, todo, seen = 0, [os.getpid()], set()
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        # a child between vfork and exec (how a worker is spawned) shows its parent's memory:
        # the same address range and resident size, counted once
        key = (lines[0], next((line for line in lines if line.startswith("Rss:")), "")) if lines else None
        if key not in seen:
            seen.add(key)
            total += sum(int(line.split()[1]) for line in lines if line.startswith("Pss:")) * 1024
        for children in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                todo += [int(c) for c in open(children).read().split()]
            except OSError:
                pass
    return total


CUT_DOWN = ['attributes=["arousal"]', "baseline.epochs=1", "teacher.epochs=1", "student.epochs=1",
            "student.alphas=[0.5]", "student.betas=[0.5]"]


def _whole_run(params: dict, body: Callable[..., Any]) -> dict:
    """Peak memory of ``body(config, data, engine)``: a whole run cut down to 1 epoch per model.

    configs/quick.toml with :data:`CUT_DOWN`, the data loaded from the synthetic table, in
    this process (``workers`` 1) or on a local pool of ``workers`` processes. The memory of
    the process and its workers is sampled every 20 ms as their summed PSS (a page shared
    by several processes counts once); ``ru_maxrss`` is this process's own peak.
    """
    import threading

    import pandas as pd

    from serdistill.method.config import apply_overrides, load_config
    from serdistill.data.dataset import load_dataset
    from serdistill.runtime.engine import LocalEngine
    from serdistill.data.manifest import Manifest

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    config = apply_overrides(load_config(ROOT / "configs" / "quick.toml"), CUT_DOWN + params.get("overrides", []))
    tic = time.perf_counter()
    data = load_dataset(Manifest.from_frame(pd.read_csv(params["manifest"]), check_files=False),
                        features=params["features"], verbose=False)
    engine = LocalEngine(params["workers"]) if params["workers"] > 1 else None
    try:
        used = body(config, data, engine)
    finally:
        if engine is not None:
            engine.close()
    done.set()
    return {"seconds": time.perf_counter() - tic, "workers": params["workers"], "peak_pss": peak[0],
            "ru_maxrss": _maxrss(), "rows_used": used, "matrix_used_bytes": used * data.X.shape[1] * 4,
            "matrix_bytes": int(data.X.nbytes)}


def _run(params: dict) -> dict:
    """``serdistill train``'s code path (``cli.train._arrays`` + ``TSModel.fit``), cut down: :func:`_whole_run`."""
    from serdistill.runtime.cli.train import _arrays
    from serdistill.method.ensemble import TSModel

    def train(config, data, engine) -> int:
        arrays = _arrays(data, config, params["manifest"])
        TSModel(config, engine=engine).fit(arrays["X"], arrays["y"], arrays["X_dev"], arrays["y_dev"],
                                           X_unlabelled=arrays["X_unlabelled"], unlabelled_info=arrays["unlabelled_info"])
        return sum(len(arrays[k]) for k in ("X", "X_dev")) + (
            0 if arrays["X_unlabelled"] is None else len(arrays["X_unlabelled"]))

    return _whole_run(params, train)


def _experiment(params: dict) -> dict:
    """``serdistill experiment``'s code path (``run_experiment``), ``trials`` trials, cut down: :func:`_whole_run`."""
    from serdistill.study.experiment import run_experiment

    def experiment(config, data, engine) -> int:
        with tempfile.TemporaryDirectory(prefix="serdistill-scale-experiment-") as run_dir:
            run_experiment(data, config, run_dir, progress=False, engine=engine)
        return sum(data.split_counts().get(s, 0) for s in ("train", "development", "test", "unlabeled"))

    return _whole_run({**params, "overrides": [f"protocol.trials={params['trials']}"]}, experiment)


if __name__ == "__main__":
    kind, params = sys.argv[1], json.loads(sys.argv[2])
    result = {"write": _write, "measure": _measure, "load": _load, "run": _run, "experiment": _experiment}[kind](params)
    print(json.dumps(result))
