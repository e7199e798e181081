"""A synthetic corpus generated with espeak-ng: a pipeline demonstration, not emotional speech.

Each file gets arousal, valence and dominance targets drawn uniformly on 1..7; the targets
set the prosody espeak-ng speaks with, and become the labels. Models can learn them because
the prosody follows them, not because the speech is emotional. The mapping (``u = (x-1)/6``):

- arousal: speaking rate ``130 + 150 u`` words/min and pitch range ``50 + 150 u`` %;
- valence: pitch ``25 + 50 u`` (espeak-ng's 0..99 scale);
- dominance: amplitude ``50 + 100 u`` (espeak-ng's 0..200 scale).

Twelve espeak-ng voices act as speakers. Two of them (one female, one male, chosen by the
seed) speak the ``unlabeled`` split, whose files have no labels, like MSP-Podcast's
unannotated pool; the other ten are split speaker-independently into train, development
and test.
Files are 16 kHz mono 16-bit WAV, written atomically; a rerun skips files already made.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from serdistill.base.errors import CorpusError
from serdistill.base.io import atomic_path
from serdistill.data.corpora.common import finish, log
from serdistill.data.corpora.splits import DEFAULT_PROPORTIONS, assign_speakers
from serdistill.data.manifest import ATTRIBUTES, Manifest

NAME = "synthetic"
SAMPLING_RATE = 16000
VERSION = 1  # bump when the generation changes: file names change with it
DEFAULT_FILES = 240
VOICES: tuple[tuple[str, str, str], ...] = (  # speaker, espeak-ng voice, gender
    ("spk01", "en+m1", "male"),
    ("spk02", "en+f2", "female"),
    ("spk03", "en-us+m3", "male"),
    ("spk04", "en-us+f3", "female"),
    ("spk05", "en+m5", "male"),
    ("spk06", "en+f4", "female"),
    ("spk07", "en-us+m7", "male"),
    ("spk08", "en-us+f1", "female"),
    ("spk09", "en+m2", "male"),
    ("spk10", "en+f5", "female"),
    ("spk11", "en-us+m4", "male"),
    ("spk12", "en-us+f2", "female"),
)
SENTENCES: tuple[str, ...] = (
    "The boxes arrived at the station this morning.",
    "Please put the blue folder on the second shelf.",
    "We walked along the river until the bridge.",
    "The library closes at six on weekdays.",
    "My neighbour painted the fence last summer.",
    "There are seven chairs around the kitchen table.",
    "The next bus leaves from the corner of the street.",
    "She wrote the numbers on a small piece of paper.",
    "The window in the hallway was left open.",
    "He bought bread and apples at the market.",
    "The meeting was moved to Thursday afternoon.",
    "Our train stopped for a while near the tunnel.",
)


@dataclass(frozen=True)
class Utterance:
    """One planned file: who says what, with which targets and prosody."""

    index: int
    speaker: str
    voice: str
    gender: str
    text: str
    arousal: float
    valence: float
    dominance: float
    rate: int
    pitch: int
    pitch_range: int
    amplitude: int

    @property
    def name(self) -> str:
        """File name; it changes whenever anything that shapes the audio changes."""
        key = f"{VERSION}|{self.voice}|{self.text}|{self.rate}|{self.pitch}|{self.pitch_range}|{self.amplitude}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        return f"{self.speaker}_{self.index:04d}_{digest}.wav"


def prosody(arousal: float, valence: float, dominance: float) -> dict[str, int]:
    """espeak-ng settings for targets on 1..7 (see the module docstring).

    Examples:
        >>> prosody(1, 4, 7)
        {'rate': 130, 'pitch_range': 50, 'pitch': 50, 'amplitude': 150}
    """
    a, v, d = ((float(x) - 1.0) / 6.0 for x in (arousal, valence, dominance))
    return {
        "rate": round(130 + 150 * a),
        "pitch_range": round(50 + 150 * a),
        "pitch": round(25 + 50 * v),
        "amplitude": round(50 + 100 * d),
    }


def plan(n_files: int = DEFAULT_FILES, *, seed: int = 0) -> list[Utterance]:
    """The files to generate; file ``i`` depends only on ``seed`` and ``i``, not on ``n_files``."""
    order = np.random.default_rng(seed).permutation(len(VOICES))
    utterances = []
    for index in range(n_files):
        rng = np.random.default_rng([seed, index])
        speaker, voice, gender = VOICES[order[index % len(VOICES)]]
        arousal, valence, dominance = (round(float(x), 3) for x in 1.0 + 6.0 * rng.random(3))
        text = SENTENCES[int(rng.integers(len(SENTENCES)))]
        utterances.append(
            Utterance(
                index, speaker, voice, gender, text, arousal, valence, dominance, **prosody(arousal, valence, dominance)
            )
        )
    return utterances


def build(
    root: str | os.PathLike[str],
    *,
    n_files: int = DEFAULT_FILES,
    seed: int = 0,
    proportions: Sequence[float] = DEFAULT_PROPORTIONS,
    num_workers: int = 2,
    progress: bool = True,
    espeak: str = "espeak-ng",
) -> Manifest:
    """Generate (or complete) the synthetic corpus in ``root`` and return its manifest.

    Args:
        root: output folder; audio goes to ``root/audio``, the plan to ``root/synthetic_plan.csv``.
        n_files: how many files (at least one per speaker, i.e. 12).
        seed: seed of the targets, sentences, speakers and splits.
        proportions: train, development, test shares of the 10 labelled speakers.
        num_workers: espeak-ng processes run at once.
        progress: show a progress bar.
        espeak: the espeak-ng program (name on PATH or a path).

    Raises:
        CorpusError: espeak-ng missing or failing, or bad arguments.
    """
    if int(n_files) < len(VOICES):
        raise CorpusError(f"--n-files must be at least {len(VOICES)} (one per speaker); got {n_files}.")
    if int(num_workers) < 1:
        raise CorpusError(f"--num-workers must be at least 1; got {num_workers}.")
    program = shutil.which(espeak)
    if program is None:
        raise CorpusError(
            f"espeak-ng was not found (looked for {espeak!r} on PATH); the synthetic corpus needs it. "
            "Install it with 'sudo apt-get install espeak-ng' (Debian/Ubuntu), 'brew install espeak-ng' "
            "(macOS), or run 'make deps'."
        )
    root = Path(root).absolute()
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    utterances = plan(int(n_files), seed=seed)
    todo = [u for u in utterances if not _complete(audio / u.name)]
    if len(todo) < len(utterances):
        log.info(
            "synthetic: %d of %d files already made in %s; %s.",
            len(utterances) - len(todo),
            len(utterances),
            audio,
            f"generating the other {len(todo)}" if todo else "nothing to generate",
        )
    _generate(todo, audio, program=program, num_workers=int(num_workers), progress=progress)
    frame = _frame(utterances, audio, seed=seed, proportions=proportions)
    table = pd.DataFrame([asdict(u) | {"file": f"audio/{u.name}"} for u in utterances])
    with atomic_path(root / "synthetic_plan.csv") as tmp:
        table.to_csv(tmp, index=False)
    return finish(frame, root=root, recipe=NAME)


def _complete(path: Path) -> bool:
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError):
        return False
    return info.samplerate == SAMPLING_RATE and info.frames > 0


def _generate(todo: list[Utterance], audio: Path, *, program: str, num_workers: int, progress: bool) -> None:
    if not todo:
        return
    from tqdm import tqdm

    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=num_workers) as pool:  # each task runs an espeak-ng process
        futures = {pool.submit(_speak, u, audio / u.name, program): u for u in todo}
        bar = tqdm(total=len(todo), desc="synthesising", unit="file", disable=not progress)
        for future in as_completed(futures):
            try:
                future.result()
            except (CorpusError, OSError, subprocess.SubprocessError) as err:
                failures.append(f"{futures[future].name}: {err}")
            bar.update(1)
        bar.close()
    if failures:
        raise CorpusError(
            f"espeak-ng failed for {len(failures)} of {len(todo)} file(s), e.g. "
            + "; ".join(failures[:3])
            + ". Files already made are kept; rerun to resume."
        )


def _speak(utterance: Utterance, target: Path, program: str) -> None:
    """Synthesise one file: espeak-ng at 22.05 kHz, resampled to 16 kHz, written atomically."""
    import soundfile
    import soxr

    ssml = f'<speak><prosody range="{utterance.pitch_range}%">{escape(utterance.text)}</prosody></speak>'
    fd, raw = tempfile.mkstemp(suffix=".wav", prefix=".espeak-", dir=target.parent)
    os.close(fd)
    try:
        command = [
            program,
            "-m",
            "-v",
            utterance.voice,
            "-s",
            str(utterance.rate),
            "-p",
            str(utterance.pitch),
            "-a",
            str(utterance.amplitude),
            "-w",
            raw,
            ssml,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise CorpusError(f"'{' '.join(command[:-1])} ...' exited with {done.returncode}: {done.stderr.strip()}")
        signal, rate = soundfile.read(raw, dtype="float64", always_2d=True)
        if signal.size == 0:
            raise CorpusError(f"espeak-ng produced no audio for {utterance.text!r} with voice {utterance.voice}")
        mono = signal.mean(axis=1)
        resampled = soxr.resample(mono, rate, SAMPLING_RATE) if rate != SAMPLING_RATE else mono
        with atomic_path(target) as tmp:
            soundfile.write(str(tmp), np.clip(resampled, -1.0, 1.0), SAMPLING_RATE, subtype="PCM_16", format="WAV")
    finally:
        Path(raw).unlink(missing_ok=True)


def speaker_splits(*, seed: int = 0, proportions: Sequence[float] = DEFAULT_PROPORTIONS) -> dict[str, str]:
    """Speaker -> split: one female and one male voice for ``unlabeled``, the rest speaker-independent."""
    rng = np.random.default_rng([seed, 2])
    unlabeled = [rng.choice([s for s, _, g in VOICES if g == gender]) for gender in ("female", "male")]
    labelled = [(s, g) for s, _, g in VOICES if s not in unlabeled]
    assignment = assign_speakers([s for s, _ in labelled], genders=dict(labelled), proportions=proportions, seed=seed)
    return assignment | {str(s): "unlabeled" for s in unlabeled}


def _frame(utterances: list[Utterance], audio: Path, *, seed: int, proportions: Sequence[float]) -> pd.DataFrame:
    import soundfile

    assignment = speaker_splits(seed=seed, proportions=proportions)
    frame = pd.DataFrame(
        {
            "file": [str(audio / u.name) for u in utterances],
            "speaker": [u.speaker for u in utterances],
            "split": [assignment[u.speaker] for u in utterances],
            **{a: [getattr(u, a) for u in utterances] for a in ATTRIBUTES},
            "gender": [u.gender for u in utterances],
            "voice": [u.voice for u in utterances],
            "sentence": [u.text for u in utterances],
            "duration": [round(soundfile.info(str(audio / u.name)).duration, 4) for u in utterances],
        }
    )
    frame.loc[frame["split"] == "unlabeled", list(ATTRIBUTES)] = np.nan
    return frame
