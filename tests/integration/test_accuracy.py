"""The default preset on real speech: its students against ridge regression on EmoDB's test speakers.

Issue 13's case: EmoDB with test speakers 15 and 16, development speakers 03 and 13, the
other 6 for training; arousal only, the default preset as ``serdistill train`` runs it without
``--config`` (the baseline and the SVR left out: they are not what is checked, and they cost a
minute). The issue measured the quick preset's students at 0.762 against ridge's 0.794 on
this split. The students must reach ridge's test CCC minus 0.03, as the issue asks; measured:
0.815 against ridge's 0.796 (teachers 0.794).

One split of 2 test speakers is not a verdict: on the corpus command's own split (seed 0,
test speakers 13 and 15) the same students reach 0.837 against ridge's 0.875, the same
Pearson correlation (0.891 vs 0.893) with a mean offset on the two test speakers
(docs/results-emodb.md). The comparison that decides is ``python -m benchmarks accuracy``
(5-fold speaker cross-validation, every attribute, the baseline and the SVR too).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clirun import run_cli as _run
from serdistill.deploy.bundle import load_bundle
from serdistill.method.config import apply_overrides, load_config

pytestmark = pytest.mark.slow


def test_default_students_reach_ridge_on_the_issues_split(tmp_path: Path, emodb_root: Path) -> None:
    manifest, features, bundle = tmp_path / "manifest.csv", tmp_path / "features.parquet", tmp_path / "emodb.bundle"
    assert _run(["corpus", "emodb", str(emodb_root), "-o", str(manifest)])[0] == 0
    table = pd.read_csv(manifest)
    table["split"] = ["test" if s in (15, 16) else "development" if s in (3, 13) else "train"
                      for s in table["speaker"]]
    table.to_csv(manifest, index=False)
    code, _, err = _run(["extract", str(manifest), "-o", str(features), "--workers", "2",
                         "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert code == 0, err
    code, out, err = _run(["train", str(manifest), "--features", str(features), "-o", str(bundle), "-q",
                           "--workers", "2", "--set", 'attributes=["arousal"]', "--set", "baseline.enabled=false",
                           "--set", 'reference.models=["ridge"]'])
    assert code == 0, err
    trained = load_bundle(bundle).config  # the default preset, with the three overrides above
    assert trained == apply_overrides(load_config("default"), ['attributes=["arousal"]', "baseline.enabled=false",
                                                               'reference.models=["ridge"]'])
    scores = tmp_path / "test.json"
    assert _run(["evaluate", str(bundle), str(manifest), "--features", str(features), "--json", str(scores)])[0] == 0
    ccc = json.loads(scores.read_text())["ccc"]
    students, ridge = ccc["students"]["arousal"], ccc["ridge"]["arousal"]
    assert students >= ridge - 0.03, f"students {students:.4f} vs ridge {ridge:.4f} on the test speakers"
