"""Dimensional targets for categorical corpora, from norms of the emotion words.

A categorical label (anger, sadness, ...) becomes arousal, valence and dominance on the
1..7 scale: ``target = neutral + s * (norm(category) - neutral)``, where ``s`` in [0, 1]
says how strongly the utterance expresses its emotion. The default table is the NRC VAD
Lexicon v1.0 (Mohammad, ACL 2018), documented in ``serdistill/data/vad_norms.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.data.manifest import ATTRIBUTES

NEUTRAL = "neutral"
SCALE = (1.0, 7.0)
NORM_COLUMNS: tuple[str, ...] = ("emotion", "valence", "arousal", "dominance")
DEFAULT_NORMS = "vad_norms.csv"


@dataclass(frozen=True)
class Norms:
    """A validated norms table: one row per emotion word, attributes on the 1..7 scale.

    Args:
        table: indexed by emotion (lower case), with the columns arousal, valence, dominance.
        source: where the table came from, for messages.
    """

    table: pd.DataFrame
    source: str

    @property
    def emotions(self) -> list[str]:
        """The emotions the table covers, in table order."""
        return list(self.table.index)

    def require(self, emotions: Iterable[str], *, recipe: str | None = None) -> None:
        """Raise if the table lacks one of ``emotions`` (which ``recipe`` needs)."""
        needed = list(dict.fromkeys(emotions))
        missing = [e for e in needed if e not in self.table.index]
        if missing:
            who = f"the {recipe} recipe" if recipe else "this corpus"
            raise CorpusError(
                f"The norms table {self.source} has no row for {', '.join(missing)}; {who} "
                f"needs rows for {', '.join(needed)}. Add those rows "
                "(emotion,valence,arousal,dominance on 1..7) or use the default table."
            )

    def nearest(
        self, predictions: pd.DataFrame, *, label_range: tuple[float, float] = (1.0, 7.0)
    ) -> tuple[np.ndarray, np.ndarray]:
        """The emotion word whose norms are nearest each row of ``predictions``, and the distance.

        A heuristic, not a classifier: distances are Euclidean in the VAD space normalised
        to ``[0, 1]`` per attribute (``(value - low) / (high - low)`` of the label scale),
        over the attributes ``predictions`` has (any of arousal, valence, dominance).

        Examples:
            >>> norms = load_norms()
            >>> rows = pd.DataFrame({"arousal": [6.2, 2.0], "valence": [2.0, 1.4], "dominance": [4.9, 2.0]})
            >>> norms.nearest(rows)[0].tolist()
            ['anger', 'sadness']
        """
        columns = [a for a in ("arousal", "valence", "dominance") if a in predictions.columns]
        if not columns:
            raise CorpusError("nearest() needs at least one of the columns arousal, valence, dominance.")
        low, high = label_range
        points = (predictions[columns].to_numpy(dtype=float) - low) / (high - low)
        anchors = (self.table[columns].to_numpy(dtype=float) - low) / (high - low)
        distances = np.sqrt(((points[:, None, :] - anchors[None, :, :]) ** 2).sum(axis=2))
        best = distances.argmin(axis=1)
        return np.asarray(self.table.index)[best], distances[np.arange(len(points)), best]

    def targets(self, categories: Sequence[str], strength: Sequence[float] | np.ndarray) -> pd.DataFrame:
        """Arousal, valence and dominance targets for each (category, strength) pair.

        Args:
            categories: emotion names, each a row of the table.
            strength: how strongly each utterance expresses its emotion, in [0, 1]
                (values outside are clipped); 0 gives the neutral point, 1 the norm.

        Returns:
            A frame with the columns arousal, valence, dominance, one row per input.

        Examples:
            >>> norms = load_norms()
            >>> norms.targets(["anger", "neutral"], [1.0, 1.0]).round(3).values.tolist()
            [[6.19, 2.002, 4.942], [2.104, 3.814, 3.142]]
        """
        self.require(categories)
        s = np.clip(np.asarray(strength, dtype=float), 0.0, 1.0)[:, None]
        norm = self.table.loc[list(categories), list(ATTRIBUTES)].to_numpy(dtype=float)
        neutral = self.table.loc[NEUTRAL, list(ATTRIBUTES)].to_numpy(dtype=float)[None, :]
        return pd.DataFrame(neutral + s * (norm - neutral), columns=list(ATTRIBUTES))


def load_norms(path: str | os.PathLike[str] | None = None) -> Norms:
    """Read and validate a norms table; ``None`` gives the packaged NRC-VAD v1.0 table.

    Raises:
        CorpusError: naming the file and every problem found.
    """
    if path is None:
        source = f"{DEFAULT_NORMS} (packaged, NRC-VAD v1.0)"
        packaged = resources.files("serdistill").joinpath("data").joinpath(DEFAULT_NORMS)
        with packaged.open("r", encoding="utf-8") as f:
            frame = pd.read_csv(f)
        return _validate(frame, source=source)
    path = Path(path)
    if not path.is_file():
        raise CorpusError(
            f"Norms table {path} does not exist. Give a CSV with the columns "
            f"{', '.join(NORM_COLUMNS)}, or leave out --norms to use the packaged NRC-VAD table."
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CorpusError(
            f"Norms table {path} is not a readable CSV ({err}); expected a CSV with the columns {', '.join(NORM_COLUMNS)}."
        ) from err
    return _validate(frame, source=str(path))


def _validate(frame: pd.DataFrame, *, source: str) -> Norms:
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    missing = [c for c in NORM_COLUMNS if c not in frame.columns]
    if missing:
        raise CorpusError(
            f"Norms table {source} lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, frame.columns)) or 'none'}. Expected {', '.join(NORM_COLUMNS)} "
            "(one row per emotion, values on the 1..7 scale)."
        )
    problems: list[str] = []
    emotions = frame["emotion"].astype(str).str.strip().str.lower()
    empty = emotions.isin(["", "nan"])
    if empty.any():
        problems.append(f"{int(empty.sum())} row(s) have no emotion name.")
    duplicated = sorted(set(emotions[emotions.duplicated() & ~empty]))
    if duplicated:
        problems.append(f"emotion(s) listed more than once: {', '.join(duplicated)}.")
    values = frame[list(ATTRIBUTES)].apply(pd.to_numeric, errors="coerce")
    for attribute in ATTRIBUTES:
        bad = values[attribute].isna() | ~np.isfinite(values[attribute].fillna(0.0))
        if bad.any():
            shown = ", ".join(f"{e}={frame[attribute][i]!r}" for i, e in emotions[bad].items())
            problems.append(f"{attribute} is not a number for {shown}.")
            continue
        outside = (values[attribute] < SCALE[0]) | (values[attribute] > SCALE[1])
        if outside.any():
            shown = ", ".join(f"{e}={values[attribute][i]:g}" for i, e in emotions[outside].items())
            problems.append(f"{attribute} is outside 1..7 for {shown} (NRC-VAD's 0..1 scores map as 1 + 6*x).")
    if NEUTRAL not in set(emotions):
        problems.append("there is no 'neutral' row; targets are scaled around it (use 4,4,4 for the midpoint).")
    if problems:
        raise CorpusError(f"Norms table {source} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    table = values.set_axis(emotions.to_list(), axis=0)[list(ATTRIBUTES)].astype(float)
    return Norms(table=table, source=source)
