"""`serdistill train` with issue 17's options: successive halving, a grid of ratios, stacked networks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clirun import run_cli
from serdistill.deploy.bundle import load_bundle
from toy import TINY_SETS

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "configs" / "quick.toml")


def _train(tiny_corpus, bundle: Path, *extra: str) -> None:
    manifest, features = tiny_corpus
    code, _, err = run_cli(["train", str(manifest), "--config", QUICK, "--features", str(features), "-q",
                            "--threads", "1", "-o", str(bundle), *TINY_SETS, *extra])
    assert code == 0, err


def test_train_searches_the_grid_by_halving_and_records_the_dropped_ratios(tiny_corpus, tmp_path):
    bundle = tmp_path / "halving.bundle"
    _train(tiny_corpus, bundle, "--workers", "1", "--set", "student.ratios=[0.25, 0.5, 1, 2, 4]",
           "--set", 'student.search="halving"', "--set", "student.epochs=3")
    grid = json.loads((bundle / "metrics.json").read_text())["grid"]["arousal"]
    assert len(grid) == 5
    dropped = [row for row in grid if row.get("eliminated")]
    assert len(dropped) == 3 and all(row["budget_epochs"] == 1 for row in dropped)  # 5 -> 2 survivors
    metrics = json.loads((bundle / "metrics.json").read_text())
    chosen = (metrics["alpha"]["arousal"], metrics["beta"]["arousal"])
    assert chosen in [(row["alpha"], row["beta"]) for row in grid if not row.get("eliminated")]


def test_train_stacked_on_the_cpu_gives_the_bundle_of_separate_training(tiny_corpus, tmp_path):
    """--set train.stacked="on" trains in the command's process (no pool), the same models to float tolerance."""
    _, features = tiny_corpus
    separate, stacked = tmp_path / "separate.bundle", tmp_path / "stacked.bundle"
    _train(tiny_corpus, separate, "--workers", "1")
    _train(tiny_corpus, stacked, "--workers", "2", "--set", 'train.stacked="on"')
    X = pd.read_parquet(features).to_numpy()
    for a, b in zip(load_bundle(stacked).predict_features(X), load_bundle(separate).predict_features(X)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    grids = [json.loads((b / "metrics.json").read_text())["grid"]["arousal"] for b in (separate, stacked)]
    assert [r["best_epochs"] for r in grids[0]] == [r["best_epochs"] for r in grids[1]]
