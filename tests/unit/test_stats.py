"""Statistics over trials: the one-tailed paired t-test against scipy and by hand, relative
improvement, summaries and comparisons of a long results table, the alpha/beta grid."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from serdistill.study.results import ResultsError, validate_results
from serdistill.study.stats import (
    TTest, UndefinedTestWarning, chosen_alpha_beta, compare, compare_to_others, consistency_medians,
    grid_means, paired_ttest_one_tailed, relative_improvement, summarise,
)


def _scipy(new, ref, nan_policy: str = "propagate") -> tuple[float, float]:
    with warnings.catch_warnings():  # scipy warns of precision loss on constant differences
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_rel(new, ref, alternative="greater", nan_policy=nan_policy)
    return float(result.statistic), float(result.pvalue)


# ---------------------------------------------------------------------------------------
# The t-test


@pytest.mark.parametrize("seed", range(40))
def test_ttest_matches_scipy_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 15))
    ref = rng.uniform(0.2, 0.8, n)
    new = ref + rng.normal(rng.normal(0, 0.01), rng.uniform(0.001, 0.05), n)
    t, p = paired_ttest_one_tailed(new, ref)
    expected_t, expected_p = _scipy(new, ref)
    assert t == pytest.approx(expected_t, rel=1e-10)
    assert p == pytest.approx(expected_p, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("seed", range(10))
def test_ttest_matches_scipy_when_nan_pairs_are_omitted(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    ref = rng.uniform(0.2, 0.8, 8)
    new = ref + rng.normal(0.01, 0.02, 8)
    new[rng.integers(0, 8)] = np.nan
    ref[rng.integers(0, 8)] = np.nan
    assert paired_ttest_one_tailed(new, ref) == pytest.approx(_scipy(new, ref, nan_policy="omit"), rel=1e-10)


def test_ttest_by_hand_with_two_degrees_of_freedom() -> None:
    # Differences 0.02, 0.03, 0.02: mean 0.07/3, sample std 0.01/sqrt(3), so t = 7 exactly.
    # With 2 degrees of freedom the t distribution's tail is 1/2 - t / (2 sqrt(2 + t²)).
    t, p = paired_ttest_one_tailed([0.72, 0.74, 0.73], [0.70, 0.71, 0.71])
    assert t == pytest.approx(7.0, rel=1e-9)
    assert p == pytest.approx(0.5 - 7.0 / (2.0 * math.sqrt(51.0)), rel=1e-9)
    assert p == pytest.approx(0.009902, abs=1e-6)


def test_ttest_is_one_tailed_in_the_direction_of_new() -> None:
    new, ref = [0.72, 0.74, 0.73], [0.70, 0.71, 0.71]
    _, p_better = paired_ttest_one_tailed(new, ref)
    t_worse, p_worse = paired_ttest_one_tailed(ref, new)
    assert t_worse == pytest.approx(-7.0)
    assert p_better + p_worse == pytest.approx(1.0)
    assert p_worse > 0.99
    two_sided = scipy_stats.ttest_rel(new, ref).pvalue
    assert p_better == pytest.approx(two_sided / 2)


def test_result_is_a_named_pair() -> None:
    result = paired_ttest_one_tailed([0.72, 0.74, 0.73], [0.70, 0.71, 0.71])
    assert isinstance(result, TTest)
    t, p = result
    assert (t, p) == (result.t, result.p)


def test_identical_trials_give_p_one_and_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, p = paired_ttest_one_tailed([0.70, 0.71, 0.72], [0.70, 0.71, 0.72])
    assert math.isnan(t)
    assert p == 1.0


@pytest.mark.parametrize("shift, expected_t, expected_p", [(0.25, math.inf, 0.0), (-0.25, -math.inf, 1.0)])
def test_the_same_difference_in_every_trial_is_scipys_limit(shift: float, expected_t: float, expected_p: float) -> None:
    ref = np.array([0.25, 0.5, 0.75])  # exact in binary, so every difference is exactly `shift`
    t, p = paired_ttest_one_tailed(ref + shift, ref)
    assert (t, p) == (expected_t, expected_p)
    assert _scipy(ref + shift, ref) == (expected_t, expected_p)


@pytest.mark.parametrize("new, ref", [([0.7], [0.6]), ([], []), ([0.7, np.nan], [0.6, 0.5])])
def test_fewer_than_two_trials_gives_nan_and_says_why(new, ref) -> None:
    with pytest.warns(UndefinedTestWarning, match="at least 2 paired trials"):
        t, p = paired_ttest_one_tailed(new, ref)
    assert math.isnan(t) and math.isnan(p)


def test_ttest_rejects_unpaired_lengths() -> None:
    with pytest.raises(ResultsError, match=r"one length.*\(3,\) and \(2,\)"):
        paired_ttest_one_tailed([0.1, 0.2, 0.3], [0.1, 0.2])


# ---------------------------------------------------------------------------------------
# Relative improvement


def test_relative_improvement_reproduces_the_papers_numbers() -> None:
    # The paper: T-S (test) over the baseline, +4.25% / +2.67% / +4.98% (rounded down in its text).
    assert relative_improvement(0.7345, 0.7045) == pytest.approx(0.042583, abs=1e-6)
    assert relative_improvement(0.3230, 0.3146) == pytest.approx(0.026700, abs=1e-6)
    np.testing.assert_allclose(relative_improvement(np.array([0.6652, 0.33]), np.array([0.6336, 0.30])),
                               [0.049874, 0.1], atol=1e-6)


def test_relative_improvement_edge_cases() -> None:
    assert relative_improvement(0.3, 0.3) == 0.0
    assert relative_improvement(0.2, 0.4) == pytest.approx(-0.5)
    assert relative_improvement(-0.1, -0.2) == pytest.approx(-0.5)  # (new - ref) / ref, as defined
    assert math.isnan(relative_improvement(0.5, 0.0))


# ---------------------------------------------------------------------------------------
# Results tables

BASE = np.array([0.70, 0.71, 0.72])


def _results(**settings: np.ndarray) -> pd.DataFrame:
    rows = [(trial, key, attribute, float(values[trial]) + offset)
            for key, values in settings.items()
            for attribute, offset in (("arousal", 0.0), ("valence", -0.4))
            for trial in range(len(values))]
    return pd.DataFrame(rows, columns=["trial", "setting", "attribute", "ccc"])


def test_summarise_gives_mean_and_sample_std_in_the_papers_order() -> None:
    summary = summarise(_results(mine=BASE + 0.5, ts_test=BASE + 0.03, baseline=BASE))
    assert list(summary.index.get_level_values("setting").unique()) == ["baseline", "ts_test", "mine"]
    assert summary.loc[("ts_test", "arousal"), "mean"] == pytest.approx(0.74)
    assert summary.loc[("ts_test", "valence"), "mean"] == pytest.approx(0.34)
    assert summary.loc[("baseline", "arousal"), "std"] == pytest.approx(0.01)  # ddof=1
    assert summary.loc[("baseline", "arousal"), "n"] == 3


def test_compare_tests_each_setting_against_the_reference() -> None:
    results = _results(baseline=BASE, ts_test=BASE + [0.030, 0.031, 0.032], ts_pseudo=BASE + [0.02, -0.01, 0.03])
    table = compare(results, reference="baseline", alpha=0.01)
    clear, unclear = table.loc[("ts_test", "arousal")], table.loc[("ts_pseudo", "valence")]
    assert clear["significant"] and clear["p"] < 0.001
    assert (clear["t"], clear["p"]) == pytest.approx(_scipy(BASE + [0.030, 0.031, 0.032], BASE))
    assert not unclear["significant"] and unclear["p"] > 0.1
    assert clear["rel_improvement"] == pytest.approx(0.031 / 0.71)
    assert table.loc[("baseline", "arousal"), "note"] == "reference"
    assert not table.loc[("baseline", "arousal"), "significant"]


def test_compare_pairs_by_trial_id_not_row_order() -> None:
    results = _results(baseline=BASE, ts_test=BASE + [0.030, 0.031, 0.032])
    shuffled = results.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(compare(results), compare(shuffled))
    # Renumber the baseline's trials in reverse: pairing by id changes the test.
    reversed_ids = results.assign(trial=np.where(results["setting"] == "baseline", 2 - results["trial"], results["trial"]))
    assert compare(reversed_ids).loc[("ts_test", "arousal"), "t"] != pytest.approx(compare(results).loc[("ts_test", "arousal"), "t"])


def test_compare_leaves_out_unpaired_trials_and_says_so() -> None:
    results = _results(baseline=BASE, ts_test=np.append(BASE + 0.03, 0.9))
    row = compare(results).loc[("ts_test", "arousal")]
    assert row["n_paired"] == 3 and row["n"] == 4
    assert "trials [3] lack one side" in row["note"]


def test_compare_with_one_trial_gives_nan_and_a_note() -> None:
    row = compare(_results(baseline=BASE[:1], ts_test=BASE[:1] + 0.1)).loc[("ts_test", "arousal")]
    assert math.isnan(row["p"]) and not row["significant"]
    assert "at least 2 paired trials; got 1" in row["note"]


def test_compare_needs_the_reference() -> None:
    with pytest.raises(ResultsError, match="'teachers' has no rows"):
        compare(_results(baseline=BASE), reference="teachers")


def test_compare_to_others_tests_the_best_against_each_row() -> None:
    full = BASE + [0.030, 0.031, 0.032]
    results = _results(abl_u1_mc1_n5=full, abl_u0_mc1_n5=full - [0.005, 0.002, 0.008],
                       abl_u1_mc0_n5=full - [0.020, 0.019, 0.021])
    table = compare_to_others(results, best="abl_u1_mc1_n5")
    assert list(table.index.get_level_values("setting").unique()) == ["abl_u0_mc1_n5", "abl_u1_mc0_n5"]
    assert table.loc[("abl_u1_mc0_n5", "arousal"), "significant"]
    assert not table.loc[("abl_u0_mc1_n5", "arousal"), "significant"]
    expected = _scipy(full, full - [0.005, 0.002, 0.008])
    assert tuple(table.loc[("abl_u0_mc1_n5", "valence"), ["t", "p"]]) == pytest.approx(expected)
    assert table.loc[("abl_u0_mc1_n5", "arousal"), "best_mean"] == pytest.approx(full.mean())


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="ccc"), r"lacks column\(s\) \['ccc'\]"),
    (lambda t: t.assign(attribute="joy"), r"Unknown attribute\(s\) \['joy'\]"),
    (lambda t: pd.concat([t, t.head(1)]), "for the same \\(trial, setting, attribute\\)"),
    (lambda t: t.assign(ccc="high"), "numeric CCC"),
])
def test_bad_results_tables_are_refused(change, message: str) -> None:
    with pytest.raises(ResultsError, match=message):
        validate_results(change(_results(baseline=BASE)))


# ---------------------------------------------------------------------------------------
# Grid and consistency


def _grid() -> pd.DataFrame:
    rows = []
    for trial in range(3):
        for alpha in (0.1, 0.5):
            for beta in (0.2, 0.4, 0.8):
                rows.append((trial, "arousal", alpha, beta, 0.5 + alpha - abs(beta - 0.4) + 0.01 * trial))
                # Valence's best point on the mean is (0.1, 0.8); trial 2 alone prefers (0.5, 0.2).
                rows.append((trial, "valence", alpha, beta,
                             0.3 + (0.2 if (alpha, beta) == (0.1, 0.8) else 0) + (0.3 if trial == 2 and (alpha, beta) == (0.5, 0.2) else 0)))
    return pd.DataFrame(rows, columns=["trial", "attribute", "alpha", "beta", "dev_ccc"])


def test_grid_means_average_over_trials_for_any_grid_shape() -> None:
    means = grid_means(_grid())
    assert list(means) == ["arousal", "valence"]
    assert means["arousal"].shape == (2, 3)
    assert means["arousal"].loc[0.5, 0.4] == pytest.approx(1.0 + 0.01)


def test_chosen_alpha_beta_on_the_mean_and_per_trial() -> None:
    chosen = chosen_alpha_beta(_grid())
    assert (chosen.loc["arousal", "alpha"], chosen.loc["arousal", "beta"]) == (0.5, 0.4)
    assert (chosen.loc["valence", "alpha"], chosen.loc["valence", "beta"]) == (0.1, 0.8)
    assert chosen.loc["valence", "per_trial"] == [(0.1, 0.8, 2), (0.5, 0.2, 1)]
    assert chosen.loc["arousal", "n_trials"] == 3


def test_consistency_medians() -> None:
    table = pd.DataFrame({"attribute": ["arousal"] * 5, "who": ["teachers"] * 3 + ["students"] * 2,
                          "std": [0.3, 0.1, 0.2, 0.05, np.nan]})
    medians = consistency_medians(table)["arousal"]
    assert medians == {"teachers_median": pytest.approx(0.2), "teachers_n": 3,
                       "students_median": pytest.approx(0.05), "students_n": 1}
