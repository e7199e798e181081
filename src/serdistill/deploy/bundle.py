"""The model bundle: one folder with everything needed to predict from audio, and to audit it.

Layout::

    BUNDLE/bundle.json        what this folder is: format version, creation time, its files
                              (each with its size and SHA-256, verified on load)
    BUNDLE/model.json         the fitted TSModel: config, chosen alpha/beta, history
    BUNDLE/weights.pt         its weights (baseline, teachers, students of every attribute)
    BUNDLE/normaliser.json    the z-score statistics of the training features
    BUNDLE/config.toml        the resolved config the model was trained with
    BUNDLE/features.json      the feature set: name, dimension, settings (openSMILE version), names
    BUNDLE/versions.json      serdistill, python, torch, numpy, opensmile, platform at training
    BUNDLE/metrics.json       development CCC per attribute, the alpha/beta grid, what else was given

:func:`save_bundle` writes the whole folder at once: it is built in a temporary sibling
folder and renamed into place, so ``BUNDLE`` is either the old bundle or the complete new
one. :func:`load_bundle` checks the files, the format and the versions before anything
is used, and :class:`Bundle` predicts from raw features or audio files.

Examples:
    >>> bundle = load_bundle("emodb.bundle")                              # doctest: +SKIP
    >>> table, rejected = bundle.predict_files(["a.wav", "b.flac"])       # doctest: +SKIP
    >>> list(table.columns)                                               # doctest: +SKIP
    ['file', 'arousal', 'valence', 'dominance', 'arousal_std', 'valence_std', 'dominance_std', 'duration']
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serdistill import __version__
from serdistill.base.errors import BundleError, SerdistillError
from serdistill.base.io import DIR_MODE, installed_versions, jsonable, write_json, write_text
from serdistill.data.audio import MIN_LEVEL, declared_duration
from serdistill.data.manifest import DEFAULT_LABEL_RANGE
from serdistill.data.normalise import Normaliser
from serdistill.method.config import Config

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike

BUNDLE_FORMAT = 1
"""Bump when the layout or the meaning of a bundle's files changes."""

MODEL_FILES: tuple[str, ...] = ("model.json", "weights.pt")
FILES: tuple[str, ...] = (
    "bundle.json",
    *MODEL_FILES,
    "normaliser.json",
    "config.toml",
    "features.json",
    "versions.json",
    "metrics.json",
)
"""Every file a bundle holds."""

_KIND = "serdistill-bundle"
SEGMENT_BATCH = 256
"""Segments whose features are extracted and predicted at a time by :meth:`Bundle.predict_segments`."""
_SETTINGS_CHECKED = ("feature_level", "sampling_rate", "feature_code_version")


class VersionWarning(UserWarning):
    """The bundle was written with other versions of serdistill, torch or openSMILE than installed."""


class IntegrityWarning(UserWarning):
    """The bundle's files cannot be verified: it was written before bundles recorded checksums."""


# ---------------------------------------------------------------------------------------
# Versions


def _release(version: str, parts: int) -> tuple[str, ...]:
    """The first ``parts`` components of a version, ignoring local tags: '2.13.0+cpu' -> ('2', '13')."""
    return tuple(version.split("+")[0].split(".")[:parts])


def version_differences(saved: Mapping[str, str], installed: Mapping[str, str] | None = None) -> list[str]:
    """What differs, in words, between the versions a bundle records and those installed.

    Compared: serdistill major.minor, torch major, opensmile exact. Other entries
    (python, numpy, platform) are recorded for the record only.

    Examples:
        >>> version_differences({"serdistill": "0.1.0", "torch": "2.1.0", "opensmile": "2.5.0"},
        ...                     {"serdistill": "0.1.3", "torch": "2.13.0+cpu", "opensmile": "2.5.1"})
        ['opensmile 2.5.0 (bundle) vs 2.5.1 (installed)']
    """
    installed = installed_versions() if installed is None else installed
    out = []
    for name, parts in (("serdistill", 2), ("torch", 1), ("opensmile", None)):
        old, new = saved.get(name), installed.get(name)
        if old is None or new is None:
            continue
        same = old == new if parts is None else _release(old, parts) == _release(new, parts)
        if not same:
            out.append(f"{name} {old} (bundle) vs {new} (installed)")
    return out


# ---------------------------------------------------------------------------------------
# Saving


def save_bundle(
    path: PathLike,
    model: Any,
    normaliser: Normaliser,
    features: Mapping[str, Any],
    *,
    extra: Mapping[str, Any] | None = None,
    label_range: tuple[float, float] | None = DEFAULT_LABEL_RANGE,
) -> Path:
    """Write a fitted model, its normaliser and its feature description as a bundle folder.

    The folder is built beside ``path`` and renamed into place only when complete; an
    existing bundle at ``path`` is replaced only then, and kept as it was if anything fails.

    Args:
        path: the bundle folder to write.
        model: a fitted :class:`serdistill.method.ensemble.TSModel`.
        normaliser: the fitted :class:`Normaliser` (trained on the train split only).
        features: the feature description, :func:`serdistill.data.dataset.describe_features`:
            at least ``feature_set`` and ``dim``.
        extra: more JSON-ready sections for ``metrics.json`` (e.g. ``{"data": {...}}``);
            they may not reuse the names of the built-in sections.
        label_range: the scale of the training labels (recorded, and stated beside predictions).

    Returns:
        ``path``.

    Raises:
        BundleError: the parts do not fit together (feature dimensions), or ``path`` is
            something other than a bundle (a file, or a folder without ``bundle.json``).
    """
    path = Path(path).absolute()
    _check_parts(model, normaliser, features)
    metrics = _metrics(model)
    for key, value in (extra or {}).items():
        if key in metrics:
            raise BundleError(
                f"save_bundle got the extra section {key!r}, which metrics.json already has; "
                f"use another name than {', '.join(metrics)}."
            )
        metrics[key] = value
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, DIR_MODE)  # mkdtemp's 0700 would keep the bundle from others
        model.save(tmp)
        write_json(tmp / "normaliser.json", normaliser.to_dict())
        write_text(tmp / "config.toml", _config(model).to_toml())
        write_json(tmp / "features.json", dict(features))
        write_json(tmp / "versions.json", installed_versions())
        write_json(tmp / "metrics.json", jsonable(metrics))
        files = {
            name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
            for name in FILES
            if name != "bundle.json"
        }
        write_json(
            tmp / "bundle.json",
            {
                "format": _KIND,
                "version": BUNDLE_FORMAT,
                "serdistill": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "attributes": list(model.attributes_),
                "feature_set": features.get("feature_set"),
                "label_range": list(label_range or DEFAULT_LABEL_RANGE),
                "files": files,
            },
        )
        _swap(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_target(path: PathLike) -> None:
    """Raise BundleError unless ``path`` is free, an empty folder or a bundle (which a save replaces)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and ((path / "bundle.json").is_file() or not any(path.iterdir()))):
        raise BundleError(
            f"{path} exists and is not a serdistill bundle; refusing to replace it. Choose another output path or remove it."
        )


def _swap(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``; an old folder there is removed only once ``new`` is in place."""
    if not path.exists():
        os.replace(new, path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    old.rmdir()
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_parts(model: Any, normaliser: Normaliser, features: Mapping[str, Any]) -> None:
    if not hasattr(model, "n_features_in_") or not hasattr(model, "save"):
        raise BundleError(f"save_bundle needs a fitted TSModel; got {type(model).__name__}. Call fit(...) first.")
    if not hasattr(normaliser, "n_features_in_"):
        raise BundleError("save_bundle needs a fitted Normaliser; call Normaliser().fit(X_train) first.")
    missing = [k for k in ("feature_set", "dim") if k not in features]
    if missing:
        raise BundleError(
            f"The feature description lacks {', '.join(missing)}; build it with "
            "serdistill.data.dataset.describe_features(dataset)."
        )
    dims = {
        "model": model.n_features_in_,
        "normaliser": normaliser.n_features_in_,
        "feature description": int(features["dim"]),
    }
    if len(set(dims.values())) != 1:
        shown = ", ".join(f"{k} {v}" for k, v in dims.items())
        raise BundleError(
            f"The parts of the bundle disagree on the number of features ({shown}); "
            "fit the normaliser and the model on the same features."
        )


def _config(model: Any) -> Config:
    return model.config if isinstance(model.config, Config) else Config()


def _metrics(model: Any) -> dict[str, Any]:
    return {
        "development": {
            group: {
                "baseline": d.get("baseline"),
                "teachers": d.get("teachers"),
                "students": d.get("students"),
                "ridge": d.get("ridge"),
                "svr": d.get("svr"),
                "teacher_members": d.get("teacher_members"),
            }
            for group, d in model.dev_ccc_.items()
        },
        # members far below their siblings (serdistill.method.health), with the reason
        "failed": {group: d.get("failed", []) for group, d in model.dev_ccc_.items()},
        "alpha": dict(model.alpha_),
        "beta": dict(model.beta_),
        "grid": dict(model.grid_),
        "unlabelled": dict(model.unlabelled_),
        "fit_seconds": getattr(model, "fit_seconds_", None),
    }


# ---------------------------------------------------------------------------------------
# Loading


@dataclass
class Bundle:
    """A loaded bundle: the model with everything it needs to predict.

    Attributes:
        model: the fitted :class:`serdistill.method.ensemble.TSModel`.
        normaliser: the training features' :class:`Normaliser`.
        features: the feature description (``feature_set``, ``dim``, ``settings``, ``names``).
        config: the config the model was trained with.
        versions: the versions recorded at training.
        metrics: the contents of ``metrics.json``.
        path: the bundle folder.
        info: the contents of ``bundle.json``.
    """

    model: Any
    normaliser: Normaliser
    features: dict[str, Any]
    config: Config
    versions: dict[str, str]
    metrics: dict[str, Any]
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        """The predicted attributes, in column order."""
        return list(self.model.attributes_)

    @property
    def feature_set(self) -> str:
        return str(self.features.get("feature_set"))

    @property
    def label_range(self) -> tuple[float, float]:
        """The scale of the labels the bundle was trained on (1..7 for bundles that do not record one).

        Predictions are not clipped to it: a value outside says the model extrapolates.
        """
        recorded = self.info.get("label_range")
        if isinstance(recorded, (list, tuple)) and len(recorded) == 2:
            return float(recorded[0]), float(recorded[1])
        return DEFAULT_LABEL_RANGE

    def outside_scale(self, table: pd.DataFrame) -> int:
        """How many rows of a prediction table have an attribute outside :attr:`label_range`."""
        low, high = self.label_range
        columns = [a for a in self.attributes if a in table.columns]
        if not columns or len(table) == 0:
            return 0
        values = table[columns].to_numpy(dtype=float)
        return int(((values < low) | (values > high)).any(axis=1).sum())

    @property
    def dim(self) -> int:
        return int(self.features["dim"])

    def check_features(
        self, feature_set: str | None, dim: int, settings: Mapping[str, Any] | None = None, *, source: str = "the data"
    ) -> None:
        """Check that features described as (``feature_set``, ``dim``, ``settings``) fit this bundle.

        Raises:
            BundleError: another feature set or dimension (saying what differs and what to do).

        Warns:
            VersionWarning: the same set extracted with another openSMILE version or settings.
        """
        if int(dim) != self.dim or (
            feature_set is not None and feature_set != self.feature_set and _known(feature_set) and _known(self.feature_set)
        ):
            raise BundleError(
                f"Bundle {self.path} was trained on {self.feature_set} features ({self.dim} values per file); "
                f"{source} has {feature_set or 'unnamed'} features ({dim} values). Extract the data with the "
                f"bundle's feature set (serdistill extract --feature-set {_cli_name(self.feature_set)}), "
                "or use a bundle trained on this feature set."
            )
        saved = self.features.get("settings") or {}
        settings = settings or {}
        diffs = [
            f"{key} {saved[key]!r} (bundle) vs {settings[key]!r} ({source})"
            for key in ("opensmile", *_SETTINGS_CHECKED)
            if key in saved and key in settings and saved[key] != settings[key]
        ]
        if diffs:
            warnings.warn(
                f"The features of {source} were extracted with other settings than bundle {self.path}'s: "
                f"{'; '.join(diffs)}. Values can differ slightly; extract them again with the bundle's "
                "versions for identical results.",
                VersionWarning,
                stacklevel=2,
            )

    def predict_features(self, X_raw: Any) -> tuple[np.ndarray, np.ndarray]:
        """Normalise raw features (n, d) and predict: the students' mean and std, each (n, A)."""
        X = self._normalise(X_raw)
        mean, std = self.model.predict(X, return_std=True)
        self.check_outputs(mean, std)
        return mean, std

    def predict_all(self, X_raw: Any) -> dict[str, np.ndarray]:
        """Normalise raw features and return :meth:`TSModel.predict_all` (students, teachers, baseline)."""
        out = self.model.predict_all(self._normalise(X_raw))
        self.check_outputs(out["students"], out["students_std"], out["teachers"])
        return out

    def check_outputs(self, *outputs: np.ndarray) -> None:
        """Raise BundleError if any of ``outputs`` (the model's predictions) holds NaN or infinity.

        A model whose outputs are not finite is broken (damaged weights, or features far
        outside anything it was trained on); its numbers must never reach a table or a client.
        """
        for values in outputs:
            values = np.asarray(values)
            finite = np.isfinite(values)
            if not finite.all():
                rows = int((~finite.reshape(len(values), -1)).any(axis=1).sum()) if values.ndim else 1
                raise BundleError(
                    f"Bundle {self.path} gave non-finite predictions (NaN or infinity) for {rows} of {len(values)} "
                    "row(s): its weights are damaged, or the features are far outside the training data. "
                    "Copy the bundle again or train it anew; check the features if it persists."
                )

    def evaluate(self, X_raw: Any, y: Any) -> dict[str, dict[str, float | None]]:
        """CCC per attribute of the students, the teachers' MC ensemble, the baseline and the
        linear reference models (ridge regression, linear SVR).

        Args:
            X_raw: raw features (n, d).
            y: labels (n, A) in the bundle's attribute order, NaN = no label; each attribute
                is scored on its labelled rows only.

        Returns:
            ``{"students": {attribute: ccc}, "teachers": {...}, "baseline": {...}, "ridge": {...},
            "svr": {...}}``; ``None`` where there is no score: fewer than 2 labelled rows, no
            baseline or reference model, undefined CCC.
        """
        from serdistill.method.metrics import ccc

        y = np.asarray(y, dtype=np.float64)
        y = y[:, None] if y.ndim == 1 else y
        if y.shape != (len(X_raw), len(self.attributes)):
            raise BundleError(
                f"evaluate got labels of shape {y.shape}; expected ({len(X_raw)}, "
                f"{len(self.attributes)}): one column per attribute {self.attributes}."
            )
        out = self.predict_all(X_raw)
        scores: dict[str, dict[str, float | None]] = {}
        for kind in ("students", "teachers", "baseline", "ridge", "svr"):
            scores[kind] = {}
            for j, attribute in enumerate(self.attributes):
                keep = np.isfinite(y[:, j])
                prediction = np.asarray(out[kind][keep, j], dtype=np.float64)
                value = None
                if keep.sum() >= 2 and np.isfinite(prediction).all():
                    value = float(ccc(prediction, y[keep, j]))
                scores[kind][attribute] = value if value is not None and math.isfinite(value) else None
        return scores

    def predict_files(
        self,
        files: Sequence[PathLike],
        *,
        cache_dir: PathLike | None = None,
        workers: int = 1,
        verbose: bool = False,
        allow_truncated: bool = False,
        min_level: float | None = MIN_LEVEL,
    ) -> tuple[pd.DataFrame, list[Any]]:
        """Extract the features of audio files and predict.

        Args:
            files: audio files (any format soundfile reads).
            cache_dir: the feature cache, or None for none.
            workers: extraction processes.
            verbose: progress bar.
            allow_truncated, min_level: the audio checks, as for
                :class:`serdistill.data.features.FeatureExtractor`.

        Returns:
            A table with the columns ``file`` (absolute path), one per attribute, ``<attribute>_std``
            (std over the students) and ``duration`` (seconds; NaN where unknown), one row per
            accepted file in input order; and the :class:`serdistill.data.audio.Rejection` of every
            file that could not be used (unreadable, too short, silent, ...).
        """
        extractor = self._extractor(
            cache_dir=cache_dir, num_workers=workers, verbose=verbose, allow_truncated=allow_truncated, min_level=min_level
        )
        table = extractor.process_files(files)
        columns = ["file", *self.attributes, *(f"{a}_std" for a in self.attributes), "duration"]
        if len(table) == 0:
            return pd.DataFrame(columns=columns), list(extractor.rejected)
        mean, std = self.predict_features(table.to_numpy(dtype=np.float32))
        frame = pd.DataFrame({"file": table.index.astype(str)})
        for j, attribute in enumerate(self.attributes):
            frame[attribute] = mean[:, j]
        for j, attribute in enumerate(self.attributes):
            frame[f"{attribute}_std"] = std[:, j]
        frame["duration"] = [declared_duration(f) for f in frame["file"]]  # informative only
        return frame[columns], list(extractor.rejected)

    def predict_segments(
        self,
        files: Sequence[PathLike],
        *,
        options: Any = None,
        workers: int = 1,
        verbose: bool = False,
        allow_truncated: bool = False,
        min_level: float | None = MIN_LEVEL,
    ) -> tuple[pd.DataFrame, list[Any]]:
        """Find the speech segments of audio files (:mod:`serdistill.data.segments`) and predict each.

        Each file is streamed through the voice-activity detector, never held whole; each
        segment is then read, checked and extracted on its own, as if it were a file.

        Args:
            files: audio files (any length).
            options: a :class:`serdistill.data.segments.SegmentOptions` (default: 1..10 s segments).
            workers: extraction processes.
            verbose: progress bars.
            allow_truncated, min_level: the audio checks, as for :meth:`predict_files`.

        Returns:
            A table with the columns ``file``, ``start``, ``end`` (seconds), one per attribute and
            ``<attribute>_std``, one row per segment in file and time order; and the
            :class:`serdistill.data.audio.Rejection` of every file (unreadable, truncated, no speech)
            or segment (too quiet, ...) that could not be used.
        """
        from tqdm.auto import tqdm

        from serdistill.base.io import absolute
        from serdistill.data.audio import RejectedAudio
        from serdistill.data.segments import VoiceActivity, find_segments

        extractor = self._extractor(
            cache_dir=None, num_workers=workers, verbose=verbose, allow_truncated=allow_truncated, min_level=min_level
        )
        vad = VoiceActivity()
        items: list[tuple[str, float, float]] = []
        rejected: list[Any] = []
        for file in tqdm([absolute(f) for f in files], desc="finding speech", unit="file", disable=not verbose, leave=False):
            try:
                segments = find_segments(file, options, vad, allow_truncated=allow_truncated)
            except RejectedAudio as err:
                logger.warning("Rejected %s: %s", file, err.rejection.reason)
                rejected.append(err.rejection)
                continue
            items += [(file, segment.start, segment.end) for segment in segments]
        columns = ["file", "start", "end", *self.attributes, *(f"{a}_std" for a in self.attributes)]
        kept, mean, std, skipped = predict_segment_items(extractor, items, self.predict_features)
        rejected += skipped
        if not kept:
            return pd.DataFrame(columns=columns), rejected
        frame = pd.DataFrame(
            {"file": [f for f, _, _ in kept], "start": [a for _, a, _ in kept], "end": [b for _, _, b in kept]}
        )
        for j, attribute in enumerate(self.attributes):
            frame[attribute] = mean[:, j]
        for j, attribute in enumerate(self.attributes):
            frame[f"{attribute}_std"] = std[:, j]
        return frame[columns], rejected

    def _extractor(self, **kwargs: Any) -> Any:
        """A FeatureExtractor for this bundle's feature set (checked against this installation)."""
        from serdistill.data.features import FeatureExtractor, FeatureSet, feature_settings

        try:
            feature_set = FeatureSet(self.feature_set)
        except ValueError:
            raise BundleError(
                f"Bundle {self.path} was trained on features {self.feature_set!r}, which serdistill cannot "
                "extract from audio; predict from a feature table with predict_features instead."
            ) from None
        self.check_features(feature_set.value, feature_set.dim, feature_settings(feature_set), source="this installation")
        return FeatureExtractor(feature_set, **kwargs)

    def _normalise(self, X_raw: Any) -> np.ndarray:
        X = np.asarray(X_raw)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise BundleError(
                f"Bundle {self.path} expects {self.dim} {self.feature_set} features per row; got an array of "
                f"shape {X.shape}. Extract the features with the bundle's feature set "
                f"(serdistill extract --feature-set {_cli_name(self.feature_set)})."
            )
        return self.normaliser.transform(X)


def predict_segment_items(
    extractor: Any, items: Sequence[tuple[str, float, float]], predict: Any
) -> tuple[list[tuple[str, float, float]], np.ndarray, np.ndarray, list[Any]]:
    """Extract and predict stretches ``(file, start, end)`` :data:`SEGMENT_BATCH` at a time, so
    that memory stays flat however long the recording.

    Args:
        extractor: a :class:`serdistill.data.features.FeatureExtractor`.
        predict: raw features (n, d) -> (mean, std), e.g. :meth:`Bundle.predict_features`.

    Returns:
        The stretches kept, their means and stds (n, A), and the rejections of the others.
    """
    kept: list[tuple[str, float, float]] = []
    means, stds, rejected = [], [], []
    for k in range(0, len(items), SEGMENT_BATCH):
        batch = items[k : k + SEGMENT_BATCH]
        values, outcomes = extractor.process_segments(batch)
        for (_, start, end), outcome in zip(batch, outcomes):
            if outcome is not None:
                rejected.append(dataclasses.replace(outcome, reason=f"the segment {start:.2f}-{end:.2f} s {outcome.reason}"))
        keep = np.array([o is None for o in outcomes], dtype=bool)
        if keep.any():
            mean, std = predict(values[keep])
            means.append(mean)
            stds.append(std)
            kept += [item for item, ok in zip(batch, keep) if ok]
    if not kept:
        return [], np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), rejected
    return kept, np.concatenate(means), np.concatenate(stds), rejected


def load_bundle(path: PathLike, *, device: str | None = None) -> Bundle:
    """Read a bundle written by :func:`save_bundle`, checking it first.

    Args:
        path: the bundle folder.
        device: where the model runs (default: the device it was trained on, or the CPU
            when that was CUDA and this machine has none).

    Raises:
        BundleError: the folder or some of its files are missing or damaged (a file whose
            size or SHA-256 differs from what ``bundle.json`` records is named), or it was
            written in another bundle format.

    Warns:
        VersionWarning: it was written with another serdistill major.minor, torch major or
            openSMILE version than installed (the message says which).
        IntegrityWarning: it records no checksums (written before they were added), so its
            files are loaded unverified.
    """
    from serdistill.method.ensemble import TSModel

    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a bundle folder" if path.exists() else "does not exist"
        raise BundleError(
            f"Bundle {path} {what}. Create one with 'serdistill train MANIFEST --config configs/quick.toml -o {path}'."
        )
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(
            f"Bundle {path} is incomplete: {', '.join(missing)} missing (a bundle holds "
            f"{', '.join(FILES)}). Copy the whole folder again, or train it anew."
        )
    info = _read_json(path, "bundle.json")
    if info.get("format") != _KIND or not isinstance(info.get("version"), int):
        raise BundleError(
            f"{path / 'bundle.json'} does not describe a serdistill bundle; expected "
            f"format {_KIND!r}. Train the bundle with 'serdistill train'."
        )
    if info["version"] != BUNDLE_FORMAT:
        newer = info["version"] > BUNDLE_FORMAT
        raise BundleError(
            f"Bundle {path} has format version {info['version']}, written by serdistill "
            f"{info.get('serdistill', '?')}; this serdistill ({__version__}) reads version {BUNDLE_FORMAT}. "
            + ("Upgrade serdistill to use it." if newer else "Train the bundle again with this version.")
        )
    _verify_files(path, info)
    versions = _read_json(path, "versions.json")
    differences = version_differences(versions)
    if differences:
        warnings.warn(
            f"Bundle {path} was written with other versions than installed: {'; '.join(differences)}. "
            "It loads, but results may differ slightly; install the bundle's versions "
            "(versions.json) to reproduce them exactly.",
            VersionWarning,
            stacklevel=2,
        )
    if device is None:
        device = _fallback_device(path)
    try:
        model = TSModel.load(path, device=device)
    except SerdistillError as err:
        raise BundleError(f"Bundle {path}: the model cannot be loaded: {err}") from None
    except Exception as err:  # a damaged weights.pt or model.json
        raise BundleError(
            f"Bundle {path}: the model cannot be loaded ({type(err).__name__}: {err}); "
            "the files are damaged. Copy the bundle again, or train it anew."
        ) from err
    try:
        normaliser = Normaliser.from_dict(_read_json(path, "normaliser.json"))
    except SerdistillError as err:
        raise BundleError(f"Bundle {path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(
            f"{path / 'normaliser.json'} is damaged ({type(err).__name__}: {err}); copy the bundle again, or train it anew."
        ) from None
    features = _read_json(path, "features.json")
    if "dim" not in features or "feature_set" not in features:
        raise BundleError(f"{path / 'features.json'} lacks feature_set or dim; the bundle is damaged.")
    dims = {
        "model.json": model.n_features_in_,
        "normaliser.json": normaliser.n_features_in_,
        "features.json": int(features["dim"]),
    }
    if len(set(dims.values())) != 1:
        raise BundleError(
            f"Bundle {path} disagrees with itself on the number of features "
            f"({', '.join(f'{k} {v}' for k, v in dims.items())}); it is damaged. Train it anew."
        )
    config = _config(model)
    _check_config_file(path, config)
    return Bundle(
        model=model,
        normaliser=normaliser,
        features=features,
        config=config,
        versions=versions,
        metrics=_read_json(path, "metrics.json"),
        path=path,
        info=info,
    )


def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:  # in 1 MiB reads (hashlib.file_digest needs Python 3.11; we support 3.10)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_files(path: Path, info: Mapping[str, Any]) -> None:
    """Check every file against the size and SHA-256 that ``bundle.json`` records.

    Raises:
        BundleError: a file differs (named, with what differs).

    Warns:
        IntegrityWarning: the bundle predates checksums (its files cannot be verified).
    """
    recorded = info.get("files")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    unchecked = []
    for name in FILES:
        if name == "bundle.json":
            continue
        entry = recorded.get(name)
        entry = entry if isinstance(entry, Mapping) else {}
        size = (path / name).stat().st_size
        if entry.get("bytes") not in (None, size):
            raise BundleError(
                f"{path / name} has {size} bytes; bundle.json records {entry['bytes']}: the file is "
                "damaged or was changed. Copy the bundle again, or train it anew."
            )
        if entry.get("sha256") is None:
            unchecked.append(name)
        elif file_sha256(path / name) != entry["sha256"]:
            raise BundleError(
                f"{path / name} does not match the SHA-256 that bundle.json records for it: the file "
                "is damaged or was changed since the bundle was written. Copy the bundle again, "
                "or train it anew."
            )
    if unchecked:
        warnings.warn(
            f"Bundle {path} records no checksum for {', '.join(unchecked)} (written before serdistill "
            "checksummed bundles), so damage to those files cannot be detected. Train it again, or "
            "re-save it (serdistill.deploy.bundle.save_bundle), to add checksums.",
            IntegrityWarning,
            stacklevel=3,
        )


def _fallback_device(path: Path) -> str | None:
    """'cpu' for a bundle trained on CUDA when there is no CUDA here; else None (its own device)."""
    import torch

    saved = ((_read_json(path, "model.json").get("config") or {}).get("train") or {}).get("device", "cpu")
    if str(saved).startswith("cuda") and not torch.cuda.is_available():
        logger.info("Bundle %s was trained on %s; there is no CUDA device here, so it runs on the CPU.", path, saved)
        return "cpu"
    return None


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads((path / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(
            f"{path / name} is not readable JSON ({err}); the bundle is damaged. Copy it again, or train it anew."
        ) from None
    if not isinstance(data, dict):
        raise BundleError(f"{path / name} holds {type(data).__name__}; expected a JSON object. The bundle is damaged.")
    return data


def _check_config_file(path: Path, config: Config) -> None:
    from serdistill.method.config import load_config

    try:
        on_disk = load_config(path / "config.toml")
    except SerdistillError as err:
        raise BundleError(f"Bundle {path}: config.toml is not a valid config ({err}).") from None
    if on_disk.updated({"train": {"device": config.train.device}}) != config:
        warnings.warn(
            f"{path / 'config.toml'} differs from the config in model.json (edited by hand?); "
            "the model's own config (model.json) is used.",
            UserWarning,
            stacklevel=3,
        )


def _known(name: str) -> bool:
    from serdistill.data.features import FeatureSet

    try:
        FeatureSet(name)
    except ValueError:
        return False
    return True


def _cli_name(feature_set: str) -> str:
    return {"ComParE_2016": "compare", "eGeMAPSv02": "egemaps"}.get(feature_set, feature_set)


__all__ = [
    "BUNDLE_FORMAT",
    "FILES",
    "Bundle",
    "IntegrityWarning",
    "VersionWarning",
    "check_target",
    "file_sha256",
    "installed_versions",
    "load_bundle",
    "predict_segment_items",
    "save_bundle",
    "version_differences",
]
