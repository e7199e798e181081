"""The settings an experiment compares (the paper's Table 1 and Table 2), defined once.

Each :class:`Setting` has the key an experiment writes in its results table, the name the
paper prints, the table it belongs to, the paper's mean CCC per attribute (Sridhar & Busso,
Interspeech 2020, pp. 516-520, doi:10.21437/Interspeech.2020-2694) and, for the ablation rows, what the row switches off.

The full model of Table 2 (unlabelled data, MC dropout, 5 members) is the same model as
T-S (test). An experiment may write it under either key or both; :func:`resolve_aliases`
copies one to the other where only one is present.

Examples:
    >>> get_setting("ts_test").label
    'T-S (test)'
    >>> get_setting("abl_u0_mc1_n5").ablation
    (False, True, 5)
    >>> order_settings(["mine", "teachers", "baseline"])
    ['baseline', 'teachers', 'mine']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from serdistill.data.manifest import ATTRIBUTES

BASELINE = "baseline"
TEACHERS = "teachers"
STUDENTS = "ts_test"
FULL_MODEL = "abl_u1_mc1_n5"
#: The linear reference models (not in the paper): fitted on the same features and split.
RIDGE = "ridge"
SVR = "svr"
REFERENCES: tuple[str, ...] = (BASELINE, TEACHERS, RIDGE, SVR)
_NAN = float("nan")

#: key -> key of the same model; either may stand for the other in a results table.
ALIASES: dict[str, str] = {FULL_MODEL: STUDENTS}


@dataclass(frozen=True)
class Setting:
    """One row of the paper's Table 1 or Table 2.

    Attributes:
        key: the name in a results table's ``setting`` column.
        label: the name the report prints (the paper's).
        table: 1 or 2.
        paper: the paper's mean CCC for arousal, valence, dominance.
        ablation: for Table 2, (unlabelled data, MC dropout, ensemble size); else None.
        missing: what the report prints when the results hold no row of this setting.
    """

    key: str
    label: str
    table: int
    paper: tuple[float, float, float]
    ablation: tuple[bool, bool, int] | None = None
    missing: str = "not run"

    def paper_ccc(self, attribute: str) -> float:
        """The paper's mean CCC for ``attribute`` (NaN for an attribute it does not report)."""
        return self.paper[ATTRIBUTES.index(attribute)] if attribute in ATTRIBUTES else float("nan")


SETTINGS: tuple[Setting, ...] = (
    Setting(BASELINE, "Baseline", 1, (0.7045, 0.3146, 0.6336)),
    Setting(RIDGE, "Ridge regression (reference)", 1, (_NAN, _NAN, _NAN)),
    Setting(SVR, "Linear SVR (reference)", 1, (_NAN, _NAN, _NAN)),
    Setting(TEACHERS, "Teachers' MC ensemble", 1, (0.7217, 0.3184, 0.6480)),
    Setting(STUDENTS, "T-S (test)", 1, (0.7345, 0.3230, 0.6652)),
    Setting("ts_unlabeled", "T-S (unlabeled)", 1, (0.7322, 0.3219, 0.6625), missing="not run: no unlabeled split"),
    Setting("ts_pseudo", "T-S (pseudo-label)", 1, (0.7290, 0.3213, 0.6558)),
    Setting("ts_top75", "T-S (top 75%)", 1, (0.7279, 0.3205, 0.6508)),
    Setting(FULL_MODEL, "Full model", 2, (0.7345, 0.3230, 0.6652), (True, True, 5)),
    Setting("abl_u0_mc1_n5", "No unlabelled data", 2, (0.7300, 0.3211, 0.6585), (False, True, 5)),
    Setting("abl_u1_mc0_n5", "No MC dropout", 2, (0.7205, 0.3154, 0.6480), (True, False, 5)),
    Setting("abl_u1_mc1_n1", "One teacher, one student", 2, (0.7240, 0.3172, 0.6512), (True, True, 1)),
    Setting("abl_u0_mc1_n1", "No unlabelled data, N = 1", 2, (0.7219, 0.3166, 0.6556), (False, True, 1)),
    Setting("abl_u1_mc0_n1", "No MC dropout, N = 1", 2, (0.6873, 0.2673, 0.6198), (True, False, 1)),
)

_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


def get_setting(key: str) -> Setting:
    """The setting named ``key``; an unknown key gets a plain one (table 0, no paper values)."""
    if key in _BY_KEY:
        return _BY_KEY[key]
    nan = float("nan")
    return Setting(key, key, 0, (nan, nan, nan))


def table_settings(table: int) -> tuple[Setting, ...]:
    """The settings of Table ``table`` (1 or 2) in the paper's row order."""
    return tuple(s for s in SETTINGS if s.table == table)


def order_settings(keys: Iterable[str]) -> list[str]:
    """``keys`` without repeats: the paper's settings in its order, then the others as first seen."""
    seen = list(dict.fromkeys(keys))
    known = [s.key for s in SETTINGS if s.key in seen]
    return known + [k for k in seen if k not in _BY_KEY]


def resolve_aliases(results: pd.DataFrame, *, aliases: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Copy rows between keys of one model where the results hold only one of them.

    Args:
        results: long results table with a ``setting`` column.
        aliases: key -> key of the same model; default :data:`ALIASES`
            (``abl_u1_mc1_n5`` is ``ts_test``).

    Returns:
        A new table. Where both keys are present, both are kept as they are.

    Examples:
        >>> table = pd.DataFrame({"trial": [0], "setting": ["ts_test"],
        ...                       "attribute": ["arousal"], "ccc": [0.5]})
        >>> sorted(resolve_aliases(table)["setting"])
        ['abl_u1_mc1_n5', 'ts_test']
    """
    aliases = ALIASES if aliases is None else aliases
    present = set(results["setting"])
    extra = []
    for key, target in aliases.items():
        if key not in present and target in present:
            extra.append(results[results["setting"] == target].assign(setting=key))
        elif target not in present and key in present:
            extra.append(results[results["setting"] == key].assign(setting=target))
    if not extra:
        return results.copy()
    return pd.concat([results, *extra], ignore_index=True)
