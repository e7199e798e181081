"""Helpers the recipes share: folder checks, audio headers, categorical targets, summaries."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.data.corpora.norms import Norms
from serdistill.data.corpora.splits import DEFAULT_PROPORTIONS, assign_speakers
from serdistill.data.manifest import ATTRIBUTES, REQUIRED_COLUMNS, Manifest

log = logging.getLogger("serdistill.data.corpora")

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")
_SHOWN = 5  # examples an error message lists


def check_root(root: str | os.PathLike[str], *, recipe: str, hint: str) -> Path:
    """Return ``root`` as an absolute path, or raise if it is not a folder."""
    path = Path(root).absolute()
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise CorpusError(
            f"The {recipe} corpus folder {path} {what}; expected a folder with {hint}. "
            "Pass the folder that holds the corpus as ROOT."
        )
    return path


def find_audio(folder: Path, *, recursive: bool = True, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``folder`` (hidden files and folders skipped), sorted by path."""
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    found = [
        p
        for p in pattern
        if p.suffix.lower() in extensions
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def examples(items: Iterable[object], limit: int = _SHOWN) -> str:
    """A short comma-separated list of ``items``, with '...' when there are more."""
    shown = [str(i) for i in items]
    return ", ".join(shown[:limit]) + (", ..." if len(shown) > limit else "")


def durations(files: Sequence[str | os.PathLike[str]], *, progress: bool = False) -> np.ndarray:
    """Durations in seconds read from the audio headers (fast: no samples are decoded).

    Raises:
        CorpusError: listing the files whose header cannot be read.
    """
    import soundfile

    iterator: Iterable = files
    if progress and len(files) > 1000:
        from tqdm import tqdm

        iterator = tqdm(files, desc="reading audio headers", unit="file", leave=False)
    values = np.full(len(files), np.nan)
    unreadable: list[str] = []
    for i, file in enumerate(iterator):
        try:
            values[i] = soundfile.info(str(file)).duration
        except (RuntimeError, soundfile.LibsndfileError, OSError) as err:
            unreadable.append(f"{file} ({err})")
    if unreadable:
        raise CorpusError(
            f"{len(unreadable)} of {len(files)} audio file(s) have an unreadable header, e.g. "
            f"{examples(unreadable, 3)}. Re-copy or remove those files."
        )
    return values


def normalise_gender(value: object) -> str:
    """'female', 'male' or '' from the spellings corpora use (F, f, Female, woman, ...)."""
    text = str(value).strip().lower() if value is not None and not pd.isna(value) else ""
    if text in {"f", "female", "woman", "w"}:
        return "female"
    if text in {"m", "male", "man"}:
        return "male"
    return ""


def categorical_manifest(
    frame: pd.DataFrame,
    *,
    root: Path,
    recipe: str,
    norms: Norms,
    categories: Sequence[str],
    seed: int = 0,
    proportions: Sequence[float] = DEFAULT_PROPORTIONS,
) -> Manifest:
    """Finish a categorical corpus: speaker-independent splits, derived targets, durations.

    Args:
        frame: one row per file with at least ``file`` (absolute), ``speaker``, ``gender``,
            ``category`` (a norms row) and ``strength`` (in [0, 1]); other columns are kept.
        root: the corpus folder (paths in the manifest are resolved against it).
        recipe: the recipe name, for messages.
        norms: the norms table.
        categories: every category the recipe can produce (all must be in the norms).
        seed: seed of the speaker split.
        proportions: train, development, test shares of the speakers.
    """
    norms.require(categories, recipe=recipe)
    frame = frame.sort_values("file").reset_index(drop=True)
    frame["duration"] = durations(frame["file"].tolist(), progress=True).round(4)
    empty = frame["duration"] <= 0
    if empty.any():
        log.warning(
            "%s: skipped %d file(s) that hold no audio samples: %s.",
            recipe,
            int(empty.sum()),
            examples(frame.loc[empty, "file"]),
        )
        frame = frame[~empty].reset_index(drop=True)
    genders = dict(zip(frame["speaker"], frame["gender"]))
    assignment = assign_speakers(frame["speaker"], genders=genders, proportions=proportions, seed=seed)
    frame["split"] = frame["speaker"].map(assignment)
    targets = norms.targets(frame["category"].tolist(), frame["strength"].to_numpy(dtype=float))
    for attribute in ATTRIBUTES:
        frame[attribute] = targets[attribute].round(4).to_numpy()
    return finish(frame, root=root, recipe=recipe)


def finish(frame: pd.DataFrame, *, root: Path, recipe: str) -> Manifest:
    """Order the columns (required ones first) and validate the manifest."""
    extra = [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    table = frame[list(REQUIRED_COLUMNS) + extra].reset_index(drop=True)
    return Manifest.from_frame(table, base=root, source=f"{recipe} corpus at {root}")


def summarize(manifest: Manifest) -> str:
    """A few lines saying what the manifest holds: files, speakers and labels per split."""
    table = manifest.table
    labelled = table[list(ATTRIBUTES)].notna().any(axis=1)
    lines = [
        f"{len(table)} files, {table['speaker'].nunique()} speakers, "
        f"{int(labelled.sum())} labelled, {int((~labelled).sum())} unlabelled"
    ]
    known = ("train", "development", "test")
    order = [s for s in known if s in manifest.splits]
    order += sorted(s for s in manifest.splits if s not in known and s != "unlabeled")
    order += ["unlabeled"] if "unlabeled" in manifest.splits else []
    width = max(len(s) for s in order)
    for split in order:
        rows = table["split"] == split
        lines.append(
            f"  {split:<{width}}  {int(rows.sum()):>6} files  {table.loc[rows, 'speaker'].nunique():>5} speakers"
            f"  {int((rows & labelled).sum()):>6} labelled"
        )
    return "\n".join(lines)
