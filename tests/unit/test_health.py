"""Failed members: named with their reason, in the log, the bundle's metrics and the report."""
from __future__ import annotations

import logging

import pandas as pd

from serdistill.method.health import failed_members, margin
from serdistill.study.report import write_report


def history(best: int, ran: int) -> list[dict]:
    return [{"epoch": e, "best_epoch": min(e, best)} for e in range(1, ran + 1)]


def test_a_member_far_below_its_siblings_is_named_with_the_reason(caplog):
    scores = [0.80, 0.12, 0.78, 0.82, 0.18]  # the old quick preset's dominance teachers
    histories = [history(40, 50), history(1, 30), history(35, 50), history(44, 50), history(20, 50)]
    with caplog.at_level(logging.WARNING):
        failed = failed_members("teacher", scores, histories, group="dominance")
    assert [(f["member"], f["reason"]) for f in failed] == [
        (1, "no improvement after the first epochs (best at epoch 1 of 30)"),
        (4, "far below its siblings (best at epoch 20 of 50)")]
    assert failed[0]["siblings"] == 0.79 and failed[0]["dev_ccc"] == 0.12
    assert "dominance: teacher 2: development CCC 0.120" in caplog.text


def test_close_members_and_small_ensembles_pass():
    assert failed_members("student", [0.41, 0.38, 0.44, 0.36, 0.40]) == []
    assert failed_members("teacher", [0.9, 0.1]) == []  # two members: which one is odd is a guess
    assert margin(0.85) == 0.255 and margin(0.3) == 0.15
    undefined = failed_members("student", [0.5, None, 0.52, 0.49])
    assert [(f["member"], f["dev_ccc"], f["reason"][:22]) for f in undefined] == [(1, None, "no development score (")]


def test_the_report_lists_failed_models(tmp_path):
    rows = [(t, s, "arousal", 0.5 + 0.01 * t) for t in range(3) for s in ("baseline", "teachers", "ts_test")]
    results = pd.DataFrame(rows, columns=["trial", "setting", "attribute", "ccc"])
    failed = [{"trial": 1, "group": "arousal", "stage": "teacher", "member": 3, "dev_ccc": 0.12, "siblings": 0.8,
               "reason": "no improvement after the first epochs (best at epoch 1 of 30)"}]
    text = write_report(tmp_path, results, meta={"failed": failed}).read_text()
    assert "### Failed models" in text and "| 1 " in text and "teacher 4" in text and "best at epoch 1 of 30" in text
    text = write_report(tmp_path, results, meta={"failed": []}).read_text()
    assert "None: every teacher and every chosen student" in text
