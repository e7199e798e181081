"""Which unlabelled segments the students see (:func:`select_unlabelled`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from serdistill.base.errors import ConfigError
from serdistill.data.storage import select_rows
from serdistill.method.config import UnlabelledConfig
from serdistill.method.torch_state import derive_seed

logger = logging.getLogger(__name__)


def select_unlabelled(
    config: UnlabelledConfig, *, X_test: np.ndarray | None = None, X_pool: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The unlabelled data the students see, and a record of the choice.

    - ``none``: no unlabelled data.
    - ``test``: the test segments (without labels): the paper's transductive setting.
    - ``unlabeled``: ``config.size`` segments (default: as many as the test set) drawn
      without replacement from the unannotated pool, anew for each seed (trial).

    Returns:
        The features (or None) and ``{"source", "n", "indices"}`` (indices into the pool
        for ``unlabeled``).
    """
    if config.source == "none":
        return None, {"source": "none", "n": 0, "indices": None}
    if config.source == "test":
        if X_test is None:
            raise ConfigError("The unlabelled source 'test' needs the test features; none were given.")
        return X_test, {"source": "test", "n": len(X_test), "indices": None}
    if X_pool is None or len(X_pool) == 0:
        raise ConfigError(
            "The unlabelled source 'unlabeled' needs a pool of unannotated segments (split "
            "'unlabeled' in the manifest); there is none. Use source = 'test' or 'none'."
        )
    size = config.size if config.size is not None else (len(X_test) if X_test is not None else None)
    if size is None:
        raise ConfigError("Set [unlabelled] size, or give the test set, to size the unlabelled sample.")
    if size > len(X_pool):
        logger.warning("Asked for %d unlabelled segments but the pool has %d: using all of them.", size, len(X_pool))
        size = len(X_pool)
    rng = np.random.default_rng(derive_seed(seed, "unlabelled"))
    indices = np.sort(rng.choice(len(X_pool), size=size, replace=False))
    return select_rows(X_pool, indices), {"source": "unlabeled", "n": int(size), "indices": indices.tolist()}
