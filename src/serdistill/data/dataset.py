"""A manifest with its features, as the arrays the estimators take.

:func:`load_dataset` reads (or extracts, through the cache) the features of every file of a
manifest, drops files without features (reported, never silently), and keeps the labels.
:meth:`Dataset.arrays` returns one split as (X, y); :meth:`Dataset.normaliser` fits the
z-score normaliser on the train split only.

Examples:
    >>> import numpy as np, pandas as pd
    >>> from serdistill.data.manifest import Manifest
    >>> frame = pd.DataFrame({"file": ["a.wav", "b.wav", "c.wav"], "speaker": ["s1", "s1", "s2"],
    ...     "split": ["train", "train", "test"], "arousal": [1.0, 2.0, 3.0],
    ...     "valence": [4.0, 4.0, 4.0], "dominance": [2.0, None, 3.0]})
    >>> manifest = Manifest.from_frame(frame, base="/data", check_files=False)
    >>> data = Dataset(manifest, np.arange(6, dtype=np.float32).reshape(3, 2), feature_set="toy")
    >>> X, y = data.arrays("train")
    >>> X.shape, y.shape, int(np.isnan(y).sum())
    ((2, 2), (2, 3), 1)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serdistill.base.errors import FeatureError, ManifestError
from serdistill.base.protocols import Engine
from serdistill.data.manifest import ATTRIBUTES, DEFAULT_LABEL_RANGE, Manifest, read_manifest
from serdistill.data.normalise import Normaliser
from serdistill.data.storage import disk_matrix, is_on_disk, large_empty, take_rows

#: Raw feature matrices read from Parquet at least this large are held on disk (a memory-mapped
#: file next to the Parquet table) instead of in memory; see :func:`load_dataset`.
DISK_BYTES = 256 * 2**20
#: A normalised split of a matrix held on disk goes to disk too from this size up.
SPLIT_DISK_BYTES = 2**20

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike


@dataclass
class Dataset:
    """The rows of a manifest that have features, with those features (raw, not normalised).

    Attributes:
        manifest: the rows kept (files with features), in manifest order.
        X: features, float32 (n, d), row i for ``manifest.files[i]``.
        feature_set: the feature set's name (e.g. ``ComParE_2016``).
        settings: what the features depend on (:func:`serdistill.data.features.feature_settings`).
        feature_names: the column names.
        dropped: files of the manifest left out because they have no features.
    """

    manifest: Manifest
    X: np.ndarray
    feature_set: str
    settings: dict[str, Any] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.manifest):
            raise ValueError(f"Dataset got {len(self.X)} feature rows for {len(self.manifest)} manifest rows.")

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def splits(self) -> list[str]:
        return self.manifest.splits

    def mask(self, *splits: str) -> np.ndarray:
        """Which rows belong to ``splits``."""
        return self.manifest.table["split"].isin(splits).to_numpy()

    def has(self, split: str) -> bool:
        return bool(self.mask(split).any())

    def arrays(
        self, split: str, *, attributes: Sequence[str] = ATTRIBUTES, normaliser: Normaliser | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, d) and labels (n, A; NaN = unlabelled) of one split.

        Raises:
            ManifestError: the split is not in the manifest (naming the splits it has).
        """
        if not self.has(split):
            raise ManifestError(
                f"Split {split!r} has no files with features in {self._where()}; it has "
                f"{self.split_counts()}. Choose one of those splits."
            )
        keep = self.mask(split)
        rows = np.flatnonzero(keep)
        # row blocks, never X[keep] whole: a split's raw copy is not made next to its normalised one
        if normaliser is not None:
            # the splits of a matrix on disk (a large data set) go to disk too: the processes of the
            # local engine then share their pages instead of each getting a copy
            out = large_empty((len(rows), self.X.shape[1]), SPLIT_DISK_BYTES) if is_on_disk(self.X) else None
            X = normaliser.transform(self.X, rows=rows, out=out)
        else:
            X = take_rows(self.X, rows)
        y = self.manifest.table.loc[keep, list(attributes)].to_numpy(dtype=np.float32)
        return np.ascontiguousarray(X, dtype=np.float32), y

    def files(self, split: str) -> list[str]:
        return [f for f, k in zip(self.manifest.files, self.mask(split)) if k]

    def normaliser(self, *, clip: float | None = 10.0) -> Normaliser:
        """A :class:`Normaliser` fitted on the train split only."""
        if not self.has("train"):
            raise ManifestError(
                f"{self._where()} has no train files with features; the normaliser "
                "is fitted on the train split. Add a train split."
            )
        return Normaliser(clip=clip).fit(self.X, rows=np.flatnonzero(self.mask("train")))

    def split_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.manifest.table["split"].value_counts(sort=False).items()}

    def _where(self) -> str:
        return f"manifest {self.manifest.path}" if self.manifest.path else "the manifest"


def guess_feature_set(dim: int) -> str:
    """The feature set a table of ``dim`` columns without settings most likely holds.

    Examples:
        >>> guess_feature_set(6373), guess_feature_set(88), guess_feature_set(12)
        ('ComParE_2016', 'eGeMAPSv02', '12 features')
    """
    return {6373: "ComParE_2016", 88: "eGeMAPSv02"}.get(int(dim), f"{dim} features")


def load_dataset(
    manifest: Manifest | PathLike,
    *,
    features: PathLike | None = None,
    feature_set: str = "compare",
    cache_dir: PathLike | None = None,
    workers: int = 1,
    verbose: bool = True,
    require_train: bool = True,
    engine: Engine | None = None,
    on_disk: bool | None = None,
    label_range: tuple[float, float] | None = DEFAULT_LABEL_RANGE,
    out_of_range: str = "error",
) -> Dataset:
    """The features of a manifest's files: read from ``features`` or extracted (cached).

    Args:
        manifest: a :class:`Manifest` or the path of its CSV.
        features: a Parquet table from ``serdistill extract``; without it the features are
            extracted (and cached in ``cache_dir``).
        feature_set: the set to extract when ``features`` is not given.
        cache_dir: the feature cache (default: :func:`serdistill.data.cache.default_cache_dir`).
        workers: extraction processes.
        engine: a :mod:`serdistill.runtime.engine` engine to extract on instead (chunks of files as tasks).
        verbose: progress bars.
        require_train: the manifest must have a train split.
        label_range, out_of_range: the labels' scale and what to do outside it, as for
            :func:`serdistill.data.manifest.read_manifest` (for a manifest given as a path).
        on_disk: read ``features`` into a float32 matrix in an unlinked memory-mapped file
            (next to ``features``, else in the temporary folder) instead of memory, so that
            the raw matrix does not sit in memory beside the normalised splits; None (default):
            when the matrix has at least :data:`DISK_BYTES` (256 MiB). Either way the values
            are read column block by column block, without a ``DataFrame`` of the table;
            :meth:`Dataset.normaliser` and :meth:`Dataset.arrays` read it in row blocks.

    Files without features (rejected at extraction, or absent from ``features``) are left out
    with a warning naming how many and the first few; if that leaves none, FeatureError.
    """
    from serdistill.data.feature_table import ParquetFeatures, read_features
    from serdistill.data.features import FeatureExtractor, feature_settings

    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, require_train=require_train, label_range=label_range, out_of_range=out_of_range)
    if features is not None:
        try:
            stream = ParquetFeatures(features)
        except ValueError:  # a layout the streaming reader does not handle
            stream = None
        if stream is not None:
            return _load_parquet(manifest, stream, on_disk)
        table = read_features(features)
        source = str(features)
    else:
        from serdistill.data.cache import default_cache_dir

        if engine is not None:
            from serdistill.data.features import extract_files_with_engine

            table, rejected, _ = extract_files_with_engine(
                manifest.files, engine, feature_set=feature_set, cache_dir=cache_dir or default_cache_dir(), verbose=verbose
            )
        else:
            extractor = FeatureExtractor(
                feature_set, cache_dir=cache_dir or default_cache_dir(), num_workers=workers, verbose=verbose
            )
            table = extractor.process_files(manifest.files)
            rejected = extractor.rejected
        for rejection in rejected[:10]:
            logger.warning("Rejected %s", rejection)
        source = "extraction"
    if table.index.has_duplicates:
        table = table[~table.index.duplicated(keep="first")]
    positions = table.index.get_indexer(manifest.files)
    present, dropped = _present(manifest, positions, source)
    X = table.to_numpy(dtype=np.float32, copy=False)[positions[present]]
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = [f for f, ok in zip(np.asarray(manifest.files)[present], finite) if not ok]
        raise FeatureError(
            f"{len(bad)} file(s) have NaN or infinite features in {source}, e.g. {', '.join(bad[:3])}; extract them again."
        )
    kept = Manifest(
        table=manifest.table[present].reset_index(drop=True), path=manifest.path, label_range=manifest.label_range
    )
    settings = dict(table.attrs.get("serdistill") or {})
    name = settings.get("feature_set")
    if name is None:
        name = guess_feature_set(X.shape[1])
        if features is None:
            settings = feature_settings(feature_set)
            name = settings["feature_set"]
    return Dataset(
        kept,
        np.ascontiguousarray(X),
        feature_set=name,
        settings=settings,
        feature_names=[str(c) for c in table.columns],
        dropped=dropped,
    )


def _present(manifest: Manifest, positions: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Which manifest rows have features (``positions >= 0``) and the files that do not (logged).

    Raises:
        FeatureError: no file of the manifest has features.
    """
    present = positions >= 0
    dropped = [f for f, ok in zip(manifest.files, present) if not ok]
    if dropped:
        logger.warning(
            "%d of %d file(s) have no features (from %s) and are left out, e.g. %s",
            len(dropped),
            len(manifest),
            source,
            ", ".join(dropped[:3]),
        )
    if not present.any():
        raise FeatureError(
            f"None of the {len(manifest)} files of {manifest.path or 'the manifest'} has features in {source}; "
            "check that the feature table was extracted from this manifest."
        )
    return present, dropped


def _load_parquet(manifest: Manifest, stream: Any, on_disk: bool | None) -> Dataset:
    """:func:`load_dataset` from a :class:`~serdistill.data.feature_table.ParquetFeatures`: the same
    result as through :func:`~serdistill.data.feature_table.read_features`, one copy of the values."""
    import pandas as pd

    source = str(stream.path)
    index = pd.Index(stream.files)
    first = np.flatnonzero(~index.duplicated(keep="first"))
    positions = index[first].get_indexer(manifest.files)
    present, dropped = _present(manifest, positions, source)
    rows = first[positions[present]]
    shape = (len(rows), stream.shape[1])
    X = None
    if on_disk or (on_disk is None and shape[0] * shape[1] * 4 >= DISK_BYTES):
        try:
            X = disk_matrix(shape, directories=(stream.path.absolute().parent, None))
        except OSError as err:
            logger.warning(
                "Could not hold the %d x %d feature matrix on disk (%s); reading it into memory.", shape[0], shape[1], err
            )
    if X is None:
        X = np.empty(shape, dtype=np.float32)
    finite = stream.read_rows(rows, X)
    if not finite.all():
        bad = [f for f, ok in zip(np.asarray(manifest.files)[present], finite) if not ok]
        raise FeatureError(
            f"{len(bad)} file(s) have NaN or infinite features in {source}, e.g. {', '.join(bad[:3])}; extract them again."
        )
    kept = Manifest(
        table=manifest.table[present].reset_index(drop=True), path=manifest.path, label_range=manifest.label_range
    )
    settings = dict(stream.settings or {})
    name = settings.get("feature_set")
    if name is None:
        name = guess_feature_set(X.shape[1])
    return Dataset(
        kept, X, feature_set=name, settings=settings, feature_names=[str(c) for c in stream.names], dropped=dropped
    )


def describe_features(data: Dataset) -> dict[str, Any]:
    """The feature-set description a bundle stores: name, dimension, settings, names."""
    return {
        "feature_set": data.feature_set,
        "dim": int(data.X.shape[1]),
        "settings": data.settings,
        "names": data.feature_names,
    }
