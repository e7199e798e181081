"""The teachers (:class:`TeacherEnsemble`) and their Monte-Carlo dropout (:class:`TeacherMC`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from serdistill.base.protocols import Engine
from serdistill.data.feature_rows import release
from serdistill.data.storage import labelled_rows, large_empty
from serdistill.method.config import Config
from serdistill.method.ensemble.common import (
    _absolute,
    _check_X,
    _check_y,
    _ckpt,
    _config,
    _Estimator,
    _hook,
    _n_features,
    _squeeze,
)
from serdistill.method.ensemble.tasks import TeacherTask, fit_on_engine, fit_teacher_task
from serdistill.method.mc_dropout import MCResult, mc_dropout
from serdistill.method.models import MLP
from serdistill.method.stacked import fit_teachers_stacked
from serdistill.method.torch_state import derive_seed, resolve_device
from serdistill.method.training import (
    EpochHook,
    fit_teacher,
)

logger = logging.getLogger(__name__)
#: Teacher embeddings from this size up are held in a file on disk, read a teacher at a time.
EMBEDDINGS_DISK_BYTES = 64 * 2**20


class TeacherEnsemble(_Estimator):
    """N teachers, one per dropout rate, each trained with SGD and loss 1 − CCC.

    After :meth:`fit`, :meth:`mc_predict` runs Monte-Carlo dropout (``config.mc``) for each
    teacher: the mean embedding (the students' target), the mean prediction and its std.

    Args: as :class:`Baseline`; ``checkpoint_dir`` holds one checkpoint per teacher.
        engine: a :mod:`serdistill.runtime.engine` engine to train the teachers on, one task each
            (``engine.task_cpus`` torch threads per task); None (default) trains them here, one
            after another. The teachers are the same either way for the same torch threads:
            each has its own seed. With an engine, ``on_epoch`` gets each teacher's epochs when
            it is finished.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        seed: int | None = None,
        on_epoch: EpochHook | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.on_epoch = on_epoch
        self.checkpoint_dir = checkpoint_dir
        self.engine = engine

    def fit(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray) -> TeacherEnsemble:
        config = _config(self.config)
        self.seed_ = config.seed if self.seed is None else self.seed
        X, y = labelled_rows(_check_X(X, "X"), _check_y(y, len(X), "y"))
        X_dev, y_dev = labelled_rows(_check_X(X_dev, "X_dev", X.shape[1]), _check_y(y_dev, len(X_dev), "y_dev"))
        self.models_, self.histories_, self.dev_ccc_ = [], [], []
        N = len(config.teacher.dropouts)
        if self.engine is not None:
            self._fit_on_engine(X, y, X_dev, y_dev, config)
        elif config.train.stacks():  # one stacked network ([train] stacked; the default on CUDA)
            logger.info("Training %d teachers as one stacked network", N)
            results = fit_teachers_stacked(
                X,
                y,
                X_dev,
                y_dev,
                dropouts=config.teacher.dropouts,
                seeds=[derive_seed(self.seed_, "teacher", i) for i in range(N)],
                names=[f"teacher {i + 1}/{N} (p={p:g})" for i, p in enumerate(config.teacher.dropouts)],
                hooks=[_hook(self.on_epoch, stage="teacher", member=i) for i in range(N)],
                config=config.teacher,
                train=config.train,
                checkpoint=_ckpt(self.checkpoint_dir, "teachers_stack.pt"),
            )
            for result in results:
                self.models_.append(result.model)
                self.histories_.append(result.history)
                self.dev_ccc_.append(result.best_score)
        else:
            for i, p in enumerate(config.teacher.dropouts):
                name = f"teacher {i + 1}/{N} (p={p:g})"
                logger.info("Training %s", name)
                result = fit_teacher(
                    X,
                    y,
                    X_dev,
                    y_dev,
                    dropout=p,
                    config=config.teacher,
                    train=config.train,
                    seed=derive_seed(self.seed_, "teacher", i),
                    name=name,
                    on_epoch=_hook(self.on_epoch, stage="teacher", member=i),
                    checkpoint=_ckpt(self.checkpoint_dir, f"teacher{i}.pt"),
                )
                self.models_.append(result.model)
                self.histories_.append(result.history)
                self.dev_ccc_.append(result.best_score)
        self.mc_ = config.mc
        self.n_features_in_, self.n_outputs_ = X.shape[1], y.shape[1]
        return self

    def _fit_on_engine(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, config: Config) -> None:
        N = len(config.teacher.dropouts)
        tasks = [
            TeacherTask(
                i,
                p,
                f"teacher {i + 1}/{N} (p={p:g})",
                derive_seed(self.seed_, "teacher", i),
                _ckpt(_absolute(self.checkpoint_dir), f"teacher{i}.pt"),
            )
            for i, p in enumerate(config.teacher.dropouts)
        ]
        logger.info("Training %d teachers as tasks of the %s engine", N, getattr(self.engine, "name", "given"))
        assert self.engine is not None  # called only to train on an engine
        results = fit_on_engine(
            self.engine,
            fit_teacher_task,
            tasks,
            shared={"X": X, "y": y, "X_dev": X_dev, "y_dev": y_dev, "config": config},
            device=resolve_device(config.train.device),
            on_epoch=self.on_epoch,
            stage="teacher",
            # its own generator: torch's global one is untouched
            new_model=lambda task: MLP(
                X.shape[1], config.teacher.hidden, dropout=task.dropout, out_dim=y.shape[1], generator=torch.Generator()
            ),
        )
        for result in results:
            self.models_.append(result.model)
            self.histories_.append(result.history)
            self.dev_ccc_.append(result.best_score)

    def mc_predict(self, X: np.ndarray, *, embedding_std: bool = False) -> list[MCResult]:
        """Monte-Carlo dropout of every teacher on ``X`` (one :class:`MCResult` each).

        Deterministic: teacher i always uses the mask stream ``derive_seed(seed, "mc", i)``.
        With ``config.mc.enabled = False`` it is one pass with dropout off.
        """
        X = _check_X(X, "X", _n_features(self))
        return [self._mc(i, X, embedding_std=embedding_std) for i in range(len(self.models_))]

    def _mc(self, i: int, X: np.ndarray, *, enabled: bool | None = None, embedding_std: bool = False) -> MCResult:
        return mc_dropout(
            self.models_[i],
            X,
            passes=self.mc_.passes,
            enabled=self.mc_.enabled if enabled is None else enabled,
            seed=derive_seed(self.seed_, "mc", i),
            block_rows=self.mc_.block_rows,
            embedding_std=embedding_std,
        )

    def mc_stack(self, X: np.ndarray, *, enabled: bool | None = None) -> TeacherMC:
        """:meth:`mc_predict`'s embeddings and outputs, stacked over the teachers.

        The same numbers as ``mc_predict``, held once: each teacher's result is copied
        into the stacked arrays and dropped before the next teacher runs. Embeddings of
        :data:`EMBEDDINGS_DISK_BYTES` and more (at MSP-Podcast size, 5 x 34,280 x 512
        float32 = 0.35 GB) live in a file on disk (:func:`~serdistill.data.storage.large_empty`):
        student i reads teacher i's slice only. ``enabled=False``: one pass with dropout
        off, whatever ``config.mc`` says (the "no MC dropout" setting).
        """
        X = _check_X(X, "X", _n_features(self))
        stacked: TeacherMC | None = None
        for i in range(len(self.models_)):
            r = self._mc(i, X, enabled=enabled)
            if stacked is None:
                N = len(self.models_)
                stacked = TeacherMC(
                    large_empty((N, *r.embedding.shape), EMBEDDINGS_DISK_BYTES), np.empty((N, *r.samples.shape), np.float32)
                )
            stacked.embeddings[i], stacked.samples[i] = r.embedding, r.samples
            release(stacked.embeddings[i])  # written: out of memory until a student reads it
            del r
        assert stacked is not None, "a fitted ensemble has at least one teacher"
        return stacked

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Each teacher's MC-mean embedding of ``X``: (N, n, 512)."""
        return self.mc_stack(X).embeddings

    def heads(self) -> tuple[np.ndarray, np.ndarray]:
        """Every teacher's output layer, the map from its embedding to its prediction: weights
        (N, k, H) and biases (N, k) (the students' initial output layers with ``head = "teacher"``)."""
        _n_features(self)
        with torch.no_grad():
            return (
                np.stack([m.output.weight.detach().cpu().numpy() for m in self.models_]),
                np.stack([m.output.bias.detach().cpu().numpy() for m in self.models_]),
            )

    def predict(self, X: np.ndarray, *, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The teachers' MC ensemble: mean over teachers of their MC-mean predictions.

        With ``return_std``, also the std over all N x T Monte-Carlo outputs pooled (the
        uncertainty the paper's "top 75%" setting ranks by).
        """
        return summarise_teachers(self.mc_predict(X), return_std=return_std)


@dataclass
class TeacherMC:
    """Every teacher's Monte-Carlo dropout on n segments (:meth:`TeacherEnsemble.mc_stack`).

    Attributes:
        embeddings: each teacher's MC-mean embedding, (N, n, H): the students' targets.
        samples: each teacher's every pass's output, (N, T, n, k).
    """

    embeddings: np.ndarray
    samples: np.ndarray


def summarise_teachers(
    results: Sequence[MCResult] | TeacherMC, *, return_std: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Mean over teachers of MC means, and the pooled std over all N x T outputs."""
    samples = results.samples if isinstance(results, TeacherMC) else np.stack([r.samples for r in results])  # (N, T, n, k)
    mean = samples.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
    if not return_std:
        return _squeeze(mean)
    std = samples.std(axis=(0, 1), dtype=np.float64).astype(np.float32)
    return _squeeze(mean), _squeeze(std)
