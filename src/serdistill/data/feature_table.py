"""Feature tables on disk and their alignment to manifests.

A feature table is a float32 ``DataFrame`` indexed by absolute file path (index name
``file``), one column per feature: what :meth:`serdistill.data.features.FeatureExtractor.process_files`
returns. On disk it is a Parquet file with the index as the column ``file`` and the feature
settings in the schema metadata (key ``serdistill``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.errors import FeatureError
from serdistill.base.io import atomic_path
from serdistill.data.audio import Rejection
from serdistill.data.manifest import Manifest

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
_SHOWN = 10


def rejections_path(output: PathLike) -> Path:
    """``<output>.rejected.csv``: where the rejected files of ``output`` are listed."""
    output = Path(output)
    return output.with_name(output.name + ".rejected.csv")


def write_rejections(rejected: Sequence[Rejection], path: PathLike) -> Path:
    """Write ``rejected`` as a CSV (``file, kind, reason``) atomically."""
    frame = pd.DataFrame([(r.file, r.kind, r.reason) for r in rejected], columns=["file", "kind", "reason"])
    path = Path(path).absolute()
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def write_features(table: pd.DataFrame, path: PathLike) -> Path:
    """Write a feature table as float32 Parquet, atomically, its index as column ``file``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).absolute()
    frame = table.astype(np.float32)
    frame.index = pd.Index(frame.index.astype(str), name="file")
    frame.columns = [str(c) for c in frame.columns]
    arrow = pa.Table.from_pandas(frame, preserve_index=True)
    meta = dict(arrow.schema.metadata or {})
    meta[b"serdistill"] = json.dumps(table.attrs.get("serdistill", {}), default=str).encode()
    with atomic_path(path) as tmp:
        pq.write_table(arrow.replace_schema_metadata(meta), tmp, use_dictionary=False)  # floats: 2x faster
    return path


def read_features(path: PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_features`: float32, indexed by ``file``.

    Raises:
        FeatureError: if the file is missing or is not a feature table.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"Feature file {path} does not exist. Create it with 'serdistill extract MANIFEST -o {path}'.")
    try:
        arrow = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise FeatureError(f"Feature file {path} is not a readable Parquet file ({err}); extract it again.") from err
    frame = arrow.to_pandas()
    if frame.index.name != "file":
        if "file" not in frame.columns:
            raise FeatureError(f"Feature file {path} has no 'file' column; expected a table from 'serdistill extract'.")
        frame = frame.set_index("file")
    try:
        frame = frame.astype(np.float32)
    except (TypeError, ValueError) as err:
        raise FeatureError(
            f"Feature file {path} has non-numeric feature columns ({err}); expected a table from 'serdistill extract'."
        ) from err
    meta = (arrow.schema.metadata or {}).get(b"serdistill")
    frame.attrs["serdistill"] = json.loads(meta) if meta else {}
    return frame


#: Bytes of feature values read from Parquet at a time by :class:`ParquetFeatures`.
CHUNK_BYTES = 64 * 2**20


class ParquetFeatures:
    """A feature table on disk, read straight into a float32 matrix, one block of columns at a time.

    Opening reads only the ``file`` column, the column names and the settings; the values
    are read by :meth:`read_rows`, per row group and per block of columns of about
    :data:`CHUNK_BYTES`, into an array the caller gives (e.g. a
    :func:`serdistill.data.storage.disk_matrix`): no ``DataFrame`` of 6,373 columns, no second
    copy of the table. The values are those of :func:`read_features` (float32).

    Attributes:
        files: the ``file`` column, in table order.
        names: the feature columns' names.
        settings: the feature settings stored with the table.

    Raises:
        FeatureError: the file is missing or not a readable Parquet file.
        ValueError: a layout this reader does not handle (non-float features, no string
            ``file`` column): :func:`read_features` reads those.
    """

    def __init__(self, path: PathLike) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise FeatureError(
                f"Feature file {path} does not exist. Create it with 'serdistill extract MANIFEST -o {path}'."
            )
        try:
            self._file = pq.ParquetFile(path)
            schema = self._file.schema_arrow
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise FeatureError(f"Feature file {path} is not a readable Parquet file ({err}); extract it again.") from err
        meta = schema.metadata or {}
        index_columns: list[str] = []
        if b"pandas" in meta:
            index_columns = [c for c in json.loads(meta[b"pandas"]).get("index_columns", []) if isinstance(c, str)]
        if schema.names.count("file") != 1:
            raise ValueError("no 'file' column, or several")
        if not (pa.types.is_string(schema.field("file").type) or pa.types.is_large_string(schema.field("file").type)):
            raise ValueError("the 'file' column is not text")
        skip = {"file", *index_columns}
        features = [(n, t) for n, t in zip(schema.names, schema.types) if n not in skip]
        if not all(pa.types.is_floating(t) for _, t in features):
            raise ValueError("non-float feature columns")
        self.names = [n for n, _ in features]
        self.path = path
        try:
            self.files = [str(f) for f in self._file.read(columns=["file"]).column(0).to_pylist()]
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise FeatureError(f"Feature file {path} is not a readable Parquet file ({err}); extract it again.") from err
        own = meta.get(b"serdistill")
        self.settings = json.loads(own) if own else {}

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.files), len(self.names)

    def read_rows(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write rows ``rows`` of the table, in that order, into ``out`` (len(rows), d) float32.

        Returns:
            which rows of ``out`` are finite (bool, (len(rows),)).
        """
        from serdistill.data.storage import release_rows

        rows = np.asarray(rows, dtype=np.int64)
        finite = np.ones(len(rows), dtype=bool)
        if len(rows) == 0:
            return finite
        start = 0
        for group in range(self._file.num_row_groups):
            size = self._file.metadata.row_group(group).num_rows
            wanted = np.flatnonzero((rows >= start) & (rows < start + size))
            if len(wanted):
                source = rows[wanted] - start
                step = max(1, CHUNK_BYTES // (4 * max(size, 1)))
                lo, hi = int(wanted.min()), int(wanted.max()) + 1
                for c0 in range(0, len(self.names), step):
                    names = self.names[c0 : c0 + step]
                    try:
                        table = self._file.read_row_group(group, columns=names)
                    except Exception as err:  # pyarrow raises several types for a damaged file
                        raise FeatureError(
                            f"Feature file {self.path} is not a readable Parquet file ({err}); extract it again."
                        ) from err
                    block = np.empty((size, len(names)), dtype=np.float32)
                    for j, column in enumerate(table.columns):
                        block[:, j] = column.to_numpy()
                    del table
                    block = block[source]
                    finite[wanted] &= np.isfinite(block).all(axis=1)
                    out[wanted, c0 : c0 + len(names)] = block
                    del block
                    release_rows(out, lo, hi)
            start += size
        try:  # give back what Arrow's allocator keeps of the column blocks
            import pyarrow as pa

            pa.default_memory_pool().release_unused()
        except Exception:  # pragma: no cover - an allocator without it
            pass
        return finite


def features_for(
    manifest: Manifest | Sequence[PathLike],
    table: pd.DataFrame,
) -> np.ndarray:
    """The rows of ``table`` for the files of ``manifest``, in its order: float32 (n, d).

    Raises:
        FeatureError: naming the files that have no features (rejected or never
            extracted), or holding non-finite values.
    """
    files = (
        manifest.files
        if isinstance(manifest, Manifest)
        else [os.path.normpath(os.path.abspath(os.fspath(f))) for f in manifest]
    )
    if table.index.has_duplicates:
        table = table[~table.index.duplicated(keep="first")]
    positions = table.index.get_indexer(files)
    missing = [f for f, p in zip(files, positions) if p < 0]
    if missing:
        example = f" (the table has e.g. {table.index[0]})" if len(table) else " (the table is empty)"
        raise FeatureError(
            f"{len(missing)} of {len(files)} file(s) have no features: {', '.join(missing[:_SHOWN])}"
            f"{', ...' if len(missing) > _SHOWN else ''}{example}. Rejected files are listed in "
            "<features>.rejected.csv; extract the manifest again, or keep only the files with "
            "features with serdistill.data.features.with_features(manifest, table)."
        )
    values = table.to_numpy(dtype=np.float32, copy=False)[positions]
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        bad = [files[i] for i in np.flatnonzero(~finite)[:_SHOWN]]
        raise FeatureError(
            f"{int((~finite).sum())} file(s) have NaN or infinite features: {', '.join(bad)}; "
            "expected finite values; extract them again with 'serdistill extract'."
        )
    return np.ascontiguousarray(values)


def with_features(manifest: Manifest, table: pd.DataFrame) -> Manifest:
    """The rows of ``manifest`` whose file has features in ``table`` (order kept); logs the rest."""
    keep = manifest.table["file"].isin(table.index)
    if not keep.all():
        logger.warning(
            "Leaving out %d of %d file(s) that have no features (rejected or not extracted).", int((~keep).sum()), len(keep)
        )
    return Manifest(table=manifest.table[keep].reset_index(drop=True), path=manifest.path, label_range=manifest.label_range)
