"""RAVDESS: 24 actors, 8 emotions at two intensities, labels in file names.

File names ``MM-VV-EE-II-SS-RR-AA.wav`` (or ``.flac``), found anywhere under ROOT: modality
``03`` audio-only, vocal channel ``01`` speech (others are skipped and counted), emotion
``01``..``08``, intensity ``01`` normal / ``02`` strong, statement, repetition, actor
``01``..``24`` (odd = male). Targets are scaled by intensity: normal 0.75, strong 1.0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.data.corpora.common import categorical_manifest, check_root, examples, find_audio, log
from serdistill.data.corpora.norms import Norms, load_norms
from serdistill.data.corpora.splits import DEFAULT_PROPORTIONS
from serdistill.data.manifest import Manifest

NAME = "ravdess"
PATTERN = re.compile(
    r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})-"
    r"(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})$"
)
EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
INTENSITY: dict[str, tuple[str, float]] = {"01": ("normal", 0.75), "02": ("strong", 1.0)}
STATEMENTS: dict[str, str] = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
AUDIO_ONLY, SPEECH = "03", "01"


def build(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    proportions: Sequence[float] = DEFAULT_PROPORTIONS,
    norms: Norms | None = None,
) -> Manifest:
    """Build the RAVDESS speech manifest.

    Args:
        root: a folder holding the RAVDESS files anywhere below it (e.g. ``Actor_01/``).
        seed: seed of the speaker-independent split.
        proportions: train, development, test shares of the actors.
        norms: the norms table for the derived targets (default: NRC-VAD v1.0).

    Raises:
        CorpusError: no usable file, or a layout that is not RAVDESS's.
    """
    root = check_root(root, recipe=NAME, hint="files named MM-VV-EE-II-SS-RR-AA.wav, e.g. Actor_01/03-01-05-02-01-01-01.wav")
    files = find_audio(root)
    if not files:
        raise CorpusError(
            f"RAVDESS folder {root} holds no .wav or .flac files (searched recursively); "
            "expected files like Actor_01/03-01-05-02-01-01-01.wav."
        )
    rows, unmatched, other_modality = [], [], 0
    seen: dict[str, os.PathLike[str]] = {}
    for file in files:
        match = PATTERN.match(file.stem)
        if not match or not _valid(match):
            unmatched.append(str(file.relative_to(root)))
            continue
        if match["modality"] != AUDIO_ONLY or match["channel"] != SPEECH:
            other_modality += 1
            continue
        if file.stem in seen:
            log.warning("RAVDESS file %s appears twice (%s and %s); the first is used.", file.stem, seen[file.stem], file)
            continue
        seen[file.stem] = file
        actor = match["actor"]
        level, strength = INTENSITY[match["intensity"]]
        rows.append(
            {
                "file": str(file),
                "speaker": actor,
                "gender": "male" if int(actor) % 2 else "female",
                "category": EMOTIONS[match["emotion"]],
                "level": level,
                "strength": strength,
                "sentence": STATEMENTS[match["statement"]],
                "repetition": int(match["repetition"]),
            }
        )
    if other_modality:
        log.info(
            "RAVDESS: skipped %d file(s) that are not audio-only speech (modality 03, vocal channel 01).", other_modality
        )
    if unmatched:
        message = (
            f"{len(unmatched)} of {len(files)} audio file(s) under {root} are not named like RAVDESS "
            f"(MM-VV-EE-II-SS-RR-AA with emotion 01-08, intensity 01-02, actor 01-24): "
            f"{examples(unmatched)}"
        )
        if not rows:
            raise CorpusError(message + ". Rename them or point ROOT at a RAVDESS copy.")
        log.warning("%s; skipped.", message)
    if not rows:
        raise CorpusError(
            f"RAVDESS folder {root} has no audio-only speech files (modality 03, vocal "
            f"channel 01); {other_modality} file(s) of other modalities or song were skipped. "
            "Download the Audio_Speech_Actors_01-24 archive."
        )
    frame = pd.DataFrame(rows)
    return categorical_manifest(
        frame,
        root=root,
        recipe=NAME,
        norms=norms or load_norms(),
        categories=list(EMOTIONS.values()),
        seed=seed,
        proportions=proportions,
    )


def _valid(match: re.Match[str]) -> bool:
    return (
        match["emotion"] in EMOTIONS
        and match["intensity"] in INTENSITY
        and match["statement"] in STATEMENTS
        and match["repetition"] in ("01", "02")
        and 1 <= int(match["actor"]) <= 24
        and match["modality"] in ("01", "02", "03")
        and match["channel"] in ("01", "02")
    )
