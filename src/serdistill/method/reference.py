"""Reference models: ridge regression and a linear SVR on the same normalised features.

A deep model means something only beside a linear one fitted on the same rows: every
evaluation and every report shows these two next to the baseline. Both are fitted on the
training split only, one output at a time, and their regularisation is chosen on the
development split by CCC, the criterion the networks' epochs and alpha/beta are chosen by.

- **Ridge** (:data:`RIDGE_ALPHAS`): for every alpha, the exact solution of scikit-learn's
  ``Ridge(alpha)`` with an intercept, all alphas from one eigendecomposition of the centred
  Gram matrix (n x n when there are fewer rows than features, else d x d, accumulated in row
  blocks so a large matrix on disk is never copied whole).
  ``tests/unit/test_reference.py`` checks it against ``sklearn.linear_model.Ridge``.
- **Linear SVR** (:data:`SVR_CS`): ``sklearn.svm.LinearSVR`` (epsilon-insensitive loss,
  epsilon 0) on z-scored labels, fitted on at most :data:`SVR_MAX_ROWS` training rows (a
  seeded sample beyond that: it copies its rows as float64).

Examples:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 20)).astype(np.float32)
    >>> y = X[:, :1] @ np.ones((1, 1), np.float32) + 0.1 * rng.normal(size=(80, 1)).astype(np.float32)
    >>> model = LinearReference("ridge").fit(X[:60], y[:60], X[60:], y[60:])
    >>> round(float(model.dev_ccc_[0]), 2) > 0.9, model.predict(X).shape
    (True, (80, 1))
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from serdistill.data.storage import row_blocks
from serdistill.method.metrics import ccc

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("ridge", "svr")
LABELS: dict[str, str] = {"ridge": "Ridge regression", "svr": "Linear SVR"}
#: Ridge penalties tried: 10^-1 .. 10^7 in half decades (EmoDB picks 10^2.5 .. 10^3.5; the
#: best penalty grows with the number of rows, and MSP-Podcast has 100x EmoDB's).
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(10.0 ** (e / 2)) for e in range(-2, 15))
#: LinearSVR's C tried: 10^-6 .. 10^0 in half decades (on 6,373 z-scored features).
SVR_CS: tuple[float, ...] = tuple(float(10.0 ** (e / 2)) for e in range(-12, 1))
SVR_MAX_ROWS = 8192
_BLOCK = 2048


class LinearReference:
    """Ridge regression or a linear SVR per output, regularisation chosen on development CCC.

    Args:
        kind: ``"ridge"`` or ``"svr"``.
        seed: the row sample of the SVR on large training sets, and its own randomness.

    Attributes (after fit):
        coef_: (k, d) float32; intercept_: (k,) float32.
        choice_: per output, the chosen alpha (ridge) or C (SVR).
        dev_ccc_: per output, the development CCC at that choice.
        n_train_: training rows used per output.
    """

    def __init__(self, kind: str = "ridge", *, seed: int = 0) -> None:
        self.kind = kind
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray) -> LinearReference:
        """Fit each column of ``y`` (rows with NaN skipped per column) and pick its penalty on ``y_dev``."""
        if self.kind not in KINDS:
            raise ValueError(
                f"The 'kind' parameter of LinearReference must be a str among {set(KINDS)}. Got {self.kind!r} instead."
            )
        y = np.asarray(y, np.float64).reshape(len(X), -1)
        y_dev = np.asarray(y_dev, np.float64).reshape(len(X_dev), -1)
        k, d = y.shape[1], X.shape[1]
        self.coef_ = np.zeros((k, d), np.float32)
        self.intercept_ = np.zeros(k, np.float32)
        self.choice_, self.dev_ccc_, self.n_train_ = [], [], []
        for j in range(k):
            rows, dev_rows = np.flatnonzero(np.isfinite(y[:, j])), np.flatnonzero(np.isfinite(y_dev[:, j]))
            if len(rows) < 2 or len(dev_rows) < 2:
                raise ValueError(
                    f"Output {j}: a reference model needs at least 2 labelled training and "
                    f"development rows; got {len(rows)} and {len(dev_rows)}."
                )
            fit = _fit_ridge if self.kind == "ridge" else self._fit_svr
            coef, intercept, choice, score, n = fit(X, y[:, j], rows, X_dev, y_dev[:, j], dev_rows)
            self.coef_[j], self.intercept_[j] = coef, intercept
            self.choice_.append(choice)
            self.dev_ccc_.append(score)
            self.n_train_.append(n)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (n, k), float32."""
        out = np.empty((len(X), len(self.coef_)), np.float32)
        for start, block in _blocks(X):
            out[start : start + len(block)] = block @ self.coef_.T + self.intercept_
        return out

    def _fit_svr(self, X, y, rows, X_dev, y_dev, dev_rows):
        from sklearn.svm import LinearSVR

        if len(rows) > SVR_MAX_ROWS:
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(rows, size=SVR_MAX_ROWS, replace=False))
        Xt = np.asarray(X[rows], np.float64)
        Xd = np.asarray(X_dev[dev_rows], np.float64)
        mean, std = float(y[rows].mean()), float(y[rows].std()) or 1.0
        target = (y[rows] - mean) / std
        best = None
        for C in SVR_CS:
            model = LinearSVR(C=C, epsilon=0.0, dual=True, max_iter=5000, tol=1e-4, random_state=self.seed % 2**32)
            with _quiet():
                model.fit(Xt, target)
            score = _score(model.predict(Xd) * std + mean, y_dev[dev_rows])
            if best is None or score > best[0]:
                best = (score, C, model.coef_ * std, float(model.intercept_[0]) * std + mean)
        score, C, coef, intercept = best
        _edge("svr", C, SVR_CS)
        return coef, intercept, C, score, len(rows)


def _fit_ridge(X, y, rows, X_dev, y_dev, dev_rows):
    """sklearn's Ridge(alpha) with an intercept, for every alpha of RIDGE_ALPHAS; the best on dev."""
    n, d = len(rows), X.shape[1]
    target = y[rows]
    x_mean = np.zeros(d)
    for _, block in _blocks(X, rows):
        x_mean += block.sum(axis=0, dtype=np.float64)
    x_mean /= n
    y_mean = float(target.mean())
    yc = target - y_mean
    Xd = np.asarray(X_dev[dev_rows], np.float64) - x_mean
    if n <= d:  # dual: coef = Xc' (K + aI)^-1 yc, K = Xc Xc' (n x n)
        Xc = np.asarray(X[rows], np.float64) - x_mean
        lam, U = np.linalg.eigh(Xc @ Xc.T)
        Uy = U.T @ yc
        dev_basis = (Xd @ Xc.T) @ U  # (n_dev, n)

        def coef_of(alpha: float) -> np.ndarray:
            return Xc.T @ (U @ (Uy / (np.maximum(lam, 0) + alpha)))
    else:  # primal: coef = (G + aI)^-1 Xc' yc, G = Xc' Xc (d x d), in row blocks
        G = np.zeros((d, d))
        Xy = np.zeros(d)
        for start, block in _blocks(X, rows):
            b = np.asarray(block, np.float64)
            G += b.T @ b
            Xy += b.T @ yc[start : start + len(b)]
        G -= n * np.outer(x_mean, x_mean)
        Xy -= x_mean * yc.sum()
        lam, V = np.linalg.eigh(G)
        del G
        Vy = V.T @ Xy
        dev_basis = Xd @ V  # (n_dev, d)

        def coef_of(alpha: float) -> np.ndarray:
            return V @ (Vy / (np.maximum(lam, 0) + alpha))

    lam_pos = np.maximum(lam, 0)
    best = None
    for alpha in RIDGE_ALPHAS:
        weights = (Uy if n <= d else Vy) / (lam_pos + alpha)
        score = _score(dev_basis @ weights + y_mean, y_dev[dev_rows])
        if best is None or score > best[0]:
            best = (score, alpha)
    score, alpha = best
    _edge("ridge", alpha, RIDGE_ALPHAS)
    coef = coef_of(alpha)
    return coef, y_mean - float(x_mean @ coef), alpha, score, n


def _score(prediction: np.ndarray, y: np.ndarray) -> float:
    value = float(ccc(np.asarray(prediction, np.float64), np.asarray(y, np.float64)))
    return value if math.isfinite(value) else -math.inf


def _edge(kind: str, value: float, grid: tuple[float, ...]) -> None:
    if value in (grid[0], grid[-1]):
        logger.info("%s: the development set chose %g, the edge of the grid %g..%g.", LABELS[kind], value, grid[0], grid[-1])


def _blocks(X: np.ndarray, rows: np.ndarray | None = None):
    """(start, block) over ``X[rows]`` in row blocks; ``start`` counts the rows taken so far."""
    start = 0
    for block in row_blocks(X, rows, _BLOCK):
        yield start, block
        start += len(block)


class _quiet:
    """Silence scikit-learn's convergence warnings (the development CCC judges each fit)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._catch.__exit__(*exc)
