"""Speech segments of long recordings: voice activity, streamed, cut to bounded lengths.

A podcast, a call or an interview is not one utterance: :func:`find_segments` reads a file
block by block (never whole), mixes it to mono, resamples it to 16 kHz, and runs the
Silero voice-activity detector (its ONNX model ships inside the ``silero-vad`` wheel, run
here with onnxruntime: nothing is downloaded) on 32 ms frames. Frames whose speech
probability rises above ``threshold`` open a segment; it closes after ``min_silence``
seconds below ``threshold - 0.15``. Segments are then fitted to ``[min_seconds,
max_seconds]``: longer ones are cut into equal parts, shorter ones are widened around their
centre (within the file), and segments that overlap after widening are merged.

:func:`read_segment` reads one segment back from the file, resampled on its own, exactly
as a file holding only that stretch would be read: so a segment's features equal those of
the segment cut out and extracted alone.

Examples:
    >>> segments = find_segments("podcast.flac")                 # doctest: +SKIP
    >>> [(round(s.start, 2), round(s.end, 2)) for s in segments]  # doctest: +SKIP
    [(0.42, 3.1), (3.55, 9.8), ...]
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from serdistill.base.errors import ConfigError
from serdistill.data.audio import SAMPLING_RATE, RejectedAudio, Rejection, _declared_wav_frames, check_audio, unreadable

FRAME = 512  # samples per VAD frame at 16 kHz (32 ms), what Silero's model takes
_CONTEXT = 64  # samples of the previous frame the model sees before each frame
_BLOCK_SECONDS = 30.0  # audio read and resampled at a time
MIN_SECONDS, MAX_SECONDS = 1.0, 10.0


@dataclass(frozen=True)
class Segment:
    """A stretch of speech in a file, in seconds from its start."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SegmentOptions:
    """How speech is found and cut.

    Args:
        threshold: speech probability that opens a segment (Silero's default, 0.5).
        min_silence: seconds of non-speech that close a segment.
        min_speech: stretches of speech shorter than this are ignored (clicks, breaths).
        min_seconds, max_seconds: the bounds segments are fitted to (1..10 s).
        pad: seconds of context kept before and after each stretch of speech.
    """

    threshold: float = 0.5
    min_silence: float = 0.3
    min_speech: float = 0.25
    min_seconds: float = MIN_SECONDS
    max_seconds: float = MAX_SECONDS
    pad: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"The segment threshold must be a probability in (0, 1); got {self.threshold!r}.")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ConfigError(f"Segment bounds need 0 < min <= max seconds; got {self.min_seconds!r}..{self.max_seconds!r}.")
        if self.min_silence < 0 or self.min_speech < 0 or self.pad < 0:
            raise ConfigError("min_silence, min_speech and pad are seconds >= 0.")


class VoiceActivity:
    """Silero VAD (ONNX, from the ``silero-vad`` package) on 16 kHz audio, frame by frame.

    Keeps the model's recurrent state between calls, so a long signal can be fed block by
    block; :meth:`reset` starts a new file.
    """

    def __init__(self) -> None:
        from importlib import resources

        import onnxruntime

        try:
            model = resources.files("silero_vad").joinpath("data/silero_vad.onnx")
        except ModuleNotFoundError:
            raise ConfigError(
                "Speech segmentation needs the silero-vad package: pip install silero-vad "
                "(its ONNX model ships inside the wheel)."
            ) from None
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1
        with resources.as_file(model) as path:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._rate = np.array(SAMPLING_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)

    def probabilities(self, signal: np.ndarray) -> np.ndarray:
        """Speech probabilities of the whole 32 ms frames in ``signal`` (a remainder waits for the next call)."""
        signal = np.concatenate([self._rest, np.asarray(signal, np.float32)])
        n = len(signal) // FRAME
        self._rest = signal[n * FRAME :]
        out = np.empty(n, np.float32)
        frame = np.empty((1, _CONTEXT + FRAME), np.float32)
        for i in range(n):
            frame[0, :_CONTEXT] = self._context
            frame[0, _CONTEXT:] = signal[i * FRAME : (i + 1) * FRAME]
            prob, self._state = self.session.run(None, {"input": frame, "state": self._state, "sr": self._rate})
            out[i] = prob[0, 0]
            self._context = frame[0, -_CONTEXT:].copy()
        return out


def stream(
    path: str | os.PathLike[str], *, block_seconds: float = _BLOCK_SECONDS, allow_truncated: bool = False
) -> Iterator[np.ndarray]:
    """The file as mono float32 blocks at 16 kHz (resampled as one stream), never held whole.

    Raises:
        RejectedAudio: kind ``unreadable`` (the file cannot be opened or decoded) or, once
            the end is reached, ``truncated`` (a WAV whose header declares more audio than
            it holds; unless ``allow_truncated``).
    """
    import soundfile as sf
    import soxr

    path = os.fspath(path)
    try:
        handle = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as err:
        raise RejectedAudio(unreadable(path, err)) from err
    with handle:
        rate = handle.samplerate
        resampler = soxr.ResampleStream(rate, SAMPLING_RATE, 1, dtype="float32") if rate != SAMPLING_RATE else None
        size = max(FRAME, int(block_seconds * rate))
        frames = 0
        while True:
            try:
                data = handle.read(size, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError) as err:  # a body cut off mid-file
                raise RejectedAudio(unreadable(path, err)) from err
            last = len(data) < size
            frames += len(data)
            mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
            mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                yield np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)
            if last:
                break
    declared = _declared_wav_frames(path)
    if declared is not None and declared > frames:
        rejection = check_audio(path, frames / rate, declared / rate, min_duration=0.0, allow_truncated=allow_truncated)
        if rejection is not None:
            raise RejectedAudio(rejection)


def find_segments(
    path: str | os.PathLike[str],
    options: SegmentOptions | None = None,
    vad: VoiceActivity | None = None,
    *,
    allow_truncated: bool = False,
) -> list[Segment]:
    """The speech segments of an audio file (see the module docstring).

    Raises:
        RejectedAudio: the file cannot be read (kind ``unreadable``), is cut off (``truncated``)
            or holds no speech (kind ``no_speech``).
    """
    options = options or SegmentOptions()
    vad = vad or VoiceActivity()
    vad.reset()
    probabilities = [vad.probabilities(block) for block in stream(path, allow_truncated=allow_truncated)]
    probs = np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32)
    duration = len(probs) * FRAME / SAMPLING_RATE + len(vad._rest) / SAMPLING_RATE
    stretches = speech_stretches(probs, options)
    segments = fit_segments(stretches, duration, options)
    if not segments:
        raise RejectedAudio(
            Rejection(
                os.fspath(path),
                f"got no speech in {duration:.1f} s (voice-activity "
                f"detector, threshold {options.threshold:g}); expected speech",
                "no_speech",
            )
        )
    return segments


def speech_stretches(probs: np.ndarray, options: SegmentOptions) -> list[tuple[float, float]]:
    """(start, end) seconds of speech from per-frame probabilities, with hysteresis.

    Examples:
        >>> p = np.r_[np.zeros(20), np.ones(40), np.zeros(40)].astype(np.float32)
        >>> [(round(a, 3), round(b, 3)) for a, b in speech_stretches(p, SegmentOptions(pad=0))]
        [(0.64, 1.92)]
    """
    step = FRAME / SAMPLING_RATE
    low = max(0.01, options.threshold - 0.15)
    silence_frames = max(1, math.ceil(options.min_silence / step))
    out: list[tuple[float, float]] = []
    start = None
    quiet = 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= options.threshold:
                start, quiet = i, 0
            continue
        quiet = quiet + 1 if p < low else 0
        if quiet >= silence_frames:
            out.append((start, i - quiet + 1))
            start = None
    if start is not None:
        out.append((start, len(probs) - quiet))
    total = len(probs) * step
    return [
        (max(0.0, a * step - options.pad), min(total, b * step + options.pad))
        for a, b in out
        if (b - a) * step >= options.min_speech
    ]


def fit_segments(stretches: list[tuple[float, float]], duration: float, options: SegmentOptions) -> list[Segment]:
    """Fit stretches of speech to ``[min_seconds, max_seconds]`` (see the module docstring).

    Examples:
        >>> o = SegmentOptions(min_seconds=1, max_seconds=4)
        >>> [(s.start, s.end) for s in fit_segments([(1.0, 1.4), (2.0, 11.0)], 20.0, o)]
        [(0.7, 1.7), (2.0, 5.0), (5.0, 8.0), (8.0, 11.0)]
    """
    widened: list[list[float]] = []
    for start, end in stretches:
        if end - start < options.min_seconds:
            middle = (start + end) / 2
            start = min(max(0.0, middle - options.min_seconds / 2), max(0.0, duration - options.min_seconds))
            end = min(duration, start + options.min_seconds)
        if widened and start < widened[-1][1]:  # overlaps the previous one once widened: one segment
            widened[-1][1] = max(widened[-1][1], end)
        else:
            widened.append([start, end])
    out: list[Segment] = []
    for start, end in widened:
        parts = max(1, math.ceil((end - start) / options.max_seconds - 1e-9))
        width = (end - start) / parts
        out += [Segment(round(start + k * width, 6), round(start + (k + 1) * width, 6)) for k in range(parts)]
    return out


def read_segment(path: str | os.PathLike[str], segment: Segment) -> np.ndarray:
    """The samples of ``segment``: read from the file at its own rate, mixed to mono and
    resampled to 16 kHz on their own, as :func:`serdistill.data.audio.read_audio` would read a
    file holding only that stretch."""
    import soundfile as sf

    with sf.SoundFile(os.fspath(path)) as handle:
        rate = handle.samplerate
        first = int(round(segment.start * rate))
        handle.seek(first)
        data = handle.read(int(round(segment.end * rate)) - first, dtype="float32", always_2d=True)
    signal = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if rate != SAMPLING_RATE and len(signal):
        import soxr

        signal = soxr.resample(signal, rate, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)
    return np.clip(signal, -1.0, 32767.0 / 32768.0).astype(np.float32, copy=False)


__all__ = [
    "MAX_SECONDS",
    "MIN_SECONDS",
    "Segment",
    "SegmentOptions",
    "VoiceActivity",
    "find_segments",
    "fit_segments",
    "read_segment",
    "speech_stretches",
    "stream",
]
