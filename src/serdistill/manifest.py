"""The manifest: the one interchange format between corpora and everything else.

A CSV with the columns ``file, speaker, split, arousal, valence, dominance``. Extra
columns (``category``, ``intensity``, ``gender``, ``duration``, ...) are kept as they are.
Empty labels mean unlabelled. Relative paths resolve against the manifest's folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.errors import ManifestError
from serdistill.io import atomic_path

ATTRIBUTES: tuple[str, ...] = ("arousal", "valence", "dominance")
REQUIRED_COLUMNS: tuple[str, ...] = ("file", "speaker", "split", *ATTRIBUTES)
STANDARD_SPLITS: tuple[str, ...] = ("train", "development", "test", "unlabeled")
_SHOWN = 10  # how many offending entries an error message lists


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: one row per audio file, ``file`` holding absolute paths.

    Build one with :func:`read_manifest` or :meth:`Manifest.from_frame`; both validate.

    Args:
        table: the rows, with at least :data:`REQUIRED_COLUMNS`; labels are float (NaN = none).
        path: the CSV it was read from, if any.
    """

    table: pd.DataFrame
    path: Path | None = None

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        base: str | os.PathLike[str] | None = None,
        check_files: bool = True,
        require_train: bool = True,
        source: str = "manifest",
    ) -> "Manifest":
        """Validate ``frame`` and resolve its paths against ``base`` (default: the working folder)."""
        table = validate(
            frame, base=base, check_files=check_files, require_train=require_train, source=source
        )
        return cls(table=table)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def files(self) -> list[str]:
        """Absolute paths of the audio files, in manifest order."""
        return self.table["file"].tolist()

    @property
    def splits(self) -> list[str]:
        """The split names present, in order of first appearance."""
        return list(dict.fromkeys(self.table["split"]))

    def labels(self, attributes: tuple[str, ...] | str = ATTRIBUTES) -> np.ndarray:
        """Labels as float32, NaN where a file has none: shape (n,) for one name, else (n, k)."""
        if isinstance(attributes, str):
            return self.table[attributes].to_numpy(dtype=np.float32)
        return self.table[list(attributes)].to_numpy(dtype=np.float32)

    def split(self, *names: str) -> "Manifest":
        """The rows whose split is one of ``names`` (order kept)."""
        unknown = [n for n in names if n not in self.splits]
        if unknown:
            raise ManifestError(
                f"Split {unknown[0]!r} is not in {self._where()}; it has {self.splits}. "
                "Choose one of those, or re-create the manifest with that split."
            )
        rows = self.table[self.table["split"].isin(names)].reset_index(drop=True)
        return Manifest(table=rows, path=self.path)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest atomically, paths relative to the CSV's folder where possible."""
        path = Path(path).absolute()
        table = self.table.copy()
        table["file"] = [_relative(f, path.parent) for f in table["file"]]
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        return path

    def _where(self) -> str:
        return f"manifest {self.path}" if self.path else "the manifest"


def read_manifest(
    path: str | os.PathLike[str], *, check_files: bool = True, require_train: bool = True
) -> Manifest:
    """Read and validate a manifest CSV.

    Args:
        path: the CSV file.
        check_files: whether every listed audio file must exist.
        require_train: whether a non-empty ``train`` split is required.

    Raises:
        ManifestError: with every problem found, naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"Manifest {path} does not exist. Create one with 'serdistill corpus NAME ROOT -o {path}'."
        )
    try:
        frame = pd.read_csv(path, dtype={"file": str, "speaker": str, "split": str}, keep_default_na=False,
                            na_values={a: ["", "NA", "NaN", "nan"] for a in ATTRIBUTES})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"Manifest {path} is not a readable CSV ({err}).") from err
    table = validate(
        frame,
        base=path.absolute().parent,
        check_files=check_files,
        require_train=require_train,
        source=f"manifest {path}",
    )
    return Manifest(table=table, path=path)


def validate(
    frame: pd.DataFrame,
    *,
    base: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    require_train: bool = True,
    source: str = "manifest",
) -> pd.DataFrame:
    """Check a manifest table and return a clean copy with absolute paths and float labels.

    All problems are collected and reported together, before any work starts.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{_cap(source)} lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, frame.columns)) or 'none'}. A manifest needs "
            f"{', '.join(REQUIRED_COLUMNS)} (labels may be empty)."
        )
    table = frame.copy().reset_index(drop=True)
    base = Path(base) if base is not None else Path.cwd()
    problems: list[str] = []

    table["file"] = table["file"].fillna("").astype(str).str.strip()
    empty = np.flatnonzero(table["file"].to_numpy() == "")
    if len(empty):
        problems.append(f"{len(empty)} row(s) have no file (CSV rows {_rows(empty)}).")
    table["file"] = [str((base / f).absolute()) if f else f for f in table["file"]]
    table["file"] = [os.path.normpath(f) if f else f for f in table["file"]]

    table["speaker"] = table["speaker"].fillna("").astype(str).str.strip()
    table["split"] = table["split"].fillna("").astype(str).str.strip()
    no_split = np.flatnonzero(table["split"].to_numpy() == "")
    if len(no_split):
        problems.append(
            f"{len(no_split)} row(s) have no split (CSV rows {_rows(no_split)}); "
            f"use one of {', '.join(STANDARD_SPLITS)} or a name of your own."
        )

    for attribute in ATTRIBUTES:
        raw = table[attribute]
        values = pd.to_numeric(raw, errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & _non_empty(raw))
        if len(bad):
            shown = ", ".join(repr(str(raw.iloc[i])) for i in bad[:_SHOWN])
            problems.append(
                f"{len(bad)} {attribute} label(s) are not numbers (CSV rows {_rows(bad)}: {shown}); "
                "labels must be numbers, or empty for unlabelled files."
            )
        infinite = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)) & values.notna().to_numpy())
        if len(infinite):
            problems.append(f"{len(infinite)} {attribute} label(s) are infinite (CSV rows {_rows(infinite)}).")
        table[attribute] = values.astype("float64")

    named = table["file"][table["file"] != ""]
    duplicated = named[named.duplicated(keep="first")]
    if len(duplicated):
        shown = ", ".join(sorted(set(duplicated))[:_SHOWN])
        problems.append(
            f"{len(duplicated)} file(s) are listed more than once: {shown}. List each file once."
        )

    if check_files:
        absent = [f for f in named if not os.path.isfile(f)]
        if absent:
            problems.append(
                f"{len(absent)} of {len(named)} audio file(s) do not exist, e.g. "
                + ", ".join(absent[:_SHOWN])
                + f". Relative paths resolve against {base}; fix the paths or the manifest's location."
            )

    if require_train and not problems:
        train = table[table["split"] == "train"]
        if len(train) == 0:
            problems.append(
                f"The train split is empty (splits present: {sorted(set(table['split']))}). "
                "Mark the training files with split 'train'."
            )
        elif train[list(ATTRIBUTES)].isna().all(axis=None):
            problems.append("The train split has no labels at all; label at least one attribute of its files.")

    if problems:
        raise ManifestError(f"{_cap(source)} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    return table


def _non_empty(raw: pd.Series) -> np.ndarray:
    text = raw.astype(str).str.strip()
    return (raw.notna() & (text != "") & (text.str.lower() != "nan")).to_numpy()


def _rows(index: np.ndarray) -> str:
    """Row numbers as a person counts them in the CSV (header = row 1)."""
    shown = ", ".join(str(i + 2) for i in index[:_SHOWN])
    return shown + (", ..." if len(index) > _SHOWN else "")


def _relative(file: str, folder: Path) -> str:
    try:
        return os.path.relpath(file, folder)
    except ValueError:  # another drive on Windows
        return file


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
