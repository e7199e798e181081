"""``serdistill experiment`` end to end on a tiny real subset of EmoDB (skipped when absent)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clirun import run_cli as _run


pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "teacher.dropouts=[0.45, 0.55, 0.65]", "--set", "teacher.epochs=4", "--set", "baseline.epochs=4",
        "--set", "teacher.hidden=[64, 64]", "--set", "baseline.hidden=[64, 64]", "--set", "student.hidden=[64]",
        "--set", "mc.passes=8", "--set", "student.epochs=3", "--set", "student.alphas=[0.3, 0.7]",
        "--set", "student.betas=[0.5]", "--set", "train.batch_size=16"]


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory, emodb_root: Path) -> Path:
    """EmoDB with 14 files per speaker; half of one training speaker's files made unlabelled."""
    root = tmp_path_factory.mktemp("emodb_subset")
    full = root / "full.csv"
    assert _run(["corpus", "emodb", str(emodb_root), "-o", str(full)])[0] == 0
    table = pd.read_csv(full)
    table["file"] = [str((full.parent / f).resolve()) for f in table["file"]]
    table = table.groupby("speaker", group_keys=False).head(14).reset_index(drop=True)
    pool = table.index[table["split"] == "train"][:20]
    table.loc[pool, "split"] = "unlabeled"
    table.loc[pool, ["arousal", "valence", "dominance"]] = np.nan
    manifest = root / "manifest.csv"
    table.to_csv(manifest, index=False)
    return manifest


def test_the_protocol_runs_end_to_end_and_resumes(subset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = ["experiment", str(subset), "--config", str(REPO / "configs" / "quick.toml"), "-o", str(run_dir),
            "--trials", "2", "--workers", "2", "--cache-dir", str(tmp_path / "cache"), "--no-progress", *TINY]
    code, out, err = _run(argv)
    assert code == 0, err
    assert f"Report: {run_dir / 'report.md'}" in out
    assert "T-S (test)" in out and "Baseline" in out  # Table 1 printed

    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 2 * 13 * 3  # trials x settings x attributes
    assert set(results["setting"]) >= {"baseline", "ridge", "svr", "teachers", "ts_test", "ts_unlabeled", "ts_pseudo", "ts_top75",
                                       "abl_u0_mc1_n5", "abl_u1_mc0_n5", "abl_u1_mc1_n1", "abl_u0_mc1_n1",
                                       "abl_u1_mc0_n1"}
    assert np.isfinite(results["ccc"]).all()
    report = (run_dir / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "What held"):
        assert heading in report
    for figure in ("ccc_per_setting.png", "consistency.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 1000
    assert list((run_dir / "figures").glob("*alpha*")) or list((run_dir / "figures").glob("*grid*"))
    meta = json.loads((run_dir / "meta.json").read_text())
    assert len(meta["seeds"]) == 2 and meta["feature_set"] == "ComParE_2016"

    # the same command again reads everything back: same numbers, no training
    code, out, err = _run(argv)
    assert code == 0, err
    again = pd.read_csv(run_dir / "results.csv")
    pd.testing.assert_frame_equal(results, again)
