"""EmoDB (Berlin Database of Emotional Speech): 10 speakers, 7 emotions, labels in file names.

A copy ships with serdistill (CC0 1.0; 535 FLAC files, 22 MB, :func:`default_root`): it is
the embedded default corpus, used when no ROOT is given.

Layout: ``ROOT/audio/SSTTTEV.flac`` (or ``.wav``), e.g. ``03a01Fa``: speaker ``03``, sentence
``a01``, emotion ``F`` (happiness), version ``a``; optionally ``ROOT/ratings.tsv`` with the
columns ``utterance, recognition_pct, naturalness_pct``. The share of listeners who
recognised the emotion scales the derived targets (``strength = recognition_pct / 100``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.data.corpora.common import categorical_manifest, check_root, examples, find_audio, log
from serdistill.data.corpora.norms import Norms, load_norms
from serdistill.data.corpora.splits import DEFAULT_PROPORTIONS
from serdistill.data.manifest import Manifest

NAME = "emodb"
PATTERN = re.compile(r"^(?P<speaker>\d{2})(?P<sentence>[ab]\d{2})(?P<code>[WLEAFTN])(?P<version>[a-z])$")
EMOTIONS: dict[str, str] = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
# speaker -> (gender, age), from the corpus documentation
SPEAKERS: dict[str, tuple[str, int]] = {
    "03": ("male", 31),
    "08": ("female", 34),
    "09": ("female", 21),
    "10": ("male", 32),
    "11": ("male", 26),
    "12": ("male", 30),
    "13": ("female", 32),
    "14": ("female", 35),
    "15": ("male", 25),
    "16": ("female", 31),
}


def default_root() -> Path:
    """The EmoDB copy shipped with serdistill: ``data/emodb`` in the repository, linked into the
    package as ``serdistill/data/emodb`` (so a wheel carries it too); symlinks resolved.

    Examples:
        >>> (default_root() / "audio" / "03a01Fa.flac").is_file()
        True
    """
    return (Path(__file__).resolve().parents[1] / "emodb").resolve()  # a link to the repository's data/emodb


def build(
    root: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    proportions: Sequence[float] = DEFAULT_PROPORTIONS,
    norms: Norms | None = None,
) -> Manifest:
    """Build the EmoDB manifest.

    Args:
        root: the corpus folder, holding ``audio/`` and optionally ``ratings.tsv``; None
            (default): the copy shipped with serdistill.
        seed: seed of the speaker-independent split.
        proportions: train, development, test shares of the 10 speakers.
        norms: the norms table for the derived targets (default: NRC-VAD v1.0).

    Raises:
        CorpusError: the folder, the file names or ``ratings.tsv`` do not fit the layout.
    """
    root = check_root(
        default_root() if root is None else root, recipe=NAME, hint="audio/SSTTTEV.flac files (e.g. audio/03a01Fa.flac)"
    )
    audio = root / "audio"
    if not audio.is_dir():
        raise CorpusError(
            f"EmoDB folder {root} has no audio/ folder; expected audio/SSTTTEV.flac "
            "files (e.g. audio/03a01Fa.flac). Pass the folder that holds audio/."
        )
    files = find_audio(audio, recursive=False)
    if not files:
        raise CorpusError(
            f"EmoDB audio folder {audio} holds no .flac or .wav files; expected 535 files named SSTTTEV, e.g. 03a01Fa.flac."
        )
    rows, unmatched = [], []
    for file in files:
        match = PATTERN.match(file.stem)
        if not match:
            unmatched.append(file.name)
            continue
        speaker = match["speaker"]
        gender, age = SPEAKERS.get(speaker, ("", np.nan))
        rows.append(
            {
                "file": str(file),
                "speaker": speaker,
                "gender": gender,
                "age": age,
                "sentence": match["sentence"],
                "code": match["code"],
                "category": EMOTIONS[match["code"]],
                "version": match["version"],
                "utterance": file.stem,
            }
        )
    if unmatched:
        message = (
            f"{len(unmatched)} of {len(files)} file name(s) in {audio} do not follow EmoDB's "
            f"SSTTTEV pattern (e.g. 03a01Fa: speaker, sentence a01..b10, emotion "
            f"W/L/E/A/F/T/N, version): {examples(unmatched)}"
        )
        if not rows:
            raise CorpusError(message + ". Rename them or point ROOT at an EmoDB copy.")
        log.warning("%s; skipped.", message)
    frame = pd.DataFrame(rows)
    frame = _add_ratings(frame, root / "ratings.tsv")
    return categorical_manifest(
        frame,
        root=root,
        recipe=NAME,
        norms=norms or load_norms(),
        categories=list(EMOTIONS.values()),
        seed=seed,
        proportions=proportions,
    )


def _add_ratings(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Add intensity (recognition share) and naturalness; strength 1 when there is no file."""
    if not path.is_file():
        log.warning("EmoDB ratings %s not found: targets use full strength (s = 1) for every file.", path)
        frame["intensity"] = np.nan
        frame["naturalness"] = np.nan
        frame["strength"] = 1.0
        return frame
    try:
        ratings = pd.read_csv(path, sep="\t", dtype={"utterance": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CorpusError(
            f"EmoDB ratings {path} is not a readable TSV ({err}); expected the columns "
            "utterance, recognition_pct, naturalness_pct."
        ) from err
    missing = [c for c in ("utterance", "recognition_pct") if c not in ratings.columns]
    if missing:
        raise CorpusError(
            f"EmoDB ratings {path} lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, ratings.columns))}. Expected utterance, recognition_pct, "
            "naturalness_pct (tab-separated)."
        )
    ratings = ratings.drop_duplicates("utterance").set_index("utterance")
    recognition = pd.to_numeric(ratings["recognition_pct"], errors="coerce") / 100.0
    naturalness = pd.to_numeric(ratings.get("naturalness_pct", pd.Series(dtype=float)), errors="coerce") / 100.0
    frame["intensity"] = frame["utterance"].map(recognition).round(4)
    frame["naturalness"] = frame["utterance"].map(naturalness).round(4)
    unrated = frame["intensity"].isna()
    if unrated.any():
        log.warning(
            "%d EmoDB file(s) have no recognition rating in %s (e.g. %s); they get full strength.",
            int(unrated.sum()),
            path,
            examples(frame.loc[unrated, "utterance"]),
        )
    frame["strength"] = frame["intensity"].fillna(1.0)
    return frame
