"""Speaker-independent train/development/test assignment for corpora that define none.

Whole speakers go to one split each, so no speaker is heard in two splits. The assignment
depends only on the set of speakers, their genders, the proportions and the seed: the same
inputs always give the same splits, whatever the order the files were found in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from serdistill.base.errors import CorpusError

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
    return values


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
        for speaker in dealt[start : start + counts[split]]:
            assignment[speaker] = split
        start += counts[split]
    return assignment


def speaker_folds(
    speakers: Sequence[str],
    k: int,
    *,
    genders: Mapping[str, str] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Deal the speakers into ``k`` folds for speaker-independent cross-validation.

    Speakers are shuffled within each gender and interleaved across genders (as in
    :func:`assign_speakers`), then dealt round-robin: the folds differ by at most one
    speaker, and with two genders each fold holds both as far as the counts allow.

    Returns:
        speaker -> fold (0 .. k-1).

    Examples:
        >>> folds = speaker_folds([f"s{i}" for i in range(10)], 5, seed=0)
        >>> sorted(list(folds.values()).count(f) for f in range(5))
        [2, 2, 2, 2, 2]
    """
    unique = sorted(set(map(str, speakers)))
    if k < 3 or k > len(unique):
        raise CorpusError(
            f"Speaker-independent cross-validation needs 3 to {len(unique)} folds here (a test, a development "
            f"and at least one train fold, each with a speaker; there are {len(unique)} speakers). Got {k} folds."
        )
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for speaker in unique:
        groups.setdefault(str((genders or {}).get(speaker, "") or ""), []).append(speaker)
    order = sorted(groups)
    order = [order[i] for i in rng.permutation(len(order))]
    shuffled = [[groups[g][i] for i in rng.permutation(len(groups[g]))] for g in order]
    dealt: list[str] = []
    for position in range(max(len(group) for group in shuffled)):
        dealt.extend(group[position] for group in shuffled if position < len(group))
    return {speaker: i % k for i, speaker in enumerate(dealt)}


def fold_split(fold_of_row: Sequence[int], fold: int, k: int) -> np.ndarray:
    """The split of each row in fold ``fold`` of ``k``: its speakers' fold is the test set, the
    next fold (``fold + 1`` mod ``k``) the development set, the others train.

    Examples:
        >>> fold_split([0, 1, 2, 3, 0], 0, 4).tolist()
        ['test', 'development', 'train', 'train', 'test']
    """
    folds = np.asarray(fold_of_row)
    out = np.full(len(folds), "train", dtype=object)
    out[folds == (fold + 1) % k] = "development"
    out[folds == fold] = "test"
    return out
