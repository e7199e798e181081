"""An experiment's results analysed once: summaries and every paired test the report shows.

:func:`analyse` turns the long results table into an :class:`Analysis`, which the report
(:mod:`serdistill.study.report`) and the findings (:mod:`serdistill.study.findings`) both read; it lives
here so that neither has to import the other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import pandas as pd

from serdistill.data.manifest import ATTRIBUTES
from serdistill.study.results import ResultsError, validate_results
from serdistill.study.settings import BASELINE, FULL_MODEL, RIDGE, SVR, TEACHERS, resolve_aliases, table_settings
from serdistill.study.stats import compare, compare_to_others, summarise


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Everything the report shows, computed once from a results table."""

    table: pd.DataFrame
    summary: pd.DataFrame
    vs_baseline: pd.DataFrame | None
    vs_teachers: pd.DataFrame | None
    vs_full: pd.DataFrame | None
    alpha: float
    not_run: dict[str, str]
    vs_ridge: pd.DataFrame | None = None
    vs_svr: pd.DataFrame | None = None
    cross_validation: bool = False  # runs are folds x trials: the legends say "runs", not "trials"

    def against(self, reference: str) -> pd.DataFrame | None:
        """The tests of every setting against ``reference`` (baseline, teachers, ridge, svr)."""
        return {BASELINE: self.vs_baseline, TEACHERS: self.vs_teachers, RIDGE: self.vs_ridge, SVR: self.vs_svr}.get(
            reference
        )

    @property
    def trials(self) -> list[int]:
        return sorted(int(t) for t in self.table["trial"].unique())

    @property
    def attributes(self) -> list[str]:
        present = set(self.table["attribute"])
        return [a for a in ATTRIBUTES if a in present]

    def has(self, setting: str, attribute: str | None = None) -> bool:
        if attribute is None:
            return setting in self.summary.index.get_level_values("setting")
        return (setting, attribute) in self.summary.index

    def mean(self, setting: str, attribute: str) -> float:
        return float(self.summary.loc[(setting, attribute), "mean"]) if self.has(setting, attribute) else math.nan


def analyse(results: pd.DataFrame, *, alpha: float = 0.01, not_run: Mapping[str, str] | None = None) -> Analysis:
    """Validate ``results``, fill aliases and run every test the report shows.

    Args:
        results: long results table (``trial, setting, attribute, ccc``).
        alpha: significance level of the one-tailed paired t-tests.
        not_run: setting -> why it has no results (overrides the settings' defaults).
    """
    table = resolve_aliases(validate_results(results))
    if table.empty:
        raise ResultsError("The results table is empty; expected one row per (trial, setting, attribute).")
    present = set(table["setting"])
    reasons = {s.key: s.missing for s in table_settings(1) + table_settings(2) if s.key not in present}
    reasons.update({k: v for k, v in (not_run or {}).items() if k not in present})
    return Analysis(
        table=table,
        summary=summarise(table),
        vs_baseline=compare(table, reference=BASELINE, alpha=alpha) if BASELINE in present else None,
        vs_teachers=compare(table, reference=TEACHERS, alpha=alpha) if TEACHERS in present else None,
        vs_full=_ablation_tests(table, alpha) if FULL_MODEL in present else None,
        alpha=alpha,
        not_run=reasons,
        vs_ridge=compare(table, reference=RIDGE, alpha=alpha) if RIDGE in present else None,
        vs_svr=compare(table, reference=SVR, alpha=alpha) if SVR in present else None,
    )


def _ablation_tests(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    others = [s.key for s in table_settings(2) if s.key != FULL_MODEL]
    return compare_to_others(table, best=FULL_MODEL, others=others, alpha=alpha)
