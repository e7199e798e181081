"""Failed models: ensemble members whose development CCC is far below their siblings'.

An ensemble hides a member that never learned: the mean of five predictions still looks
fine while one of them is noise. After the teachers, and after the chosen students, every
member is compared with the median development CCC of its siblings; one that falls more
than :func:`margin` below is *failed*, named in the log, in the bundle's ``metrics.json``
and in the experiment's report, with the reason its history shows:

- ``no development score``: its predictions were constant (CCC undefined);
- ``no improvement after the first epochs``: its best epoch is among the first
  :data:`EARLY_EPOCHS` (or the first 5% of the epochs it ran);
- ``far below its siblings``: it improved, just not enough.

Examples:
    >>> [f["member"] for f in failed_members("teacher", [0.80, 0.12, 0.78, 0.82, 0.18])]
    [1, 4]
    >>> failed_members("student", [0.41, 0.38, 0.44])
    []
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: A best epoch among the first this many epochs means the member stopped improving at once.
EARLY_EPOCHS = 2


def margin(median: float) -> float:
    """How far below the siblings' median a member may fall: 0.15 CCC, or 30% of the median
    when that is more (the members of one ensemble differ by 0.01 to 0.05 on EmoDB).

    Examples:
        >>> margin(0.2), margin(0.8)
        (0.15, 0.24)
    """
    return max(0.15, round(0.3 * abs(median), 6))


def failed_members(
    stage: str,
    scores: Sequence[float | None],
    histories: Sequence[Sequence[dict]] | None = None,
    *,
    group: str | None = None,
) -> list[dict[str, Any]]:
    """The failed members of one ensemble, each ``{stage, member, dev_ccc, siblings, reason}``.

    Args:
        stage: ``"teacher"`` or ``"student"`` (for the record and the log).
        scores: each member's best development CCC (None or NaN: no score).
        histories: each member's per-epoch history (for the reason), if known.
        group: the attribute (group) name, for the log.
    """
    values = np.array([np.nan if v is None else float(v) for v in scores], dtype=np.float64)
    if len(values) < 3:  # with fewer than 3 members, which one is the odd one out is a guess
        return []
    out = []
    for i, value in enumerate(values):
        siblings = np.delete(values, i)
        siblings = siblings[np.isfinite(siblings)]
        if not len(siblings):
            continue
        median = float(np.median(siblings))
        if math.isfinite(value) and median - value <= margin(median):
            continue
        history = list(histories[i]) if histories is not None else []
        record = {
            "stage": stage,
            "member": i,
            "dev_ccc": None if not math.isfinite(value) else round(value, 6),
            "siblings": round(median, 6),
            "reason": _reason(value, history),
        }
        out.append(record)
        logger.warning(
            "%s%s %d: development CCC %s against its siblings' median %.3f: %s",
            f"{group}: " if group else "",
            stage,
            i + 1,
            "undefined" if record["dev_ccc"] is None else f"{value:.3f}",
            median,
            record["reason"],
        )
    return out


def _reason(value: float, history: list[dict]) -> str:
    if not math.isfinite(value):
        return "no development score (constant predictions)"
    if history:
        best = int(history[-1].get("best_epoch", 0))
        ran = len(history)
        if best <= max(EARLY_EPOCHS, int(0.05 * ran)):
            return f"no improvement after the first epochs (best at epoch {best} of {ran})"
        return f"far below its siblings (best at epoch {best} of {ran})"
    return "far below its siblings"
