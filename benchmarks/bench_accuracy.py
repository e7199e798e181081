"""Accuracy on EmoDB: the students against the baseline, the teachers, ridge and SVR (5-fold speaker CV).

Runs ``serdistill experiment`` on EmoDB (the embedded copy, else ``../shared/data/emodb``)
with speaker-independent cross-validation (``--accuracy-folds``, default 5, x
``--accuracy-trials``, default 2) and the settings that answer "do the students beat the
baseline and a linear model": baseline, ridge, SVR, teachers, T-S (test) and T-S without
unlabelled data. The run folder (``--accuracy-dir``) is resumable: a rerun reads back the
finished folds and only prints. Per attribute it prints each mean test CCC over folds x
trials and the students' ratios to the baseline and to ridge, with the paired one-tailed
p-values. Target: the students (T-S (test)) at or above both the baseline and ridge in the
mean, for every attribute. Takes about 2.5 hours on 2 cores with the default preset (5 folds x 1
trial took 75 minutes; docs/results-emodb.md).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks import Skip

SETTINGS = ("baseline", "ridge", "svr", "teachers", "ts_test", "abl_u0_mc1_n5")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("accuracy")
    group.add_argument("--accuracy-dir", type=Path, metavar="DIR",
                       help="the experiment's run folder (resumed when it exists; default: "
                            "$SERDISTILL_CACHE/bench/accuracy-<config>, else ~/.cache/serdistill/bench/...)")
    group.add_argument("--accuracy-config", default="default", metavar="CONFIG",
                       help="preset or config file (default: default)")
    group.add_argument("--accuracy-folds", type=int, default=5, metavar="K", help="speaker folds (default: 5)")
    group.add_argument("--accuracy-trials", type=int, default=2, metavar="T", help="trials per fold (default: 2)")
    group.add_argument("--accuracy-set", action="append", default=[], metavar="KEY=VALUE",
                       help="config overrides, as serdistill's --set (repeatable)")


def emodb_root() -> Path:
    """The EmoDB copy shipped with serdistill."""
    from serdistill.data.corpora.emodb import default_root

    root = default_root()
    if not (root / "audio").is_dir():
        raise Skip(f"EmoDB not found at {root} (it ships inside the package: reinstall serdistill)")
    return root


def emodb_dataset():
    """The shipped EmoDB's features (extracted through the cache) as a Dataset."""
    from serdistill.data.corpora import build_manifest
    from serdistill.data.dataset import load_dataset

    return load_dataset(build_manifest("emodb", emodb_root()), verbose=False)


def normalised_splits(data, attributes: list[str]) -> dict[str, tuple]:
    """``{split: (X, y)}`` of train, development and test, normalised on train."""
    normaliser = data.normaliser()
    return {s: data.arrays(s, attributes=attributes, normaliser=normaliser) for s in ("train", "development", "test")}


def run(args: argparse.Namespace) -> list[dict]:
    from serdistill.data.cache import default_cache_dir
    from serdistill.method.config import apply_overrides, load_config
    from serdistill.data.corpora import build_manifest
    from serdistill.data.dataset import load_dataset
    from serdistill.study.experiment import run_experiment
    from serdistill.study.report import analyse

    root = emodb_root()
    config = apply_overrides(load_config(args.accuracy_config), [
        *args.accuracy_set, f"protocol.folds={args.accuracy_folds}", f"protocol.trials={args.accuracy_trials}",
        "protocol.settings=[" + ", ".join(f'"{s}"' for s in SETTINGS) + "]"])
    name = Path(str(args.accuracy_config)).stem
    run_dir = args.accuracy_dir or default_cache_dir().parent / "bench" / f"accuracy-{name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest("emodb", root)
    manifest.write(run_dir / "manifest.csv")
    data = load_dataset(run_dir / "manifest.csv", workers=os.cpu_count() or 1, verbose=False)
    print(f"EmoDB from {root}; run folder {run_dir}; config {args.accuracy_config}", flush=True)
    result = run_experiment(data, config, run_dir, progress=True,
                            meta={"corpus": "EmoDB", "command": "python -m benchmarks accuracy"})
    analysis = analyse(result.results, alpha=config.protocol.significance, not_run=result.not_run)
    rows = []
    for attribute in analysis.attributes:
        mean = {key: analysis.mean(key, attribute) for key in SETTINGS}
        students = mean["ts_test"]
        p_base = analysis.vs_baseline.loc[("ts_test", attribute), "p"] if analysis.vs_baseline is not None else None
        p_ridge = analysis.vs_ridge.loc[("ts_test", attribute), "p"] if analysis.vs_ridge is not None else None
        rows.append({
            "attribute": attribute, "runs": len(analysis.trials),
            "students": students, "no_unlabelled": mean["abl_u0_mc1_n5"], "teachers": mean["teachers"],
            "baseline": mean["baseline"], "ridge": mean["ridge"], "svr": mean["svr"],
            "vs_baseline": students / mean["baseline"], "p_baseline": p_base,
            "vs_ridge": students / mean["ridge"], "p_ridge": p_ridge,
            "target": f"{attribute}: students >= baseline and >= ridge (mean CCC)",
            "passed": bool(students >= mean["baseline"] and students >= mean["ridge"]),
        })
    print(f"Report: {result.report}")
    return rows
