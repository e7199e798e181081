"""Statistics over trials: means, relative improvements, paired one-tailed t-tests.

The input is the long results table of :mod:`serdistill.study.results`, one row per (trial,
setting, attribute) with columns ``trial``, ``setting``, ``attribute`` and ``ccc``.
Significance follows the paper: a paired one-tailed t-test over trials, H1: mean(new − ref)
> 0, significant at p ≤ 0.01. Trials are paired by their ``trial`` id;
a trial that one of the two settings lacks is left out of that test.

Decided for degenerate inputs (scipy gives NaN or ±inf there):

* fewer than 2 finite pairs: t = p = NaN, with the reason (a warning, or the ``note``
  column of :func:`compare`);
* no difference in any trial (every \\|new − ref\\| ≤ :data:`TIE_TOLERANCE`): t = NaN and
  p = 1.0, since the data give no evidence at all that ``new`` is better;
* the same non-zero difference in every trial (spread ≤ :data:`TIE_TOLERANCE`): t = ±inf
  and p = 0.0 or 1.0, scipy's limit (not float noise: 0.73 − 0.70 and 0.74 − 0.71 differ
  in the 17th digit, which would otherwise give t ≈ 1e14).

Examples:
    >>> t, p = paired_ttest_one_tailed([0.72, 0.74, 0.73], [0.70, 0.71, 0.71])
    >>> round(t, 3), round(p, 4)
    (7.0, 0.0099)
    >>> round(relative_improvement(0.7345, 0.7045), 4)
    0.0426
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

from serdistill.data.manifest import ATTRIBUTES
from serdistill.study.results import ResultsError, attributes_in, validate_grid, validate_results
from serdistill.study.settings import BASELINE, order_settings

#: Differences at most this large count as no difference (CCC is in [-1, 1]; float64
#: rounding of CCC values is ~1e-16, so 1e-12 only catches "the same numbers").
TIE_TOLERANCE = 1e-12


class UndefinedTestWarning(RuntimeWarning):
    """A t-test could not be computed (too few trials); its t and p are NaN."""


class TTest(NamedTuple):
    """A one-tailed paired t-test: the t statistic and its p-value."""

    t: float
    p: float


# ---------------------------------------------------------------------------------------
# The test itself


def paired_ttest_one_tailed(new: Sequence[float], ref: Sequence[float]) -> TTest:
    """Paired one-tailed t-test over trials, H1: mean(new − ref) > 0.

    The same as ``scipy.stats.ttest_rel(new, ref, alternative="greater",
    nan_policy="omit")`` except for the degenerate cases in the module docstring.

    Args:
        new: one value per trial of the setting claimed to be better.
        ref: the reference's values in the same trials (same length, same order).

    Returns:
        ``TTest(t, p)``; unpacks as ``t, p``. Pairs holding NaN are left out.

    Raises:
        ResultsError: the two sequences differ in length or are not 1-D.

    Examples:
        >>> paired_ttest_one_tailed([0.5, 0.6], [0.5, 0.6])
        TTest(t=nan, p=1.0)
    """
    t, p, reason = _ttest(new, ref)
    if reason and math.isnan(p):
        warnings.warn(reason, UndefinedTestWarning, stacklevel=2)
    return TTest(t, p)


def _ttest(new: Sequence[float], ref: Sequence[float]) -> tuple[float, float, str]:
    """``(t, p, note)``: the note says why a result is degenerate, else it is empty."""
    new_arr = np.asarray(new, dtype=np.float64)
    ref_arr = np.asarray(ref, dtype=np.float64)
    if new_arr.ndim != 1 or new_arr.shape != ref_arr.shape:
        raise ResultsError(
            f"A paired t-test needs two 1-D sequences of one length (one value per trial); "
            f"got shapes {new_arr.shape} and {ref_arr.shape}."
        )
    diff = (new_arr - ref_arr)[~(np.isnan(new_arr) | np.isnan(ref_arr))]
    n = diff.size
    if n < 2:
        return math.nan, math.nan, f"needs at least 2 paired trials; got {n}"
    if np.all(np.abs(diff) <= TIE_TOLERANCE):
        return math.nan, 1.0, f"no difference in any of the {n} trials"
    mean = float(diff.mean())
    if np.ptp(diff) <= TIE_TOLERANCE:
        t = math.copysign(math.inf, mean)
        return t, (0.0 if t > 0 else 1.0), f"the same difference ({mean:+.4g}) in all {n} trials"
    t = mean / (float(diff.std(ddof=1)) / math.sqrt(n))
    return t, float(_scipy_stats.t.sf(t, n - 1)), ""


def relative_improvement(new: float | np.ndarray, ref: float | np.ndarray) -> float | np.ndarray:
    """``(new − ref) / ref``: 0.05 means 5 % better. NaN where ``ref`` is 0.

    Examples:
        >>> relative_improvement(0.33, 0.30)
        0.10000000000000009
    """
    new_arr = np.asarray(new, dtype=np.float64)
    ref_arr = np.asarray(ref, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(ref_arr != 0, (new_arr - ref_arr) / np.where(ref_arr != 0, ref_arr, 1.0), np.nan)
    return float(value) if value.ndim == 0 else value


# ---------------------------------------------------------------------------------------
# Results tables


def _by_trial(results: pd.DataFrame, setting: str, attribute: str) -> pd.Series:
    rows = results[(results["setting"] == setting) & (results["attribute"] == attribute)]
    return rows.set_index("trial")["ccc"].sort_index()


def _order_index(frame: pd.DataFrame, settings: list[str], attributes: list[str]) -> pd.DataFrame:
    index = pd.MultiIndex.from_product([settings, attributes], names=["setting", "attribute"])
    return frame.reindex(index).dropna(how="all")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over trials of each setting and attribute.

    Args:
        results: long results table (see the module docstring).

    Returns:
        Indexed by (setting, attribute), settings in the paper's order: columns ``n``
        (trials), ``mean`` and ``std`` (sample std, ddof=1: NaN for one trial).

    Examples:
        >>> table = pd.DataFrame({"trial": [0, 1], "setting": "baseline",
        ...                       "attribute": "arousal", "ccc": [0.6, 0.8]})
        >>> summarise(table).round(4).to_dict("records")
        [{'n': 2, 'mean': 0.7, 'std': 0.1414}]
    """
    table = validate_results(results).dropna(subset=["ccc"])
    grouped = table.groupby(["setting", "attribute"])["ccc"]
    frame = pd.DataFrame({"n": grouped.count(), "mean": grouped.mean(), "std": grouped.std(ddof=1)})
    frame = _order_index(frame, order_settings(table["setting"]), attributes_in(table))
    frame["n"] = frame["n"].astype(np.int64)
    return frame


def compare(results: pd.DataFrame, *, reference: str = BASELINE, alpha: float = 0.01) -> pd.DataFrame:
    """Each setting against ``reference``: means, relative improvement, one-tailed t-test.

    Args:
        results: long results table (see the module docstring).
        reference: the setting every other one is tested against (e.g. ``"teachers"``).
        alpha: significance level; ``significant`` is ``p <= alpha``.

    Returns:
        Indexed by (setting, attribute) like :func:`summarise`, with its columns and
        ``reference``, ``reference_mean``, ``rel_improvement`` (of the means),
        ``n_paired``, ``t``, ``p``, ``significant`` and ``note`` (why a test is missing or
        degenerate). The reference's own rows have NaN tests and the note "reference".

    Raises:
        ResultsError: ``reference`` has no rows in ``results``.
    """
    table = validate_results(results)
    if reference not in set(table["setting"]):
        raise ResultsError(
            f"The reference setting {reference!r} has no rows in the results; "
            f"got settings {order_settings(table['setting'])}."
        )
    frame = summarise(table)
    rows = []
    for setting, attribute in frame.index:
        rows.append(_compare_one(table, setting, reference, attribute, alpha=alpha))
    extra = pd.DataFrame(rows, index=frame.index)
    return pd.concat([frame, extra], axis=1)


def compare_to_others(
    results: pd.DataFrame,
    *,
    best: str,
    others: Sequence[str] | None = None,
    alpha: float = 0.01,
) -> pd.DataFrame:
    """``best`` against each of ``others``: H1 mean(best − other) > 0 (Table 2's test).

    Args:
        results: long results table.
        best: the setting claimed to be better (the full model in Table 2).
        others: the settings it is tested against; default every other setting present.
        alpha: significance level.

    Returns:
        Indexed by (other setting, attribute): ``mean`` (of the other setting),
        ``best_mean``, ``rel_improvement`` (best over other), ``n_paired``, ``t``, ``p``,
        ``significant`` and ``note``. Settings or attributes without rows are left out.
    """
    table = validate_results(results)
    present = order_settings(table["setting"])
    others = [o for o in (present if others is None else others) if o != best and o in present]
    rows, index = [], []
    for other in others:
        for attribute in attributes_in(table):
            if _by_trial(table, other, attribute).empty:
                continue
            test = _compare_one(table, best, other, attribute, alpha=alpha)
            test["mean"] = test.pop("reference_mean")
            test["best_mean"] = float(_by_trial(table, best, attribute).mean())
            rows.append(test)
            index.append((other, attribute))
    columns = ["mean", "best_mean", "rel_improvement", "n_paired", "t", "p", "significant", "note"]
    multi = pd.MultiIndex.from_tuples(index, names=["setting", "attribute"])
    return pd.DataFrame(rows, index=multi, columns=columns)


def _compare_one(table: pd.DataFrame, new: str, ref: str, attribute: str, *, alpha: float) -> dict:
    """The test of ``new`` against ``ref`` for one attribute, paired by trial id."""
    new_s, ref_s = _by_trial(table, new, attribute), _by_trial(table, ref, attribute)
    ref_mean = float(ref_s.mean()) if len(ref_s) else math.nan
    new_mean = float(new_s.mean()) if len(new_s) else math.nan
    out = {"reference": ref, "reference_mean": ref_mean, "rel_improvement": relative_improvement(new_mean, ref_mean)}
    if new == ref:
        return {**out, "n_paired": len(new_s), "t": math.nan, "p": math.nan, "significant": False, "note": "reference"}
    paired = pd.concat([new_s.rename("new"), ref_s.rename("ref")], axis=1, join="inner").dropna()
    t, p, note = _ttest(paired["new"].to_numpy(), paired["ref"].to_numpy())
    if ref_s.empty:
        note = f"{ref!r} has no {attribute} results"
    unpaired = sorted(set(new_s.index) ^ set(ref_s.index))
    if unpaired and not ref_s.empty:
        note = "; ".join(filter(None, [note, f"trials {unpaired} lack one side: left out"]))
    return {
        **out,
        "n_paired": len(paired),
        "t": t,
        "p": p,
        "significant": bool(p <= alpha) if not math.isnan(p) else False,
        "note": note,
    }


# ---------------------------------------------------------------------------------------
# The alpha/beta grid on development data


def grid_means(grid: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Mean development CCC over trials: attribute -> table (index α, columns β), NaN where not run."""
    table = validate_grid(grid)
    out = {}
    for attribute in _ordered_attributes(table["attribute"]):
        rows = table[table["attribute"] == attribute]
        out[attribute] = rows.pivot_table(index="alpha", columns="beta", values="dev_ccc", aggfunc="mean")
    return out


def chosen_alpha_beta(grid: pd.DataFrame) -> pd.DataFrame:
    """The best grid point per attribute, on the mean over trials, and each trial's own pick.

    Returns:
        Indexed by attribute: ``alpha``, ``beta``, ``dev_ccc`` (the best mean), ``n_trials``
        and ``per_trial`` (a list of (α, β, number of trials that picked it), most often first).
    """
    table = validate_grid(grid).dropna(subset=["dev_ccc"])
    rows = {}
    for attribute, means in grid_means(table).items():
        stacked = means.stack().dropna()
        if stacked.empty:
            continue
        alpha, beta = stacked.idxmax()
        sub = table[table["attribute"] == attribute]
        picks = sub.loc[sub.groupby("trial")["dev_ccc"].idxmax(), ["alpha", "beta"]]
        counts = picks.value_counts(sort=True)
        rows[attribute] = {
            "alpha": float(alpha),
            "beta": float(beta),
            "dev_ccc": float(stacked.max()),
            "n_trials": int(sub["trial"].nunique()),
            "per_trial": [(float(a), float(b), int(c)) for (a, b), c in counts.items()],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _ordered_attributes(values: pd.Series) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [a for a in ATTRIBUTES if a in seen] + [a for a in seen if a not in ATTRIBUTES]


def consistency_medians(consistency: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Median std across teachers and across students, per attribute (Figure 2's summary).

    Args:
        consistency: long table ``attribute, who, std`` (see
            :func:`serdistill.study.results.consistency_table`); non-finite values are left out.

    Returns:
        attribute -> ``{"teachers_median", "teachers_n", "students_median", "students_n"}``.
    """
    out: dict[str, dict[str, float]] = {}
    for attribute in dict.fromkeys(consistency["attribute"]):
        rows = consistency[(consistency["attribute"] == attribute) & np.isfinite(consistency["std"])]
        entry: dict[str, float] = {}
        for who in ("teachers", "students"):
            values = rows.loc[rows["who"] == who, "std"]
            entry[f"{who}_median"] = float(values.median()) if len(values) else math.nan
            entry[f"{who}_n"] = int(len(values))
        out[attribute] = entry
    return out
