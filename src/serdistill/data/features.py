"""openSMILE functionals for every audio file, checked, cached and in parallel.

The one obvious call::

    >>> from serdistill.data.features import FeatureExtractor
    >>> extractor = FeatureExtractor("ComParE_2016", cache_dir="~/.cache/serdistill/features")
    >>> table = extractor.process_files(files)  # doctest: +SKIP
    >>> extractor.rejected                      # doctest: +SKIP
    [Rejection(file='/data/a.wav', reason='got 0.030 s of audio; ...', kind='too_short')]

``table`` is a float32 ``DataFrame`` indexed by absolute file path (index name ``file``),
one row per accepted file in input order, one column per feature. Rejected files are
left out, listed in ``extractor.rejected``, and logged; :func:`features_for` then names
them if anyone asks for their features. See docs/features.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import importlib.metadata
import logging
import math
import multiprocessing
import os
import signal as signals
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serdistill.base.errors import ConfigError, WorkerError
from serdistill.base.io import absolute, working_folder
from serdistill.base.lifecycle import exit_with_parent, started_on_main_thread
from serdistill.base.protocols import Engine
from serdistill.data.audio import (
    MIN_LEVEL,
    SAMPLING_RATE,
    Audio,
    RejectedAudio,
    Rejection,
    check_audio,
    check_features,
    check_level,
    check_signal,
    read_audio,
    speech_level,
    unreadable,
)
from serdistill.data.cache import FEATURE_CODE_VERSION, FeatureCache, content_hash, default_cache_dir
from serdistill.data.feature_table import (
    FeatureError,
    features_for,
    read_features,
    rejections_path,
    with_features,
    write_features,
    write_rejections,
)
from serdistill.data.manifest import Manifest, read_manifest

__all__ = [
    "ExtractionResult",
    "ExtractionStats",
    "FeatureError",
    "FeatureExtractor",
    "FeatureSet",
    "Rejection",
    "default_cache_dir",
    "extract_files_with_engine",
    "extract_manifest",
    "feature_dim",
    "feature_names",
    "features_for",
    "read_features",
    "rejections_path",
    "with_features",
    "write_features",
    "write_rejections",
]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
_CHUNK_MAX = 4  # files per task sent to a worker: small, so an interrupt loses little


class FeatureSet(str, enum.Enum):
    """The openSMILE functionals serdistill extracts. ``FeatureSet("compare")`` also works."""

    ComParE_2016 = "ComParE_2016"
    """The Interspeech 2013 ComParE set: 6,373 functionals (the paper's input)."""
    eGeMAPSv02 = "eGeMAPSv02"
    """The extended Geneva minimalistic set: 88 functionals."""

    @classmethod
    def _missing_(cls, value: object) -> FeatureSet | None:
        if isinstance(value, str):
            return _ALIASES.get(value.strip().lower().replace("-", "_"))
        return None

    @property
    def dim(self) -> int:
        """The number of features per file."""
        return _DIMS[self]


_ALIASES = {
    "compare": FeatureSet.ComParE_2016,
    "compare_2016": FeatureSet.ComParE_2016,
    "egemaps": FeatureSet.eGeMAPSv02,
    "egemapsv02": FeatureSet.eGeMAPSv02,
}
_DIMS = {FeatureSet.ComParE_2016: 6373, FeatureSet.eGeMAPSv02: 88}


def _feature_set(value: FeatureSet | str) -> FeatureSet:
    try:
        return FeatureSet(value)
    except ValueError:
        raise ConfigError(
            f"The feature set must be one of {', '.join(m.value for m in FeatureSet)} (or compare, egemaps); got {value!r}."
        ) from None


def feature_names(feature_set: FeatureSet | str = FeatureSet.ComParE_2016) -> list[str]:
    """The names of the features of ``feature_set``, in column order."""
    return list(_names(_feature_set(feature_set)))


def feature_dim(feature_set: FeatureSet | str = FeatureSet.ComParE_2016) -> int:
    """The number of features of ``feature_set``: 6373 for ComParE_2016, 88 for eGeMAPSv02."""
    return _feature_set(feature_set).dim


@functools.cache
def _names(feature_set: FeatureSet) -> tuple[str, ...]:
    return tuple(_smile(feature_set).feature_names)


def _smile(feature_set: FeatureSet):  # -> opensmile.Smile
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set.value],
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def feature_settings(feature_set: FeatureSet | str = FeatureSet.ComParE_2016) -> dict:
    """What extracted values depend on; the cache key and the Parquet metadata hold it."""
    return {
        "feature_set": _feature_set(feature_set).value,
        "feature_level": "Functionals",
        "sampling_rate": SAMPLING_RATE,
        "opensmile": importlib.metadata.version("opensmile"),
        "feature_code_version": FEATURE_CODE_VERSION,
    }


@dataclass(frozen=True)
class ExtractionStats:
    """What one :meth:`FeatureExtractor.process_files` call did.

    Attributes:
        files: input files.
        extracted: files whose features openSMILE computed in this call.
        cached: files whose features came from the cache.
        rejected: files rejected.
        audio_seconds: duration of the accepted files.
        seconds: wall-clock time of the call.
    """

    files: int
    extracted: int
    cached: int
    rejected: int
    audio_seconds: float
    seconds: float


@dataclass
class _Outcome:
    features: np.ndarray | None
    duration: float
    declared_duration: float
    rejection: Rejection | None
    level: float = 0.0


class _Engine:
    """One openSMILE instance and the checks; built once per process."""

    def __init__(
        self, feature_set: FeatureSet, min_duration: float, allow_truncated: bool, min_level: float | None = MIN_LEVEL
    ) -> None:
        self.smile = _smile(feature_set)
        self.min_duration = min_duration
        self.allow_truncated = allow_truncated
        self.min_level = min_level

    def extract(self, signal: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Segment too short": reported as a rejection instead
            warnings.simplefilter("ignore")
            return self.smile.process_signal(signal, SAMPLING_RATE).to_numpy(dtype=np.float32)[0]

    def process(self, file: str) -> _Outcome:
        try:
            audio: Audio = read_audio(file, sampling_rate=SAMPLING_RATE)
        except RejectedAudio as err:
            return _Outcome(None, 0.0, 0.0, err.rejection)
        duration, declared = audio.duration, audio.declared_duration
        level = speech_level(audio.signal)
        rejection = (
            check_audio(file, duration, declared, min_duration=self.min_duration, allow_truncated=self.allow_truncated)
            or check_signal(file, audio.signal)
            or check_level(file, level, self.min_level)
        )
        if rejection is not None:
            return _Outcome(None, duration, declared, rejection, level)
        try:
            features = self.extract(audio.signal)
        except Exception as err:  # an openSMILE failure is one bad file, not a crashed run
            reason = f"openSMILE failed ({type(err).__name__}: {err}); check the file"
            return _Outcome(None, duration, declared, Rejection(file, reason, "failed"), level)
        rejection = check_features(file, features)
        return _Outcome(None if rejection else features, duration, declared, rejection, level)

    def process_segment(self, file: str, start: float, end: float) -> _Outcome:
        """Features of the stretch ``start..end`` (seconds) of ``file``, read and checked on its own."""
        from serdistill.data.segments import Segment, read_segment

        try:
            signal = read_segment(file, Segment(start, end))
        except Exception as err:  # a body cut off mid-file: this segment cannot be read
            return _Outcome(None, 0.0, 0.0, unreadable(file, err))
        duration = len(signal) / SAMPLING_RATE
        level = speech_level(signal)
        rejection = (
            check_audio(file, duration, duration, min_duration=self.min_duration, allow_truncated=True)
            or check_signal(file, signal)
            or check_level(file, level, self.min_level)
        )
        if rejection is not None:
            return _Outcome(None, duration, duration, rejection, level)
        try:
            features = self.extract(signal)
        except Exception as err:
            reason = f"openSMILE failed ({type(err).__name__}: {err}); check the file"
            return _Outcome(None, duration, duration, Rejection(file, reason, "failed"), level)
        rejection = check_features(file, features)
        return _Outcome(None if rejection else features, duration, duration, rejection, level)


_WORKER: _Engine | None = None


def _init_worker(
    feature_set: FeatureSet, min_duration: float, allow_truncated: bool, min_level: float | None, main_thread: bool = False
) -> None:
    global _WORKER
    exit_with_parent(main_thread)  # no orphan left working when the parent is killed
    signals.signal(signals.SIGINT, signals.SIG_IGN)  # Ctrl-C is the parent's to handle
    _WORKER = _Engine(feature_set, min_duration, allow_truncated, min_level)


def _run_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, _Outcome]]:
    assert _WORKER is not None
    return [(job, _WORKER.process(file)) for job, file in chunk]


def _run_segments(chunk: list[tuple[int, str, float, float]]) -> list[tuple[int, _Outcome]]:
    assert _WORKER is not None
    return [(job, _WORKER.process_segment(file, start, end)) for job, file, start, end in chunk]


class FeatureExtractor:
    """Extract openSMILE functionals from audio files, with checks, a cache and processes.

    Each file is read with soundfile, mixed to mono, resampled to 16 kHz (soxr), checked
    (see :mod:`serdistill.data.audio`) and passed to ``opensmile.Smile.process_signal``. For
    16 kHz mono files the values equal ``Smile.process_file``. Results are identical for
    any ``num_workers``.

    Args:
        feature_set: ``ComParE_2016`` (6,373 values, default) or ``eGeMAPSv02`` (88).
        cache_dir: folder of the feature cache (see :mod:`serdistill.data.cache`); ``None``
            (default) caches nothing. :func:`default_cache_dir` is the CLI's choice.
        num_workers: processes extracting in parallel; 1 extracts in this process.
        on_error: ``"skip"`` leaves rejected files out and goes on; ``"raise"`` raises
            :class:`serdistill.base.errors.AudioError` naming the first rejected file found
            (features finished before it stay in the cache).
        min_duration: shortest accepted audio, in seconds. openSMILE returns only NaN up to
            about 50 ms; 0.1 s is the shortest stretch that still holds a few pitch periods
            and analysis frames.
        allow_truncated: use WAV files whose header declares more audio than they hold
            (logged as a warning) instead of rejecting them.
        min_level: reject audio whose level (:func:`serdistill.data.audio.speech_level`) is
            below this many dBFS as ``no_speech`` (dither, DC offsets); None checks nothing.
        verbose: show a progress bar (files/s, audio-s/s).

    Attributes:
        rejected: the :class:`Rejection` of every file rejected by the last call.
        stats: the :class:`ExtractionStats` of the last call.
    """

    def __init__(
        self,
        feature_set: FeatureSet | str = FeatureSet.ComParE_2016,
        *,
        cache_dir: PathLike | None = None,
        num_workers: int = 1,
        on_error: str = "skip",
        min_duration: float = 0.1,
        allow_truncated: bool = False,
        min_level: float | None = MIN_LEVEL,
        verbose: bool = True,
    ) -> None:
        self.feature_set = feature_set
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.on_error = on_error
        self.min_duration = min_duration
        self.allow_truncated = allow_truncated
        self.min_level = min_level
        self.verbose = verbose
        self.rejected: list[Rejection] = []
        self.stats: ExtractionStats | None = None
        self._engines: dict[tuple, _Engine] = {}

    @property
    def feature_names(self) -> list[str]:
        """The column names of the tables this extractor returns."""
        return feature_names(self.feature_set)

    def _validate(self) -> FeatureSet:
        feature_set = _feature_set(self.feature_set)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ConfigError(f"num_workers must be an integer >= 1; got {self.num_workers!r}.")
        if self.on_error not in ("skip", "raise"):
            raise ConfigError(f"on_error must be 'skip' or 'raise'; got {self.on_error!r}.")
        if not (isinstance(self.min_duration, (int, float)) and 0 <= self.min_duration < math.inf):
            raise ConfigError(f"min_duration must be a number of seconds >= 0; got {self.min_duration!r}.")
        if self.min_level is not None and not (isinstance(self.min_level, (int, float)) and -math.inf < self.min_level <= 0):
            raise ConfigError(f"min_level must be a level in dBFS <= 0 (e.g. -60), or None; got {self.min_level!r}.")
        return feature_set

    def process_segments(
        self, segments: Sequence[tuple[PathLike, float, float]]
    ) -> tuple[np.ndarray, list[Rejection | None]]:
        """Features of stretches of files, ``(file, start, end)`` in seconds: each read on its own
        (never the whole file), checked like a file, and extracted; not cached.

        Returns:
            The features, float32 (n, dim), in input order (rows of rejected stretches are
            NaN), and for each stretch its :class:`Rejection` or None.
        """
        feature_set = self._validate()
        values = np.full((len(segments), feature_set.dim), np.nan, np.float32)
        outcomes: list[Rejection | None] = [None] * len(segments)
        tasks = [(i, absolute(f), float(a), float(b)) for i, (f, a, b) in enumerate(segments)]
        workers = min(self.num_workers, max(1, len(tasks) // 2))
        from tqdm.auto import tqdm

        with tqdm(
            total=len(tasks),
            unit="segment",
            desc=feature_set.value,
            mininterval=0.5,
            disable=not self.verbose,
            dynamic_ncols=True,
        ) as bar:

            def receive(results: list[tuple[int, _Outcome]]) -> None:
                for i, outcome in results:
                    if outcome.rejection is None:
                        values[i] = outcome.features
                    else:
                        outcomes[i] = outcome.rejection
                    bar.update(1)

            if workers <= 1:
                key = (feature_set, self.min_duration, self.allow_truncated, self.min_level)
                engine = self._engines.get(key) or self._engines.setdefault(key, _Engine(*key))
                for i, file, start, end in tasks:
                    receive([(i, engine.process_segment(file, start, end))])
            else:
                with _pool(feature_set, self, workers) as pool:
                    size = max(1, min(8, math.ceil(len(tasks) / (4 * workers))))
                    futures = [pool.submit(_run_segments, tasks[k : k + size]) for k in range(0, len(tasks), size)]
                    for future in as_completed(futures):
                        receive(future.result())
        return values, outcomes

    def process_files(self, files: Iterable[PathLike]) -> pd.DataFrame:
        """Features of ``files``: float32, indexed by absolute path, accepted files in input order.

        Raises:
            AudioError: with ``on_error="raise"``, for the first rejected file found.
            ConfigError: for an invalid setting.
        """
        feature_set = self._validate()
        cwd = working_folder()
        run = _Run(self, feature_set, [absolute(f, cwd) for f in files])
        try:
            return run.execute()
        finally:
            self.rejected = [run.rejected[i] for i in sorted(run.rejected)]
            self.stats = run.stats()


class _Run:
    """The state of one ``process_files`` call."""

    def __init__(self, owner: FeatureExtractor, feature_set: FeatureSet, paths: list[str]) -> None:
        self.owner, self.feature_set, self.paths = owner, feature_set, paths
        self.start = time.perf_counter()
        n, dim = len(paths), feature_set.dim
        self.cache: FeatureCache | None = None
        if owner.cache_dir is not None:
            self.cache = FeatureCache(owner.cache_dir, feature_settings(feature_set), dim=dim)
        self.values = np.empty((n, dim), dtype=np.float32)
        self.accepted = np.zeros(n, dtype=bool)
        self.durations = np.zeros(n)
        self.rejected: dict[int, Rejection] = {}
        self.extracted = self.cached = 0
        self.bar: Any = None  # the tqdm progress bar while execute runs

    def stats(self) -> ExtractionStats:
        return ExtractionStats(
            files=len(self.paths),
            extracted=self.extracted,
            cached=self.cached,
            rejected=len(self.rejected),
            audio_seconds=float(self.durations[self.accepted].sum()),
            seconds=time.perf_counter() - self.start,
        )

    def execute(self) -> pd.DataFrame:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        verbose = self.owner.verbose
        with logging_redirect_tqdm() if verbose else contextlib.nullcontext():
            with tqdm(
                self.paths,
                desc="hashing",
                unit="file",
                leave=False,
                mininterval=0.5,
                disable=not verbose or self.cache is None,
            ) as hashing:
                jobs = self._lookup(hashing)
            workers = min(self.owner.num_workers, len(jobs))
            with _pool(self.feature_set, self.owner, workers) if workers > 1 else contextlib.nullcontext() as pool:
                # Submitting forks the workers: do it before the progress bar starts its thread.
                futures = self._submit(pool, jobs, workers) if pool is not None else []
                self.bar = tqdm(
                    total=len(self.paths),
                    initial=self.cached + len(self.rejected),
                    unit="file",
                    desc=self.feature_set.value,
                    mininterval=0.5,
                    disable=not verbose,
                    dynamic_ncols=True,
                )
                with self.bar:
                    if pool is None:
                        self._sequential(jobs)
                    else:
                        for future in as_completed(futures):
                            for job, outcome in future.result():
                                key, indices = jobs[job]
                                self._receive(key, indices, outcome)
        return self._table()

    def _lookup(self, paths: Iterable[str]) -> list[tuple[str, list[int]]]:
        """Serve cache hits; return the work left: (key, indices of the files with that content)."""
        todo: dict[str, list[int]] = {}
        for i, path in enumerate(paths):
            if self.cache is None:
                todo.setdefault(path, []).append(i)
                continue
            try:
                digest = content_hash(path)
            except OSError as err:
                self._reject(i, unreadable(path, err))
                continue
            hit = self.cache.get(digest) if digest not in todo else None
            if hit is None:
                todo.setdefault(digest, []).append(i)
                continue
            features, duration, declared, level = hit
            rejection = check_audio(
                path,
                duration,
                declared,
                min_duration=self.owner.min_duration,
                allow_truncated=self.owner.allow_truncated,
                level=level,
                min_level=self.owner.min_level,
            )
            if rejection is not None:
                self._reject(i, rejection)
                continue
            self._keep([i], features, duration, declared)
            self.cached += 1
        return list(todo.items())

    def _sequential(self, jobs: list[tuple[str, list[int]]]) -> None:
        if not jobs:
            return
        setup = (self.feature_set, self.owner.min_duration, self.owner.allow_truncated, self.owner.min_level)
        engine = self.owner._engines.get(setup)
        if engine is None:  # kept on the extractor: later calls skip openSMILE's start-up
            engine = self.owner._engines[setup] = _Engine(*setup)
        for key, indices in jobs:
            self._receive(key, indices, engine.process(self.paths[indices[0]]))

    def _submit(self, pool: ProcessPoolExecutor, jobs: list[tuple[str, list[int]]], workers: int) -> list[Future]:
        size = max(1, min(_CHUNK_MAX, math.ceil(len(jobs) / (4 * workers))))
        tasks = [(j, self.paths[indices[0]]) for j, (_, indices) in enumerate(jobs)]
        return [pool.submit(_run_chunk, tasks[k : k + size]) for k in range(0, len(tasks), size)]

    def _receive(self, key: str, indices: list[int], outcome: _Outcome) -> None:
        if outcome.rejection is not None:
            for i in indices:
                self._reject(i, dataclasses.replace(outcome.rejection, file=self.paths[i]))
            self.bar.update(len(indices))
            return
        assert outcome.features is not None  # an outcome without a rejection has features
        if self.cache is not None:
            self.cache.put(key, outcome.features, outcome.duration, outcome.declared_duration, outcome.level)
        self._keep(indices, outcome.features, outcome.duration, outcome.declared_duration)
        self.extracted += len(indices)
        self.bar.update(len(indices))
        elapsed = time.perf_counter() - self.start
        self.bar.set_postfix_str(f"{self.durations.sum() / elapsed:.0f} audio-s/s", refresh=False)

    def _keep(self, indices: list[int], features: np.ndarray, duration: float, declared: float) -> None:
        if declared > duration:  # only reaches here when allow_truncated
            logger.warning(
                "Using truncated file %s: %.3f s present, header declares %.3f s", self.paths[indices[0]], duration, declared
            )
        self.values[indices] = features
        self.accepted[indices] = True
        self.durations[indices] = duration

    def _reject(self, i: int, rejection: Rejection) -> None:
        self.rejected[i] = rejection
        logger.warning("Rejected %s: %s", rejection.file, rejection.reason)
        if self.owner.on_error == "raise":
            raise RejectedAudio(rejection)

    def _table(self) -> pd.DataFrame:
        if self.cache is not None and self.cache.names() is not None:
            names = self.cache.names()
        else:
            names = feature_names(self.feature_set)
            if self.cache is not None:
                self.cache.save_names(names)
        keep = self.accepted.all()
        values = self.values if keep else self.values[self.accepted]
        files = self.paths if keep else [p for p, ok in zip(self.paths, self.accepted) if ok]
        table = pd.DataFrame(values, index=pd.Index(files, name="file"), columns=names, copy=False)
        table.attrs["serdistill"] = feature_settings(self.feature_set)
        return table


@contextlib.contextmanager
def _pool(feature_set: FeatureSet, owner: FeatureExtractor, workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes for one call, each running one openSMILE for every file it gets.

    Forked on Linux: the workers share the parent's memory and start in milliseconds (loky's
    fork-and-exec workers measured 0.12 GB more and a few seconds slower to start for 2
    workers: docs/scaling.md). After an error or Ctrl-C, queued work is dropped and running
    chunks (at most :data:`_CHUNK_MAX` files) finish; a worker that died is a
    :class:`WorkerError`.
    """
    method = "fork" if sys.platform.startswith("linux") else "spawn"  # spawn: scripts need a __main__ guard
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(feature_set, owner.min_duration, owner.allow_truncated, owner.min_level, started_on_main_thread()),
    )
    try:
        yield pool
    except BrokenProcessPool as err:
        raise WorkerError(
            "A feature extraction worker process died: it was killed (most often for memory: see 'dmesg') "
            "or openSMILE crashed on a file. Run the command again: the files finished before are in the "
            "feature cache; --workers 1 extracts in one process and names the file being read when it fails."
        ) from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class ExtractionResult:
    """What :func:`extract_manifest` returns.

    Attributes:
        features: the feature table (see :meth:`FeatureExtractor.process_files`).
        rejected: every rejected file and why.
        stats: counts and timings.
        output: the Parquet file written, if any.
    """

    features: pd.DataFrame
    rejected: list[Rejection]
    stats: ExtractionStats
    output: Path | None = None

    @property
    def rejected_path(self) -> Path | None:
        """The CSV listing the rejected files, written beside ``output``."""
        return rejections_path(self.output) if self.output is not None else None


def extract_manifest(
    manifest: Manifest | PathLike,
    *,
    output: PathLike | None = None,
    engine: Engine | None = None,
    **kwargs: object,
) -> ExtractionResult:
    """Extract the features of every file of a manifest.

    Args:
        manifest: a :class:`~serdistill.data.manifest.Manifest` or the path of its CSV.
        output: if given, the Parquet file to write (atomically), with the rejected files
            listed in :func:`rejections_path` of it (header only when none).
        engine: a :mod:`serdistill.runtime.engine` engine to spread chunks of files over (see
            :func:`extract_files_with_engine`); None extracts with ``num_workers`` processes.
        **kwargs: the arguments of :class:`FeatureExtractor`.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, require_train=False)
    if engine is not None:
        table, rejected, stats = extract_files_with_engine(manifest.files, engine, **kwargs)  # type: ignore[arg-type]
    else:
        extractor = FeatureExtractor(**kwargs)  # type: ignore[arg-type]
        table = extractor.process_files(manifest.files)
        assert extractor.stats is not None
        rejected, stats = extractor.rejected, extractor.stats
    written = None
    if output is not None:
        write_rejections(rejected, rejections_path(output))
        written = write_features(table, output)
    return ExtractionResult(features=table, rejected=rejected, stats=stats, output=written)


#: Files per task of :func:`extract_files_with_engine`: large enough that a task's start-up
#: (openSMILE's, about a second) is small beside its work, small enough to spread a corpus.
ENGINE_CHUNK = 64


def _extract_chunk(
    files: list[str], *, settings: dict
) -> tuple[pd.DataFrame | None, list[Rejection], ExtractionStats | None]:
    """One task of :func:`extract_files_with_engine`: the table, rejections and stats of ``files``."""
    extractor = FeatureExtractor(**settings, num_workers=1, verbose=False)
    try:
        table = extractor.process_files(files)
    except RejectedAudio as err:  # sent back as a value: the exception does not survive pickling
        return None, [err.rejection], None
    return table, extractor.rejected, extractor.stats


def extract_files_with_engine(
    files: Iterable[PathLike], engine: Engine, *, chunk_size: int = ENGINE_CHUNK, **kwargs: object
) -> tuple[pd.DataFrame, list[Rejection], ExtractionStats]:
    """Extract ``files`` in chunks, one engine task per chunk; identical to :class:`FeatureExtractor`.

    Each task runs a :class:`FeatureExtractor` with the same settings (and the same cache
    folder, which must be visible where the task runs) on ``chunk_size`` files and sends
    back its table and rejections; they are joined here in input order. Only paths go out
    and only feature tables come back.

    Args:
        files: the audio files (their absolute paths must resolve where the tasks run).
        engine: an engine from :func:`serdistill.runtime.engine.get_engine`.
        chunk_size: files per task.
        **kwargs: the arguments of :class:`FeatureExtractor` (``num_workers`` is ignored:
            each task extracts its chunk in one process).

    Returns:
        The table, the rejections and the stats, as ``process_files`` would give them.

    Raises:
        AudioError: with ``on_error="raise"``, for the first rejected file (in file order).
    """
    tic = time.perf_counter()
    settings = {k: v for k, v in kwargs.items() if k not in ("num_workers", "verbose")}
    verbose = bool(kwargs.get("verbose", True))
    probe = FeatureExtractor(**settings)  # type: ignore[arg-type]
    feature_set = probe._validate()
    settings["feature_set"] = feature_set
    if settings.get("cache_dir") is not None:  # tasks may run in another working directory
        settings["cache_dir"] = absolute(os.path.expanduser(os.fspath(settings["cache_dir"])))  # type: ignore[call-overload]
    cwd = working_folder()
    paths = [absolute(f, cwd) for f in files]
    chunks = [paths[k : k + chunk_size] for k in range(0, len(paths), chunk_size)]
    parts = engine.map(
        _extract_chunk,
        chunks,
        shared={"settings": settings},
        num_cpus=1,
        desc=f"{feature_set.value} ({len(paths)} files)" if verbose else None,
    )
    rejected: list[Rejection] = []
    for table, rejections, _ in parts:
        for rejection in rejections:
            logger.warning("Rejected %s: %s", rejection.file, rejection.reason)
        rejected.extend(rejections)
        if table is None:  # on_error="raise": the first rejected file, in file order
            raise RejectedAudio(rejections[0])
    tables = [table for table, _, _ in parts]
    if tables:
        table = pd.concat(tables) if len(tables) > 1 else tables[0]
    else:
        table = pd.DataFrame(
            np.empty((0, feature_set.dim), np.float32), columns=feature_names(feature_set), index=pd.Index([], name="file")
        )
    table.attrs["serdistill"] = feature_settings(feature_set)
    stats = [s for _, _, s in parts]
    durations = sum(s.audio_seconds for s in stats)
    return (
        table,
        rejected,
        ExtractionStats(
            files=len(paths),
            extracted=sum(s.extracted for s in stats),
            cached=sum(s.cached for s in stats),
            rejected=len(rejected),
            audio_seconds=durations,
            seconds=time.perf_counter() - tic,
        ),
    )
