"""The single-MLP baseline (:class:`Baseline`)."""

from __future__ import annotations

import logging
import os

import numpy as np

from serdistill.data.storage import labelled_rows
from serdistill.method.config import Config
from serdistill.method.ensemble.common import (
    _check_X,
    _check_y,
    _config,
    _device,
    _Estimator,
    _n_features,
    _squeeze,
)
from serdistill.method.torch_state import derive_seed
from serdistill.method.training import (
    EpochHook,
    fit_baseline,
    predict_mlp,
)

logger = logging.getLogger(__name__)


class Baseline(_Estimator):
    """The single-MLP baseline (4 x 512, loss 1 − CCC, 200 epochs, best development epoch).

    Args:
        config: the method's config (uses ``baseline`` and ``train``).
        seed: overrides ``config.seed``.
        on_epoch: progress hook, called after each epoch with a dict.
        checkpoint: a file to resume from and write while training.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        seed: int | None = None,
        on_epoch: EpochHook | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.on_epoch = on_epoch
        self.checkpoint = checkpoint

    def fit(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray) -> Baseline:
        config = _config(self.config)
        seed = config.seed if self.seed is None else self.seed
        X, y = labelled_rows(_check_X(X, "X"), _check_y(y, len(X), "y"))
        X_dev, y_dev = labelled_rows(_check_X(X_dev, "X_dev", X.shape[1]), _check_y(y_dev, len(X_dev), "y_dev"))
        result = fit_baseline(
            X,
            y,
            X_dev,
            y_dev,
            config=config.baseline,
            train=config.train,
            seed=derive_seed(seed, "baseline"),
            on_epoch=self.on_epoch,
            checkpoint=self.checkpoint,
        )
        self.model_, self.history_ = result.model, result.history
        self.best_epoch_, self.dev_ccc_ = result.best_epoch, result.best_score
        self.n_features_in_, self.n_outputs_ = X.shape[1], y.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions, (n,) for one output, else (n, k)."""
        X = _check_X(X, "X", _n_features(self))
        return _squeeze(predict_mlp(self.model_, X, device=_device(self.model_)))
