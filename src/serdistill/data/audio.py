"""Reading audio for feature extraction, and the checks that keep bad audio away from models.

Every file is read with soundfile, mixed to mono, resampled to 16 kHz with soxr and
checked before openSMILE sees it. A file that fails a check is *rejected*: it gets a
:class:`Rejection` with a short machine-readable ``kind`` and a human-readable ``reason``.

Checks, in order (``kind``: meaning):

- ``unreadable``: soundfile cannot open or decode the file (empty, not audio, a FLAC
  whose body was cut off, a missing or unreadable path).
- ``nonfinite_samples``: a float WAV holds NaN or infinite samples.
- ``truncated``: the header declares more audio than the file holds (a copy or
  download that stopped early): exactly for WAV, by more than 1% for compressed formats
  such as MP3, whose header counts can be estimates. Rejected unless ``allow_truncated``.
- ``too_short``: less than ``min_duration`` seconds of audio.
- ``silent``: every sample is zero once quantised to 16 bits (what openSMILE sees).
- ``no_speech``: the signal's level (:func:`speech_level`) is below ``min_level`` dBFS
  (-60 by default): dither, a constant (DC) offset, hum-free room tone. Such audio has
  no speech to score, and a model would extrapolate wildly on it. Only the level is
  checked: noise or music at speech level passes.
- ``nonfinite_features``: openSMILE returned NaN or infinite values.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

from serdistill.base.errors import AudioError

SAMPLING_RATE = 16000
"""The rate openSMILE's feature sets are defined for; every signal is resampled to it."""

_INT16_STEP = 1.0 / 32768.0  # openSMILE-python multiplies by 32768 and casts to int16
_INT16_MAX = 32767.0 / 32768.0

MIN_LEVEL = -60.0
"""The default lowest accepted :func:`speech_level`, in dBFS: speech recorded even 30 dB below
a normal level stays above it; dither (about -96 dBFS) and DC offsets fall far below."""
_LEVEL_FRAME = 512  # 32 ms at 16 kHz
_LEVEL_PERCENTILE = 95.0
_LEVEL_FLOOR = -200.0  # the level of digital zero, finite so that it can be stored


@dataclass(frozen=True)
class Rejection:
    """A file that was not used, and why.

    Args:
        file: absolute path of the audio file.
        reason: what was found, what was expected and what to do.
        kind: one of ``unreadable``, ``nonfinite_samples``, ``truncated``, ``too_short``,
            ``silent``, ``no_speech``, ``nonfinite_features``, ``failed``.
    """

    file: str
    reason: str
    kind: str = "failed"


class RejectedAudio(AudioError):
    """Raised for a file that fails a check; carries the :class:`Rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"Audio file {rejection.file} was rejected: {rejection.reason}")
        self.rejection = rejection


@dataclass(frozen=True)
class Audio:
    """A signal ready for openSMILE: mono float32 at :data:`SAMPLING_RATE`.

    Args:
        signal: the samples, 1-D float32 within [-1, 1).
        duration: seconds of audio actually present in the file.
        declared_duration: seconds the file's header declares (equal to ``duration``
            unless the file is truncated).
    """

    signal: np.ndarray
    duration: float
    declared_duration: float


def read_audio(path: str, *, sampling_rate: int = SAMPLING_RATE) -> Audio:
    """Read ``path`` as mono float32 at ``sampling_rate``.

    Mono files at ``sampling_rate`` are passed on sample for sample, so features equal
    those of ``opensmile.Smile.process_file``. Other files are mixed down (mean of the
    channels) and resampled with soxr (HQ). Samples are clipped to the 16-bit range,
    because openSMILE-python casts ``signal * 32768`` to int16, where 1.0 would wrap round.

    Raises:
        RejectedAudio: kind ``unreadable`` or ``nonfinite_samples``.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(path) as handle:
            rate = handle.samplerate
            header_frames = handle.frames
            data = handle.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as err:
        raise RejectedAudio(unreadable(path, err)) from err
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise RejectedAudio(
            Rejection(
                path,
                f"got {bad} NaN or infinite sample(s); expected finite audio; re-export the file",
                "nonfinite_samples",
            )
        )
    frames = len(data)
    declared = _declared_wav_frames(path)  # libsndfile shortens a cut WAV without a word
    if declared is None:  # other formats: the header's count, an estimate for some MP3s
        declared = header_frames if header_frames > 1.01 * frames + 0.01 * rate else frames
    declared = max(declared, frames)
    signal = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if rate != sampling_rate and frames:
        import soxr

        signal = soxr.resample(signal, rate, sampling_rate, quality="HQ").astype(np.float32, copy=False)
    signal = np.clip(signal, -1.0, _INT16_MAX).astype(np.float32, copy=False)
    return Audio(signal=signal, duration=frames / rate, declared_duration=declared / rate)


def declared_duration(path: str, default: float = float("nan")) -> float:
    """Seconds of audio ``path``'s header declares, without reading the samples; ``default``
    when it cannot be read (the file is then checked, and rejected, where it is read).

    Examples:
        >>> declared_duration("no/such/file.wav", 0.0)
        0.0
    """
    import soundfile as sf

    try:
        return float(sf.info(path).duration)
    except Exception:
        return default


def check_audio(
    file: str,
    duration: float,
    declared_duration: float,
    *,
    min_duration: float,
    allow_truncated: bool,
    level: float | None = None,
    min_level: float | None = None,
) -> Rejection | None:
    """The checks that depend on settings; they also run on cached results.

    Args:
        level: the audio's :func:`speech_level`, if known; checked against ``min_level``
            (None: not checked).

    Returns:
        the rejection, or ``None`` if the file passes.
    """
    if declared_duration > duration and not allow_truncated:
        return Rejection(
            file,
            f"got {duration:.3f} s of audio but the header declares {declared_duration:.3f} s "
            "(the file was cut off); expected a complete file; copy it again, or allow "
            "truncated files (allow_truncated=True, --allow-truncated) to use the part present",
            "truncated",
        )
    if duration < min_duration:
        return Rejection(
            file,
            f"got {duration:.3f} s of audio; expected at least {min_duration:g} s (min_duration); "
            "remove the file or lower min_duration",
            "too_short",
        )
    return check_level(file, level, min_level) if level is not None else None


def check_level(file: str, level: float, min_level: float | None) -> Rejection | None:
    """Reject audio whose :func:`speech_level` is below ``min_level`` dBFS (None: accept all)."""
    if min_level is None or level >= min_level:
        return None
    shown = "digital silence" if level <= _LEVEL_FLOOR else f"{level:.1f} dBFS"
    return Rejection(
        file,
        f"got no speech: the signal's level is {shown} once any constant offset is removed; expected "
        f"speech above {min_level:g} dBFS (min_level); remove the file, or lower min_level "
        "(--min-level) for very quiet recordings",
        "no_speech",
    )


def speech_level(signal: np.ndarray) -> float:
    """The level of the loud part of a signal, in dBFS: the 95th percentile of the RMS of
    its 32 ms frames, each frame's mean (a DC offset) removed first.

    A full-scale sine is -3 dBFS; normal speech is about -40 to -10; 16-bit dither is about
    -96; a constant signal, or digital silence, gives the floor of -200.

    Examples:
        >>> t = np.arange(16000) / 16000
        >>> round(speech_level(0.5 * np.sin(2 * np.pi * 200 * t)), 1)
        -9.0
        >>> speech_level(np.full(16000, 0.3))
        -200.0
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.size < _LEVEL_FRAME:
        frames = x[None, :] if x.size else np.zeros((1, 1), np.float32)
    else:
        frames = x[: x.size - x.size % _LEVEL_FRAME].reshape(-1, _LEVEL_FRAME)
    centred = frames - frames.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    rms = np.sqrt(np.mean(np.square(centred, dtype=np.float64), axis=1))
    loud = float(np.percentile(rms, _LEVEL_PERCENTILE))
    return max(_LEVEL_FLOOR, 20.0 * math.log10(loud)) if loud > 0 else _LEVEL_FLOOR


def check_signal(file: str, signal: np.ndarray) -> Rejection | None:
    """Reject a signal that is all zero once quantised to 16 bits, as openSMILE sees it."""
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak < _INT16_STEP:
        return Rejection(
            file,
            f"got silence (peak amplitude {peak:.3g}, below one 16-bit step); expected speech; "
            "remove the file or fix the recording",
            "silent",
        )
    return None


def check_features(file: str, features: np.ndarray) -> Rejection | None:
    """Reject features holding NaN or infinity."""
    finite = np.isfinite(features)
    if finite.all():
        return None
    bad = int(features.size - np.count_nonzero(finite))
    return Rejection(
        file,
        f"openSMILE returned {bad} of {features.size} non-finite feature values; expected "
        "finite values; check that the file holds speech of normal length",
        "nonfinite_features",
    )


def unreadable(path: str, err: BaseException) -> Rejection:
    """The rejection of a file that cannot be opened or decoded."""
    message = str(err).strip().replace(f"Error opening {path!r}: ", "") or type(err).__name__
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    got = "an empty file (0 bytes)" if size == 0 else f"a file soundfile cannot decode ({message})"
    if size is None:
        got = f"a path that cannot be read ({message})"
    return Rejection(
        path,
        f"got {got}; expected WAV, FLAC, OGG or MP3 audio; re-export or remove the file",
        "unreadable",
    )


def _declared_wav_frames(path: str) -> int | None:
    """Frames a RIFF/WAVE header declares in its ``data`` chunk, or ``None`` if not known.

    libsndfile silently shortens a truncated WAV to the bytes present, so the header is
    read here to tell. Streaming writers that leave the size at 0 or 0xFFFFFFFF are
    treated as "unknown".
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = handle.read(size)
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    handle.seek(size % 2, os.SEEK_CUR)
                elif name == b"data":
                    if size in (0, 0xFFFFFFFF) or not block_align:
                        return None
                    return size // block_align
                else:
                    handle.seek(size + size % 2, os.SEEK_CUR)
    except OSError:
        return None
