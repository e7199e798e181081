"""The report built from a tiny hand-made result set: tables, marks, missing settings, files,
HTML, PNGs, JSON, and the "What held" section."""
from __future__ import annotations

import base64
import io
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from serdistill.study.findings import HELD, MEAN_ONLY, NOT_HELD, NOT_TESTED
from serdistill.study.report import table1_markdown, write_report
from serdistill.study.results import ResultsError, consistency_table, read_results, results_from_json
from serdistill.study.settings import SETTINGS

ATTRIBUTES = ("arousal", "valence", "dominance")
OFFSETS = {"arousal": 0.0, "valence": -0.40, "dominance": -0.08}  # different per column: catches mix-ups
BASE = np.array([0.70, 0.71, 0.72])
TS = BASE + [0.030, 0.031, 0.032]
# Per-trial CCC (arousal; the other attributes are shifted by OFFSETS). T-S (test) beats the
# baseline clearly (p ~ 2e-4); T-S (pseudo-label) does not (p ~ 0.19). No T-S (unlabeled),
# and the full model of Table 2 is not written: it must come from ts_test.
SETS = {
    "baseline": BASE,
    "teachers": BASE + [0.010, 0.012, 0.011],
    "ts_test": TS,
    "ts_pseudo": BASE + [0.020, -0.010, 0.030],
    "ts_top75": BASE + [0.015, 0.016, 0.017],
    "abl_u0_mc1_n5": TS - [0.005, 0.002, 0.008],  # the full model is not significantly better
    "abl_u1_mc0_n5": TS - [0.020, 0.019, 0.021],
    "abl_u1_mc1_n1": TS - [0.010, 0.012, 0.014],
    "abl_u0_mc1_n1": TS - [0.015, 0.013, 0.018],
    "abl_u1_mc0_n1": TS - [0.040, 0.045, 0.043],
}
LABELS = {s.key: s.label for s in SETTINGS}


def _results(sets: dict[str, np.ndarray] = SETS) -> pd.DataFrame:
    rows = [(trial, key, attribute, float(values[trial]) + OFFSETS[attribute])
            for key, values in sets.items() for attribute in ATTRIBUTES for trial in range(len(values))]
    return pd.DataFrame(rows, columns=["trial", "setting", "attribute", "ccc"])


def _p(new: np.ndarray, ref: np.ndarray) -> float:
    return float(scipy_stats.ttest_rel(new, ref, alternative="greater").pvalue)


def _grid() -> pd.DataFrame:
    rows = [(trial, attribute, alpha, beta, 0.4 - (alpha - best[0]) ** 2 - (beta - best[1]) ** 2)
            for trial in range(3)
            for attribute, best in (("arousal", (0.3, 0.7)), ("valence", (0.7, 0.3)), ("dominance", (0.5, 0.5)))
            for alpha in (0.1, 0.3, 0.5, 0.7, 0.9) for beta in (0.1, 0.3, 0.5, 0.7, 0.9)]
    return pd.DataFrame(rows, columns=["trial", "attribute", "alpha", "beta", "dev_ccc"])


def _consistency() -> dict:
    rng = np.random.default_rng(7)
    data = {a: {"teachers": rng.gamma(4, 0.03, 300), "students": rng.gamma(4, 0.015, 300)} for a in ATTRIBUTES}
    data["dominance"]["students"] = rng.gamma(4, 0.05, 300)  # students less consistent here
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    path = write_report(run_dir, _results(), grid=_grid(), consistency=_consistency(),
                        config={"seed": 0, "protocol": {"trials": 3, "significance": 0.01}},
                        meta={"corpus": "hand-made", "manifest": "m.csv", "command": "serdistill experiment m.csv"})
    assert path == run_dir / "report.md"
    return run_dir


def _md_table(text: str, first_header: str, after: str) -> list[dict[str, str]]:
    """The Markdown table after heading ``after`` whose first column is ``first_header``."""
    lines = text[text.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} "))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(dict(zip(header, cells)))
    return rows


def _table1(text: str) -> dict[str, dict[str, str]]:
    return {row["Setting"]: row for row in _md_table(text, "Setting", "## Table 1")}


# ---------------------------------------------------------------------------------------
# Files


def test_every_file_is_written_and_not_empty(run: Path) -> None:
    for name in ("report.md", "report.html", "results.csv", "results.json", "summary.json",
                 "figures/ccc_per_setting.png", "figures/alpha_beta.png", "figures/consistency.png"):
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 100, name
    assert not list(run.rglob("*.tmp")), "atomic writes left temporary files"


@pytest.mark.parametrize("name", ["ccc_per_setting.png", "alpha_beta.png", "consistency.png"])
def test_figures_are_valid_pngs_of_sensible_size(run: Path, name: str) -> None:
    data = (run / "figures" / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 4000 and 250 <= height <= 3000, (width, height)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.verify()


class _Checker(HTMLParser):
    """Fails on a closing tag that does not match the open one; collects text and images."""

    VOID = {"meta", "img", "br", "hr", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_html_parses_and_is_self_contained(run: Path) -> None:
    checker = _Checker()
    checker.feed((run / "report.html").read_text(encoding="utf-8"))
    checker.close()
    assert checker.stack == []
    text = " ".join(checker.text)
    for needle in ("Table 1", "Table 2", "T-S (test)", "0.7410 ± 0.0110 †‡", "What held", "Figure 2"):
        assert needle in text
    assert len(checker.images) == 3
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"


def test_markdown_links_the_figures_relatively(run: Path) -> None:
    text = (run / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == ["figures/alpha_beta.png", "figures/ccc_per_setting.png", "figures/consistency.png"]
    assert all((run / link).is_file() for link in links)


def test_header_shows_corpus_trials_command_and_config(run: Path) -> None:
    text = (run / "report.md").read_text(encoding="utf-8")
    assert "- Corpus: hand-made" in text and "- Manifest: m.csv" in text
    assert "- Trials: 3 (ids 0, 1, 2)" in text
    assert "```\nserdistill experiment m.csv\n```" in text
    assert re.search(r"\| protocol\.significance +\| 0\.01 +\|", text)
    assert "Versions: serdistill " in text and "python " in text and "numpy " in text


# ---------------------------------------------------------------------------------------
# Table 1


def test_table1_means_std_and_paper_values(run: Path) -> None:
    table = _table1((run / "report.md").read_text(encoding="utf-8"))
    ts = table["T-S (test)"]
    assert ts["Arousal"].startswith("0.7410 ± 0.0110")
    assert ts["Valence"].startswith("0.3410 ± 0.0110")
    assert ts["Dominance"].startswith("0.6610 ± 0.0110")
    assert (ts["A paper"], ts["V paper"], ts["D paper"]) == ("0.7345", "0.3230", "0.6652")
    assert table["Baseline"]["Arousal"] == "0.7100 ± 0.0100"
    assert ts["A vs base"] == f"{100 * 0.031 / 0.71:+.2f}%"
    assert ts["V vs teach"] == f"{100 * (0.341 - 0.321) / 0.321:+.2f}%"
    assert table["Baseline"]["A vs base"] == "—" and table["Teachers' MC ensemble"]["A vs teach"] == "—"


def test_table1_marks_exactly_where_the_p_values_say(run: Path) -> None:
    table = _table1((run / "report.md").read_text(encoding="utf-8"))
    checked = 0
    for key in ("baseline", "teachers", "ts_test", "ts_pseudo", "ts_top75"):
        for attribute in ATTRIBUTES:
            cell = table[LABELS[key]][attribute.capitalize()]
            if key != "baseline":
                assert ("†" in cell) == (_p(SETS[key], SETS["baseline"]) <= 0.01), (key, attribute, cell)
            if key != "teachers":
                assert ("‡" in cell) == (_p(SETS[key], SETS["teachers"]) <= 0.01), (key, attribute, cell)
            checked += 1
    assert checked == 15
    # The data were built so that these hold; the loop above must not pass vacuously.
    assert "†" in table["T-S (test)"]["Arousal"] and "‡" in table["T-S (test)"]["Arousal"]
    assert "†" not in table["T-S (pseudo-label)"]["Arousal"]
    assert "†" not in table["Baseline"]["Arousal"]


def test_missing_setting_is_a_not_run_row(run: Path) -> None:
    table = _table1((run / "report.md").read_text(encoding="utf-8"))
    row = table["T-S (unlabeled) (not run: no unlabeled split)"]
    assert row["Arousal"] == row["V vs base"] == "—"
    assert row["A paper"] == "0.7322"


def test_missing_setting_reason_from_meta_and_partial_attributes(tmp_path: Path) -> None:
    results = _results({k: v for k, v in SETS.items() if k != "ts_top75"})
    results = results[~((results["setting"] == "ts_pseudo") & (results["attribute"] == "valence"))]
    write_report(tmp_path, results, meta={"not_run": {"ts_top75": "not run: skipped by --quick"}})
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    table = _table1(text)
    assert "T-S (top 75%) (not run: skipped by --quick)" in table
    assert table["T-S (pseudo-label)"]["Valence"] == "—"
    assert table["T-S (pseudo-label)"]["Arousal"].startswith("0.7233")
    assert not (tmp_path / "figures" / "alpha_beta.png").exists()  # no grid given: no heat map
    assert "## The α/β grid" not in text and "## Figure 2" not in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["not_run"]["ts_top75"] == "not run: skipped by --quick"
    assert summary["not_run"]["ts_unlabeled"] == "not run: no unlabeled split"


def test_table1_markdown_for_the_cli() -> None:
    text = table1_markdown(_results())
    assert "| T-S (test) " in text and "0.7410 ± 0.0110 †‡" in text
    assert "† significantly better than the baseline" in text
    assert "##" not in text  # just the table and its legend
    n = _results()["trial"].nunique()
    assert f"over {n} trials" in text
    assert f"over {n} runs (folds x trials)" in table1_markdown(_results(), cross_validation=True)  # as report.md


# ---------------------------------------------------------------------------------------
# Table 2


def test_table2_rows_and_full_model_mark(run: Path) -> None:
    rows = _md_table((run / "report.md").read_text(encoding="utf-8"), "A", "## Table 2")
    assert [(r["A"], r["B"], r["C"]) for r in rows] == [
        ("yes", "yes", "5"), ("no", "yes", "5"), ("yes", "no", "5"),
        ("yes", "yes", "1"), ("no", "yes", "1"), ("yes", "no", "1")]
    assert rows[0]["Arousal"] == "0.7410 ± 0.0110"  # the full model is T-S (test); no mark:
    assert _p(TS, SETS["abl_u0_mc1_n5"]) > 0.01   # ... it does not beat "no unlabelled data"
    assert rows[1]["Valence"].startswith(f"{(TS - [0.005, 0.002, 0.008]).mean() - 0.4:.4f}")
    assert rows[5]["D paper"] == "0.6198"


def test_table2_marks_the_full_model_when_it_beats_every_row(tmp_path: Path) -> None:
    sets = {k: v for k, v in SETS.items() if k != "abl_u0_mc1_n5"}
    sets["abl_u1_mc1_n5"] = sets.pop("ts_test")  # written under the ablation key only
    write_report(tmp_path, _results(sets))
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    rows = _md_table(text, "A", "## Table 2")
    assert rows[0]["Arousal"] == r"0.7410 ± 0.0110 \*"
    assert rows[1]["Arousal"] == "not run"
    assert _table1(text)["T-S (test)"]["Arousal"].startswith("0.7410 ± 0.0110")  # the alias


# ---------------------------------------------------------------------------------------
# JSON and CSV


def test_summary_json_values(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trials"] == 3 and summary["alpha"] == 0.01
    entry = summary["settings"]["ts_test"]["attributes"]["valence"]
    assert entry["mean"] == pytest.approx(0.341) and entry["std"] == pytest.approx(0.011)
    assert entry["paper"] == 0.3230 and entry["n"] == 3
    assert entry["vs_baseline"]["p"] == pytest.approx(_p(TS, BASE), rel=1e-8)
    assert entry["vs_baseline"]["significant"] is True
    pseudo = summary["settings"]["ts_pseudo"]["attributes"]["arousal"]["vs_baseline"]
    assert pseudo["significant"] is False and pseudo["p"] == pytest.approx(_p(SETS["ts_pseudo"], BASE))
    ablation = summary["settings"]["abl_u0_mc1_n5"]
    assert ablation["ablation"] == {"unlabelled": False, "mc_dropout": True, "n": 5}
    assert ablation["attributes"]["arousal"]["full_model_vs_this"]["significant"] is False
    assert "vs_baseline" not in summary["settings"]["baseline"]["attributes"]["arousal"]
    assert summary["alpha_beta"]["valence"]["alpha"] == 0.7 and summary["alpha_beta"]["valence"]["beta"] == 0.3
    assert summary["consistency"]["arousal"]["teachers_n"] == 300
    assert "ts_unlabeled" in summary["not_run"] and "ts_unlabeled" not in summary["settings"]


def test_summary_json_is_strict_json(run: Path) -> None:
    def refuse(value: str) -> None:
        raise AssertionError(f"non-standard JSON constant {value}")

    json.loads((run / "summary.json").read_text(), parse_constant=refuse)
    json.loads((run / "results.json").read_text(), parse_constant=refuse)


def test_results_files_round_trip(run: Path) -> None:
    expected = _results().sort_values(["trial", "setting", "attribute"]).reset_index(drop=True)

    def normal(table: pd.DataFrame) -> pd.DataFrame:  # the files hold the results as given
        return table.sort_values(["trial", "setting", "attribute"]).reset_index(drop=True)

    data = json.loads((run / "results.json").read_text())
    assert data["trials"] == [0, 1, 2]
    assert data["settings"]["ts_test"]["ccc"]["arousal"] == pytest.approx(list(TS))
    pd.testing.assert_frame_equal(normal(results_from_json(data)), expected)
    pd.testing.assert_frame_equal(normal(read_results(run)), expected)
    pd.testing.assert_frame_equal(normal(read_results(run / "results.json")), expected)


# ---------------------------------------------------------------------------------------
# Grid, consistency and what held


def test_grid_table_gives_the_chosen_values(run: Path) -> None:
    rows = {r["Attribute"]: r for r in _md_table((run / "report.md").read_text(encoding="utf-8"), "Attribute", "## The α/β grid")}
    assert (rows["arousal"]["α"], rows["arousal"]["β"]) == ("0.3", "0.7")
    assert (rows["dominance"]["α"], rows["dominance"]["β"]) == ("0.5", "0.5")
    assert rows["valence"]["each trial's best"] == "α 0.7, β 0.3 ×3"


def test_consistency_shapes_agree() -> None:
    data = _consistency()
    long = consistency_table(data)
    by_who = consistency_table({who: np.column_stack([data[a][who] for a in ATTRIBUTES]) for who in ("teachers", "students")})
    pd.testing.assert_frame_equal(long.sort_values(["attribute", "who", "std"]).reset_index(drop=True),
                                  by_who.sort_values(["attribute", "who", "std"]).reset_index(drop=True))
    with pytest.raises(ResultsError, match="teachers' or 'students'"):
        consistency_table(long.assign(who="pupils"))


def test_what_held_is_computed_from_the_numbers(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    verdicts = {(f["claim"], f["attribute"]): f["verdict"] for f in summary["findings"]}
    assert verdicts[("Students above the baseline", "arousal")] == HELD
    assert verdicts[("Students above the teachers' ensemble", "valence")] == HELD
    assert verdicts[("Students more consistent than teachers", "arousal")] == HELD
    assert verdicts[("Students more consistent than teachers", "dominance")] == NOT_HELD
    # Best in the mean, but not significantly better than "no unlabelled data".
    assert verdicts[("Full model best in the ablation", "arousal")] == MEAN_ONLY
    text = (run / "report.md").read_text(encoding="utf-8")
    assert "### Students more consistent than teachers: held for 2 of 3 attributes" in text
    assert "- Arousal: held. T-S (test) 0.7410 vs Baseline 0.7100 (+4.37%;" in text


def test_what_held_when_students_lose_and_a_setting_is_missing(tmp_path: Path) -> None:
    sets = dict(SETS, ts_test=BASE - [0.01, 0.02, 0.015])
    del sets["teachers"]
    write_report(tmp_path, _results({k: v for k, v in sets.items() if not k.startswith("abl_")}))
    summary = json.loads((tmp_path / "summary.json").read_text())
    verdicts = {(f["claim"], f["attribute"]): f["verdict"] for f in summary["findings"]}
    assert verdicts[("Students above the baseline", "valence")] == NOT_HELD
    assert verdicts[("Students above the teachers' ensemble", "valence")] == NOT_TESTED
    assert verdicts[("Full model best in the ablation", "valence")] == NOT_TESTED
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Not run: the results hold no ablation rows" in text
    assert "T-S (test) 0.6950 vs Baseline 0.7100 (-2.11%;" in text


def test_one_trial_still_gives_a_report(tmp_path: Path) -> None:
    write_report(tmp_path, _results({k: v[:1] for k, v in SETS.items()}))
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert _table1(text)["T-S (test)"]["Arousal"] == "0.7300"  # no std, no marks
    assert "needs at least 2 paired trials; got 1" in text


def test_bad_inputs_raise_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"lacks column\(s\) \['ccc'\]"):
        write_report(tmp_path / "a", _results().drop(columns="ccc"))
    with pytest.raises(ResultsError, match=r"grid lacks column\(s\) \['dev_ccc'\]"):
        write_report(tmp_path / "b", _results(), grid=_grid().drop(columns="dev_ccc"))
    with pytest.raises(ResultsError, match="Consistency"):
        write_report(tmp_path / "c", _results(), consistency=[0.1, 0.2])
    assert list(tmp_path.iterdir()) == []
