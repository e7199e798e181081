"""The students (:class:`StudentEnsemble`): the alpha/beta grid, successive halving, and where each student trains."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serdistill.base.errors import ConfigError
from serdistill.base.io import finite_or_none, jsonable, write_json
from serdistill.base.protocols import Engine
from serdistill.data.feature_rows import release, select_embedding_rows
from serdistill.data.storage import labelled_rows, select_rows
from serdistill.method.config import Config
from serdistill.method.ensemble.common import (
    _absolute,
    _check_X,
    _check_y,
    _ckpt,
    _config,
    _dev_score,
    _Estimator,
    _hook,
    _n_features,
    _squeeze,
)
from serdistill.method.ensemble.packing import PackedMLPs, pack, stacked_predict
from serdistill.method.ensemble.tasks import StudentTask, fit_member, fit_on_engine, fit_student_task
from serdistill.method.models import MLP
from serdistill.method.stacked import StudentJob, fit_students_stacked
from serdistill.method.torch_state import derive_seed, load_checkpoint, resolve_device, save_checkpoint
from serdistill.method.training import (
    SCALE_FREE_OPTIMIZERS,
    EpochHook,
    FitResult,
    Schedule,
    loss_weights,
    n_batches,
)

logger = logging.getLogger(__name__)


#: Grid points whose students an engine trains at once: enough tasks to fill a few nodes,
#: few enough that their weights (N students each) fit in this process's memory.
ENGINE_GRID_POINTS = 8


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
    return [(size, max(1, -(-epochs // factor ** (rounds - r))) if r < rounds else epochs) for r, size in enumerate(sizes)]


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
        engine: a :mod:`serdistill.runtime.engine` engine: every student of ``ENGINE_GRID_POINTS``
            grid points at a time is one task (the embeddings go to each node once); the
            points are then scored here in grid order, as without it. None (default): here.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        alpha: float | None = None,
        beta: float | None = None,
        seed: int | None = None,
        on_epoch: EpochHook | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.alpha = alpha
        self.beta = beta
        self.seed = seed
        self.on_epoch = on_epoch
        self.checkpoint_dir = checkpoint_dir
        self.engine = engine

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_dev: np.ndarray,
        y_dev: np.ndarray,
        *,
        embeddings: np.ndarray,
        X_unlabelled: np.ndarray | None = None,
        embeddings_unlabelled: np.ndarray | None = None,
        heads: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> StudentEnsemble:
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
                raise ConfigError(
                    f"[student] head = {config.student.head!r} gives each student its teacher's output "
                    "layer; pass heads=teachers.heads() to StudentEnsemble.fit, or set head = 'own'."
                )
            if len(heads[0]) != len(embeddings) or heads[0].shape[1:] != (y.shape[1], embeddings.shape[2]):
                raise ValueError(
                    f"heads must be ({len(embeddings)}, {y.shape[1]}, {embeddings.shape[2]}) weights and "
                    f"({len(embeddings)}, {y.shape[1]}) biases; got {heads[0].shape} and {heads[1].shape}."
                )
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
        data = {
            "X": X,
            "y": y,
            "X_dev": X_dev,
            "y_dev": y_dev,
            "embeddings": embeddings,
            "X_unlabelled": X_unlabelled,
            "embeddings_unlabelled": embeddings_unlabelled,
            "heads": heads,
        }
        trained: dict[str, list[FitResult]] = {}
        # with a scale-free optimizer the points of one alpha/beta ratio train the same students
        # (training.loss_weights): each ratio is trained once, its row repeated for the others
        ratio = (
            (lambda a, b: loss_weights(a, b)[0])
            if config.student.optimizer in SCALE_FREE_OPTIMIZERS
            else (lambda a, b: (a, b))
        )
        first: dict[Any, dict[str, Any]] = {}
        # successive halving: the ratios it drops, each with its row from the last round it ran
        eliminated = (
            self._halving(grid, ratio, data, config, seed, folder)
            if config.student.search == "halving" and len(grid) > 1
            else {}
        )
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
                self._fit_one(i, alpha, beta, data, config, seed, folder) for i in range(len(embeddings))
            ]
            members = [r.model for r in results]
            score = _dev_score(stacked_predict(members, X_dev).mean(axis=0), y_dev)
            row = {
                "alpha": alpha,
                "beta": beta,
                "dev_ccc": finite_or_none(score),
                "member_dev_ccc": [finite_or_none(r.best_score) for r in results],
                "best_epochs": [r.best_epoch for r in results],
                "seconds": time.perf_counter() - tic,
            }
            self.grid_.append(row)
            first[ratio(alpha, beta)] = row
            logger.info("alpha %.2g, beta %.2g: development CCC %.4f", alpha, beta, score)
            if score > best_score or (best_models is None and not on_disk):
                best_score, best_alpha, best_beta = score, alpha, beta
                best_models, best_histories, on_disk = members, [r.history for r in results], False
                if folder is not None:
                    save_checkpoint(
                        folder / "best.pt",
                        {
                            "alpha": alpha,
                            "beta": beta,
                            "score": score,
                            "models": [m.state_dict() for m in members],
                            "histories": best_histories,
                        },
                    )
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

    def _fit_one(
        self, i: int, alpha: float, beta: float, data: dict[str, Any], config: Config, seed: int, folder: Path | None
    ) -> FitResult:
        """Student ``i`` at (alpha, beta), here; teacher i's embeddings leave memory after it."""
        emb, emb_u = data["embeddings"][i], data["embeddings_unlabelled"]
        emb_u = None if emb_u is None else emb_u[i]
        try:
            return fit_member(
                data,
                i,
                alpha,
                beta,
                config,
                seed=derive_seed(seed, "student", i),
                name=f"student {i + 1}/{len(data['embeddings'])} (alpha={alpha:g}, beta={beta:g})",
                checkpoint=_ckpt(folder, f"{self._key(alpha, beta)}_s{i}.pt"),
                on_epoch=_hook(self.on_epoch, stage="student", member=i, alpha=alpha, beta=beta),
            )
        finally:  # no-ops for in-memory arrays
            release(emb, emb_u)

    @staticmethod
    def _key(alpha: float, beta: float) -> str:
        return f"a{alpha:g}_b{beta:g}"

    def _train_points(
        self, points: list[tuple[float, float]], data: dict[str, Any], config: Config, seed: int, folder: Path | None
    ) -> dict[str, list[FitResult]]:
        """Every student of ``points``: on the engine, stacked, or one at a time here; ``{point key: results}``."""
        if self.engine is not None:
            return self._fit_on_engine(points, data, config, seed, folder)
        trained: dict[str, list[FitResult]] = {}
        if config.train.stacks():
            for start in range(0, len(points), config.train.stack_points):
                trained.update(
                    self._fit_stacked(points[start : start + config.train.stack_points], data, config, seed, folder)
                )
            return trained
        for a, b in points:
            trained[self._key(a, b)] = [
                self._fit_one(i, a, b, data, config, seed, folder) for i in range(len(data["embeddings"]))
            ]
        return trained

    def _halving(
        self,
        grid: list[tuple[float, float]],
        ratio: Callable[[float, float], Any],
        data: dict[str, Any],
        config: Config,
        seed: int,
        folder: Path | None,
    ) -> dict[Any, dict[str, Any]]:
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
            logger.info(
                "Successive halving, round %d of %d: %d ratios for %d of %d epochs (%d to train)",
                r,
                rounds,
                len(alive),
                budget,
                epochs,
                len(todo),
            )
            for start in range(0, len(todo), ENGINE_GRID_POINTS):  # a few points at a time: their students in memory
                tic = time.perf_counter()
                chunk = todo[start : start + ENGINE_GRID_POINTS]
                for key, results in self._train_points(chunk, data, short, seed, None).items():
                    a, b = next(p for p in chunk if self._key(*p) == key)
                    score = _dev_score(
                        stacked_predict([m.model for m in results], data["X_dev"]).mean(axis=0), data["y_dev"]
                    )
                    rows[key] = {
                        "alpha": a,
                        "beta": b,
                        "dev_ccc": finite_or_none(score),
                        "member_dev_ccc": [finite_or_none(m.best_score) for m in results],
                        "best_epochs": [m.best_epoch for m in results],
                        "halving_round": r,
                        "budget_epochs": budget,
                        "seconds": (time.perf_counter() - tic) / len(chunk),
                    }
                if path is not None:
                    write_json(path, jsonable(saved))
            scores = {q: rows[self._key(*reps[q])]["dev_ccc"] for q in alive}
            ranked = sorted(alive, key=lambda q: -(scores[q] if scores[q] is not None else -math.inf))  # stable
            keep = set(ranked[: sizes[r]])
            for q in alive:
                if q not in keep:
                    eliminated[q] = {**rows[self._key(*reps[q])], "eliminated": True}
            alive = [q for q in alive if q in keep]
        logger.info("Successive halving: %d ratios left for the full budget", len(alive))
        return eliminated

    def _fit_stacked(
        self, points: list[tuple[float, float]], data: dict[str, Any], config: Config, seed: int, folder: Path | None
    ) -> dict[str, list[FitResult]]:
        """Every student of ``points`` as one stacked network (:mod:`serdistill.method.stacked`);
        ``{point key: results}``."""
        N = len(data["embeddings"])
        emb_u, heads = data["embeddings_unlabelled"], data.get("heads")
        targets = [data["embeddings"][i] for i in range(N)]  # one view per teacher: shared by its students
        targets_u = [None if emb_u is None else emb_u[i] for i in range(N)]
        jobs = [
            StudentJob(
                target=targets[i],
                target_unlabelled=targets_u[i],
                alpha=a,
                beta=b,
                seed=derive_seed(seed, "student", i),
                head=None if heads is None else (heads[0][i], heads[1][i]),
                name=f"student {i + 1}/{N} (alpha={a:g}, beta={b:g})",
                on_epoch=_hook(self.on_epoch, stage="student", member=i, alpha=a, beta=b),
            )
            for a, b in points
            for i in range(N)
        ]
        logger.info("Training %d students (%d alpha/beta points) as one stacked network", len(jobs), len(points))
        checkpoint = _ckpt(folder, f"stack_{self._key(*points[0])}_{len(points)}.pt")
        try:
            results = fit_students_stacked(
                data["X"],
                data["y"],
                data["X_dev"],
                data["y_dev"],
                jobs,
                X_unlabelled=data["X_unlabelled"],
                config=config.student,
                train=config.train,
                checkpoint=checkpoint,
            )
        finally:  # no-ops for in-memory arrays
            release(*targets, *targets_u)
        trained: dict[str, list[FitResult]] = {}
        for (a, b, _), result in zip(((a, b, i) for a, b in points for i in range(N)), results):
            trained.setdefault(self._key(a, b), []).append(result)
        return trained

    def _fit_on_engine(
        self, points: list[tuple[float, float]], data: dict[str, Any], config: Config, seed: int, folder: Path | None
    ) -> dict[str, list[FitResult]]:
        """Every student of ``points`` as one engine task each; ``{point key: results}``."""
        N = len(data["embeddings"])
        tasks = [
            StudentTask(
                a,
                b,
                i,
                f"student {i + 1}/{N} (alpha={a:g}, beta={b:g})",
                derive_seed(seed, "student", i),
                _ckpt(_absolute(folder), f"{self._key(a, b)}_s{i}.pt"),
            )
            for a, b in points
            for i in range(N)
        ]
        logger.info(
            "Training %d students (%d alpha/beta points) as tasks of the %s engine",
            len(tasks),
            len(points),
            getattr(self.engine, "name", "given"),
        )
        d, k = data["X"].shape[1], data["y"].shape[1]
        assert self.engine is not None  # called only to train on an engine
        results = fit_on_engine(
            self.engine,
            fit_student_task,
            tasks,
            shared={**data, "config": config},
            device=resolve_device(config.train.device),
            on_epoch=self.on_epoch,
            stage="student",
            new_model=lambda task: MLP(d, config.student.hidden, out_dim=k, generator=torch.Generator()),
        )
        trained: dict[str, list[FitResult]] = {}
        for task, result in zip(tasks, results):
            trained.setdefault(self._key(task.alpha, task.beta), []).append(result)
        return trained

    @staticmethod
    def _new_member(d: int, k: int, config: Config) -> MLP:
        return MLP(d, config.student.hidden, out_dim=k).to(resolve_device(config.train.device))

    def predict_members(self, X: np.ndarray) -> np.ndarray:
        """Every student's predictions: (N, n, k)."""
        X = _check_X(X, "X", _n_features(self))
        return stacked_predict(self.models_, X, packed=self.packed())

    def packed(self) -> PackedMLPs:
        """The students' weights packed by :func:`~serdistill.method.ensemble.packing.pack`, reused while
        their tensors are unchanged.

        Packing copies every weight (5 x 6373 x 512 floats); redone per call it made a
        one-segment prediction 6-30x slower (measured: ~150 ms instead of 5-25 ms on 2 cores).
        Any change to a student (new models, in-place updates, a move to another device)
        changes the key and repacks.
        """
        tensors = [t for m in self.models_ for t in (*m.parameters(), *m.buffers())]
        key = [(t._version, t.data_ptr()) for t in tensors]
        cache = getattr(self, "_pack_cache", None)
        if (
            cache is None
            or len(cache[0]) != len(tensors)
            or cache[1] != key
            or any(a is not b for a, b in zip(cache[0], tensors))
        ):
            self._pack_cache = (tensors, key, pack(self.models_))
        return self._pack_cache[2]

    def predict(self, X: np.ndarray, *, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean over the students; with ``return_std``, their std (population), the reported uncertainty."""
        members = self.predict_members(X).astype(np.float64)
        mean = _squeeze(members.mean(axis=0).astype(np.float32))
        if not return_std:
            return mean
        return mean, _squeeze(members.std(axis=0).astype(np.float32))


def _read_grid(folder: Path | None) -> dict[str, dict[str, Any]]:
    """Grid points finished by an earlier run (only trusted with the best students beside them)."""
    if folder is None or not (folder / "grid.json").is_file() or not (folder / "best.pt").is_file():
        return {}
    return json.loads((folder / "grid.json").read_text(encoding="utf-8"))
