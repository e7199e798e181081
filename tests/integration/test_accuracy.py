"""The default preset on real speech: its students against ridge regression on EmoDB's test speakers.

EmoDB split by speaker (seed 0: 6 train, 2 development, 2 test speakers), arousal only, the
default preset as ``serdistill train`` runs it without ``--config`` (the baseline and the SVR
left out: they are not what is checked, and they cost a minute). The students must reach
ridge's test CCC minus 0.03. The full comparison (5-fold speaker cross-validation, every
attribute, the baseline and the SVR too) is ``python -m benchmarks accuracy``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clirun import run_cli as _run
from serdistill.bundle import load_bundle
from serdistill.config import apply_overrides, load_config

pytestmark = pytest.mark.slow


def test_default_students_reach_ridge_on_emodb_arousal(tmp_path: Path, emodb_root: Path) -> None:
    manifest, features, bundle = tmp_path / "manifest.csv", tmp_path / "features.parquet", tmp_path / "emodb.bundle"
    assert _run(["corpus", "emodb", str(emodb_root), "-o", str(manifest)])[0] == 0
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
