"""The estimators: baseline, teacher ensemble, student ensemble, and the whole method (TSModel).

One module each, with what they share beside them:

- :mod:`~serdistill.method.ensemble.baseline`, :mod:`~serdistill.method.ensemble.teachers`,
  :mod:`~serdistill.method.ensemble.students`: the three kinds of model;
- :mod:`~serdistill.method.ensemble.model`: :class:`TSModel`, the whole method, and its saving;
- :mod:`~serdistill.method.ensemble.tasks`: engine tasks (named job types, one ``fit_on_engine``);
- :mod:`~serdistill.method.ensemble.packing`: several MLPs as one network (prediction, ONNX export);
- :mod:`~serdistill.method.ensemble.unlabelled`: which unlabelled data the students see;
- :mod:`~serdistill.method.ensemble.common`: argument checks and the scikit-learn contract.

They follow the scikit-learn contract: ``__init__`` only stores its arguments, ``fit``
checks them and learns attributes ending in ``_``, and ``predict(X, return_std=True)``
returns the predictive spread beside the mean. Inputs are normalised features (n, d)
float32 and labels with NaN for "no label"; outputs are numpy arrays.

Examples:
    >>> import numpy as np
    >>> from serdistill.method.config import Config
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 12)).astype(np.float32)
    >>> y = X[:, :3] @ np.ones((3, 3), np.float32)
    >>> tiny = Config.from_dict({"attributes": ["arousal"], "train": {"batch_size": 16},
    ...     "baseline": {"enabled": False, "hidden": [8], "epochs": 2},
    ...     "teacher": {"hidden": [8, 8], "dropouts": [0.5], "epochs": 2},
    ...     "mc": {"passes": 4}, "student": {"hidden": [8], "epochs": 2, "alphas": [0.5], "betas": [0.5]},
    ...     "unlabelled": {"source": "none"}})
    >>> model = TSModel(tiny).fit(X, y[:, :1], X, y[:, :1])
    >>> mean, std = model.predict(X, return_std=True)
    >>> mean.shape, std.shape
    ((64, 1), (64, 1))
"""

from __future__ import annotations

from serdistill.data.feature_rows import select_embedding_rows
from serdistill.method.ensemble.baseline import Baseline
from serdistill.method.ensemble.model import TSModel
from serdistill.method.ensemble.packing import PackedMLPs, pack, stacked_predict
from serdistill.method.ensemble.persistence import STATE_FORMAT, Group
from serdistill.method.ensemble.students import ENGINE_GRID_POINTS, StudentEnsemble, halving_plan
from serdistill.method.ensemble.tasks import StudentTask, TeacherTask, task_threads
from serdistill.method.ensemble.teachers import EMBEDDINGS_DISK_BYTES, TeacherEnsemble, TeacherMC, summarise_teachers
from serdistill.method.ensemble.unlabelled import select_unlabelled

__all__ = [
    "ENGINE_GRID_POINTS",
    "EMBEDDINGS_DISK_BYTES",
    "STATE_FORMAT",
    "Baseline",
    "PackedMLPs",
    "StudentEnsemble",
    "Group",
    "StudentTask",
    "TSModel",
    "TeacherEnsemble",
    "TeacherMC",
    "TeacherTask",
    "halving_plan",
    "pack",
    "select_embedding_rows",
    "select_unlabelled",
    "stacked_predict",
    "summarise_teachers",
    "task_threads",
]
