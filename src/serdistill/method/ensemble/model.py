"""The whole method (:class:`TSModel`): per attribute (or once for all) the baseline, the
references, the teachers, their embeddings and the students; saved and loaded whole."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serdistill.base.errors import ConfigError, NotFittedError
from serdistill.base.io import atomic_path, finite_or_none, write_json
from serdistill.base.protocols import Engine
from serdistill.data.storage import labelled_rows, release_memory, select_rows
from serdistill.method.config import Config
from serdistill.method.ensemble.baseline import Baseline
from serdistill.method.ensemble.common import (
    _check_X,
    _check_y,
    _ckpt,
    _config,
    _dev_score,
    _Estimator,
    _hook,
    _n_features,
)
from serdistill.method.ensemble.packing import PackedMLPs
from serdistill.method.ensemble.persistence import Group, config_of, restore, state_of
from serdistill.method.ensemble.students import StudentEnsemble
from serdistill.method.ensemble.teachers import TeacherEnsemble, summarise_teachers
from serdistill.method.health import failed_members
from serdistill.method.reference import LinearReference
from serdistill.method.torch_state import derive_seed, resolve_device
from serdistill.method.training import (
    EpochHook,
)

logger = logging.getLogger(__name__)


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
        engine: a :mod:`serdistill.runtime.engine` engine to train each group's teachers and students
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

    def __init__(
        self,
        config: Config | None = None,
        *,
        on_epoch: EpochHook | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.on_epoch = on_epoch
        self.checkpoint_dir = checkpoint_dir
        self.engine = engine

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_dev: np.ndarray,
        y_dev: np.ndarray,
        *,
        X_unlabelled: np.ndarray | None = None,
        unlabelled_info: dict[str, Any] | None = None,
    ) -> TSModel:
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
        self.unlabelled_.update(
            n=0 if X_unlabelled is None else len(X_unlabelled), keep_fraction=config.unlabelled.keep_fraction, kept={}
        )
        self.alpha_: dict[str, float] = {}  # per group (attribute, or "multi")
        self.beta_: dict[str, float] = {}
        self.grid_: dict[str, list[dict[str, Any]]] = {}
        self.history_: dict[str, Any] = {}
        self.dev_ccc_: dict[str, dict[str, Any]] = {}
        self._groups: list[Group] = []
        if config.task == "single":
            layout = [([j], a) for j, a in enumerate(config.attributes)]
        else:
            layout = [(list(range(A)), "+".join(config.attributes))]
        for columns, name in layout:
            self._groups.append(
                self._fit_group(
                    name, columns, X, y, X_dev, y_dev, X_unlabelled, config, None if folder is None else folder / name
                )
            )
        self.fit_seconds_ = time.perf_counter() - tic
        return self

    def _fit_group(
        self, name: str, columns: list[int], X, y, X_dev, y_dev, X_unlabelled, config: Config, folder: Path | None
    ) -> Group:
        seed = derive_seed(config.seed, name)
        X_l, y_l = labelled_rows(X, y[:, columns])
        X_d, y_d = labelled_rows(X_dev, y_dev[:, columns])
        if len(X_l) < 2 or len(X_d) < 2:
            raise ValueError(
                f"{name}: need at least 2 labelled training and development segments; got {len(X_l)} and {len(X_d)}."
            )
        hook = _hook(self.on_epoch, group=name)
        baseline = None
        history: dict[str, Any] = {}
        if config.baseline.enabled:
            logger.info("%s: training the baseline", name)
            baseline = Baseline(
                config, seed=seed, on_epoch=_hook(hook, stage="baseline"), checkpoint=_ckpt(folder, "baseline.pt")
            ).fit(X_l, y_l, X_d, y_d)
            history["baseline"] = baseline.history_
            release_memory(X_l, X_d)  # each stage leaves its pages and freed heap behind
        references = {}
        for kind in config.reference.models:
            logger.info("%s: fitting the %s reference", name, kind)
            references[kind] = LinearReference(kind, seed=derive_seed(seed, kind)).fit(X_l, y_l, X_d, y_d)
        release_memory(X_l, X_d)
        teachers = TeacherEnsemble(config, seed=seed, on_epoch=hook, checkpoint_dir=folder, engine=self.engine).fit(
            X_l, y_l, X_d, y_d
        )
        history["teachers"] = teachers.histories_
        release_memory(X_l, X_d)
        logger.info(
            "%s: Monte-Carlo dropout (%d passes) on %d training segments",
            name,
            config.mc.passes if config.mc.enabled else 1,
            len(X_l),
        )
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
        students = StudentEnsemble(
            config,
            seed=seed,
            on_epoch=hook,
            engine=self.engine,
            checkpoint_dir=None if folder is None else folder / "students",
        )
        students.fit(
            X_l, y_l, X_d, y_d, embeddings=embeddings, X_unlabelled=X_u, embeddings_unlabelled=emb_u, heads=teachers.heads()
        )
        history["students"] = students.histories_
        release_memory(X_l, X_d, X_u)
        self.alpha_[name], self.beta_[name], self.grid_[name] = students.alpha_, students.beta_, students.grid_
        self.history_[name] = history
        chosen = next((r for r in students.grid_ if (r["alpha"], r["beta"]) == (students.alpha_, students.beta_)), {})
        failed = failed_members("teacher", teachers.dev_ccc_, teachers.histories_, group=name) + failed_members(
            "student", chosen.get("member_dev_ccc", []), students.histories_, group=name
        )
        self.dev_ccc_[name] = {
            "failed": failed,
            "baseline": None if baseline is None else finite_or_none(baseline.dev_ccc_),
            "teachers": finite_or_none(_dev_score(np.asarray(teachers.predict(X_d)).reshape(len(X_d), -1), y_d)),
            "teacher_members": [finite_or_none(s) for s in teachers.dev_ccc_],
            "students": students.dev_ccc_,
            **{kind: finite_or_none(np.mean(ref.dev_ccc_)) for kind, ref in references.items()},
        }
        return Group(name, columns, baseline, teachers, students, references)

    # -- prediction ------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "_groups"):
            raise NotFittedError("This TSModel is not fitted yet; call fit(...) or TSModel.load(path) first.")

    def _columns(self, X: np.ndarray, get: Callable[[Group], np.ndarray]) -> np.ndarray:
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
        return self._columns(
            X, lambda g: g.baseline.predict(X) if g.baseline is not None else np.full((len(X), len(g.columns)), np.nan)
        )

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
        out = {
            key: np.full((N, n, A), np.nan, np.float32)
            for key in ("student_members", "teacher_members", "teacher_members_std", "teacher_one_pass")
        }
        out.update(
            {key: np.full((n, A), np.nan, np.float32) for key in ("students", "students_std", "teachers", "teachers_std")}
        )
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

        def get(kind: str) -> Callable[[Group], np.ndarray]:
            return lambda g: (
                g.references[kind].predict(X) if kind in g.references else np.full((len(X), len(g.columns)), np.nan)
            )

        return {kind: self._columns(X, get(kind)) for kind in ("ridge", "svr")}

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"meta": JSON-ready dict, "tensors": {name: tensor}}``: everything to rebuild the model."""
        self._check_fitted()
        return state_of(self, _config(self.config))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, device: str | None = None) -> TSModel:
        """Rebuild a fitted model from :meth:`state_dict` (``device`` overrides the saved one)."""
        config = config_of(state, device)
        self = cls(config)
        restore(self, state, config)
        return self

    def packed_students(self) -> list[tuple[list[int], PackedMLPs]]:
        """Each group's columns (of :attr:`attributes_`) and its students' packed weights
        (:func:`~serdistill.method.ensemble.packing.pack`): what ONNX export builds its graph from."""
        self._check_fitted()
        return [(list(g.columns), g.students.packed()) for g in self._groups]

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
            raise ConfigError(
                f"{path} is not a saved TSModel: {', '.join(missing)} missing. Save one with TSModel.save(path)."
            )
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        tensors = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        return cls.from_state_dict({"meta": meta, "tensors": tensors}, device=device)
