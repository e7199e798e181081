""" "What held": the paper's claims checked against an experiment's numbers, per attribute.

Four claims, each judged per attribute from the results (nothing is written in advance):

1. the students (T-S (test)) are above the baseline;
2. the students are above the teachers' MC ensemble;
3. the students are more consistent than the teachers: the median std across students is
   below the median std across teachers (Figure 2);
4. the full model is the best row of the ablation (Table 2).

Verdicts: :data:`HELD` (in the claimed direction and, where a test applies, p ≤ alpha),
:data:`MEAN_ONLY` (the direction holds but the test is not significant), :data:`NOT_HELD`,
and :data:`NOT_TESTED` (a setting or the data is missing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scipy import stats as _scipy_stats

from serdistill.study.render import Block, fmt_p, fmt_pct
from serdistill.study.settings import BASELINE, FULL_MODEL, RIDGE, STUDENTS, TEACHERS, get_setting, table_settings
from serdistill.study.stats import relative_improvement

if TYPE_CHECKING:
    from serdistill.study.analysis import Analysis

HELD = "held"
MEAN_ONLY = "held in the mean, not significant"
NOT_HELD = "did not hold"
NOT_TESTED = "not tested"

CLAIM_BASELINE = "Students above the baseline"
CLAIM_TEACHERS = "Students above the teachers' ensemble"
CLAIM_CONSISTENCY = "Students more consistent than teachers"
CLAIM_ABLATION = "Full model best in the ablation"
CLAIM_RIDGE = "Students above ridge regression (not a claim of the paper)"


@dataclass(frozen=True)
class Finding:
    """One claim judged for one attribute."""

    claim: str
    attribute: str
    verdict: str
    detail: str


def findings(analysis: Analysis, *, medians: Mapping[str, Mapping[str, float]] | None = None) -> list[Finding]:
    """Every claim for every attribute of ``analysis``.

    Args:
        analysis: :func:`serdistill.study.report.analyse` output.
        medians: :func:`serdistill.study.report.consistency_medians` output, if there is
            consistency data.
    """
    out: list[Finding] = []
    for attribute in analysis.attributes:
        out.append(_above(analysis, BASELINE, analysis.vs_baseline, CLAIM_BASELINE, attribute))
        out.append(_above(analysis, TEACHERS, analysis.vs_teachers, CLAIM_TEACHERS, attribute))
        out.append(_consistency((medians or {}).get(attribute), attribute))
        out.append(_ablation(analysis, attribute))
        if analysis.vs_ridge is not None:
            out.append(_above(analysis, RIDGE, analysis.vs_ridge, CLAIM_RIDGE, attribute))
    order = [CLAIM_RIDGE, CLAIM_BASELINE, CLAIM_TEACHERS, CLAIM_CONSISTENCY, CLAIM_ABLATION]
    return sorted(out, key=lambda f: order.index(f.claim))


def _above(analysis: Analysis, reference: str, frame, claim: str, attribute: str) -> Finding:
    students, ref = get_setting(STUDENTS), get_setting(reference)
    if frame is None or not analysis.has(STUDENTS, attribute) or not analysis.has(reference, attribute):
        return Finding(claim, attribute, NOT_TESTED, f"{students.label} or {ref.label} was not run")
    test = frame.loc[(STUDENTS, attribute)]
    new, old = analysis.mean(STUDENTS, attribute), analysis.mean(reference, attribute)
    if new > old:
        verdict = HELD if test["significant"] else MEAN_ONLY
    else:
        verdict = NOT_HELD
    relation = "≤" if test["significant"] else ">"
    paper_new, paper_ref = students.paper_ccc(attribute), ref.paper_ccc(attribute)
    detail = (
        f"{students.label} {new:.4f} vs {ref.label} {old:.4f} ({fmt_pct(test['rel_improvement'])}; "
        f"one-tailed p = {fmt_p(test['p'])} {relation} {analysis.alpha:g}"
        + (f"; {test['note']}" if test["note"] else "")
        + ")."
    )
    if math.isfinite(paper_new) and math.isfinite(paper_ref):
        detail += (
            f" Paper: {paper_new:.4f} vs {paper_ref:.4f} ({fmt_pct(float(relative_improvement(paper_new, paper_ref)))})."
        )
    return Finding(claim, attribute, verdict, detail)


def _consistency(medians: Mapping[str, float] | None, attribute: str) -> Finding:
    if not medians or math.isnan(medians["teachers_median"]) or math.isnan(medians["students_median"]):
        return Finding(CLAIM_CONSISTENCY, attribute, NOT_TESTED, "no consistency data for both ensembles")
    teachers, students = medians["teachers_median"], medians["students_median"]
    ratio = students / teachers if teachers > 0 else math.nan
    detail = (
        f"median std across students {students:.4f} vs across teachers {teachers:.4f} "
        f"(ratio {ratio:.2f}; {int(medians['students_n'])} and {int(medians['teachers_n'])} values)"
    )
    return Finding(CLAIM_CONSISTENCY, attribute, HELD if students < teachers else NOT_HELD, detail)


def _ablation(analysis: Analysis, attribute: str) -> Finding:
    rows = [s for s in table_settings(2) if analysis.has(s.key, attribute)]
    if not analysis.has(FULL_MODEL, attribute) or len(rows) < 2 or analysis.vs_full is None:
        return Finding(CLAIM_ABLATION, attribute, NOT_TESTED, "fewer than two Table 2 rows were run")
    means = {s.key: analysis.mean(s.key, attribute) for s in rows}
    ranked = sorted(means, key=lambda k: -means[k])
    rank = 1 + sum(means[k] > means[FULL_MODEL] for k in means)
    tests = analysis.vs_full.xs(attribute, level="attribute")
    significant = int(tests["significant"].sum())
    detail = (
        f"the full model ({means[FULL_MODEL]:.4f}) ranks {rank} of {len(rows)}; significantly better "
        f"than {significant} of {len(tests)} other rows (p ≤ {analysis.alpha:g})"
    )
    weaker = [_row_name(get_setting(k)) for k, sig in tests["significant"].items() if not sig]
    if weaker and rank == 1:
        detail += f"; not significantly better than {', '.join(weaker)}"
    if rank > 1:
        best = get_setting(ranked[0])
        detail += f"; best is {_row_name(best)} at {means[best.key]:.4f}"
    detail += _agreement(rows, means, attribute)
    if rank > 1:
        return Finding(CLAIM_ABLATION, attribute, NOT_HELD, detail)
    return Finding(CLAIM_ABLATION, attribute, HELD if significant == len(tests) else MEAN_ONLY, detail)


def _row_name(setting) -> str:
    unlabelled, mc, n = setting.ablation
    return f"(A {'yes' if unlabelled else 'no'}, B {'yes' if mc else 'no'}, C {n})"


def _agreement(rows, means: Mapping[str, float], attribute: str) -> str:
    """Kendall's tau between our row means and the paper's, when three or more rows ran."""
    if len(rows) < 3:
        return ""
    tau = _scipy_stats.kendalltau([means[s.key] for s in rows], [s.paper_ccc(attribute) for s in rows]).statistic
    return f"; order of rows vs the paper's: Kendall τ = {tau:.2f}"


def findings_blocks(items: list[Finding]) -> list[Block]:
    """The "What held" section body: per claim, a heading with the count and one line per attribute."""
    blocks = [
        Block(
            "legend",
            (
                "Computed from the numbers in this report. 'held': in the claimed direction and, where a "
                "paired one-tailed t-test applies, significant; 'held in the mean, not significant': the "
                "direction holds but the test does not reach the level; the consistency claim compares medians."
            ),
        )
    ]
    for claim in dict.fromkeys(f.claim for f in items):
        rows = [f for f in items if f.claim == claim]
        tested = [f for f in rows if f.verdict != NOT_TESTED]
        held = sum(f.verdict == HELD for f in rows)
        mean_only = sum(f.verdict == MEAN_ONLY for f in rows)
        head = f"{claim}: held for {held} of {len(tested)} attributes" if tested else f"{claim}: not tested"
        head += f"; in the mean only for {mean_only}" if mean_only else ""
        blocks.append(Block("h3", head))
        blocks.append(Block("list", [f"{f.attribute.capitalize()}: {f.verdict}. {_sentence(f.detail)}" for f in rows]))
    return blocks


def _sentence(text: str) -> str:
    text = text[0].upper() + text[1:] if text else text
    return text if text.endswith(".") else text + "."
