"""An experiment's report: Table 1, Table 2, significance, figures and what held, as MD and HTML.

:func:`write_report` turns a long results table (one row per trial, setting and attribute:
``trial, setting, attribute, ccc``; see :mod:`serdistill.study.results`) into these files in a run
folder, each written atomically, ``report.md`` last:

* ``report.md`` and ``report.html`` (self-contained: figures embedded) with a header,
  Table 1 and Table 2 in the paper's form (ours next to the paper's), the t-tests in detail,
  the α/β grid, Figure 2, a chart of CCC per setting, and "What held", computed from the
  numbers;
* ``figures/ccc_per_setting.png``, ``figures/alpha_beta.png`` (with a grid),
  ``figures/consistency.png`` (Figure 2, with consistency data);
* ``results.csv`` and ``results.json``: the per-trial CCC of every setting
  (:func:`serdistill.study.results.write_results`, which documents the JSON's shape);
* ``summary.json``: per setting and attribute the mean, std, n, the paper's value, the
  tests against the baseline, the teachers and (Table 2 rows) the full model, plus the α/β
  choices, the consistency medians and the findings; NaN is written as ``null``.

Marks, all at p ≤ alpha (paired one-tailed t-tests over trials): † significantly better
than the baseline, ‡ than the teachers' ensemble (Table 1); ``*`` the full model
significantly better than every other row run (Table 2).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from serdistill.base.io import installed_versions, jsonable, write_json, write_text
from serdistill.study.analysis import Analysis, analyse
from serdistill.study.findings import Finding, findings, findings_blocks
from serdistill.study.render import Block, Table, fmt_ccc, fmt_p, fmt_pct, fmt_pm, fmt_t, to_html, to_markdown
from serdistill.study.results import consistency_table, validate_grid, write_results
from serdistill.study.settings import (
    BASELINE,
    FULL_MODEL,
    REFERENCES,
    STUDENTS,
    TEACHERS,
    get_setting,
    order_settings,
    table_settings,
)
from serdistill.study.stats import chosen_alpha_beta, consistency_medians, grid_means

MARK_BASELINE, MARK_TEACHERS, MARK_FULL = "†", "‡", "*"
SUMMARY_SCHEMA = "serdistill-summary/1"
_VERSIONED = ("scipy", "pandas", "matplotlib")  # beside installed_versions' own


def _test(frame: pd.DataFrame | None, setting: str, attribute: str) -> pd.Series | None:
    if frame is None or (setting, attribute) not in frame.index:
        return None
    return frame.loc[(setting, attribute)]


def _significant(frame: pd.DataFrame | None, setting: str, attribute: str) -> bool:
    test = _test(frame, setting, attribute)
    return bool(test is not None and test["significant"])


# ---------------------------------------------------------------------------------------
# Table 1 and Table 2


def table1(analysis: Analysis) -> Table:
    """Table 1: settings × attributes, ours (mean ± std, marks), the paper's, improvements."""
    header, html_header, groups = ["Setting"], ["Setting"], [("", 1)]
    for attribute in analysis.attributes:
        initial = attribute[0].upper()
        header += [attribute.capitalize(), f"{initial} paper", f"{initial} vs base", f"{initial} vs teach"]
        html_header += ["ours", "paper", "vs baseline", "vs teachers"]
        groups.append((attribute.capitalize(), 4))
    keys = [s.key for s in table_settings(1)]
    keys += [k for k in order_settings(analysis.table["setting"]) if get_setting(k).table == 0]
    rows = [_table1_row(analysis, key) for key in keys]
    return Table(header, rows, html_header=html_header, groups=groups)


def _table1_row(analysis: Analysis, key: str) -> list[str]:
    setting = get_setting(key)
    label = setting.label if analysis.has(key) else f"{setting.label} ({analysis.not_run.get(key, 'not run')})"
    row = [label]
    for attribute in analysis.attributes:
        paper = fmt_ccc(setting.paper_ccc(attribute))
        if not analysis.has(key, attribute):
            row += ["—", paper, "—", "—"]
            continue
        marks = (MARK_BASELINE if _significant(analysis.vs_baseline, key, attribute) else "") + (
            MARK_TEACHERS if _significant(analysis.vs_teachers, key, attribute) else ""
        )
        stats = analysis.summary.loc[(key, attribute)]
        row += [
            f"{fmt_pm(stats['mean'], stats['std'])} {marks}".rstrip(),
            paper,
            _rel(analysis.vs_baseline, key, attribute, BASELINE),
            _rel(analysis.vs_teachers, key, attribute, TEACHERS),
        ]
    return row


def _rel(frame: pd.DataFrame | None, key: str, attribute: str, reference: str) -> str:
    test = _test(frame, key, attribute)
    return "—" if test is None or key == reference else fmt_pct(test["rel_improvement"])


def _runs(analysis: Analysis) -> str:
    """'N trials', or, for cross-validation (runs are folds x trials), 'N runs (folds x trials)'."""
    n = len(analysis.trials)
    return f"{n} runs (folds x trials)" if analysis.cross_validation else f"{n} trials"


def table1_legend(analysis: Analysis) -> str:
    """The sentence under Table 1 that explains its numbers and marks."""
    return (
        f"Mean ± std (sample std) of the test CCC over {_runs(analysis)}; "
        f"'paper': Sridhar & Busso (2020), Table 1. 'vs base' / 'vs teach': relative improvement "
        f"of the means, (ours − ref) / ref. {MARK_BASELINE} significantly better than the baseline, "
        f"{MARK_TEACHERS} significantly better than the teachers' MC ensemble: paired one-tailed "
        f"t-test over trials, p ≤ {analysis.alpha:g}."
    )


def table1_markdown(
    results: pd.DataFrame,
    *,
    alpha: float = 0.01,
    not_run: Mapping[str, str] | None = None,
    cross_validation: bool = False,
) -> str:
    """Table 1 as a Markdown table with its legend, for a terminal or a README
    (``cross_validation``: the runs are folds x trials, as in report.md's legend).

    Examples:
        >>> from serdistill.data.manifest import ATTRIBUTES
        >>> rows = [(t, s, a, 0.5 + 0.01 * t + (0.05 if s == "ts_test" else 0))
        ...         for t in range(3) for s in ("baseline", "teachers", "ts_test") for a in ATTRIBUTES]
        >>> text = table1_markdown(pd.DataFrame(rows, columns=["trial", "setting", "attribute", "ccc"]))
        >>> "0.5600 ± 0.0100" in text
        True
    """
    analysis = dataclasses.replace(analyse(results, alpha=alpha, not_run=not_run), cross_validation=cross_validation)
    return to_markdown([Block("table", table1(analysis)), Block("p", table1_legend(analysis))])


def table2(analysis: Analysis) -> Table:
    """Table 2 (ablation): A, B, C, then ours (mean ± std) and the paper's per attribute."""
    header, html_header, groups = ["A", "B", "C"], ["A", "B", "C"], [("", 3)]
    for attribute in analysis.attributes:
        header += [attribute.capitalize(), f"{attribute[0].upper()} paper"]
        html_header += ["ours", "paper"]
        groups.append((attribute.capitalize(), 2))
    rows = []
    for setting in table_settings(2):
        unlabelled, mc, n = setting.ablation or (False, False, 0)
        row = ["yes" if unlabelled else "no", "yes" if mc else "no", str(n)]
        for attribute in analysis.attributes:
            ours = _table2_cell(analysis, setting.key, attribute)
            row += [ours, fmt_ccc(setting.paper_ccc(attribute))]
        rows.append(row)
    return Table(header, rows, html_header=html_header, groups=groups)


def _table2_cell(analysis: Analysis, key: str, attribute: str) -> str:
    if not analysis.has(key, attribute):
        return analysis.not_run.get(key, "not run")
    stats = analysis.summary.loc[(key, attribute)]
    cell = fmt_pm(stats["mean"], stats["std"])
    return f"{cell} {MARK_FULL}" if key == FULL_MODEL and full_model_beats_all(analysis, attribute) else cell


def full_model_beats_all(analysis: Analysis, attribute: str) -> bool:
    """Whether the full model is significantly better than every other Table 2 row run."""
    if analysis.vs_full is None:
        return False
    tests = (
        analysis.vs_full.xs(attribute, level="attribute")
        if attribute in set(analysis.vs_full.index.get_level_values("attribute"))
        else None
    )
    return bool(tests is not None and len(tests) and tests["significant"].all())


def table2_legend(analysis: Analysis) -> str:
    return (
        f"A: unlabelled data, B: MC dropout, C: number of teachers and students. Mean ± std over "
        f"{_runs(analysis)}; 'paper': Sridhar & Busso (2020), Table 2. {MARK_FULL} the "
        f"full model (first row, the same model as T-S (test)) is significantly better than every "
        f"other row run (paired one-tailed t-test, p ≤ {analysis.alpha:g})."
    )


def significance_table(analysis: Analysis) -> Table:
    """Table 1's tests in detail: each setting against the baseline and the teachers."""
    header = [
        "Setting",
        "Attribute",
        "n",
        "vs base Δ",
        "vs base t",
        "vs base p",
        "vs teach Δ",
        "vs teach t",
        "vs teach p",
        "note",
    ]
    rows = []
    for key, attribute in analysis.summary.index:
        if get_setting(key).table == 2:
            continue
        row = [get_setting(key).label, attribute, str(int(analysis.summary.loc[(key, attribute), "n"]))]
        notes = []
        for frame, mark in ((analysis.vs_baseline, MARK_BASELINE), (analysis.vs_teachers, MARK_TEACHERS)):
            test = _test(frame, key, attribute)
            if test is None or test["note"] == "reference":
                row += ["—", "—", "—"]
                continue
            row += [
                fmt_pct(test["rel_improvement"]),
                fmt_t(test["t"]),
                fmt_p(test["p"]) + (f" {mark}" if test["significant"] else ""),
            ]
            notes += [test["note"]] if test["note"] else []
        rows.append(row + ["; ".join(dict.fromkeys(notes))])
    return Table(header, rows)


def ablation_significance_table(analysis: Analysis) -> Table:
    """Table 2's tests in detail: the full model against each other row (H1: full is better)."""
    header = ["Row (A, B, C)", "Attribute", "row mean", "full mean", "full vs row Δ", "t", "p", "note"]
    rows = []
    frame = analysis.vs_full if analysis.vs_full is not None else pd.DataFrame()
    for (key, attribute), test in frame.iterrows():
        unlabelled, mc, n = get_setting(key).ablation or (False, False, 0)
        name = f"{'yes' if unlabelled else 'no'}, {'yes' if mc else 'no'}, {n}"
        rows.append(
            [
                name,
                attribute,
                fmt_ccc(test["mean"]),
                fmt_ccc(test["best_mean"]),
                fmt_pct(test["rel_improvement"]),
                fmt_t(test["t"]),
                fmt_p(test["p"]) + (" (significant)" if test["significant"] else ""),
                test["note"],
            ]
        )
    return Table(header, rows)


# ---------------------------------------------------------------------------------------
# Inputs besides the results


def flatten_config(config: Any) -> dict[str, Any]:
    """A config (Mapping, object with ``to_dict()`` or dataclass) as dotted key -> value."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    out: dict[str, Any] = {}
    for key, value in dict(config).items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in flatten_config(value).items()})
        else:
            out[str(key)] = value
    return out


def _alpha_from(config: Any) -> float:
    value = flatten_config(config).get("protocol.significance")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.01


# ---------------------------------------------------------------------------------------
# JSON


def summary_json(
    analysis: Analysis,
    *,
    grid: pd.DataFrame | None = None,
    consistency: pd.DataFrame | None = None,
    findings: list | None = None,
) -> dict[str, Any]:
    """Means, std, paper values, tests, α/β choices, consistency medians and findings."""
    settings = {}
    for key in order_settings(analysis.table["setting"]):
        setting = get_setting(key)
        per_attribute = {}
        for attribute in analysis.attributes:
            if not analysis.has(key, attribute):
                continue
            stats = analysis.summary.loc[(key, attribute)]
            entry = {"n": int(stats["n"]), "mean": stats["mean"], "std": stats["std"], "paper": setting.paper_ccc(attribute)}
            for name, frame in (
                ("vs_baseline", analysis.vs_baseline),
                ("vs_teachers", analysis.vs_teachers),
                ("full_model_vs_this", analysis.vs_full),
            ):
                test = _test(frame, key, attribute)
                if test is not None and test["note"] != "reference":
                    entry[name] = {k: test[k] for k in ("rel_improvement", "n_paired", "t", "p", "significant", "note")}
            per_attribute[attribute] = entry
        ablation = None if setting.ablation is None else dict(zip(("unlabelled", "mc_dropout", "n"), setting.ablation))
        settings[key] = {"label": setting.label, "table": setting.table, "ablation": ablation, "attributes": per_attribute}
    out = {
        "schema": SUMMARY_SCHEMA,
        "alpha": analysis.alpha,
        "n_trials": len(analysis.trials),
        "trials": analysis.trials,
        "attributes": analysis.attributes,
        "settings": settings,
        "not_run": analysis.not_run,
    }
    if grid is not None:
        out["alpha_beta"] = chosen_alpha_beta(grid).to_dict(orient="index")
    if consistency is not None:
        out["consistency"] = consistency_medians(consistency)
    out["findings"] = [dataclasses.asdict(f) for f in findings or []]
    return jsonable(out)


# ---------------------------------------------------------------------------------------
# Writing


def write_report(
    run_dir: str | os.PathLike[str],
    results: pd.DataFrame,
    *,
    grid: pd.DataFrame | None = None,
    consistency: Any = None,
    config: Any = None,
    meta: Mapping[str, Any] | None = None,
    alpha: float | None = None,
) -> Path:
    """Write the experiment's report and its data files into ``run_dir``; return ``report.md``.

    Args:
        run_dir: the run folder (created if needed).
        results: long results table ``trial, setting, attribute, ccc``.
        grid: the α/β grid, long: ``trial, attribute, alpha, beta, dev_ccc``.
        consistency: Figure 2's data (see :func:`consistency_table`).
        config: the resolved config (shown in the header; its ``protocol.significance``
            is the default ``alpha``).
        meta: shown in the header: ``corpus``, ``manifest``, ``command``, ``date``,
            ``versions`` (dict; default: the installed ones), ``seeds``, ``not_run``
            (setting -> reason), ``title``; other keys are listed as they are.
        alpha: significance level; default the config's, else 0.01.

    Returns:
        The path of ``report.md``, written last.
    """
    run_dir = Path(run_dir)
    meta = dict(meta or {})
    analysis = analyse(results, alpha=_alpha_from(config) if alpha is None else alpha, not_run=meta.get("not_run"))
    analysis = dataclasses.replace(analysis, cross_validation=bool(meta.get("folds")))
    grid = None if grid is None else validate_grid(grid)  # every input is checked before any write
    consistency_long = None if consistency is None else consistency_table(consistency)
    run_dir.mkdir(parents=True, exist_ok=True)
    blocks, items = build_report(
        run_dir, analysis, grid=grid, consistency=consistency_long, config=flatten_config(config), meta=meta
    )
    write_results(run_dir, results)
    write_json(run_dir / "summary.json", summary_json(analysis, grid=grid, consistency=consistency_long, findings=items))
    write_text(run_dir / "report.html", to_html(blocks, base=run_dir, title=meta.get("title", "serdistill report")))
    write_text(run_dir / "report.md", to_markdown(blocks))
    return run_dir / "report.md"


# ---------------------------------------------------------------------------------------
# The document


def build_report(
    run_dir: Path,
    analysis: Analysis,
    *,
    grid: pd.DataFrame | None,
    consistency: pd.DataFrame | None,
    config: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> tuple[list[Block], list[Finding]]:
    """The report's blocks, drawing its figures into ``run_dir/figures``; and its findings."""
    medians = consistency_medians(consistency) if consistency is not None else None
    items = findings(analysis, medians=medians)
    blocks = _header(analysis, config, meta)
    blocks += [
        Block("h2", "Table 1: the settings compared"),
        Block("table", table1(analysis)),
        Block("legend", table1_legend(analysis)),
        Block("h3", "Tests against the baseline and the teachers"),
        Block("table", significance_table(analysis)),
        Block(
            "legend",
            "Δ: relative improvement of the means; t, p: paired one-tailed t-test over "
            "trials (H1: the setting is better); n: trials.",
        ),
    ]
    blocks += _references_section(analysis)
    blocks += _folds_section(analysis, meta.get("folds"))
    blocks += _failed_section(meta.get("failed"))
    blocks += _table2_section(analysis)
    blocks += [Block("h2", "CCC per setting")]
    blocks += _figure(
        run_dir,
        "ccc_per_setting.png",
        "Mean test CCC per setting, error bars: std over trials",
        "plot_ccc_bars",
        _bar_rows(analysis),
        n_trials=len(analysis.trials),
    )
    if grid is not None:
        blocks += _grid_section(run_dir, grid)
    if consistency is not None:
        blocks += _consistency_section(run_dir, consistency, medians or {})
    blocks += [Block("h2", "What held"), *findings_blocks(items)]
    return blocks, items


def _bar_rows(analysis: Analysis) -> pd.DataFrame:
    """The summary for the bar chart: without the full model's copy of T-S (test) when no
    other ablation row ran (it would be the same bar twice)."""
    if any(analysis.has(s.key) for s in table_settings(2) if s.key != FULL_MODEL):
        return analysis.summary
    return analysis.summary.drop(index=FULL_MODEL, level="setting", errors="ignore")


def _header(analysis: Analysis, config: Mapping[str, Any], meta: Mapping[str, Any]) -> list[Block]:
    date = meta.get("date") or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    trials = analysis.trials
    items = [f"{name.capitalize()}: {meta[name]}" for name in ("corpus", "manifest") if meta.get(name)]
    items += [
        f"Trials: {len(trials)} (ids {', '.join(map(str, trials))})",
        f"Significance: paired one-tailed t-test over trials, p ≤ {analysis.alpha:g}",
        f"Date: {date}",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in dict(meta.get("versions") or installed_versions(*_VERSIONED)).items()),
    ]
    if meta.get("seeds") is not None:
        items.append(f"Seeds: {meta['seeds']}")
    if meta.get("folds"):
        folds = meta["folds"]
        items.append(
            f"Speaker-independent cross-validation: {folds['k']} folds x {folds['trials_per_fold']} trials "
            f"(run u = fold u mod {folds['k']}, trial u div {folds['k']}); "
            "test speakers per fold: "
            + "; ".join(f"{f['fold'] + 1}: {', '.join(map(str, f['test_speakers']))}" for f in folds["folds"])
        )
    known = {"corpus", "manifest", "command", "date", "versions", "seeds", "not_run", "title", "folds", "failed"}
    items += [f"{k}: {v}" for k, v in meta.items() if k not in known]
    blocks = [Block("h1", meta.get("title", "serdistill experiment report")), Block("list", items)]
    if meta.get("command"):
        blocks += [Block("p", "Command:"), Block("code", str(meta["command"]))]
    if config:
        rows = [[k, _config_value(v)] for k, v in config.items()]
        blocks.append(
            Block(
                "details",
                None,
                extra=f"Configuration ({len(rows)} values)",
                children=[Block("table", Table(["key", "value"], rows))],
            )
        )
    return blocks


def _config_value(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def references_table(analysis: Analysis) -> Table:
    """The students (T-S (test)) against every reference run: means, Δ, t and p per attribute."""
    header = ["Reference", "Attribute", "students", "reference", "Δ", "t", "p", "verdict"]
    rows = []
    for reference in REFERENCES:
        frame = analysis.against(reference)
        for attribute in analysis.attributes:
            test = _test(frame, STUDENTS, attribute)
            if test is None or not analysis.has(reference, attribute):
                continue
            new, old = analysis.mean(STUDENTS, attribute), analysis.mean(reference, attribute)
            verdict = (
                ("significantly above" if test["significant"] else "above, not significant")
                if new > old
                else ("equal" if new == old else "below")
            )
            rows.append(
                [
                    get_setting(reference).label,
                    attribute,
                    fmt_ccc(new),
                    fmt_ccc(old),
                    fmt_pct(test["rel_improvement"]),
                    fmt_t(test["t"]),
                    fmt_p(test["p"]),
                    verdict,
                ]
            )
    return Table(header, rows)


def _references_section(analysis: Analysis) -> list[Block]:
    if not analysis.has(STUDENTS):
        return []
    table = references_table(analysis)
    if not table.rows:
        return []
    return [
        Block("h3", "The students against every reference"),
        Block("table", table),
        Block(
            "legend",
            f"Students: {get_setting(STUDENTS).label}. Ridge regression and the linear SVR are "
            "fitted on the same normalised features and split, their regularisation chosen on the "
            "development set; they are not in the paper. Δ: relative improvement of the means; "
            f"t, p: paired one-tailed t-test over runs (H1: the students are better), p ≤ "
            f"{analysis.alpha:g} for 'significantly'.",
        ),
    ]


def folds_table(analysis: Analysis, folds: Mapping[str, Any], attribute: str) -> Table:
    """Mean test CCC per fold (over its trials) of the Table 1 settings run, for one attribute."""
    K = int(folds["k"])
    keys = [s.key for s in table_settings(1) if analysis.has(s.key, attribute)]
    table = analysis.table[(analysis.table["attribute"] == attribute) & analysis.table["setting"].isin(keys)]
    table = table.assign(fold=table["trial"] % K)
    means = table.groupby(["fold", "setting"])["ccc"].mean()
    rows = []
    for f in folds["folds"]:
        if f["fold"] not in means.index.get_level_values("fold"):
            continue
        rows.append(
            [str(f["fold"] + 1), ", ".join(map(str, f["test_speakers"]))]
            + [fmt_ccc(means.get((f["fold"], k), math.nan)) for k in keys]
        )
    return Table(["Fold", "test speakers", *[get_setting(k).label for k in keys]], rows)


def _folds_section(analysis: Analysis, folds: Mapping[str, Any] | None) -> list[Block]:
    if not folds:
        return []
    blocks = [Block("h3", "Per fold")]
    for attribute in analysis.attributes:
        blocks += [Block("p", f"{attribute.capitalize()}:"), Block("table", folds_table(analysis, folds, attribute))]
    return blocks + [
        Block("legend", "Mean test CCC of each fold over its trials. The means and tests above pool every fold x trial run.")
    ]


def _failed_section(failed: list[Mapping[str, Any]] | None) -> list[Block]:
    if failed is None:
        return []
    blocks = [Block("h3", "Failed models")]
    if not failed:
        return blocks + [
            Block(
                "p",
                "None: every teacher and every chosen student (T-S (test)) is within the "
                "margin of its siblings' median development CCC (serdistill.method.health).",
            )
        ]
    rows = [
        [
            str(f["trial"]),
            f["group"],
            f"{f['stage']} {f['member'] + 1}",
            fmt_ccc(math.nan if f["dev_ccc"] is None else f["dev_ccc"]),
            fmt_ccc(f["siblings"]),
            f["reason"],
        ]
        for f in failed
    ]
    return blocks + [
        Block("table", Table(["Run", "Attribute", "Model", "dev CCC", "siblings' median", "reason"], rows)),
        Block(
            "legend",
            "Members whose development CCC is far below their siblings' median "
            "(0.15 CCC, or 30% of the median when that is more).",
        ),
    ]


def _table2_section(analysis: Analysis) -> list[Block]:
    blocks = [Block("h2", "Table 2: ablation")]
    ran = [s for s in table_settings(2) if analysis.has(s.key) and s.key != FULL_MODEL]
    if not ran:
        return blocks + [Block("p", "Not run: the results hold no ablation rows besides the full model.")]
    blocks += [
        Block("table", table2(analysis)),
        Block("legend", table2_legend(analysis)),
        Block("h3", "Tests: the full model against each row"),
        Block("table", ablation_significance_table(analysis)),
    ]
    return blocks


def _grid_section(run_dir: Path, grid: pd.DataFrame) -> list[Block]:
    chosen = chosen_alpha_beta(grid)
    rows = []
    for attribute, row in chosen.iterrows():
        picks = "; ".join(f"α {a:g}, β {b:g} ×{n}" for a, b, n in row["per_trial"])
        rows.append(
            [attribute, f"{row['alpha']:g}", f"{row['beta']:g}", fmt_ccc(row["dev_ccc"]), str(int(row["n_trials"])), picks]
        )
    table = Table(["Attribute", "α", "β", "mean dev CCC", "trials", "each trial's best"], rows)
    blocks = [
        Block("h2", "The α/β grid (development set)"),
        Block("table", table),
        Block(
            "legend",
            "α weighs 1 − CCC, β the MSE between student and teacher embeddings (Eq. 1). "
            "α, β: the grid point with the best development CCC averaged over trials.",
        ),
    ]
    return blocks + _figure(
        run_dir,
        "alpha_beta.png",
        "Mean development CCC over the α × β grid (best outlined)",
        "plot_alpha_beta",
        grid_means(grid),
    )


def _consistency_section(
    run_dir: Path, consistency: pd.DataFrame, medians: Mapping[str, Mapping[str, float]]
) -> list[Block]:
    rows = []
    for attribute, entry in medians.items():
        t, s = entry["teachers_median"], entry["students_median"]
        rows.append(
            [
                attribute,
                fmt_ccc(t),
                fmt_ccc(s),
                f"{s / t:.2f}" if t > 0 else "—",
                str(int(entry["teachers_n"])),
                str(int(entry["students_n"])),
            ]
        )
    table = Table(
        [
            "Attribute",
            "teachers median std",
            "students median std",
            "students / teachers",
            "teacher values",
            "student values",
        ],
        rows,
    )
    blocks = [
        Block("h2", "Figure 2: consistency of the ensembles"),
        Block("table", table),
        Block(
            "legend",
            "Per test segment, the std of the N teachers' predictions (one MC dropout "
            "pass each) and of the N students' predictions.",
        ),
    ]
    return blocks + _figure(
        run_dir, "consistency.png", "Std across teachers vs across students, per attribute", "plot_consistency", consistency
    )


def _figure(run_dir: Path, name: str, caption: str, function: str, data: Any, **kwargs: Any) -> list[Block]:
    """Draw one figure with :mod:`serdistill.study.plots`; a note instead when matplotlib is missing."""
    try:
        from serdistill.study import plots
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        return [Block("p", f"{caption}: not drawn, matplotlib is not installed (pip install 'serdistill[plots]').")]
    getattr(plots, function)(data, run_dir / "figures" / name, **kwargs)
    return [Block("image", f"figures/{name}", extra=caption)]
