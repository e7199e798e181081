"""The manifest: the one interchange format between corpora and everything else.

A CSV with the columns ``file, speaker, split, arousal, valence, dominance``. Extra
columns (``category``, ``intensity``, ``gender``, ``duration``, ...) are kept as they are.
Empty labels mean unlabelled. Relative paths resolve against the manifest's folder and
are made absolute without resolving symlinks: a path that goes through a symlink stays as
the manifest gives it (the working folder itself, for relative paths of manifests built in
memory, is what the operating system reports, with its symlinks resolved).

Labels live on a scale, :data:`DEFAULT_LABEL_RANGE` (1..7, the scale of MSP-Podcast and of
every recipe here) unless declared otherwise (``label_range``, ``--label-range LO,HI``).
A label outside it is an error naming the file and the value (``out_of_range="error"``),
or, when asked, a warning (``"warn"``) or a warning and the value clipped onto the scale
(``"clip"``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import ManifestError
from serdistill.base.io import absolute, atomic_path, working_folder

ATTRIBUTES: tuple[str, ...] = ("arousal", "valence", "dominance")
REQUIRED_COLUMNS: tuple[str, ...] = ("file", "speaker", "split", *ATTRIBUTES)
STANDARD_SPLITS: tuple[str, ...] = ("train", "development", "test", "unlabeled")
DEFAULT_LABEL_RANGE: tuple[float, float] = (1.0, 7.0)
"""The scale labels are on unless declared otherwise: MSP-Podcast's, and every recipe's."""
OUT_OF_RANGE: tuple[str, ...] = ("error", "warn", "clip")
"""What to do with a label outside the scale."""
_SHOWN = 10  # how many offending entries an error message lists
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: one row per audio file, ``file`` holding absolute paths.

    Build one with :func:`read_manifest` or :meth:`Manifest.from_frame`; both validate.

    Args:
        table: the rows, with at least :data:`REQUIRED_COLUMNS`; labels are float (NaN = none).
        path: the CSV it was read from, if any.
        label_range: the scale its labels were checked against (None: not checked).
    """

    table: pd.DataFrame
    path: Path | None = None
    label_range: tuple[float, float] | None = None

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        base: str | os.PathLike[str] | None = None,
        check_files: bool = True,
        require_train: bool = True,
        source: str = "manifest",
        label_range: tuple[float, float] | None = DEFAULT_LABEL_RANGE,
        out_of_range: str = "error",
    ) -> Manifest:
        """Validate ``frame`` and resolve its paths against ``base`` (default: the working folder).

        ``label_range`` and ``out_of_range``: as for :func:`read_manifest`.
        """
        table = validate(
            frame,
            base=base,
            check_files=check_files,
            require_train=require_train,
            source=source,
            label_range=label_range,
            out_of_range=out_of_range,
        )
        return cls(table=table, label_range=_range(label_range))

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

    def split(self, *names: str) -> Manifest:
        """The rows whose split is one of ``names`` (order kept)."""
        unknown = [n for n in names if n not in self.splits]
        if unknown:
            raise ManifestError(
                f"Split {unknown[0]!r} is not in {self._where()}; it has {self.splits}. "
                "Choose one of those, or re-create the manifest with that split."
            )
        rows = self.table[self.table["split"].isin(names)].reset_index(drop=True)
        return Manifest(table=rows, path=self.path, label_range=self.label_range)

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
    path: str | os.PathLike[str],
    *,
    check_files: bool = True,
    require_train: bool = True,
    label_range: tuple[float, float] | None = DEFAULT_LABEL_RANGE,
    out_of_range: str = "error",
) -> Manifest:
    """Read and validate a manifest CSV.

    Args:
        path: the CSV file.
        check_files: whether every listed audio file must exist.
        require_train: whether a non-empty ``train`` split is required.
        label_range: the scale of the labels, ``(low, high)``; None checks nothing.
        out_of_range: a label outside ``label_range``: ``"error"`` (default), ``"warn"``
            (logged, kept) or ``"clip"`` (logged, clipped onto the scale).

    Raises:
        ManifestError: with every problem found, naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest {path} does not exist. Create one with 'serdistill corpus NAME ROOT -o {path}'.")
    try:
        frame = pd.read_csv(
            path,
            dtype={"file": str, "speaker": str, "split": str},
            keep_default_na=False,
            na_values={a: ["", "NA", "NaN", "nan"] for a in ATTRIBUTES},
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"Manifest {path} is not a readable CSV ({err}).") from err
    table = validate(
        frame,
        base=Path(absolute(path)).parent,
        check_files=check_files,
        require_train=require_train,
        source=f"manifest {path}",
        label_range=label_range,
        out_of_range=out_of_range,
    )
    return Manifest(table=table, path=path, label_range=_range(label_range))


def validate(
    frame: pd.DataFrame,
    *,
    base: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    require_train: bool = True,
    source: str = "manifest",
    label_range: tuple[float, float] | None = DEFAULT_LABEL_RANGE,
    out_of_range: str = "error",
) -> pd.DataFrame:
    """Check a manifest table and return a clean copy with absolute paths and float labels.

    All problems are collected and reported together, before any work starts.
    ``label_range`` and ``out_of_range``: as for :func:`read_manifest`.
    """
    label_range = _range(label_range)
    if out_of_range not in OUT_OF_RANGE:
        raise ManifestError(f"out_of_range must be one of {', '.join(OUT_OF_RANGE)}; got {out_of_range!r}.")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{_cap(source)} lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, frame.columns)) or 'none'}. A manifest needs "
            f"{', '.join(REQUIRED_COLUMNS)} (labels may be empty)."
        )
    table = frame.copy().reset_index(drop=True)
    base = Path(absolute(base if base is not None else working_folder()))
    problems: list[str] = []

    table["file"] = table["file"].fillna("").astype(str).str.strip()
    empty = np.flatnonzero(table["file"].to_numpy() == "")
    if len(empty):
        problems.append(f"{len(empty)} row(s) have no file (CSV rows {_rows(empty)}).")
    table["file"] = [absolute(f, str(base)) if f else f for f in table["file"]]

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
        if label_range is not None:
            problems += _check_range(table, attribute, label_range, out_of_range, source)

    named = table["file"][table["file"] != ""]
    duplicated = named[named.duplicated(keep="first")]
    if len(duplicated):
        shown = ", ".join(sorted(set(duplicated))[:_SHOWN])
        problems.append(f"{len(duplicated)} file(s) are listed more than once: {shown}. List each file once.")

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


def parse_label_range(text: str) -> tuple[float, float]:
    """``"LO,HI"`` (or ``"LO..HI"``) as a label scale.

    Examples:
        >>> parse_label_range("1,5"), parse_label_range("-1..1")
        ((1.0, 5.0), (-1.0, 1.0))
    """
    parts = text.replace("..", ",").split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ManifestError(f"A label range is LO,HI (e.g. 1,7 or 0,1); got {text!r}.") from None
    return _range((low, high))  # type: ignore[return-value]


def _range(label_range: tuple[float, float] | None) -> tuple[float, float] | None:
    if label_range is None:
        return None
    try:
        low, high = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise ManifestError(f"A label range is two numbers (low, high); got {label_range!r}.") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ManifestError(f"A label range needs finite low < high; got {low:g}..{high:g}.")
    return (low, high)


def _check_range(
    table: pd.DataFrame, attribute: str, label_range: tuple[float, float], policy: str, source: str
) -> list[str]:
    """Apply ``policy`` to the labels of ``attribute`` outside ``label_range``; the problems to report."""
    low, high = label_range
    values = table[attribute].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        outside = np.flatnonzero(np.isfinite(values) & ((values < low) | (values > high)))
    if not len(outside):
        return []
    shown = ", ".join(f"{table['file'].iloc[i]} (CSV row {i + 2}): {values[i]:g}" for i in outside[:_SHOWN])
    more = ", ..." if len(outside) > _SHOWN else ""
    what = f"{len(outside)} {attribute} label(s) are outside the scale {low:g}..{high:g}: {shown}{more}"
    if policy == "error":
        return [
            f"{what}. Fix them; or declare the scale the labels are on (--label-range LO,HI); or keep "
            "them with --out-of-range warn, or clip them onto the scale with --out-of-range clip."
        ]
    if policy == "clip":
        table[attribute] = np.clip(values, low, high)
        logger.warning("%s: %s; clipped onto the scale.", _cap(source), what)
    else:
        logger.warning("%s: %s; kept as they are (--out-of-range warn).", _cap(source), what)
    return []


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
