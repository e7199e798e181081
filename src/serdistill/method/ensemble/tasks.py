"""Engine tasks: one teacher or one student per task, and the one place that runs them.

A task is a named tuple (:class:`TeacherTask`, :class:`StudentTask`) sent to a worker
with the shared arrays; the worker trains the model with its own torch threads
(:func:`task_threads`) and sends back its best weights and history
(:func:`task_result`). :func:`fit_on_engine` runs a list of tasks on an engine, rebuilds
the models here, and replays the epochs of the tasks whose progress did not arrive live.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from serdistill.base.events import report
from serdistill.base.protocols import Engine
from serdistill.method.config import Config
from serdistill.method.ensemble.common import _hook
from serdistill.method.models import MLP
from serdistill.method.training import EpochHook, FitResult, fit_student, fit_teacher


class TeacherTask(NamedTuple):
    """Teacher ``member`` with dropout rate ``dropout``."""

    member: int
    dropout: float
    name: str
    seed: int
    checkpoint: Path | None


class StudentTask(NamedTuple):
    """Student ``member`` at grid point (``alpha``, ``beta``), taught by teacher ``member``."""

    alpha: float
    beta: float
    member: int
    name: str
    seed: int
    checkpoint: Path | None


#: The fields that name a task in its progress events (and the order they are added in).
KEYS = {TeacherTask: ("member",), StudentTask: ("member", "alpha", "beta")}


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


def fit_teacher_task(
    task: TeacherTask, *, X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, config: Config, threads: int
) -> dict[str, Any]:
    """One engine task: a teacher; its best weights (on the CPU) and history."""
    with task_threads(threads):
        result = fit_teacher(
            X,
            y,
            X_dev,
            y_dev,
            dropout=task.dropout,
            config=config.teacher,
            train=config.train,
            seed=task.seed,
            name=task.name,
            checkpoint=task.checkpoint,
            on_epoch=_hook(report, stage="teacher", member=task.member),
        )
    return task_result(result)


def fit_student_task(
    task: StudentTask,
    *,
    X: np.ndarray,
    y: np.ndarray,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    embeddings: np.ndarray,
    X_unlabelled: np.ndarray | None,
    embeddings_unlabelled: np.ndarray | None,
    heads: tuple[np.ndarray, np.ndarray] | None,
    config: Config,
    threads: int,
) -> dict[str, Any]:
    """One engine task: a student; its best weights and history."""
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
    with task_threads(threads):
        result = fit_member(
            data,
            task.member,
            task.alpha,
            task.beta,
            config,
            seed=task.seed,
            name=task.name,
            checkpoint=task.checkpoint,
            on_epoch=_hook(report, stage="student", member=task.member, alpha=task.alpha, beta=task.beta),
        )
    return task_result(result)


def fit_member(
    data: dict[str, Any],
    i: int,
    alpha: float,
    beta: float,
    config: Config,
    *,
    seed: int,
    name: str,
    checkpoint: Path | None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Student ``i`` at (alpha, beta) on ``data`` (StudentEnsemble's arrays), taught by teacher i."""
    emb_u, heads = data["embeddings_unlabelled"], data.get("heads")
    return fit_student(
        data["X"],
        data["y"],
        data["X_dev"],
        data["y_dev"],
        target=data["embeddings"][i],
        alpha=alpha,
        beta=beta,
        X_unlabelled=data["X_unlabelled"],
        target_unlabelled=None if emb_u is None else emb_u[i],
        head=None if heads is None else (heads[0][i], heads[1][i]),
        config=config.student,
        train=config.train,
        seed=seed,
        name=name,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )


def task_result(result: FitResult) -> dict[str, Any]:
    """What a training task sends back: the best weights (on the CPU) and the history."""
    return {
        "state": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
    }


def fit_on_engine(
    engine: Engine,
    function: Callable[..., dict[str, Any]],
    tasks: Sequence[TeacherTask | StudentTask],
    *,
    shared: dict[str, Any],
    device: torch.device,
    new_model: Callable[[Any], MLP],
    on_epoch: EpochHook | None,
    stage: str,
) -> list[FitResult]:
    """Run ``function`` over ``tasks`` on ``engine`` (``engine.task_cpus`` torch threads each) and
    rebuild each task's model here (``new_model(task)``, its weights loaded, on ``device``).

    ``on_epoch`` gets every epoch: live, as the engine reports them, or (for a task whose
    events did not arrive, e.g. on an engine without live events) replayed from its
    history when it is done.
    """
    if not tasks:
        return []
    keys = KEYS[type(tasks[0])]
    threads = int(getattr(engine, "task_cpus", 1))
    live: set[tuple] = set()  # the tasks whose epochs arrived as they ended (engine.report)

    def on_event(info: dict[str, Any]) -> None:
        live.add(tuple(info[k] for k in keys))
        if on_epoch is not None:
            on_epoch(info)

    out = engine.map(
        function,
        list(tasks),
        num_cpus=threads,
        num_gpus=1 if device.type == "cuda" else 0,
        shared={**shared, "threads": threads},
        on_event=on_event,
    )
    results = []
    for task, result in zip(tasks, out):
        model = new_model(task)
        model.load_state_dict(result["state"])
        results.append(
            FitResult(
                model=model.to(device).eval(),
                history=result["history"],
                best_epoch=result["best_epoch"],
                best_score=result["best_score"],
            )
        )
        hook = _hook(on_epoch, stage=stage, **{k: getattr(task, k) for k in keys})
        if hook is not None and tuple(getattr(task, k) for k in keys) not in live:  # epochs that did not arrive live
            for info in result["history"]:
                hook(dict(info))
    return results
