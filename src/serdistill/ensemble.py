"""The estimators: baseline, teacher ensemble, student ensemble, and the whole method (TSModel).

They follow the scikit-learn contract: ``__init__`` only stores its arguments, ``fit``
checks them and learns attributes ending in ``_``, and ``predict(X, return_std=True)``
returns the predictive spread beside the mean. Inputs are normalised features (n, d)
float32 and labels with NaN for "no label"; outputs are numpy arrays.

Examples:
    >>> import numpy as np
    >>> from serdistill.config import Config
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

import inspect
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serdistill import __version__
from serdistill.config import Config, UnlabelledConfig
from serdistill.errors import ConfigError, NotFittedError
from serdistill.events import report
from serdistill.health import failed_members
from serdistill.io import atomic_path, jsonable, write_json
from serdistill.mc_dropout import MCResult, mc_dropout
from serdistill.metrics import ccc
from serdistill.models import MLP
from serdistill.reference import LinearReference
from serdistill.stacked import StudentJob, fit_students_stacked, fit_teachers_stacked
from serdistill.storage import (
    PageBudget,
    is_on_disk,
    labelled_rows,
    large_empty,
    release_memory,
    release_rows,
    row_blocks,
    select_rows,
    take_rows,
)
from serdistill.torch_state import derive_seed, load_checkpoint, resolve_device, save_checkpoint
from serdistill.training import (
    SCALE_FREE_OPTIMIZERS,
    EpochHook,
    FitResult,
    Schedule,
    fit_baseline,
    fit_student,
    fit_teacher,
    loss_weights,
    n_batches,
    predict_mlp,
)

logger = logging.getLogger(__name__)
STATE_FORMAT = 1
#: Grid points whose students an engine trains at once: enough tasks to fill a few nodes,
#: few enough that their weights (N students each) fit in this process's memory.
ENGINE_GRID_POINTS = 8
#: Teacher embeddings from this size up are held in a file on disk, read a teacher at a time.
EMBEDDINGS_DISK_BYTES = 64 * 2**20


def _config(config: Config | None) -> Config:
    if config is None:
        return Config()
    if not isinstance(config, Config):
        raise ConfigError(f"The 'config' parameter must be a serdistill.config.Config. Got {config!r} instead.")
    return config


def _check_X(X: Any, what: str, d: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D (segments x features); got shape {X.shape}.")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{what} has {X.shape[1]} features; the model was fitted on {d}.")
    # in blocks, each released after use: no (n, d) bool array, no features left mapped
    if not all(np.isfinite(block).all() for block in row_blocks(X, None, 2048)):
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


# ---------------------------------------------------------------------------------------


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


class Baseline(_Estimator):
    """The single-MLP baseline (4 x 512, loss 1 − CCC, 200 epochs, best development epoch).

    Args:
        config: the method's config (uses ``baseline`` and ``train``).
        seed: overrides ``config.seed``.
        on_epoch: progress hook, called after each epoch with a dict.
        checkpoint: a file to resume from and write while training.
    """

    def __init__(self, config: Config | None = None, *, seed: int | None = None,
                 on_epoch: EpochHook | None = None, checkpoint: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.seed = seed
        self.on_epoch = on_epoch
        self.checkpoint = checkpoint

    def fit(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray) -> Baseline:
        config = _config(self.config)
        seed = config.seed if self.seed is None else self.seed
        X, y = labelled_rows(_check_X(X, "X"), _check_y(y, len(X), "y"))
        X_dev, y_dev = labelled_rows(_check_X(X_dev, "X_dev", X.shape[1]), _check_y(y_dev, len(X_dev), "y_dev"))
        result = fit_baseline(X, y, X_dev, y_dev, config=config.baseline, train=config.train,
                              seed=derive_seed(seed, "baseline"), on_epoch=self.on_epoch,
                              checkpoint=self.checkpoint)
        self.model_, self.history_ = result.model, result.history
        self.best_epoch_, self.dev_ccc_ = result.best_epoch, result.best_score
        self.n_features_in_, self.n_outputs_ = X.shape[1], y.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions, (n,) for one output, else (n, k)."""
        X = _check_X(X, "X", _n_features(self))
        return _squeeze(predict_mlp(self.model_, X, device=_device(self.model_)))


def _n_features(estimator: Any) -> int:
    """The features ``estimator`` was fitted on; NotFittedError before ``fit``."""
    try:
        return int(estimator.n_features_in_)
    except AttributeError:
        raise NotFittedError(f"This {type(estimator).__name__} is not fitted yet; call fit(...) first.") from None


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class TeacherEnsemble(_Estimator):
    """N teachers, one per dropout rate, each trained with SGD and loss 1 − CCC.

    After :meth:`fit`, :meth:`mc_predict` runs Monte-Carlo dropout (``config.mc``) for each
    teacher: the mean embedding (the students' target), the mean prediction and its std.

    Args: as :class:`Baseline`; ``checkpoint_dir`` holds one checkpoint per teacher.
        engine: a :mod:`serdistill.engine` engine to train the teachers on, one task each
            (``engine.task_cpus`` torch threads per task); None (default) trains them here, one
            after another. The teachers are the same either way for the same torch threads:
            each has its own seed. With an engine, ``on_epoch`` gets each teacher's epochs when
            it is finished.
    """

    def __init__(self, config: Config | None = None, *, seed: int | None = None,
                 on_epoch: EpochHook | None = None, checkpoint_dir: str | os.PathLike[str] | None = None,
                 engine: Any = None) -> None:
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
                X, y, X_dev, y_dev, dropouts=config.teacher.dropouts,
                seeds=[derive_seed(self.seed_, "teacher", i) for i in range(N)],
                names=[f"teacher {i + 1}/{N} (p={p:g})" for i, p in enumerate(config.teacher.dropouts)],
                hooks=[_hook(self.on_epoch, stage="teacher", member=i) for i in range(N)],
                config=config.teacher, train=config.train, checkpoint=_ckpt(self.checkpoint_dir, "teachers_stack.pt"))
            for result in results:
                self.models_.append(result.model)
                self.histories_.append(result.history)
                self.dev_ccc_.append(result.best_score)
        else:
            for i, p in enumerate(config.teacher.dropouts):
                name = f"teacher {i + 1}/{N} (p={p:g})"
                logger.info("Training %s", name)
                result = fit_teacher(X, y, X_dev, y_dev, dropout=p, config=config.teacher, train=config.train,
                                     seed=derive_seed(self.seed_, "teacher", i), name=name,
                                     on_epoch=_hook(self.on_epoch, stage="teacher", member=i),
                                     checkpoint=_ckpt(self.checkpoint_dir, f"teacher{i}.pt"))
                self.models_.append(result.model)
                self.histories_.append(result.history)
                self.dev_ccc_.append(result.best_score)
        self.mc_ = config.mc
        self.n_features_in_, self.n_outputs_ = X.shape[1], y.shape[1]
        return self

    def _fit_on_engine(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray,
                       config: Config) -> None:
        N = len(config.teacher.dropouts)
        members = [(i, p, f"teacher {i + 1}/{N} (p={p:g})", derive_seed(self.seed_, "teacher", i),
                    _ckpt(_absolute(self.checkpoint_dir), f"teacher{i}.pt"))
                   for i, p in enumerate(config.teacher.dropouts)]
        device = resolve_device(config.train.device)
        threads = int(getattr(self.engine, "task_cpus", 1))
        logger.info("Training %d teachers as tasks of the %s engine", N, getattr(self.engine, "name", "given"))
        live: set[int] = set()  # the members whose epochs arrived as they ended (engine.report)

        def on_event(info: dict[str, Any]) -> None:
            live.add(info["member"])
            if self.on_epoch is not None:
                self.on_epoch(info)

        results = self.engine.map(
            _fit_teacher_task, members, num_cpus=threads, num_gpus=1 if device.type == "cuda" else 0,
            shared={"X": X, "y": y, "X_dev": X_dev, "y_dev": y_dev, "config": config, "threads": threads},
            on_event=on_event)
        for (i, p, *_), result in zip(members, results):
            model = MLP(X.shape[1], config.teacher.hidden, dropout=p, out_dim=y.shape[1],
                        generator=torch.Generator())  # its own generator: torch's global one is untouched
            model.load_state_dict(result["state"])
            self.models_.append(model.to(device).eval())
            self.histories_.append(result["history"])
            self.dev_ccc_.append(result["best_score"])
            hook = _hook(self.on_epoch, stage="teacher", member=i)
            if hook is not None and i not in live:  # the epochs that did not arrive live
                for info in result["history"]:
                    hook(dict(info))

    def mc_predict(self, X: np.ndarray, *, embedding_std: bool = False) -> list[MCResult]:
        """Monte-Carlo dropout of every teacher on ``X`` (one :class:`MCResult` each).

        Deterministic: teacher i always uses the mask stream ``derive_seed(seed, "mc", i)``.
        With ``config.mc.enabled = False`` it is one pass with dropout off.
        """
        X = _check_X(X, "X", _n_features(self))
        return [self._mc(i, X, embedding_std=embedding_std) for i in range(len(self.models_))]

    def _mc(self, i: int, X: np.ndarray, *, enabled: bool | None = None, embedding_std: bool = False) -> MCResult:
        return mc_dropout(self.models_[i], X, passes=self.mc_.passes,
                          enabled=self.mc_.enabled if enabled is None else enabled,
                          seed=derive_seed(self.seed_, "mc", i), block_rows=self.mc_.block_rows,
                          embedding_std=embedding_std)

    def mc_stack(self, X: np.ndarray, *, enabled: bool | None = None) -> TeacherMC:
        """:meth:`mc_predict`'s embeddings and outputs, stacked over the teachers.

        The same numbers as ``mc_predict``, held once: each teacher's result is copied
        into the stacked arrays and dropped before the next teacher runs. Embeddings of
        :data:`EMBEDDINGS_DISK_BYTES` and more (at MSP-Podcast size, 5 x 34,280 x 512
        float32 = 0.35 GB) live in a file on disk (:func:`~serdistill.storage.large_empty`):
        student i reads teacher i's slice only. ``enabled=False``: one pass with dropout
        off, whatever ``config.mc`` says (the "no MC dropout" setting).
        """
        X = _check_X(X, "X", _n_features(self))
        stacked: TeacherMC | None = None
        for i in range(len(self.models_)):
            r = self._mc(i, X, enabled=enabled)
            if stacked is None:
                N = len(self.models_)
                stacked = TeacherMC(large_empty((N, *r.embedding.shape), EMBEDDINGS_DISK_BYTES),
                                    np.empty((N, *r.samples.shape), np.float32))
            stacked.embeddings[i], stacked.samples[i] = r.embedding, r.samples
            release_rows(stacked.embeddings[i], 0, len(X))  # written: out of memory until a student reads it
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
            return (np.stack([m.output.weight.detach().cpu().numpy() for m in self.models_]),
                    np.stack([m.output.bias.detach().cpu().numpy() for m in self.models_]))

    def predict(self, X: np.ndarray, *, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The teachers' MC ensemble: mean over teachers of their MC-mean predictions.

        With ``return_std``, also the std over all N x T Monte-Carlo outputs pooled (the
        uncertainty the paper's "top 75%" setting ranks by).
        """
        return summarise_teachers(self.mc_predict(X), return_std=return_std)


@contextmanager
def task_threads(threads: int) -> Iterator[None]:
    """An engine task's context: ``threads`` torch threads, and its shared arrays used in place.

    Arrays from Ray's object store are read-only; training only reads its inputs, so they
    are used without a copy and torch's "not writable" warning is silenced.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            yield
    finally:
        torch.set_num_threads(before)


def _fit_teacher_task(member: tuple, *, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray,
                      config: Config, threads: int) -> dict[str, Any]:
    """One engine task: teacher ``i`` with dropout ``p``; its best weights (on the CPU) and history."""
    i, p, name, seed, checkpoint = member
    with task_threads(threads):
        result = fit_teacher(X, y, X_dev, y_dev, dropout=p, config=config.teacher, train=config.train, seed=seed,
                             name=name, checkpoint=checkpoint, on_epoch=_hook(report, stage="teacher", member=i))
    return _task_result(result)


def _fit_student_task(job: tuple, *, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray,
                      embeddings: np.ndarray, X_unlabelled: np.ndarray | None,
                      embeddings_unlabelled: np.ndarray | None, heads: tuple[np.ndarray, np.ndarray] | None,
                      config: Config, threads: int) -> dict[str, Any]:
    """One engine task: student ``i`` at grid point (alpha, beta); its best weights and history."""
    alpha, beta, i, name, seed, checkpoint = job
    data = {"X": X, "y": y, "X_dev": X_dev, "y_dev": y_dev, "embeddings": embeddings,
            "X_unlabelled": X_unlabelled, "embeddings_unlabelled": embeddings_unlabelled, "heads": heads}
    with task_threads(threads):
        result = _fit_member(data, i, alpha, beta, config, seed=seed, name=name, checkpoint=checkpoint,
                             on_epoch=_hook(report, stage="student", member=i, alpha=alpha, beta=beta))
    return _task_result(result)


def _fit_member(data: dict[str, Any], i: int, alpha: float, beta: float, config: Config, *, seed: int, name: str,
                checkpoint: Path | None, on_epoch: EpochHook | None = None) -> FitResult:
    """Student ``i`` at (alpha, beta) on ``data`` (StudentEnsemble's arrays), taught by teacher i."""
    emb_u, heads = data["embeddings_unlabelled"], data.get("heads")
    return fit_student(data["X"], data["y"], data["X_dev"], data["y_dev"], target=data["embeddings"][i], alpha=alpha,
                       beta=beta, X_unlabelled=data["X_unlabelled"], target_unlabelled=None if emb_u is None else emb_u[i],
                       head=None if heads is None else (heads[0][i], heads[1][i]),
                       config=config.student, train=config.train, seed=seed, name=name, checkpoint=checkpoint,
                       on_epoch=on_epoch)


def _task_result(result: FitResult) -> dict[str, Any]:
    """What a training task sends back: the best weights (on the CPU) and the history."""
    return {"state": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
            "history": result.history, "best_epoch": result.best_epoch, "best_score": result.best_score}


@dataclass
class TeacherMC:
    """Every teacher's Monte-Carlo dropout on n segments (:meth:`TeacherEnsemble.mc_stack`).

    Attributes:
        embeddings: each teacher's MC-mean embedding, (N, n, H): the students' targets.
        samples: each teacher's every pass's output, (N, T, n, k).
    """

    embeddings: np.ndarray
    samples: np.ndarray


def summarise_teachers(results: Sequence[MCResult] | TeacherMC, *, return_std: bool = False
                       ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Mean over teachers of MC means, and the pooled std over all N x T outputs."""
    samples = results.samples if isinstance(results, TeacherMC) else np.stack([r.samples for r in results])  # (N, T, n, k)
    mean = samples.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
    if not return_std:
        return _squeeze(mean)
    std = samples.std(axis=(0, 1), dtype=np.float64).astype(np.float32)
    return _squeeze(mean), _squeeze(std)


def halving_plan(ratios: int, epochs: int, factor: int = 3) -> list[tuple[int, int]]:
    """Successive halving's rounds: (ratios trained, epochs each), the last round in full.

    Examples:
        >>> halving_plan(55, 50)  # the paper's grid: 55 distinct ratios, 50 epochs
        [(55, 2), (19, 6), (7, 17), (3, 50)]
        >>> halving_plan(3, 50)
        [(3, 50)]
    """
    sizes = [int(ratios)]
    while sizes[-1] > factor:
        sizes.append(-(-sizes[-1] // factor))
    rounds = len(sizes) - 1
    return [(size, max(1, -(-epochs // factor ** (rounds - r))) if r < rounds else epochs)
            for r, size in enumerate(sizes)]


class StudentEnsemble(_Estimator):
    """N students, student i taught by teacher i's embedding with Eq. 1.

    Args:
        config: the method's config (uses ``student`` and ``train``).
        alpha, beta: the loss weights; when either is None, every pair of
            ``config.student.alphas`` x ``betas`` is tried and the one with the best
            development CCC of the ensemble is kept (the teachers' embeddings are reused;
            each student starts from the same weights at every grid point).
        seed, on_epoch: as :class:`Baseline`.
        checkpoint_dir: resumable grid search: finished grid points and the best students.
        engine: a :mod:`serdistill.engine` engine: every student of ``ENGINE_GRID_POINTS``
            grid points at a time is one task (the embeddings go to each node once); the
            points are then scored here in grid order, as without it. None (default): here.
    """

    def __init__(self, config: Config | None = None, *, alpha: float | None = None, beta: float | None = None,
                 seed: int | None = None, on_epoch: EpochHook | None = None,
                 checkpoint_dir: str | os.PathLike[str] | None = None, engine: Any = None) -> None:
        self.config = config
        self.alpha = alpha
        self.beta = beta
        self.seed = seed
        self.on_epoch = on_epoch
        self.checkpoint_dir = checkpoint_dir
        self.engine = engine

    def fit(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, *,
            embeddings: np.ndarray, X_unlabelled: np.ndarray | None = None,
            embeddings_unlabelled: np.ndarray | None = None,
            heads: tuple[np.ndarray, np.ndarray] | None = None) -> StudentEnsemble:
        """Train the students.

        Args:
            X, y: labelled training data (rows with NaN labels are dropped, with their embeddings).
            X_dev, y_dev: the development set (picks each student's epoch and alpha, beta).
            embeddings: teacher embeddings of ``X``, (N, n, H): student i learns from ``embeddings[i]``.
            X_unlabelled, embeddings_unlabelled: unlabelled data and its teacher embeddings (N, m, H).
            heads: the teachers' output layers (:meth:`TeacherEnsemble.heads`), needed when
                ``config.student.head`` is ``"teacher"``.
        """
        config = _config(self.config)
        seed = config.seed if self.seed is None else self.seed
        X = _check_X(X, "X")
        y = _check_y(y, len(X), "y")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 3 or embeddings.shape[1] != len(X):
            raise ValueError(f"embeddings must be (N, {len(X)}, H); got shape {embeddings.shape}.")
        keep = np.isfinite(y).all(axis=1)
        if not keep.all():  # no copy of the (large) features when every row is labelled
            X, y, embeddings = select_rows(X, keep), y[keep], select_embedding_rows(embeddings, keep)
        X_dev, y_dev = labelled_rows(_check_X(X_dev, "X_dev", X.shape[1]), _check_y(y_dev, len(X_dev), "y_dev"))
        if X_unlabelled is not None and len(X_unlabelled):
            X_unlabelled = _check_X(X_unlabelled, "X_unlabelled", X.shape[1])
            if embeddings_unlabelled is None:
                raise ValueError("X_unlabelled needs embeddings_unlabelled (the teachers' embeddings of it).")
            embeddings_unlabelled = np.asarray(embeddings_unlabelled, dtype=np.float32)
            if embeddings_unlabelled.shape[:2] != (len(embeddings), len(X_unlabelled)):
                raise ValueError(
                    f"embeddings_unlabelled must be ({len(embeddings)}, {len(X_unlabelled)}, H); "
                    f"got shape {embeddings_unlabelled.shape}."
                )
        else:
            X_unlabelled, embeddings_unlabelled = None, None
        if config.student.head != "own":
            if heads is None:
                raise ConfigError(f"[student] head = {config.student.head!r} gives each student its teacher's output "
                                  "layer; pass heads=teachers.heads() to StudentEnsemble.fit, or set head = 'own'.")
            if len(heads[0]) != len(embeddings) or heads[0].shape[1:] != (y.shape[1], embeddings.shape[2]):
                raise ValueError(f"heads must be ({len(embeddings)}, {y.shape[1]}, {embeddings.shape[2]}) weights and "
                                 f"({len(embeddings)}, {y.shape[1]}) biases; got {heads[0].shape} and {heads[1].shape}.")
        else:
            heads = None

        if self.alpha is not None and self.beta is not None:
            grid = [(float(self.alpha), float(self.beta))]
        else:
            grid = config.student.grid()
        folder = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        done = _read_grid(folder)
        self.grid_: list[dict[str, Any]] = []
        # the best grid point so far: score, its students (None while they are only on disk), ...
        best_score, best_models, best_histories, best_alpha, best_beta = -math.inf, None, [], grid[0][0], grid[0][1]
        on_disk = False
        if done:
            header = load_checkpoint(folder / "best.pt")  # type: ignore[operator]
            best_score, best_alpha, best_beta = float(header["score"]), float(header["alpha"]), float(header["beta"])
            on_disk = True
        data = {"X": X, "y": y, "X_dev": X_dev, "y_dev": y_dev, "embeddings": embeddings,
                "X_unlabelled": X_unlabelled, "embeddings_unlabelled": embeddings_unlabelled, "heads": heads}
        trained: dict[str, list[FitResult]] = {}
        # with a scale-free optimizer the points of one alpha/beta ratio train the same students
        # (training.loss_weights): each ratio is trained once, its row repeated for the others
        ratio = (lambda a, b: loss_weights(a, b)[0]) if config.student.optimizer in SCALE_FREE_OPTIMIZERS else (
            lambda a, b: (a, b))
        first: dict[Any, dict[str, Any]] = {}
        # successive halving: the ratios it drops, each with its row from the last round it ran
        eliminated = (self._halving(grid, ratio, data, config, seed, folder)
                      if config.student.search == "halving" and len(grid) > 1 else {})
        for g, (alpha, beta) in enumerate(grid):
            key = self._key(alpha, beta)
            if key in done:
                self.grid_.append(done[key])
                first.setdefault(ratio(alpha, beta), done[key])
                continue
            same = first.get(ratio(alpha, beta)) or eliminated.get(ratio(alpha, beta))
            if same is not None:  # trained already, under another point of the same ratio (or dropped by halving)
                row = {**same, "alpha": alpha, "beta": beta, "seconds": 0.0, "same_as": [same["alpha"], same["beta"]]}
                if (same["alpha"], same["beta"]) == (alpha, beta):  # the dropped ratio's own point
                    row = first[ratio(alpha, beta)] = dict(same)
                self.grid_.append(row)
                if folder is not None:
                    done[key] = row
                    write_json(folder / "grid.json", jsonable(done))
                continue
            if (self.engine is not None or config.train.stacks()) and key not in trained:  # the next points together
                upcoming, ratios = [], set(first) | set(eliminated)
                for a, b in grid[g:]:
                    if self._key(a, b) not in done and ratio(a, b) not in ratios:
                        upcoming.append((a, b))
                        ratios.add(ratio(a, b))
                size = ENGINE_GRID_POINTS if self.engine is not None else config.train.stack_points
                trained = self._train_points(upcoming[:size], data, config, seed, folder)
            tic = time.perf_counter()
            results = trained.pop(key, None) or [
                self._fit_one(i, alpha, beta, data, config, seed, folder) for i in range(len(embeddings))]
            members = [r.model for r in results]
            score = _dev_score(_stacked_predict(members, X_dev).mean(axis=0), y_dev)
            row = {"alpha": alpha, "beta": beta, "dev_ccc": _finite(score),
                   "member_dev_ccc": [_finite(r.best_score) for r in results],
                   "best_epochs": [r.best_epoch for r in results], "seconds": time.perf_counter() - tic}
            self.grid_.append(row)
            first[ratio(alpha, beta)] = row
            logger.info("alpha %.2g, beta %.2g: development CCC %.4f", alpha, beta, score)
            if score > best_score or (best_models is None and not on_disk):
                best_score, best_alpha, best_beta = score, alpha, beta
                best_models, best_histories, on_disk = members, [r.history for r in results], False
                if folder is not None:
                    save_checkpoint(folder / "best.pt", {
                        "alpha": alpha, "beta": beta, "score": score,
                        "models": [m.state_dict() for m in members], "histories": best_histories})
            if folder is not None:
                done[key] = row
                write_json(folder / "grid.json", jsonable(done))
                for i in range(len(embeddings)):
                    (folder / f"{key}_s{i}.pt").unlink(missing_ok=True)
        for stale in folder.glob("stack_*.pt") if folder is not None else ():  # every point is in grid.json
            stale.unlink(missing_ok=True)
        if best_models is None:  # the best grid point was finished in an earlier run
            state = load_checkpoint(folder / "best.pt", map_location=resolve_device(config.train.device))  # type: ignore[operator]
            best_models = [self._new_member(X.shape[1], y.shape[1], config) for _ in range(len(embeddings))]
            for model, sd in zip(best_models, state["models"]):
                model.load_state_dict(sd)
                model.eval()
            best_histories = state["histories"]
        self.models_, self.histories_ = best_models, best_histories
        self.alpha_, self.beta_ = best_alpha, best_beta
        chosen = (self.alpha_, self.beta_)
        self.dev_ccc_ = next((r["dev_ccc"] for r in self.grid_ if (r["alpha"], r["beta"]) == chosen), None)
        self.n_features_in_, self.n_outputs_ = X.shape[1], y.shape[1]
        self.n_unlabelled_ = 0 if X_unlabelled is None else len(X_unlabelled)
        return self

    def _fit_one(self, i: int, alpha: float, beta: float, data: dict[str, Any], config: Config, seed: int,
                 folder: Path | None) -> FitResult:
        """Student ``i`` at (alpha, beta), here; teacher i's embeddings leave memory after it."""
        emb, emb_u = data["embeddings"][i], data["embeddings_unlabelled"]
        emb_u = None if emb_u is None else emb_u[i]
        try:
            return _fit_member(data, i, alpha, beta, config, seed=derive_seed(seed, "student", i),
                               name=f"student {i + 1}/{len(data['embeddings'])} (alpha={alpha:g}, beta={beta:g})",
                               checkpoint=_ckpt(folder, f"{self._key(alpha, beta)}_s{i}.pt"),
                               on_epoch=_hook(self.on_epoch, stage="student", member=i, alpha=alpha, beta=beta))
        finally:  # no-ops for in-memory arrays
            release_rows(emb, 0, len(emb))
            if emb_u is not None:
                release_rows(emb_u, 0, len(emb_u))

    @staticmethod
    def _key(alpha: float, beta: float) -> str:
        return f"a{alpha:g}_b{beta:g}"

    def _train_points(self, points: list[tuple[float, float]], data: dict[str, Any], config: Config, seed: int,
                      folder: Path | None) -> dict[str, list[FitResult]]:
        """Every student of ``points``: on the engine, stacked, or one at a time here; ``{point key: results}``."""
        if self.engine is not None:
            return self._fit_on_engine(points, data, config, seed, folder)
        trained: dict[str, list[FitResult]] = {}
        if config.train.stacks():
            for start in range(0, len(points), config.train.stack_points):
                trained.update(self._fit_stacked(points[start:start + config.train.stack_points], data, config, seed,
                                                 folder))
            return trained
        for a, b in points:
            trained[self._key(a, b)] = [self._fit_one(i, a, b, data, config, seed, folder)
                                        for i in range(len(data["embeddings"]))]
        return trained

    def _halving(self, grid: list[tuple[float, float]], ratio: Callable[[float, float], Any], data: dict[str, Any],
                 config: Config, seed: int, folder: Path | None) -> dict[Any, dict[str, Any]]:
        """Successive halving over the grid's distinct ratios; ``{ratio: row}`` of the ones dropped.

        Round r of R trains the surviving ratios' students for ``E / factor^(R - r + 1)``
        epochs (E: the full schedule's epochs), from their initial weights (a prefix of their
        full training, so nothing is kept between rounds), and keeps the best 1/factor on the
        ensemble's development CCC (ties in grid order). The survivors of the last round are
        then trained in full by the grid loop, which picks among them. Finished rounds are
        kept in ``folder/halving.json`` and not rerun.
        """
        reps: dict[Any, tuple[float, float]] = {}
        for a, b in grid:
            reps.setdefault(ratio(a, b), (a, b))
        alive = list(reps)
        n_u = 0 if data["X_unlabelled"] is None else len(data["X_unlabelled"])
        B = config.train.batch_size
        epochs = Schedule.of(config.student, max(n_batches(len(data["X"]), B), n_batches(n_u, B) if n_u else 0)).epochs
        plan = halving_plan(len(alive), epochs, config.student.halving_factor)
        rounds = len(plan) - 1
        sizes = [size for size, _ in plan]
        path = None if folder is None else folder / "halving.json"
        saved: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        eliminated: dict[Any, dict[str, Any]] = {}
        for r in range(1, rounds + 1):
            budget = plan[r - 1][1]
            short = replace(config, student=replace(config.student, epochs=budget, steps=None, min_epochs=None))
            rows = saved.setdefault(str(r), {})
            todo = [reps[q] for q in alive if self._key(*reps[q]) not in rows]
            logger.info("Successive halving, round %d of %d: %d ratios for %d of %d epochs (%d to train)", r, rounds,
                        len(alive), budget, epochs, len(todo))
            for start in range(0, len(todo), ENGINE_GRID_POINTS):  # a few points at a time: their students in memory
                tic = time.perf_counter()
                chunk = todo[start:start + ENGINE_GRID_POINTS]
                for key, results in self._train_points(chunk, data, short, seed, None).items():
                    a, b = next(p for p in chunk if self._key(*p) == key)
                    score = _dev_score(_stacked_predict([m.model for m in results], data["X_dev"]).mean(axis=0),
                                       data["y_dev"])
                    rows[key] = {"alpha": a, "beta": b, "dev_ccc": _finite(score),
                                 "member_dev_ccc": [_finite(m.best_score) for m in results],
                                 "best_epochs": [m.best_epoch for m in results], "halving_round": r,
                                 "budget_epochs": budget, "seconds": (time.perf_counter() - tic) / len(chunk)}
                if path is not None:
                    write_json(path, jsonable(saved))
            scores = {q: rows[self._key(*reps[q])]["dev_ccc"] for q in alive}
            ranked = sorted(alive, key=lambda q: -(scores[q] if scores[q] is not None else -math.inf))  # stable
            keep = set(ranked[:sizes[r]])
            for q in alive:
                if q not in keep:
                    eliminated[q] = {**rows[self._key(*reps[q])], "eliminated": True}
            alive = [q for q in alive if q in keep]
        logger.info("Successive halving: %d ratios left for the full budget", len(alive))
        return eliminated

    def _fit_stacked(self, points: list[tuple[float, float]], data: dict[str, Any], config: Config, seed: int,
                     folder: Path | None) -> dict[str, list[FitResult]]:
        """Every student of ``points`` as one stacked network (:mod:`serdistill.stacked`); ``{point key: results}``."""
        N = len(data["embeddings"])
        emb_u, heads = data["embeddings_unlabelled"], data.get("heads")
        targets = [data["embeddings"][i] for i in range(N)]  # one view per teacher: shared by its students
        targets_u = [None if emb_u is None else emb_u[i] for i in range(N)]
        jobs = [StudentJob(target=targets[i], target_unlabelled=targets_u[i], alpha=a, beta=b,
                           seed=derive_seed(seed, "student", i), head=None if heads is None else (heads[0][i], heads[1][i]),
                           name=f"student {i + 1}/{N} (alpha={a:g}, beta={b:g})",
                           on_epoch=_hook(self.on_epoch, stage="student", member=i, alpha=a, beta=b))
                for a, b in points for i in range(N)]
        logger.info("Training %d students (%d alpha/beta points) as one stacked network", len(jobs), len(points))
        checkpoint = _ckpt(folder, f"stack_{self._key(*points[0])}_{len(points)}.pt")
        try:
            results = fit_students_stacked(data["X"], data["y"], data["X_dev"], data["y_dev"], jobs,
                                           X_unlabelled=data["X_unlabelled"], config=config.student,
                                           train=config.train, checkpoint=checkpoint)
        finally:  # no-ops for in-memory arrays
            for array in (*targets, *targets_u):
                if array is not None:
                    release_rows(array, 0, len(array))
        trained: dict[str, list[FitResult]] = {}
        for (a, b, _), result in zip(((a, b, i) for a, b in points for i in range(N)), results):
            trained.setdefault(self._key(a, b), []).append(result)
        return trained

    def _fit_on_engine(self, points: list[tuple[float, float]], data: dict[str, Any], config: Config,
                       seed: int, folder: Path | None) -> dict[str, list[FitResult]]:
        """Every student of ``points`` as one engine task each; ``{point key: results}``."""
        N = len(data["embeddings"])
        jobs = [(a, b, i, f"student {i + 1}/{N} (alpha={a:g}, beta={b:g})", derive_seed(seed, "student", i),
                 _ckpt(_absolute(folder), f"{self._key(a, b)}_s{i}.pt")) for a, b in points for i in range(N)]
        device = resolve_device(config.train.device)
        threads = int(getattr(self.engine, "task_cpus", 1))
        logger.info("Training %d students (%d alpha/beta points) as tasks of the %s engine", len(jobs), len(points),
                    getattr(self.engine, "name", "given"))
        live: set[tuple] = set()  # the students whose epochs arrived as they ended (engine.report)

        def on_event(info: dict[str, Any]) -> None:
            live.add((info["alpha"], info["beta"], info["member"]))
            if self.on_epoch is not None:
                self.on_epoch(info)

        out = self.engine.map(_fit_student_task, jobs, num_cpus=threads, num_gpus=1 if device.type == "cuda" else 0,
                              shared={**data, "config": config, "threads": threads}, on_event=on_event)
        trained: dict[str, list[FitResult]] = {}
        d, k = data["X"].shape[1], data["y"].shape[1]
        for (a, b, i, *_), result in zip(jobs, out):
            model = MLP(d, config.student.hidden, out_dim=k, generator=torch.Generator())
            model.load_state_dict(result["state"])
            trained.setdefault(self._key(a, b), []).append(FitResult(
                model=model.to(device).eval(), history=result["history"], best_epoch=result["best_epoch"],
                best_score=result["best_score"]))
            hook = _hook(self.on_epoch, stage="student", member=i, alpha=a, beta=b)
            if hook is not None and (a, b, i) not in live:  # the epochs that did not arrive live
                for info in result["history"]:
                    hook(dict(info))
        return trained

    @staticmethod
    def _new_member(d: int, k: int, config: Config) -> MLP:
        return MLP(d, config.student.hidden, out_dim=k).to(resolve_device(config.train.device))

    def predict_members(self, X: np.ndarray) -> np.ndarray:
        """Every student's predictions: (N, n, k)."""
        X = _check_X(X, "X", _n_features(self))
        return _stacked_predict(self.models_, X, packed=self._packed())

    def _packed(self) -> tuple:
        """The students' weights packed by :func:`_pack`, reused while their tensors are unchanged.

        Packing copies every weight (5 x 6373 x 512 floats); redone per call it made a
        one-segment prediction 6-30x slower (measured: ~150 ms instead of 5-25 ms on 2 cores).
        Any change to a student (new models, in-place updates, a move to another device)
        changes the key and repacks.
        """
        tensors = [t for m in self.models_ for t in (*m.parameters(), *m.buffers())]
        key = [(t._version, t.data_ptr()) for t in tensors]
        cache = getattr(self, "_pack_cache", None)
        if (cache is None or len(cache[0]) != len(tensors) or cache[1] != key
                or any(a is not b for a, b in zip(cache[0], tensors))):
            self._pack_cache = (tensors, key, _pack(self.models_))
        return self._pack_cache[2]

    def predict(self, X: np.ndarray, *, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean over the students; with ``return_std``, their std (population), the reported uncertainty."""
        members = self.predict_members(X).astype(np.float64)
        mean = _squeeze(members.mean(axis=0).astype(np.float32))
        if not return_std:
            return mean
        return mean, _squeeze(members.std(axis=0).astype(np.float32))


@torch.no_grad()
def _pack(models: Sequence[MLP]) -> tuple:
    """Several same-shaped MLPs' weights, stacked for :func:`_stacked_predict`."""
    w1 = torch.cat([m.linears[0].weight for m in models]).t()  # (d, N·H1)
    b1 = torch.cat([m.linears[0].bias for m in models])
    rest = [(torch.stack([m.linears[j].weight.t() for m in models]),
             torch.stack([m.linears[j].bias for m in models])[:, None]) for j in range(1, len(models[0].layers))]
    scale = torch.stack([m.output_scale for m in models])[:, None]  # label scaling, folded in
    w_out = torch.stack([m.output.weight.t() for m in models]) * scale
    shift = torch.stack([m.output_shift for m in models])[:, None]
    b_out = torch.stack([m.output.bias for m in models])[:, None] * scale + shift
    return w1, b1, rest, w_out, b_out


def select_embedding_rows(E: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``E[:, rows]`` of teacher embeddings (N, n, H), for indices or a boolean mask: on disk
    when ``E`` is (a teacher at a time, each slice's pages released), else in memory."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if not is_on_disk(E) or not len(rows):
        return E[:, rows]
    out = large_empty((len(E), len(rows), E.shape[2]), 0, E.dtype.type)
    for i in range(len(E)):
        out[i] = take_rows(E[i], rows)  # teacher i's rows: one (k, H) in memory at a time
        release_rows(out[i], 0, len(rows))
    return out


@torch.no_grad()
def _stacked_predict(models: Sequence[MLP], X: np.ndarray, *, rows: int = 4096,
                     packed: tuple | None = None) -> np.ndarray:
    """Outputs of several same-shaped MLPs (no dropout) at once: (N, n, k).

    The first layers are concatenated into one (d, N·H) GEMM, so one pass over X serves all
    members; the later layers run as batched matrix products. ``packed``: ``_pack(models)``,
    when the caller keeps it between calls.
    """
    device = _device(models[0])
    N = len(models)
    w1, b1, rest, w_out, b_out = _pack(models) if packed is None else packed
    X_t = torch.as_tensor(X, dtype=torch.float32)
    out = np.empty((N, len(X), models[0].out_dim), np.float32)
    pages = PageBudget(X)
    step = pages.chunk(rows, X_t.shape[1] * 4)
    for start in range(0, len(X), step):
        xb = X_t[start:start + step].to(device)
        pages.read(xb.nbytes)
        h = torch.addmm(b1, xb, w1).relu_().view(len(xb), N, -1).transpose(0, 1)
        for w, b in rest:
            h = torch.baddbmm(b, h, w).relu_()
        out[:, start:start + len(xb)] = torch.baddbmm(b_out, h, w_out).cpu().numpy()
    return out


# ---------------------------------------------------------------------------------------
# Unlabelled data


def select_unlabelled(config: UnlabelledConfig, *, X_test: np.ndarray | None = None,
                      X_pool: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray | None, dict[str, Any]]:
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


# ---------------------------------------------------------------------------------------
# The whole method


@dataclass
class _Group:
    """One set of models: a single attribute (single-task) or all of them (multi-task)."""

    name: str
    columns: list[int]
    baseline: Baseline | None
    teachers: TeacherEnsemble
    students: StudentEnsemble
    references: dict[str, LinearReference] = field(default_factory=dict)


class TSModel(_Estimator):
    """Teacher-student ensemble (Sridhar & Busso, 2020) for arousal, valence and dominance.

    ``fit`` trains, for each attribute (single-task, the default) or once for all
    (``task = "multi"``): the baseline, N teachers, their Monte-Carlo embeddings of the
    training and unlabelled data, and N students for each (alpha, beta) of the grid, keeping
    the pair with the best development CCC. Teachers and embeddings are trained once and
    reused across the grid.

    Args:
        config: the method's config (default: the paper's).
        on_epoch: progress hook; its dict carries ``group`` and ``stage`` besides the epoch's numbers.
        checkpoint_dir: where to keep resumable checkpoints (a rerun continues from them).
        engine: a :mod:`serdistill.engine` engine to train each group's teachers and students
            on, one task per model (see :class:`TeacherEnsemble`, :class:`StudentEnsemble`);
            None (default) trains here.

    Attributes (after fit):
        attributes_: the predicted attributes (the columns of y and of predictions).
        alpha_, beta_: per group (attribute, or ``"arousal+valence+dominance"``), the chosen weights.
        grid_: per group, one row per (alpha, beta) with the ensemble's development CCC.
        history_: per group, each model's per-epoch history.
        unlabelled_: what unlabelled data was used: source, size, and per group how many were kept.
        dev_ccc_: per group, the development CCC of baseline, teachers' MC ensemble and students.
    """

    def __init__(self, config: Config | None = None, *, on_epoch: EpochHook | None = None,
                 checkpoint_dir: str | os.PathLike[str] | None = None, engine: Any = None) -> None:
        self.config = config
        self.on_epoch = on_epoch
        self.checkpoint_dir = checkpoint_dir
        self.engine = engine

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, *,
            X_unlabelled: np.ndarray | None = None, unlabelled_info: dict[str, Any] | None = None) -> TSModel:
        """Fit everything.

        Args:
            X, y: training features (n, d) and labels (n, A), A = ``len(config.attributes)``,
                columns in that order, NaN = no label (the row is skipped for that attribute).
            X_dev, y_dev: the development set.
            X_unlabelled: unlabelled features (see :func:`select_unlabelled`); required unless
                ``config.unlabelled.source`` is ``"none"``, ignored then.
            unlabelled_info: a record of where ``X_unlabelled`` came from, kept in ``unlabelled_``.
        """
        config = _config(self.config)
        tic = time.perf_counter()
        A = len(config.attributes)
        X = _check_X(X, "X")
        y = _check_y(y, len(X), "y")
        X_dev = _check_X(X_dev, "X_dev", X.shape[1])
        y_dev = _check_y(y_dev, len(X_dev), "y_dev")
        if y.shape[1] != A or y_dev.shape[1] != A:
            raise ValueError(
                f"y and y_dev need one column per attribute {list(config.attributes)}; got "
                f"{y.shape[1]} and {y_dev.shape[1]} columns."
            )
        if config.unlabelled.source == "none":
            if X_unlabelled is not None:
                logger.info("Unlabelled source is 'none': the %d unlabelled segments given are not used.", len(X_unlabelled))
            X_unlabelled = None
        elif X_unlabelled is None:
            raise ConfigError(
                f"The unlabelled source is {config.unlabelled.source!r} but fit got no X_unlabelled. "
                "Pass the unlabelled features, or set [unlabelled] source = 'none'."
            )
        else:
            X_unlabelled = _check_X(X_unlabelled, "X_unlabelled", X.shape[1])
        resolve_device(config.train.device)
        folder = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        self.attributes_ = list(config.attributes)
        self.n_features_in_ = X.shape[1]
        self.unlabelled_ = dict(unlabelled_info or {"source": config.unlabelled.source})
        self.unlabelled_.update(n=0 if X_unlabelled is None else len(X_unlabelled),
                                keep_fraction=config.unlabelled.keep_fraction, kept={})
        self.alpha_: dict[str, float] = {}  # per group (attribute, or "multi")
        self.beta_: dict[str, float] = {}
        self.grid_: dict[str, list[dict[str, Any]]] = {}
        self.history_: dict[str, Any] = {}
        self.dev_ccc_: dict[str, dict[str, Any]] = {}
        self._groups: list[_Group] = []
        if config.task == "single":
            layout = [([j], a) for j, a in enumerate(config.attributes)]
        else:
            layout = [(list(range(A)), "+".join(config.attributes))]
        for columns, name in layout:
            self._groups.append(self._fit_group(name, columns, X, y, X_dev, y_dev, X_unlabelled, config,
                                                None if folder is None else folder / name))
        self.fit_seconds_ = time.perf_counter() - tic
        return self

    def _fit_group(self, name: str, columns: list[int], X, y, X_dev, y_dev, X_unlabelled,
                   config: Config, folder: Path | None) -> _Group:
        seed = derive_seed(config.seed, name)
        X_l, y_l = labelled_rows(X, y[:, columns])
        X_d, y_d = labelled_rows(X_dev, y_dev[:, columns])
        if len(X_l) < 2 or len(X_d) < 2:
            raise ValueError(f"{name}: need at least 2 labelled training and development segments; "
                             f"got {len(X_l)} and {len(X_d)}.")
        hook = _hook(self.on_epoch, group=name)
        baseline = None
        history: dict[str, Any] = {}
        if config.baseline.enabled:
            logger.info("%s: training the baseline", name)
            baseline = Baseline(config, seed=seed, on_epoch=_hook(hook, stage="baseline"),
                                checkpoint=_ckpt(folder, "baseline.pt")).fit(X_l, y_l, X_d, y_d)
            history["baseline"] = baseline.history_
            release_memory(X_l, X_d)  # each stage leaves its pages and freed heap behind
        references = {}
        for kind in config.reference.models:
            logger.info("%s: fitting the %s reference", name, kind)
            references[kind] = LinearReference(kind, seed=derive_seed(seed, kind)).fit(X_l, y_l, X_d, y_d)
        release_memory(X_l, X_d)
        teachers = TeacherEnsemble(config, seed=seed, on_epoch=hook, checkpoint_dir=folder,
                                   engine=self.engine).fit(X_l, y_l, X_d, y_d)
        history["teachers"] = teachers.histories_
        release_memory(X_l, X_d)
        logger.info("%s: Monte-Carlo dropout (%d passes) on %d training segments", name,
                    config.mc.passes if config.mc.enabled else 1, len(X_l))
        embeddings = teachers.embed(X_l)
        release_memory(X_l)
        X_u, emb_u = None, None
        if X_unlabelled is not None:
            mc_u = teachers.mc_stack(X_unlabelled)
            X_u, emb_u = X_unlabelled, mc_u.embeddings
            fraction = config.unlabelled.keep_fraction
            if fraction < 1.0:
                _, std = summarise_teachers(mc_u, return_std=True)
                std = std.reshape(len(X_u), -1).mean(axis=1)
                kept = np.sort(np.argsort(std, kind="stable")[: max(1, int(round(fraction * len(X_u))))])
                X_u, emb_u = select_rows(X_u, kept), emb_u[:, kept]
            del mc_u
            release_memory(X_unlabelled)
            self.unlabelled_["kept"][name] = len(X_u)
        students = StudentEnsemble(config, seed=seed, on_epoch=hook, engine=self.engine,
                                   checkpoint_dir=None if folder is None else folder / "students")
        students.fit(X_l, y_l, X_d, y_d, embeddings=embeddings, X_unlabelled=X_u, embeddings_unlabelled=emb_u,
                     heads=teachers.heads())
        history["students"] = students.histories_
        release_memory(X_l, X_d, X_u)
        self.alpha_[name], self.beta_[name], self.grid_[name] = students.alpha_, students.beta_, students.grid_
        self.history_[name] = history
        chosen = next((r for r in students.grid_ if (r["alpha"], r["beta"]) == (students.alpha_, students.beta_)), {})
        failed = (failed_members("teacher", teachers.dev_ccc_, teachers.histories_, group=name)
                  + failed_members("student", chosen.get("member_dev_ccc", []), students.histories_, group=name))
        self.dev_ccc_[name] = {
            "failed": failed,
            "baseline": None if baseline is None else _finite(baseline.dev_ccc_),
            "teachers": _finite(_dev_score(np.asarray(teachers.predict(X_d)).reshape(len(X_d), -1), y_d)),
            "teacher_members": [_finite(s) for s in teachers.dev_ccc_],
            "students": students.dev_ccc_,
            **{kind: _finite(np.mean(ref.dev_ccc_)) for kind, ref in references.items()},
        }
        return _Group(name, columns, baseline, teachers, students, references)

    # -- prediction ------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "_groups"):
            raise NotFittedError("This TSModel is not fitted yet; call fit(...) or TSModel.load(path) first.")

    def _columns(self, X: np.ndarray, get: Callable[[_Group], np.ndarray]) -> np.ndarray:
        out = np.full((len(X), len(self.attributes_)), np.nan, np.float32)
        for group in self._groups:
            out[:, group.columns] = np.asarray(get(group), np.float32).reshape(len(X), -1)
        return out

    def predict(self, X: np.ndarray, *, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The students' ensemble: mean (n, A) and, with ``return_std``, the std over students (n, A)."""
        self._check_fitted()
        X = _check_X(X, "X", _n_features(self))
        members = {g.name: g.students.predict_members(X) for g in self._groups}
        mean = self._columns(X, lambda g: members[g.name].mean(axis=0))
        if not return_std:
            return mean
        return mean, self._columns(X, lambda g: members[g.name].std(axis=0))

    def predict_teachers(self, X: np.ndarray, *, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The teachers' MC ensemble (n, A); std pooled over N teachers x T passes."""
        out = self.predict_all(X)
        return (out["teachers"], out["teachers_std"]) if return_std else out["teachers"]

    def predict_baseline(self, X: np.ndarray) -> np.ndarray:
        """The baseline's predictions (n, A); NaN columns where no baseline was trained."""
        self._check_fitted()
        X = _check_X(X, "X", _n_features(self))
        return self._columns(X, lambda g: g.baseline.predict(X) if g.baseline is not None
                             else np.full((len(X), len(g.columns)), np.nan))

    def predict_all(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Everything ``evaluate`` needs, each (n, A) unless noted.

        Keys: ``students``, ``students_std``, ``student_members`` (N, n, A), ``teachers``,
        ``teachers_std``, ``teacher_members`` (N, n, A: each teacher's MC mean),
        ``teacher_members_std`` (N, n, A: each teacher's MC std), ``teacher_one_pass``
        (N, n, A: each teacher's first MC pass, for the consistency histograms), ``baseline``,
        and the reference models ``ridge`` and ``svr`` (NaN columns where one was not fitted).
        """
        self._check_fitted()
        X = _check_X(X, "X", _n_features(self))
        n, A = len(X), len(self.attributes_)
        N = max(len(g.students.models_) for g in self._groups)
        out = {key: np.full((N, n, A), np.nan, np.float32)
               for key in ("student_members", "teacher_members", "teacher_members_std", "teacher_one_pass")}
        out.update({key: np.full((n, A), np.nan, np.float32) for key in ("students", "students_std",
                                                                         "teachers", "teachers_std")})
        for g in self._groups:
            cols = g.columns
            members = g.students.predict_members(X)
            out["student_members"][: len(members)][:, :, cols] = members
            out["students"][:, cols] = members.mean(axis=0)
            out["students_std"][:, cols] = members.std(axis=0)
            mc = g.teachers.mc_predict(X)
            for i, r in enumerate(mc):
                out["teacher_members"][i][:, cols] = r.prediction
                out["teacher_members_std"][i][:, cols] = r.prediction_std
                out["teacher_one_pass"][i][:, cols] = r.samples[0]
            mean, std = summarise_teachers(mc, return_std=True)
            out["teachers"][:, cols] = mean.reshape(n, -1)
            out["teachers_std"][:, cols] = std.reshape(n, -1)
        out["baseline"] = self.predict_baseline(X)
        out.update(self.predict_references(X))
        return out

    def predict_references(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The linear reference models' predictions, ``{"ridge": (n, A), "svr": (n, A)}``; NaN
        columns where one was not fitted (not in ``config.reference.models``, or an older model)."""
        self._check_fitted()
        X = _check_X(X, "X", _n_features(self))

        def get(kind: str) -> Callable[[_Group], np.ndarray]:
            return lambda g: (g.references[kind].predict(X) if kind in g.references
                              else np.full((len(X), len(g.columns)), np.nan))
        return {kind: self._columns(X, get(kind)) for kind in ("ridge", "svr")}

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"meta": JSON-ready dict, "tensors": {name: tensor}}``: everything to rebuild the model."""
        self._check_fitted()
        config = _config(self.config)
        tensors: dict[str, torch.Tensor] = {}
        for g in self._groups:
            if g.baseline is not None:
                _put(tensors, f"{g.name}/baseline", g.baseline.model_)
            for i, m in enumerate(g.teachers.models_):
                _put(tensors, f"{g.name}/teacher{i}", m)
            for i, m in enumerate(g.students.models_):
                _put(tensors, f"{g.name}/student{i}", m)
            for kind, ref in g.references.items():
                tensors[f"{g.name}/{kind}/coef"] = torch.from_numpy(ref.coef_.copy())
                tensors[f"{g.name}/{kind}/intercept"] = torch.from_numpy(ref.intercept_.copy())
        meta = {
            "format": STATE_FORMAT, "serdistill": __version__, "torch": torch.__version__,
            "config": config.to_dict(), "attributes": self.attributes_, "n_features_in": self.n_features_in_,
            "groups": [{"name": g.name, "columns": g.columns, "baseline": g.baseline is not None,
                        "teacher_seed": g.teachers.seed_,
                        "references": {kind: {"choice": ref.choice_, "dev_ccc": ref.dev_ccc_, "n_train": ref.n_train_}
                                       for kind, ref in g.references.items()}}
                       for g in self._groups],
            "alpha": self.alpha_, "beta": self.beta_, "grid": self.grid_, "dev_ccc": self.dev_ccc_,
            "unlabelled": self.unlabelled_, "history": self.history_,
            "fit_seconds": getattr(self, "fit_seconds_", None),
        }
        return {"meta": jsonable(meta), "tensors": tensors}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, device: str | None = None) -> TSModel:
        """Rebuild a fitted model from :meth:`state_dict` (``device`` overrides the saved one)."""
        meta, tensors = state["meta"], state["tensors"]
        if meta.get("format") != STATE_FORMAT:
            raise ConfigError(f"Model state format {meta.get('format')!r} is not {STATE_FORMAT}; "
                              "it was written by another serdistill version. Retrain or use that version.")
        config = Config.from_dict(meta["config"])
        if device is not None:
            config = config.updated({"train": {"device": device}})
        dev = resolve_device(config.train.device)
        self = cls(config)
        self.attributes_, self.n_features_in_ = list(meta["attributes"]), int(meta["n_features_in"])
        self.alpha_, self.beta_, self.grid_ = meta["alpha"], meta["beta"], meta["grid"]
        self.dev_ccc_, self.unlabelled_, self.history_ = meta["dev_ccc"], meta["unlabelled"], meta["history"]
        self.fit_seconds_ = meta.get("fit_seconds")
        d, self._groups = self.n_features_in_, []
        for spec in meta["groups"]:
            name, k = spec["name"], len(spec["columns"])
            baseline = None
            if spec["baseline"]:
                baseline = Baseline(config)
                baseline.model_ = _get(tensors, f"{name}/baseline", MLP(d, config.baseline.hidden,
                                       dropout=config.baseline.dropout, out_dim=k), dev)
                baseline.n_features_in_, baseline.n_outputs_ = d, k
            teachers = TeacherEnsemble(config)
            teachers.models_ = [_get(tensors, f"{name}/teacher{i}", MLP(d, config.teacher.hidden, dropout=p, out_dim=k), dev)
                                for i, p in enumerate(config.teacher.dropouts)]
            teachers.seed_, teachers.mc_ = int(spec["teacher_seed"]), config.mc
            teachers.n_features_in_, teachers.n_outputs_ = d, k
            students = StudentEnsemble(config)
            students.models_ = [_get(tensors, f"{name}/student{i}", MLP(d, config.student.hidden, out_dim=k), dev)
                                for i in range(len(config.teacher.dropouts))]
            students.alpha_, students.beta_ = meta["alpha"][name], meta["beta"][name]
            students.n_features_in_, students.n_outputs_ = d, k
            references = {}
            for kind, info in spec.get("references", {}).items():  # none in models saved before the references existed
                ref = references[kind] = LinearReference(kind)
                ref.coef_ = tensors[f"{name}/{kind}/coef"].numpy().astype(np.float32)
                ref.intercept_ = tensors[f"{name}/{kind}/intercept"].numpy().astype(np.float32)
                ref.choice_, ref.dev_ccc_, ref.n_train_ = info["choice"], info["dev_ccc"], info["n_train"]
            self._groups.append(_Group(name, list(spec["columns"]), baseline, teachers, students, references))
        return self

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``model.json`` (config, choices, history) and ``weights.pt`` into folder ``path``."""
        path = Path(path)
        state = self.state_dict()
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "weights.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in state["tensors"].items()}, tmp)
        write_json(path / "model.json", state["meta"])
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> TSModel:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        missing = [f for f in ("model.json", "weights.pt") if not (path / f).is_file()]
        if missing:
            raise ConfigError(f"{path} is not a saved TSModel: {', '.join(missing)} missing. "
                              "Save one with TSModel.save(path).")
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        tensors = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        return cls.from_state_dict({"meta": meta, "tensors": tensors}, device=device)


# ---------------------------------------------------------------------------------------
# Helpers


def _ckpt(folder: str | os.PathLike[str] | None, name: str) -> Path | None:
    return None if folder is None else Path(folder) / name


def _absolute(folder: str | os.PathLike[str] | None) -> Path | None:
    """``folder`` as an absolute path: engine tasks may run in another working directory."""
    return None if folder is None else Path(folder).absolute()


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _put(tensors: dict[str, torch.Tensor], prefix: str, model: MLP) -> None:
    for key, value in model.state_dict().items():
        tensors[f"{prefix}/{key}"] = value


def _get(tensors: dict[str, torch.Tensor], prefix: str, model: MLP, device: torch.device) -> MLP:
    state = {key[len(prefix) + 1:]: value for key, value in tensors.items() if key.startswith(prefix + "/")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"The saved weights of {prefix} do not fit its config ({err}).") from None
    return model.to(device).eval()


def _read_grid(folder: Path | None) -> dict[str, dict[str, Any]]:
    """Grid points finished by an earlier run (only trusted with the best students beside them)."""
    if folder is None or not (folder / "grid.json").is_file() or not (folder / "best.pt").is_file():
        return {}
    return json.loads((folder / "grid.json").read_text(encoding="utf-8"))
