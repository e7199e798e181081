"""What the estimators share: argument checks, the scikit-learn contract, small helpers."""

from __future__ import annotations

import inspect
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serdistill.base.errors import ConfigError, NotFittedError
from serdistill.data.feature_rows import FeatureRows
from serdistill.method.config import Config
from serdistill.method.metrics import ccc
from serdistill.method.training import (
    EpochHook,
)

logger = logging.getLogger(__name__)


def _config(config: Config | None) -> Config:
    if config is None:
        return Config()
    if not isinstance(config, Config):
        raise ConfigError(f"The 'config' parameter must be a serdistill.method.config.Config. Got {config!r} instead.")
    return config


def _check_X(X: Any, what: str, d: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D (segments x features); got shape {X.shape}.")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{what} has {X.shape[1]} features; the model was fitted on {d}.")
    # in blocks, released as they pass: no (n, d) bool array, and no features left mapped
    # afterwards (the last pages under the budget too: the checked arrays may wait long)
    rows = FeatureRows(X)
    finite = all(bool(torch.isfinite(block).all()) for _, block in rows.blocks(2048))
    rows.release()
    if not finite:
        raise ValueError(f"{what} holds NaN or inf; features must be finite (check extraction and normalisation).")
    return np.ascontiguousarray(X)


def _check_y(y: Any, n: int, what: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) != n:
        raise ValueError(f"{what} must have one row per segment ({n}); got shape {y.shape}.")
    return y


def _squeeze(a: np.ndarray) -> np.ndarray:
    return a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a


def _dev_score(prediction: np.ndarray, y: np.ndarray) -> float:
    value = float(np.mean(ccc(prediction.astype(np.float64), y.astype(np.float64))))
    return value if math.isfinite(value) else -math.inf


def _hook(on_epoch: EpochHook | None, **extra: Any) -> EpochHook | None:
    if on_epoch is None:
        return None
    return lambda info: on_epoch({**extra, **info})


class _Estimator:
    """scikit-learn's estimator contract: ``get_params``/``set_params`` over the ``__init__``
    arguments (which ``__init__`` stores unchanged), so ``sklearn.base.clone`` works."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name, p in signature.parameters.items() if name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` arguments (``deep`` is accepted for scikit-learn; the config is one value)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> _Estimator:
        """Set ``__init__`` arguments; an unknown name is a ValueError naming the valid ones."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for {type(self).__name__}; valid: {', '.join(valid)}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not None and k != "config")
        return f"{type(self).__name__}({shown})"


def _n_features(estimator: Any) -> int:
    """The features ``estimator`` was fitted on; NotFittedError before ``fit``."""
    try:
        return int(estimator.n_features_in_)
    except AttributeError:
        raise NotFittedError(f"This {type(estimator).__name__} is not fitted yet; call fit(...) first.") from None


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _ckpt(folder: str | os.PathLike[str] | None, name: str) -> Path | None:
    return None if folder is None else Path(folder) / name


def _absolute(folder: str | os.PathLike[str] | None) -> Path | None:
    """``folder`` as an absolute path: engine tasks may run in another working directory."""
    return None if folder is None else Path(folder).absolute()
