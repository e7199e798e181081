"""CREMA-D: 91 actors, 6 emotions, 12 sentences, crowd-sourced voice-only ratings.

File names ``AAAA_SSS_EEE_LL.wav`` (e.g. ``1001_DFA_ANG_XX.wav``), found anywhere under ROOT
(the release keeps them in ``AudioWAV/``): actor, sentence, emotion ANG DIS FEA HAP NEU SAD,
level LO MD HI XX (unspecified).

How strongly each file expresses its emotion (``strength`` in [0, 1], which scales the
derived targets) comes from the best source present, recorded in ``intensity_source``:

1. ``voice_agreement``: ``processedResults/tabulatedVotes.csv``, rows of the voice-only
   ratings (query type 1, ids 100001..): the share of raters who chose the intended emotion.
2. ``voice_level``: ``processedResults/summaryTable.csv`` (majority vote and mean level per
   modality, no agreement share): ``VoiceLevel / 100`` of the intended emotion when it is
   among ``VoiceVote``, else 0 (the voice majority heard another emotion).
3. ``level_code``: the level in the file name: LO 0.5, MD 0.75, HI 1.0, XX 0.75.

Gender comes from ``VideoDemographics.csv`` (``ActorID, Sex``) when present.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.data.corpora.common import (
    categorical_manifest,
    check_root,
    examples,
    find_audio,
    log,
    normalise_gender,
)
from serdistill.data.corpora.norms import Norms, load_norms
from serdistill.data.corpora.splits import DEFAULT_PROPORTIONS
from serdistill.data.manifest import Manifest

NAME = "cremad"
PATTERN = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_(?P<level>LO|MD|HI|XX)$"
)
EMOTIONS: dict[str, tuple[str, str]] = {  # code -> (norms row, rating letter)
    "ANG": ("anger", "A"),
    "DIS": ("disgust", "D"),
    "FEA": ("fear", "F"),
    "HAP": ("happiness", "H"),
    "NEU": ("neutral", "N"),
    "SAD": ("sadness", "S"),
}
LEVELS: dict[str, float] = {"LO": 0.5, "MD": 0.75, "HI": 1.0, "XX": 0.75}
SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
VOICE_QUERY = 1  # tabulatedVotes ids are query type * 100000 + clip number; 1 = voice only


def build(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    proportions: Sequence[float] = DEFAULT_PROPORTIONS,
    norms: Norms | None = None,
) -> Manifest:
    """Build the CREMA-D manifest.

    Args:
        root: the CREMA-D folder (with ``AudioWAV/`` and optionally ``processedResults/``).
        seed: seed of the speaker-independent split.
        proportions: train, development, test shares of the actors.
        norms: the norms table for the derived targets (default: NRC-VAD v1.0).

    Raises:
        CorpusError: no usable file, or unreadable rating tables.
    """
    root = check_root(root, recipe=NAME, hint="AudioWAV/AAAA_SSS_EEE_LL.wav files, e.g. AudioWAV/1001_DFA_ANG_XX.wav")
    files = find_audio(root)
    if not files:
        raise CorpusError(
            f"CREMA-D folder {root} holds no .wav or .flac files (searched recursively); "
            "expected AudioWAV/1001_DFA_ANG_XX.wav and the like."
        )
    rows, unmatched = [], []
    for file in files:
        match = PATTERN.match(file.stem)
        if not match:
            unmatched.append(str(file.relative_to(root)))
            continue
        category, letter = EMOTIONS[match["emotion"]]
        rows.append(
            {
                "file": str(file),
                "speaker": match["actor"],
                "category": category,
                "letter": letter,
                "level": match["level"],
                "sentence": SENTENCES.get(match["sentence"], match["sentence"]),
                "utterance": file.stem,
            }
        )
    if unmatched:
        message = (
            f"{len(unmatched)} of {len(files)} audio file(s) under {root} are not named like CREMA-D "
            f"(AAAA_SSS_EEE_LL, emotion ANG/DIS/FEA/HAP/NEU/SAD, level LO/MD/HI/XX): {examples(unmatched)}"
        )
        if not rows:
            raise CorpusError(message + ". Rename them or point ROOT at a CREMA-D copy.")
        log.warning("%s; skipped.", message)
    frame = pd.DataFrame(rows).drop_duplicates("utterance", keep="first")
    frame["gender"] = _genders(root, frame["speaker"])
    frame = _add_strength(root, frame)
    frame = frame.drop(columns=["letter"])
    return categorical_manifest(
        frame,
        root=root,
        recipe=NAME,
        norms=norms or load_norms(),
        categories=[c for c, _ in EMOTIONS.values()],
        seed=seed,
        proportions=proportions,
    )


def _find(root: Path, name: str) -> Path | None:
    for candidate in (
        root / "processedResults" / name,
        root / name,
        root / "data" / "InfoAndStats" / "processedResults" / name,
    ):
        if candidate.is_file():
            return candidate
    found = sorted(root.rglob(name))
    return found[0] if found else None


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CorpusError(f"CREMA-D table {path} is not a readable CSV ({err}). Re-download it or remove it.") from err
    lowered = {str(c).lower(): c for c in table.columns}
    missing = [c for c in required if c.lower() not in lowered]
    if missing:
        raise CorpusError(
            f"CREMA-D table {path} lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, table.columns))}. Expected the release's {path.name}, "
            "or remove the file to fall back on the level codes."
        )
    return table.rename(columns={lowered[c.lower()]: c for c in required})


def _genders(root: Path, speakers: pd.Series) -> pd.Series:
    path = _find(root, "VideoDemographics.csv")
    if path is None:
        log.info("CREMA-D: VideoDemographics.csv not found; speakers have no gender (splits are not gender-balanced).")
        return pd.Series([""] * len(speakers), index=speakers.index)
    table = _read_csv(path, ["ActorID", "Sex"])
    sex = dict(zip(table["ActorID"].astype(str).str.zfill(4), table["Sex"].map(normalise_gender)))
    return speakers.map(sex).fillna("")


def _add_strength(root: Path, frame: pd.DataFrame) -> pd.DataFrame:
    frame["intensity"] = np.nan
    frame["intensity_source"] = "level_code"
    votes_path, summary_path = _find(root, "tabulatedVotes.csv"), _find(root, "summaryTable.csv")
    if votes_path is not None:
        frame = _from_votes(frame, votes_path)
    elif summary_path is not None:
        frame = _from_summary(frame, summary_path)
    else:
        log.info("CREMA-D: no processedResults/tabulatedVotes.csv or summaryTable.csv; strength from the level codes.")
    by_level = frame["level"].map(LEVELS)
    frame["strength"] = frame["intensity"].where(frame["intensity"].notna(), by_level)
    frame.loc[frame["intensity"].isna(), "intensity_source"] = "level_code"
    return frame


def _from_votes(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    table = _read_csv(path, ["fileName", "numResponses", "A", "D", "F", "H", "N", "S"])
    ids = pd.to_numeric(table.iloc[:, 0], errors="coerce")
    voice = table[(ids // 100000) == VOICE_QUERY].drop_duplicates("fileName").set_index("fileName")
    if voice.empty:
        log.warning("CREMA-D: %s has no voice-only rows (ids 100001..); strength from the level codes.", path)
        return frame
    responses = pd.to_numeric(voice["numResponses"], errors="coerce").replace(0, np.nan)
    share = {
        name: pd.to_numeric(voice.at[name, letter], errors="coerce") / responses[name]
        for name, letter in zip(frame["utterance"], frame["letter"])
        if name in voice.index
    }
    frame["intensity"] = frame["utterance"].map(share).astype(float).round(4)
    frame.loc[frame["intensity"].notna(), "intensity_source"] = "voice_agreement"
    return frame


def _from_summary(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    table = _read_csv(path, ["FileName", "VoiceVote", "VoiceLevel"])
    table = table.drop_duplicates("FileName").set_index("FileName")
    values = {}
    for name, letter in zip(frame["utterance"], frame["letter"]):
        if name not in table.index:
            continue
        votes = [v.strip() for v in str(table.at[name, "VoiceVote"]).split(":")]
        levels = str(table.at[name, "VoiceLevel"]).split(":")
        if letter not in votes:
            values[name] = 0.0  # the voice majority heard another emotion
        elif len(levels) == len(votes):
            values[name] = float(pd.to_numeric(levels[votes.index(letter)], errors="coerce")) / 100.0
    frame["intensity"] = frame["utterance"].map(values).astype(float).clip(0, 1).round(4)
    frame.loc[frame["intensity"].notna(), "intensity_source"] = "voice_level"
    return frame
