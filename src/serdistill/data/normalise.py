"""z-score normalisation fitted on the training partition only.

>>> import numpy as np
>>> normaliser = Normaliser().fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
>>> normaliser.transform(np.array([[2.0, 9.0], [5.0, 5.0]]))
array([[0., 0.],
       [3., 0.]], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from serdistill.base.errors import ConfigError, NotFittedError
from serdistill.data.feature_table import FeatureError
from serdistill.data.storage import release_rows, row_blocks

_ROWS = 2048  # rows per block: keeps float64 temporaries small for 6,373-column tables
_SHOWN = 10
STATE_VERSION = 1


class Normaliser:
    """z-scores ``(x - mean) / std`` with the training partition's mean and std, clipped.

    Statistics are population moments (``ddof=0``) computed in float64; outputs are float32.

    A feature that is constant in the training data (std 0, or below float32 rounding of
    its mean: ``std <= 1e-6 * |mean|``) carries nothing the model could have learnt, so
    it maps to 0 everywhere, never to NaN or infinity.

    The z-scores are clipped to ``[-clip, clip]``. Within the training data almost every
    value lies inside ±10 (by Chebyshev's inequality at most 1% of any feature can lie
    beyond 10 std, and far fewer for real features), so the clip changes nearly nothing
    there. openSMILE functionals of other speakers, channels or a glitchy file can lie
    hundreds of std out (ranges, slopes, spectral flux on a click); unclipped, one such
    value dominates the first layer's pre-activation and swamps the rest of the
    segment. 10 keeps the ordering of all plausible values and bounds the damage of the
    implausible ones. ``clip=None`` turns it off.

    Args:
        clip: the largest absolute z-score returned, or ``None`` for no clipping.

    Attributes:
        mean_: per-feature training mean (float64, shape (d,)).
        scale_: per-feature training std, 1 where constant (float64, shape (d,)).
        constant_: which features are constant in the training data (bool, shape (d,)).
        n_features_in_: d.
        n_samples_seen_: the number of training rows.
        feature_names_in_: column names, when fitted on a ``DataFrame``; else ``None``.
    """

    def __init__(self, *, clip: float | None = 10.0) -> None:
        self.clip = clip

    def fit(self, X: Any, *, rows: np.ndarray | None = None) -> Normaliser:
        """Learn the mean and std of each column of the training features ``X`` (n, d).

        ``rows`` (integer indices) fits on ``X[rows]`` without copying them: the same
        statistics, read block by block (a :func:`serdistill.data.storage.disk_matrix` stays on disk).

        Raises:
            FeatureError: if ``X`` is not 2-D, is empty, or holds NaN or infinity (naming
                the first offending columns).
            ConfigError: if ``clip`` is not a positive number or ``None``.
        """
        if self.clip is not None and not (
            isinstance(self.clip, (int, float)) and not isinstance(self.clip, bool) and 0 < self.clip < math.inf
        ):
            raise ConfigError(f"The 'clip' parameter of Normaliser must be a positive number or None; got {self.clip!r}.")
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        values = _as_2d(X, "fit")
        rows = None if rows is None else np.asarray(rows, dtype=np.intp)
        n, d = (len(values) if rows is None else len(rows)), values.shape[1]
        if n == 0:
            raise FeatureError("Normaliser.fit got 0 rows; expected the training features; check the train split.")
        _check_finite(values, names, "the training data passed to Normaliser.fit", rows)
        mean = np.zeros(d)
        for block in _blocks(values, rows):
            mean += block.sum(axis=0, dtype=np.float64)
        mean /= n
        squares = np.zeros(d)
        for block in _blocks(values, rows):
            z = block.astype(np.float64)  # in place from here: one float64 block at a time
            z -= mean
            z *= z
            squares += z.sum(axis=0)
        std = np.sqrt(squares / n)
        constant = (std == 0) | (std <= 1e-6 * np.abs(mean))
        self.mean_ = mean
        self.scale_ = np.where(constant, 1.0, std)
        self.constant_ = constant
        self.n_features_in_ = d
        self.n_samples_seen_ = n
        self.feature_names_in_ = names
        return self

    def transform(self, X: Any, *, rows: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """z-score ``X`` (n, d) with the training statistics: float32, clipped, 0 for constant features.

        ``rows`` (integer indices) returns ``transform(X[rows])`` without copying those rows
        first (row numbers in errors count within ``rows``). ``out``: a float32 array of the
        result's shape to write into (a :func:`~serdistill.data.storage.disk_matrix` is written
        block by block and each block's pages released).

        Raises:
            NotFittedError: if the normaliser is not fitted. FeatureError: if ``X`` has another number of
                columns, or holds NaN or infinity (naming the rows).
        """
        if not hasattr(self, "mean_"):
            raise NotFittedError("This Normaliser is not fitted yet; call fit(X_train) first, or load one with from_dict.")
        values = _as_2d(X, "transform")
        if values.shape[1] != self.n_features_in_:
            raise FeatureError(
                f"Normaliser.transform got {values.shape[1]} features per row; expected {self.n_features_in_}, "
                "as in the training data; extract all data with the same feature set."
            )
        rows = None if rows is None else np.asarray(rows, dtype=np.intp)
        _check_rows_finite(values, rows)
        shape = (len(values) if rows is None else len(rows), values.shape[1])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"Normaliser.transform: out must be float32 {shape}; got {out.dtype} {out.shape}.")
        keep = ~self.constant_
        for i, block in enumerate(_blocks(values, rows)):
            start = i * _ROWS
            z = block.astype(np.float64)  # in place from here: one float64 block, the same values
            z -= self.mean_
            z /= self.scale_
            z[:, ~keep] = 0.0
            if self.clip is not None:
                np.clip(z, -self.clip, self.clip, out=z)
            out[start : start + _ROWS] = z
            release_rows(out, start, start + _ROWS)
        return out

    def fit_transform(self, X: Any) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable state for a model bundle; :meth:`from_dict` restores it exactly."""
        if not hasattr(self, "mean_"):
            raise NotFittedError("This Normaliser is not fitted yet; call fit(X_train) before saving it.")
        return {
            "version": STATE_VERSION,
            "clip": self.clip,
            "mean": self.mean_.tolist(),
            "std": np.where(self.constant_, 0.0, self.scale_).tolist(),
            "constant": self.constant_.tolist(),
            "n_samples_seen": self.n_samples_seen_,
            "feature_names": self.feature_names_in_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Normaliser:
        """Rebuild a fitted normaliser from :meth:`to_dict`'s output."""
        if state.get("version") != STATE_VERSION:
            raise FeatureError(
                f"Normaliser state version {state.get('version')!r}; expected {STATE_VERSION}; "
                "re-create the bundle with this version of serdistill."
            )
        normaliser = cls(clip=state["clip"])
        normaliser.mean_ = np.asarray(state["mean"], dtype=np.float64)
        normaliser.constant_ = np.asarray(state["constant"], dtype=bool)
        normaliser.scale_ = np.where(normaliser.constant_, 1.0, np.asarray(state["std"], dtype=np.float64))
        normaliser.n_features_in_ = len(normaliser.mean_)
        normaliser.n_samples_seen_ = int(state["n_samples_seen"])
        normaliser.feature_names_in_ = state.get("feature_names")
        return normaliser

    def __repr__(self) -> str:
        fitted = f", fitted on {self.n_samples_seen_} x {self.n_features_in_}" if hasattr(self, "mean_") else ""
        return f"Normaliser(clip={self.clip!r}){fitted}"


def _as_2d(X: Any, where: str) -> np.ndarray:
    values = np.asarray(X)
    if values.ndim != 2:
        raise FeatureError(f"Normaliser.{where} got an array of shape {values.shape}; expected (rows, features).")
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise FeatureError(f"Normaliser.{where} got values of type {values.dtype}; expected real numbers.")
    return values


def _blocks(values: np.ndarray, rows: np.ndarray | None = None):
    """Blocks of ``_ROWS`` rows of ``values`` (or of ``values[rows]``), in order."""
    return row_blocks(values, rows, _ROWS)


def _check_finite(values: np.ndarray, names: Sequence[str] | None, what: str, rows: np.ndarray | None = None) -> None:
    bad_counts = np.zeros(values.shape[1], dtype=np.int64)
    for block in _blocks(values, rows):
        bad_counts += (~np.isfinite(block)).sum(axis=0)
    columns = np.flatnonzero(bad_counts)
    if len(columns):
        shown = ", ".join(f"{names[j] if names else f'column {j}'} ({bad_counts[j]} value(s))" for j in columns[:_SHOWN])
        raise FeatureError(
            f"{len(columns)} feature(s) hold NaN or infinity in {what}: {shown}"
            f"{', ...' if len(columns) > _SHOWN else ''}; expected finite features; build the training "
            "features with serdistill.data.features (which rejects such files) or drop the affected rows."
        )


def _check_rows_finite(values: np.ndarray, rows: np.ndarray | None = None) -> None:
    bad_rows = [
        b * _ROWS + i
        for b, block in enumerate(_blocks(values, rows))
        for i in np.flatnonzero(~np.isfinite(block).all(axis=1))
    ]
    if bad_rows:
        raise FeatureError(
            f"{len(bad_rows)} row(s) passed to Normaliser.transform hold NaN or infinity (rows "
            f"{', '.join(map(str, bad_rows[:_SHOWN]))}{', ...' if len(bad_rows) > _SHOWN else ''}); "
            "expected finite features; drop those rows or extract their files again."
        )
