"""Speaker-independent train/development/test assignment for corpora that define none.

Whole speakers go to one split each, so no speaker is heard in two splits. The assignment
depends only on the set of speakers, their genders, the proportions and the seed: the same
inputs always give the same splits, whatever the order the files were found in.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from serdistill.errors import CorpusError

SPLITS: tuple[str, ...] = ("train", "development", "test")
DEFAULT_PROPORTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)


def split_counts(n_speakers: int, proportions: Sequence[float] = DEFAULT_PROPORTIONS) -> dict[str, int]:
    """How many speakers each split gets: at least one each, the rest by proportion.

    Examples:
        >>> split_counts(10)
        {'train': 6, 'development': 2, 'test': 2}
        >>> split_counts(3)
        {'train': 1, 'development': 1, 'test': 1}
    """
    train, development, test = check_proportions(proportions)
    if n_speakers < 3:
        raise CorpusError(
            f"A speaker-independent split needs at least 3 speakers (one per split); got "
            f"{n_speakers}. Add speakers, or give the corpus its own split column."
        )
    n_test = max(1, int(round(test * n_speakers)))
    n_development = max(1, int(round(development * n_speakers)))
    while n_speakers - n_test - n_development < 1:  # train keeps at least one speaker
        if n_test >= n_development:
            n_test -= 1
        else:
            n_development -= 1
    return {"train": n_speakers - n_test - n_development, "development": n_development, "test": n_test}


def check_proportions(proportions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/development/test proportions (positive, summing to 1) and return them."""
    values = tuple(float(p) for p in proportions)
    if len(values) != 3 or any(not np.isfinite(p) or p <= 0 for p in values) or abs(sum(values) - 1) > 1e-6:
        raise CorpusError(
            f"Split proportions must be three positive numbers (train, development, test) "
            f"summing to 1; got {list(proportions)}. Use e.g. 0.6,0.2,0.2."
        )
    return values  # type: ignore[return-value]


def assign_speakers(
    speakers: Sequence[str],
    *,
    genders: Mapping[str, str] | None = None,
    proportions: Sequence[float] = DEFAULT_PROPORTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """Assign each speaker to train, development or test.

    Speakers are shuffled within each gender, then interleaved across genders, and the
    interleaved list is dealt out test first, development next, train last. With two
    genders the small splits therefore hold both, as evenly as the counts allow.

    Args:
        speakers: speaker ids (duplicates are ignored).
        genders: speaker -> gender; speakers without one form their own group.
        proportions: train, development, test shares of the speakers.
        seed: the random seed; the same inputs and seed always give the same result.

    Returns:
        speaker -> split name.

    Examples:
        >>> split = assign_speakers([f"s{i}" for i in range(10)], seed=0)
        >>> sorted(split.values()).count("train")
        6
    """
    unique = sorted(set(map(str, speakers)))
    counts = split_counts(len(unique), proportions)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for speaker in unique:
        gender = (genders or {}).get(speaker, "") or ""
        groups.setdefault(str(gender), []).append(speaker)
    order = sorted(groups)
    order = [order[i] for i in rng.permutation(len(order))]
    shuffled = [[groups[g][i] for i in rng.permutation(len(groups[g]))] for g in order]
    dealt: list[str] = []
    for position in range(max(len(group) for group in shuffled)):
        dealt.extend(group[position] for group in shuffled if position < len(group))
    assignment: dict[str, str] = {}
    start = 0
    for split in ("test", "development", "train"):
        for speaker in dealt[start:start + counts[split]]:
            assignment[speaker] = split
        start += counts[split]
    return assignment
