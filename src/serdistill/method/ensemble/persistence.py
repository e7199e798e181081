"""A fitted :class:`~serdistill.method.ensemble.model.TSModel` as plain data, and back.

``state_of`` gives ``{"meta": JSON-ready dict, "tensors": {name: tensor}}``: the config,
the choices, the histories, and every model's weights under ``group/model/parameter``
names; ``restore`` rebuilds the models from it. A state from another format is refused
with an error that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from serdistill import __version__
from serdistill.base.errors import ConfigError
from serdistill.base.io import jsonable
from serdistill.method.config import Config
from serdistill.method.ensemble.baseline import Baseline
from serdistill.method.ensemble.students import StudentEnsemble
from serdistill.method.ensemble.teachers import TeacherEnsemble
from serdistill.method.models import MLP
from serdistill.method.reference import LinearReference
from serdistill.method.torch_state import resolve_device

#: The layout of a saved model; a state of another format is refused.
STATE_FORMAT = 1


@dataclass
class Group:
    """One set of models: a single attribute (single-task) or all of them (multi-task)."""

    name: str
    columns: list[int]
    baseline: Baseline | None
    teachers: TeacherEnsemble
    students: StudentEnsemble
    references: dict[str, LinearReference] = field(default_factory=dict)


def state_of(model: Any, config: Config) -> dict[str, Any]:
    """A fitted TSModel's state: ``{"meta": JSON-ready dict, "tensors": {name: tensor}}``."""
    tensors: dict[str, torch.Tensor] = {}
    for g in model._groups:
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
        "format": STATE_FORMAT,
        "serdistill": __version__,
        "torch": torch.__version__,
        "config": config.to_dict(),
        "attributes": model.attributes_,
        "n_features_in": model.n_features_in_,
        "groups": [
            {
                "name": g.name,
                "columns": g.columns,
                "baseline": g.baseline is not None,
                "teacher_seed": g.teachers.seed_,
                "references": {
                    kind: {"choice": ref.choice_, "dev_ccc": ref.dev_ccc_, "n_train": ref.n_train_}
                    for kind, ref in g.references.items()
                },
            }
            for g in model._groups
        ],
        "alpha": model.alpha_,
        "beta": model.beta_,
        "grid": model.grid_,
        "dev_ccc": model.dev_ccc_,
        "unlabelled": model.unlabelled_,
        "history": model.history_,
        "fit_seconds": getattr(model, "fit_seconds_", None),
    }
    return {"meta": jsonable(meta), "tensors": tensors}


def config_of(state: dict[str, Any], device: str | None = None) -> Config:
    """The config a state was saved with (``device`` overriding its device); ConfigError for another format."""
    meta = state["meta"]
    if meta.get("format") != STATE_FORMAT:
        raise ConfigError(
            f"Model state format {meta.get('format')!r} is not {STATE_FORMAT}; "
            "it was written by another serdistill version. Retrain or use that version."
        )
    config = Config.from_dict(meta["config"])
    return config if device is None else config.updated({"train": {"device": device}})


def restore(model: Any, state: dict[str, Any], config: Config) -> None:
    """Give the unfitted TSModel ``model`` the fitted attributes and models of ``state``."""
    meta, tensors = state["meta"], state["tensors"]
    dev = resolve_device(config.train.device)
    model.attributes_, model.n_features_in_ = list(meta["attributes"]), int(meta["n_features_in"])
    model.alpha_, model.beta_, model.grid_ = meta["alpha"], meta["beta"], meta["grid"]
    model.dev_ccc_, model.unlabelled_, model.history_ = meta["dev_ccc"], meta["unlabelled"], meta["history"]
    model.fit_seconds_ = meta.get("fit_seconds")
    d, model._groups = model.n_features_in_, []
    for spec in meta["groups"]:
        name, k = spec["name"], len(spec["columns"])
        baseline = None
        if spec["baseline"]:
            baseline = Baseline(config)
            baseline.model_ = _get(
                tensors, f"{name}/baseline", MLP(d, config.baseline.hidden, dropout=config.baseline.dropout, out_dim=k), dev
            )
            baseline.n_features_in_, baseline.n_outputs_ = d, k
        teachers = TeacherEnsemble(config)
        teachers.models_ = [
            _get(tensors, f"{name}/teacher{i}", MLP(d, config.teacher.hidden, dropout=p, out_dim=k), dev)
            for i, p in enumerate(config.teacher.dropouts)
        ]
        teachers.seed_, teachers.mc_ = int(spec["teacher_seed"]), config.mc
        teachers.n_features_in_, teachers.n_outputs_ = d, k
        students = StudentEnsemble(config)
        students.models_ = [
            _get(tensors, f"{name}/student{i}", MLP(d, config.student.hidden, out_dim=k), dev)
            for i in range(len(config.teacher.dropouts))
        ]
        students.alpha_, students.beta_ = meta["alpha"][name], meta["beta"][name]
        students.n_features_in_, students.n_outputs_ = d, k
        references = {}
        for kind, info in spec.get("references", {}).items():  # none in models saved before the references existed
            ref = references[kind] = LinearReference(kind)
            ref.coef_ = tensors[f"{name}/{kind}/coef"].numpy().astype(np.float32)
            ref.intercept_ = tensors[f"{name}/{kind}/intercept"].numpy().astype(np.float32)
            ref.choice_, ref.dev_ccc_, ref.n_train_ = info["choice"], info["dev_ccc"], info["n_train"]
        model._groups.append(Group(name, list(spec["columns"]), baseline, teachers, students, references))


def _put(tensors: dict[str, torch.Tensor], prefix: str, model: MLP) -> None:
    for key, value in model.state_dict().items():
        tensors[f"{prefix}/{key}"] = value


def _get(tensors: dict[str, torch.Tensor], prefix: str, model: MLP, device: torch.device) -> MLP:
    state = {key[len(prefix) + 1 :]: value for key, value in tensors.items() if key.startswith(prefix + "/")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"The saved weights of {prefix} do not fit its config ({err}).") from None
    return model.to(device).eval()
