"""An experiment's output tables: checked, and written and read back as CSV and JSON.

The results table is long, one row per (trial, setting, attribute), with columns ``trial``
(int), ``setting`` (str, a key of :mod:`serdistill.study.settings`), ``attribute``
(arousal|valence|dominance) and ``ccc`` (float). :func:`write_results` writes it as
``results.csv`` (these four columns, sorted) and ``results.json``, shaped by setting::

    {"schema": "serdistill-results/1",
     "attributes": ["arousal", "valence", "dominance"],
     "trials": [0, 1, 2],
     "settings": {"baseline": {"label": "Baseline", "table": 1,
                               "ccc": {"arousal": [0.70, 0.71, null], ...}}, ...}}

Each ``ccc`` list is aligned with ``trials``; ``null`` where that trial lacks the value.
:func:`read_results` reads either file back into the long table.

The α/β grid is long too (``trial, attribute, alpha, beta, dev_ccc``), and the consistency
data of Figure 2 (``attribute, who, std``) can come in several shapes
(:func:`consistency_table`).

Examples:
    >>> table = pd.DataFrame({"trial": [0, 1], "setting": "baseline",
    ...                       "attribute": "arousal", "ccc": [0.6, float("nan")]})
    >>> results_to_json(table)["settings"]["baseline"]["ccc"]
    {'arousal': [0.6, None]}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serdistill.base.errors import ResultsError
from serdistill.base.io import write_json, write_text
from serdistill.data.manifest import ATTRIBUTES
from serdistill.study.settings import get_setting, order_settings

RESULT_COLUMNS: tuple[str, ...] = ("trial", "setting", "attribute", "ccc")
RESULTS_SCHEMA = "serdistill-results/1"


def validate_results(results: pd.DataFrame) -> pd.DataFrame:
    """A clean copy of a long results table, its columns typed; bad tables raise.

    Raises:
        ResultsError: a column is missing, an attribute unknown, a CCC not a number, or a
            (trial, setting, attribute) given twice.
    """
    if not isinstance(results, pd.DataFrame):
        raise ResultsError(f"Results must be a pandas DataFrame; got {type(results).__name__}.")
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ResultsError(
            f"The results table lacks column(s) {missing}; got {list(results.columns)}; "
            f"expected one row per (trial, setting, attribute) with columns {list(RESULT_COLUMNS)}."
        )
    table = results[list(RESULT_COLUMNS)].copy()
    table["setting"] = table["setting"].astype(str)
    table["attribute"] = table["attribute"].astype(str)
    unknown = sorted(set(table["attribute"]) - set(ATTRIBUTES))
    if unknown:
        raise ResultsError(f"Unknown attribute(s) {unknown} in the results; expected some of {list(ATTRIBUTES)}.")
    try:
        table["trial"] = table["trial"].astype(np.int64)
        table["ccc"] = pd.to_numeric(table["ccc"], errors="raise").astype(np.float64)
    except (ValueError, TypeError) as err:
        raise ResultsError(f"Results need integer trials and numeric CCC values ({err}).") from err
    twice = table.duplicated(["trial", "setting", "attribute"], keep=False)
    if twice.any():
        rows = table.loc[twice, ["trial", "setting", "attribute"]].drop_duplicates().head(5)
        raise ResultsError(
            f"The results hold {int(twice.sum())} rows for the same (trial, setting, attribute), "
            f"e.g. {rows.to_dict('records')}; expected one each: drop the repeats."
        )
    return table


def attributes_in(results: pd.DataFrame) -> list[str]:
    """The attributes present in ``results``, in the order of ATTRIBUTES."""
    present = set(results["attribute"])
    return [a for a in ATTRIBUTES if a in present]


GRID_COLUMNS: tuple[str, ...] = ("attribute", "alpha", "beta", "dev_ccc")


def validate_grid(grid: pd.DataFrame) -> pd.DataFrame:
    """A clean copy of a long α/β grid table (``trial`` optional: one trial 0 if absent).

    Raises:
        ResultsError: a column is missing or holds non-numbers.
    """
    missing = [c for c in GRID_COLUMNS if c not in grid.columns]
    if missing:
        raise ResultsError(
            f"The alpha/beta grid lacks column(s) {missing}; got {list(grid.columns)}; "
            f"expected {['trial', *GRID_COLUMNS]}, one row per trial, attribute and grid point."
        )
    table = grid[[c for c in ("trial", *GRID_COLUMNS) if c in grid.columns]].copy()
    if "trial" not in table.columns:
        table.insert(0, "trial", 0)
    try:
        for column in ("alpha", "beta", "dev_ccc"):
            table[column] = pd.to_numeric(table[column], errors="raise").astype(np.float64)
    except (ValueError, TypeError) as err:
        raise ResultsError(f"The alpha/beta grid needs numeric alpha, beta and dev_ccc ({err}).") from err
    table["attribute"] = table["attribute"].astype(str)
    return table


def consistency_table(consistency: Any) -> pd.DataFrame:
    """Figure 2's data as a long table with columns ``attribute``, ``who``, ``std``.

    Accepts that table itself, ``{attribute: {"teachers": stds, "students": stds}}``, or
    ``{"teachers": ..., "students": ...}`` holding ``{attribute: stds}`` or an array of shape
    (segments, 3) with columns arousal, valence, dominance.

    Raises:
        ResultsError: any other shape, or ``who`` other than teachers|students.
    """
    if isinstance(consistency, pd.DataFrame):
        missing = {"attribute", "who", "std"} - set(consistency.columns)
        if missing:
            raise ResultsError(
                f"Consistency table lacks column(s) {sorted(missing)}; expected attribute, who (teachers|students), std."
            )
        table = consistency[["attribute", "who", "std"]].astype({"attribute": str, "who": str, "std": float})
    elif isinstance(consistency, Mapping):
        table = pd.DataFrame(list(_consistency_rows(consistency)), columns=["attribute", "who", "std"])
    else:
        raise ResultsError(f"Consistency data must be a DataFrame or a mapping; got {type(consistency).__name__}.")
    bad = sorted(set(table["who"]) - {"teachers", "students"})
    if bad:
        raise ResultsError(f"Consistency 'who' must be 'teachers' or 'students'; got {bad}.")
    order = {a: i for i, a in enumerate(ATTRIBUTES)}
    return table.sort_values("attribute", key=lambda s: s.map(order).fillna(99), kind="stable").reset_index(drop=True)


def _consistency_rows(data: Mapping[str, Any]):
    for outer, inner in data.items():
        if outer in ("teachers", "students"):
            if not isinstance(inner, Mapping):
                values = np.asarray(inner, dtype=np.float64)
                if values.ndim != 2 or values.shape[1] != len(ATTRIBUTES):
                    raise ResultsError(
                        f"Consistency {outer!r} as an array must have shape "
                        f"(segments, {len(ATTRIBUTES)}); got {values.shape}."
                    )
                inner = {a: values[:, i] for i, a in enumerate(ATTRIBUTES)}
            for attribute, stds in inner.items():
                yield from ((attribute, outer, float(s)) for s in np.ravel(stds))
        elif isinstance(inner, Mapping):
            for who, stds in inner.items():
                yield from ((outer, who, float(s)) for s in np.ravel(stds))
        else:
            raise ResultsError(f"Consistency key {outer!r} must map to teachers/students std arrays.")


def results_to_json(results: pd.DataFrame) -> dict[str, Any]:
    """The results table in the ``results.json`` shape (see the module docstring)."""
    table = validate_results(results)
    trials = sorted(int(t) for t in table["trial"].unique())
    attributes = [a for a in ATTRIBUTES if a in set(table["attribute"])]
    settings = {}
    for key in order_settings(table["setting"]):
        rows = table[table["setting"] == key]
        ccc = {}
        for attribute in attributes:
            by_trial = rows[rows["attribute"] == attribute].set_index("trial")["ccc"]
            ccc[attribute] = [_finite(by_trial.get(t, math.nan)) for t in trials]
        settings[key] = {"label": get_setting(key).label, "table": get_setting(key).table, "ccc": ccc}
    return {"schema": RESULTS_SCHEMA, "attributes": attributes, "trials": trials, "settings": settings}


def results_from_json(data: Mapping[str, Any]) -> pd.DataFrame:
    """The long results table back from :func:`results_to_json`'s shape."""
    if data.get("schema") != RESULTS_SCHEMA:
        raise ResultsError(f"Expected results JSON with schema {RESULTS_SCHEMA!r}; got {data.get('schema')!r}.")
    rows = [
        (trial, key, attribute, value)
        for key, entry in data["settings"].items()
        for attribute, values in entry["ccc"].items()
        for trial, value in zip(data["trials"], values)
        if value is not None
    ]
    return validate_results(pd.DataFrame(rows, columns=["trial", "setting", "attribute", "ccc"]))


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and ±inf become None; numpy scalars plain Python values."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(run_dir: str | os.PathLike[str], results: pd.DataFrame) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` into ``run_dir`` atomically; return their paths."""
    table = validate_results(results).sort_values(["trial", "setting", "attribute"], kind="stable")
    run_dir = Path(run_dir)
    write_text(run_dir / "results.csv", table.to_csv(index=False))
    write_json(run_dir / "results.json", results_to_json(table))
    return run_dir / "results.csv", run_dir / "results.json"


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The long results table from ``results.csv``, ``results.json`` or a run folder holding them.

    Raises:
        ResultsError: no such file, or it is not a results table.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv" if (path / "results.csv").exists() else path / "results.json"
    if not path.is_file():
        raise ResultsError(
            f"No results file at {path}; expected results.csv or results.json "
            f"written by an experiment (or pass the run folder)."
        )
    if path.suffix == ".json":
        import json

        try:
            return results_from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:
            raise ResultsError(f"{path} is not a results JSON ({err}).") from err
    return validate_results(pd.read_csv(path))
