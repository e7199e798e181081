"""MSP-Podcast: podcast segments rated on arousal, valence and dominance (1..7), plus an
unannotated pool.

Layout: ``ROOT/Audios/*.wav`` and ``ROOT/Labels/labels_consensus.csv`` (older releases:
``labels_concensus.csv``, or the JSON twin ``labels_consensus.json``: a dict keyed by file
name, or a list of records) with the columns ``FileName, EmoClass, EmoAct, EmoVal, EmoDom,
SpkrID, Gender, Split_Set``. Split_Set Train, Development, Test1 become train, development,
test; other sets (Test2, Test3) keep their names. Audio without a label row joins the
``unlabeled`` split, without labels, speaker ``Unknown``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.data.corpora.common import check_root, durations, examples, finish, log, normalise_gender
from serdistill.data.manifest import Manifest

NAME = "msp-podcast"
LABEL_FILES: tuple[str, ...] = (
    "labels_consensus.csv",
    "labels_concensus.csv",
    "labels_consensus.json",
    "labels_concensus.json",
)
COLUMNS: dict[str, str] = {"EmoAct": "arousal", "EmoVal": "valence", "EmoDom": "dominance"}
REQUIRED: tuple[str, ...] = ("FileName", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Split_Set")
SPLITS: dict[str, str] = {"Train": "train", "Development": "development", "Test1": "test"}
PAPER_DURATIONS: tuple[float, float] = (2.75, 11.0)
UNKNOWN_SPEAKER = "Unknown"


def build(
    root: str | os.PathLike[str],
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
) -> Manifest:
    """Build the MSP-Podcast manifest.

    Args:
        root: the corpus folder, holding ``Audios/`` and ``Labels/``.
        min_duration: drop segments shorter than this many seconds (the paper: 2.75).
        max_duration: drop segments longer than this many seconds (the paper: 11).

    Raises:
        CorpusError: missing folders or label file, missing columns, non-numeric labels,
            unreadable audio headers, or no audio left.
    """
    root = check_root(root, recipe=NAME, hint="Audios/*.wav and Labels/labels_consensus.csv")
    audios = root / "Audios"
    if not audios.is_dir():
        raise CorpusError(
            f"MSP-Podcast folder {root} has no Audios/ folder; expected Audios/*.wav and "
            "Labels/labels_consensus.csv. Pass the folder that holds both."
        )
    files = sorted(p for p in audios.glob("*.wav") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CorpusError(
            f"MSP-Podcast audio folder {audios} holds no .wav files; expected the "
            "release's segments, e.g. Audios/MSP-PODCAST_0001_0008.wav."
        )
    labels = read_labels(root / "Labels")
    frame = _join(files, labels, audios)
    frame["duration"] = durations(frame["file"].tolist(), progress=True).round(4)
    frame = _filter_durations(frame, min_duration, max_duration)
    return finish(frame, root=root, recipe=NAME)


def read_labels(folder: Path) -> pd.DataFrame:
    """Read the consensus labels (CSV or JSON, either spelling) into one frame of strings/floats."""
    if not folder.is_dir():
        raise CorpusError(
            f"MSP-Podcast has no Labels/ folder at {folder}; expected {folder}/labels_consensus.csv "
            "(or labels_concensus.csv / labels_consensus.json). "
            "Copy the release's Labels folder there."
        )
    path = next((folder / name for name in LABEL_FILES if (folder / name).is_file()), None)
    if path is None:
        raise CorpusError(
            f"MSP-Podcast label file not found in {folder}; expected one of "
            f"{', '.join(LABEL_FILES)}. "
            "Copy the release's consensus labels there."
        )
    table = _read_json(path) if path.suffix == ".json" else _read_csv(path)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise CorpusError(
            f"MSP-Podcast labels {path} lack the column(s) {', '.join(missing)}; they have "
            f"{', '.join(map(str, table.columns))}. Expected FileName, EmoClass, EmoAct, EmoVal, "
            "EmoDom, SpkrID, Gender, Split_Set."
        )
    problems = []
    for column in COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna() & (table[column].astype(str).str.strip() != "")
        if bad.any():
            problems.append(
                f"{column} is not a number for {int(bad.sum())} row(s), e.g. "
                f"{examples(table.loc[bad, 'FileName'] + '=' + table.loc[bad, column].astype(str))}"
            )
        table[column] = values
    if problems:
        raise CorpusError(f"MSP-Podcast labels {path}: " + "; ".join(problems) + ". Fix or remove those rows.")
    table["FileName"] = table["FileName"].astype(str).str.strip()
    duplicated = table["FileName"].duplicated()
    if duplicated.any():
        log.warning(
            "MSP-Podcast labels %s list %d file(s) twice (e.g. %s); the first row is used.",
            path,
            int(duplicated.sum()),
            examples(table.loc[duplicated, "FileName"]),
        )
        table = table[~duplicated]
    log.info("MSP-Podcast: read %d label rows from %s.", len(table), path)
    return table.reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        text = {c: str for c in ("FileName", "SpkrID", "Split_Set", "Gender", "EmoClass")}
        return pd.read_csv(path, dtype=text, keep_default_na=False, na_values={c: [""] for c in COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CorpusError(f"MSP-Podcast labels {path} are not a readable CSV ({err}). Re-copy the file.") from err


def _read_json(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusError(f"MSP-Podcast labels {path} are not valid JSON ({err}). Re-copy the file.") from err
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        records = [{"FileName": name, **fields} for name, fields in data.items()]
    elif isinstance(data, list) and all(isinstance(v, dict) for v in data):
        records = data
    else:
        raise CorpusError(
            f"MSP-Podcast labels {path} have an unknown JSON shape ({type(data).__name__}); "
            'expected {"<FileName>": {"EmoAct": ..., ...}, ...} or [{"FileName": ..., ...}, ...].'
        )
    table = pd.DataFrame.from_records(records)
    for column in ("FileName", "SpkrID", "Split_Set", "Gender", "EmoClass"):
        if column in table.columns:
            table[column] = table[column].map(lambda v: "" if v is None else str(v))
    return table


def _join(files: list[Path], labels: pd.DataFrame, audios: Path) -> pd.DataFrame:
    audio = pd.DataFrame({"file": [str(f) for f in files], "FileName": [f.name for f in files]})
    absent = sorted(set(labels["FileName"]) - set(audio["FileName"]))
    if absent:
        log.warning(
            "MSP-Podcast: %d labelled file(s) are not in %s (e.g. %s); they are left out.",
            len(absent),
            audios,
            examples(absent),
        )
    table = audio.merge(labels, on="FileName", how="left", indicator=True)
    labelled = (table.pop("_merge") == "both").to_numpy()
    original = table["Split_Set"].fillna("").astype(str).str.strip()
    split = original.map(lambda s: SPLITS.get(s, SPLITS.get(s.capitalize(), s) or "unlabeled"))
    speaker = table["SpkrID"].fillna("").astype(str).str.strip().replace("", UNKNOWN_SPEAKER)
    frame = pd.DataFrame(
        {
            "file": table["file"],
            "speaker": np.where(labelled, speaker, UNKNOWN_SPEAKER),
            "split": np.where(labelled, split, "unlabeled"),
            **{target: table[source].where(labelled) for source, target in COLUMNS.items()},
            "category": _text(table, "EmoClass"),
            "gender": _text(table, "Gender").map(normalise_gender),
            "msp_split": original,
        }
    )
    if not frame["split"].eq("train").any():
        raise CorpusError(
            f"None of the {len(files)} files in {audios} has a Train label row; expected "
            "Split_Set values Train, Development, Test1, ... "
            "Check that Labels/ belongs to these Audios/."
        )
    return frame


def _text(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table.columns:
        return pd.Series([""] * len(table), index=table.index)
    return table[column].fillna("").astype(str).str.strip()


def _filter_durations(frame: pd.DataFrame, low: float | None, high: float | None) -> pd.DataFrame:
    if low is None and high is None:
        return frame
    low = -np.inf if low is None else float(low)
    high = np.inf if high is None else float(high)
    if not low < high:
        raise CorpusError(f"--min-duration must be below --max-duration; got {low} and {high}.")
    keep = (frame["duration"] >= low) & (frame["duration"] <= high)
    dropped = frame[~keep]
    if len(dropped):
        per_split = dropped["split"].value_counts().to_dict()
        log.info(
            "MSP-Podcast: dropped %d segment(s) outside %g..%g s (%s).",
            len(dropped),
            low,
            high,
            ", ".join(f"{k} {v}" for k, v in per_split.items()),
        )
    frame = frame[keep].reset_index(drop=True)
    if frame.empty or not frame["split"].eq("train").any():
        raise CorpusError(f"No training segment lasts {low:g}..{high:g} s; widen --min-duration/--max-duration.")
    return frame
