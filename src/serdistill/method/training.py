"""Training loops for the baseline, the teachers and the students (one model at a time).

Every loop trains on mini-batches, scores the development set after each epoch and keeps
the weights of the epoch with the best development CCC (**decided** for all three model
kinds). Each loop records a ``history`` (one dict per epoch), calls an optional
``on_epoch(info)`` hook, and, given a ``checkpoint`` path, writes a resumable checkpoint
(model, optimiser, epoch, generators, history) and resumes from it when it exists.

Randomness flows through explicit generators derived from one seed with
:func:`~serdistill.method.torch_state.derive_seed`: initial weights, batch order and dropout masks.
The same seed gives identical weights on the same machine and thread count; no global RNG
is touched. Seeds, devices and checkpoints live in :mod:`serdistill.method.torch_state` (and are
re-exported here).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch

from serdistill.base.errors import ConfigError
from serdistill.data.feature_rows import FeatureRows
from serdistill.method.config import BaselineConfig, StudentConfig, TeacherConfig, TrainConfig
from serdistill.method.metrics import ccc_loss, ccc_torch
from serdistill.method.models import MLP
from serdistill.method.torch_state import (  # re-exported: their home before torch_state
    CHECKPOINT_FORMAT,
    derive_seed,
    load_checkpoint,
    make_generator,
    resolve_device,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

EpochHook = Callable[[dict[str, Any]], None]
_PREDICT_ROWS = 8192


# ---------------------------------------------------------------------------------------
# Results, batches, losses


@dataclass
class FitResult:
    """What a training loop returns: the model with its best weights loaded, and its history."""

    model: MLP
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("nan")
    stopped_early: bool = False

    @property
    def steps(self) -> int:
        """Optimizer steps run in all (every epoch's ``steps``)."""
        return sum(int(h.get("steps", 0)) for h in self.history)


@dataclass(frozen=True)
class Schedule:
    """How long a loop trains, in epochs of ``steps_per_epoch`` steps, and when it stops early.

    Attributes:
        epochs: the most epochs to run.
        steps_per_epoch: optimizer steps of a whole epoch (labelled batches, for students).
        steps: the step budget when the length is given in steps: the last epoch runs only
            the steps left, so exactly ``steps`` steps run in all; None: whole epochs.
        patience: stop once the best development CCC is this many epochs old; None: never.

    Examples:
        >>> plan = Schedule.of(TeacherConfig(steps=1000, patience=10, patience_steps=120), n_batches(300, 64))
        >>> plan.epochs, plan.steps_per_epoch, plan.patience, plan.limit(199)
        (200, 5, 24, 5)
        >>> plan = Schedule.of(TeacherConfig(steps=1000), n_batches(30_000, 64))
        >>> plan.epochs, plan.steps_per_epoch, plan.limit(1), plan.limit(2)
        (3, 469, 469, 62)
        >>> Schedule.of(TeacherConfig(steps=1000, min_epochs=20), n_batches(30_000, 64)).epochs
        20
    """

    epochs: int
    steps_per_epoch: int
    steps: int | None = None
    patience: int | None = None

    @classmethod
    def of(cls, config: BaselineConfig | TeacherConfig | StudentConfig, steps_per_epoch: int) -> Schedule:
        """The schedule ``config`` (``epochs`` or ``steps``, ``patience`` or ``patience_steps``) gives."""
        per = max(1, int(steps_per_epoch))
        steps = config.steps
        if steps is not None and config.min_epochs is not None:
            steps = max(steps, config.min_epochs * per)
        epochs = config.epochs if steps is None else -(-steps // per)
        patience = [
            p
            for p in (config.patience, None if config.patience_steps is None else -(-config.patience_steps // per))
            if p is not None
        ]
        return cls(epochs=max(1, epochs), steps_per_epoch=per, steps=steps, patience=max(patience, default=None))

    def limit(self, epoch: int) -> int:
        """Steps to run in epoch ``epoch`` (0-based)."""
        if self.steps is None:
            return self.steps_per_epoch
        return max(0, min(self.steps_per_epoch, self.steps - epoch * self.steps_per_epoch))

    def stop(self, epoch: int, best_epoch: int) -> bool:
        """Whether training stops after ``epoch`` epochs (1-based) with the best at ``best_epoch``."""
        return epoch >= self.epochs or (self.patience is not None and epoch - best_epoch >= self.patience)


def n_batches(n: int, batch_size: int) -> int:
    """How many mini-batches :func:`batches` cuts ``n`` rows into.

    Examples:
        >>> n_batches(300, 64), n_batches(257, 64), n_batches(1, 64)
        (5, 4, 1)
    """
    count = -(-int(n) // int(batch_size))
    return count - 1 if count > 1 and n % batch_size == 1 else count


def batches(n: int, batch_size: int, *, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` cut into batches of ``batch_size``.

    A last batch of a single sample is merged into the one before (CCC needs two samples).

    Examples:
        >>> [len(b) for b in batches(9, 4, generator=torch.Generator().manual_seed(0))]
        [4, 5]
    """
    order = torch.randperm(n, generator=generator)
    out = list(order.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = torch.cat(out[-2:])
        out.pop()
    return out


def batch_schedule(
    n_labelled: int, n_unlabelled: int, batch_size: int, *, generator: torch.Generator
) -> list[tuple[str, torch.Tensor]]:
    """One student epoch: ``("unlabelled", idx)`` and ``("labelled", idx)`` steps, alternating.

    The epoch has ``max(L, U)`` pairs, L and U being the numbers of labelled and unlabelled
    batches; each pair is one unlabelled batch followed by one labelled batch. The shorter
    stream is cycled: when it runs out it continues with a fresh permutation, so the longer
    stream is seen exactly once per epoch. Without unlabelled data it is L labelled steps.

    Examples:
        >>> steps = batch_schedule(8, 3, 2, generator=torch.Generator().manual_seed(0))
        >>> [kind[0] for kind, _ in steps]
        ['u', 'l', 'u', 'l', 'u', 'l', 'u', 'l']
    """
    labelled = batches(n_labelled, batch_size, generator=generator)
    if n_unlabelled == 0:
        return [("labelled", b) for b in labelled]
    unlabelled = batches(n_unlabelled, batch_size, generator=generator)
    steps = max(len(labelled), len(unlabelled))
    for stream, n in ((labelled, n_labelled), (unlabelled, n_unlabelled)):
        while len(stream) < steps:
            stream.extend(batches(n, batch_size, generator=generator))
        del stream[steps:]
    schedule: list[tuple[str, torch.Tensor]] = []
    for u, lab in zip(unlabelled, labelled):
        schedule += [("unlabelled", u), ("labelled", lab)]
    return schedule


SCALE_FREE_OPTIMIZERS: tuple[str, ...] = ("nadam", "adam")
"""Optimizers whose step does not change (but for their epsilon) when the loss is scaled."""


def loss_weights(alpha: float, beta: float) -> tuple[float, float]:
    """``(alpha, beta)`` scaled to sum to 1, the same floats for every pair of the same ratio.

    With a scale-free optimizer (NAdam, Adam, decoupled weight decay) a student trained with
    ``(c·alpha, c·beta)`` follows ``(alpha, beta)``'s path but for the optimizer's epsilon,
    which training amplifies chaotically (measured: docs/experiment.md). Training with the
    normalised weights removes that meaningless degree of freedom: every grid point of one
    ratio trains bit for bit the same student, so the grid trains each ratio once.

    Examples:
        >>> loss_weights(0.2, 0.4) == loss_weights(0.4, 0.8), loss_weights(0.5, 0.5)
        (True, (0.5, 0.5))
    """
    total = float(alpha) + float(beta)
    if not total > 0:
        raise ValueError(f"alpha + beta must be positive (the loss would be zero); got alpha={alpha}, beta={beta}.")
    a = round(float(alpha) / total, 12)
    return a, 1.0 - a


def student_weights(
    alpha: float, beta: float, target: np.ndarray | torch.Tensor, config: StudentConfig
) -> tuple[float, float]:
    """The weights Eq. 1 trains with: of (1 − CCC), and of the embedding MSE.

    Normalised to sum to 1 for a scale-free optimizer (:func:`loss_weights`); with
    ``mse = "relative"`` the MSE's weight is divided by the mean square of ``target``, the
    teacher embedding (:func:`embedding_mean_square`).
    """
    w_alpha, w_beta = loss_weights(alpha, beta) if config.optimizer in SCALE_FREE_OPTIMIZERS else (alpha, beta)
    return w_alpha, w_beta / embedding_mean_square(target) if config.mse == "relative" else w_beta


def student_loss(
    prediction: torch.Tensor,
    hidden: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 1: ``alpha·(1 − CCC) + beta·MSE(hidden, target)``; ``beta·MSE`` only when unlabelled.

    Args:
        prediction: the student's outputs, (n, k).
        hidden: its last hidden layer, (n, width).
        target: the teacher embedding for the same segments, (n, width).
        labels: the labels, (n, k), or None for an unlabelled batch.

    The MSE is the mean over segments and units (``torch.nn.functional.mse_loss``).
    """
    loss = beta * torch.nn.functional.mse_loss(hidden, target)
    if labels is not None:
        loss = loss + alpha * ccc_loss(prediction, labels)
    return loss


def embedding_mean_square(target: np.ndarray | torch.Tensor) -> float:
    """The mean square of a teacher embedding (n, H), read in row blocks; 1 when it is all zeros.

    Examples:
        >>> embedding_mean_square(np.full((4, 3), 2.0, np.float32))
        4.0
    """
    total, count = 0.0, 0
    for start in range(0, len(target), _PREDICT_ROWS):
        block = np.asarray(target[start : start + _PREDICT_ROWS], dtype=np.float64)
        total += float(np.square(block).sum())
        count += block.size
    value = total / max(count, 1)
    return value if value > 0 else 1.0


@overload
def predict_mlp(
    model: MLP, X: np.ndarray | torch.Tensor, *, device: str | torch.device = ..., hidden: Literal[False] = ...
) -> np.ndarray: ...


@overload
def predict_mlp(
    model: MLP, X: np.ndarray | torch.Tensor, *, device: str | torch.device = ..., hidden: Literal[True]
) -> tuple[np.ndarray, np.ndarray]: ...


@torch.no_grad()
def predict_mlp(
    model: MLP, X: np.ndarray | torch.Tensor, *, device: str | torch.device = "cpu", hidden: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Outputs (n, out_dim) of ``model`` in evaluation mode (and its last hidden layer)."""
    model.eval()
    device = torch.device(device)
    outs, hiddens = [], []
    for _, rows in FeatureRows(X).blocks(_PREDICT_ROWS):
        block, h = model.forward_hidden(rows.to(device))
        outs.append(block.cpu())
        if hidden:
            hiddens.append(h.cpu())
    width = model.hidden[-1]
    out = torch.cat(outs).numpy() if outs else np.zeros((0, model.out_dim), np.float32)
    if not hidden:
        return out
    return out, (torch.cat(hiddens).numpy() if hiddens else np.zeros((0, width), np.float32))


# ---------------------------------------------------------------------------------------
# The loops


def fit_baseline(
    X: np.ndarray,
    y: np.ndarray,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    *,
    config: BaselineConfig = BaselineConfig(),
    train: TrainConfig = TrainConfig(),
    seed: int = 0,
    on_epoch: EpochHook | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    name: str = "baseline",
) -> FitResult:
    """Train the baseline MLP (loss 1 − CCC); keep the best development-CCC epoch."""
    return _fit_supervised(
        X,
        y,
        X_dev,
        y_dev,
        hidden=config.hidden,
        dropout=config.dropout,
        optimizer=config.optimizer,
        lr=config.lr,
        momentum=config.momentum,
        config=config,
        train=train,
        seed=seed,
        on_epoch=on_epoch,
        checkpoint=checkpoint,
        name=name,
        kind="baseline",
    )


def fit_teacher(
    X: np.ndarray,
    y: np.ndarray,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    *,
    dropout: float,
    config: TeacherConfig = TeacherConfig(),
    train: TrainConfig = TrainConfig(),
    seed: int = 0,
    on_epoch: EpochHook | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    name: str = "teacher",
) -> FitResult:
    """Train one teacher (SGD lr 0.001 by default, loss 1 − CCC, dropout ``dropout``).

    Args:
        X, y: training features (n, d) float32 and labels (n,) or (n, k), all finite.
        X_dev, y_dev: the development set, scored after every epoch.
        dropout: this teacher's rate.
        config: architecture, optimiser and epochs.
        train: batch size and device.
        seed: seeds the weights, the batch order and the dropout masks.
        on_epoch: called after every epoch with a dict (name, epoch, epochs, train_loss,
            dev_ccc, best_dev_ccc, best_epoch, seconds).
        checkpoint: a file to resume from (if it exists) and to write while training.
    """
    return _fit_supervised(
        X,
        y,
        X_dev,
        y_dev,
        hidden=config.hidden,
        dropout=dropout,
        optimizer=config.optimizer,
        lr=config.lr,
        momentum=config.momentum,
        config=config,
        train=train,
        seed=seed,
        on_epoch=on_epoch,
        checkpoint=checkpoint,
        name=name,
        kind="teacher",
    )


def fit_student(
    X: np.ndarray,
    y: np.ndarray,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    *,
    target: np.ndarray,
    alpha: float,
    beta: float,
    X_unlabelled: np.ndarray | None = None,
    target_unlabelled: np.ndarray | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
    config: StudentConfig = StudentConfig(),
    train: TrainConfig = TrainConfig(),
    seed: int = 0,
    on_epoch: EpochHook | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    name: str = "student",
) -> FitResult:
    """Train one student with Eq. 1, alternating unlabelled and labelled batches.

    Args:
        X, y: labelled features and labels; ``target``: the teacher embedding of ``X`` (n, 512).
        alpha, beta: the weights of (1 − CCC) and of the embedding MSE (with NAdam or Adam,
            only their ratio matters: they are normalised by :func:`loss_weights`).
        X_unlabelled, target_unlabelled: unlabelled features and their teacher embedding;
            their batches get ``beta·MSE`` only. See :func:`batch_schedule` for the order.
        head: the output layer's initial weight (k, H) and bias (k,), used when
            ``config.head`` is ``"teacher"`` (teacher i's output layer); else ignored.
        The other arguments are as in :func:`fit_teacher`.
    """
    device = resolve_device(train.device)
    X_r, y_t = _labelled_rows(X, y, device, "training")
    T_r = FeatureRows(target, device)
    if X_unlabelled is not None and len(X_unlabelled) and target_unlabelled is None:
        raise ValueError("fit_student got X_unlabelled without target_unlabelled (its teacher embedding).")
    U_r = FeatureRows.optional(X_unlabelled, device, X_r.width)
    TU_r = FeatureRows.optional(target_unlabelled if len(U_r) else None, device, T_r.width)
    if len(T_r) != len(X_r) or len(TU_r) != len(U_r):
        raise ValueError("Each teacher embedding needs one row per segment of its features.")
    model = _new_model(X_r.width, config.hidden, 0.0, y_t, train, seed, device)
    if model.hidden[-1] != T_r.width:
        raise ValueError(
            f"The student's last hidden layer has {model.hidden[-1]} units but the teacher "
            f"embedding has {T_r.width}; they must match."
        )
    if config.head in ("teacher", "frozen"):
        if head is None:
            raise ValueError(f"[student] head = {config.head!r} needs the teacher's output layer (head=(weight, bias)).")
        set_output_layer(model, head)
        model.output.requires_grad_(config.head == "teacher")  # frozen: the teacher's, never trained
    # "relative": the MSE in units of the embedding's mean square (on the labelled rows), so
    # that it weighs as much as 1 − CCC whatever the embedding's scale (docs/experiment.md)
    # with a scale-free optimizer, only alpha/beta matters: train with the normalised weights
    w_alpha, beta_mse = student_weights(alpha, beta, target, config)
    B = train.batch_size
    labelled_buf = torch.empty((B + 1, X_r.width), device=device)
    unlabelled_buf = torch.empty((B + 1, X_r.width), device=device)
    target_buf = torch.empty((B + 1, T_r.width), device=device)
    take = {"labelled": (X_r, T_r, labelled_buf), "unlabelled": (U_r, TU_r, unlabelled_buf)}

    def run_epoch(opt: torch.optim.Optimizer, gens: dict[str, torch.Generator], limit: int) -> dict[str, float]:
        model.train()
        totals = {"labelled": [0.0, 0], "unlabelled": [0.0, 0]}
        steps = batch_schedule(len(X_r), len(U_r), B, generator=gens["shuffle"])
        for kind, idx in steps[: limit * (2 if len(U_r) else 1)]:
            idx = idx.to(device)
            rows, targets, buf = take[kind]
            prediction, hidden = model.forward_hidden(rows.gather(idx, buf[: len(idx)]))
            loss = student_loss(
                prediction,
                hidden,
                targets.gather(idx, target_buf[: len(idx)]),
                alpha=w_alpha,
                beta=beta_mse,
                labels=y_t[idx] if kind == "labelled" else None,
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals[kind][0] += float(loss.detach()) * len(idx)
            totals[kind][1] += len(idx)
        out = {f"loss_{k}": (s / n if n else float("nan")) for k, (s, n) in totals.items()}
        out["train_loss"] = out["loss_labelled"]
        out["steps"] = min(limit * (2 if len(U_r) else 1), len(steps))
        return out

    fingerprint = student_fingerprint(
        config, train, model, alpha=alpha, beta=beta, batch_size=B, seed=seed, n=(len(X_r), len(U_r), len(X_dev))
    )
    per_epoch = max(n_batches(len(X_r), B), n_batches(len(U_r), B) if len(U_r) else 0)
    return _loop(
        model,
        _optimizer(config.optimizer, model, config.lr, 0.0, config.weight_decay),
        run_epoch,
        X_dev,
        y_dev,
        schedule=Schedule.of(config, per_epoch),
        seed=seed,
        device=device,
        on_epoch=on_epoch,
        checkpoint=checkpoint,
        checkpoint_every=train.checkpoint_every,
        name=name,
        fingerprint=fingerprint,
    )


def _fit_supervised(
    X,
    y,
    X_dev,
    y_dev,
    *,
    hidden,
    dropout,
    optimizer,
    lr,
    momentum,
    config: BaselineConfig | TeacherConfig,
    train: TrainConfig,
    seed,
    on_epoch,
    checkpoint,
    name,
    kind,
) -> FitResult:
    device = resolve_device(train.device)
    rows, y_t = _labelled_rows(X, y, device, "training")
    model = _new_model(rows.width, hidden, dropout, y_t, train, seed, device)
    B = train.batch_size
    buf = torch.empty((B + 1, rows.width), device=device)

    def run_epoch(opt: torch.optim.Optimizer, gens: dict[str, torch.Generator], limit: int) -> dict[str, float]:
        model.train()
        total, count = 0.0, 0
        steps = batches(len(rows), B, generator=gens["shuffle"])[:limit]
        for idx in steps:
            idx = idx.to(device)
            loss = ccc_loss(model(rows.gather(idx, buf[: len(idx)]), generator=gens["dropout"]), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return {"train_loss": total / max(count, 1), "steps": len(steps)}

    fingerprint = supervised_fingerprint(
        kind,
        train,
        model,
        dropout=dropout,
        lr=lr,
        momentum=momentum,
        optimizer=optimizer,
        batch_size=B,
        seed=seed,
        n=(len(rows), len(X_dev)),
    )
    return _loop(
        model,
        _optimizer(optimizer, model, lr, momentum),
        run_epoch,
        X_dev,
        y_dev,
        schedule=Schedule.of(config, n_batches(len(rows), B)),
        seed=seed,
        device=device,
        on_epoch=on_epoch,
        checkpoint=checkpoint,
        checkpoint_every=train.checkpoint_every,
        name=name,
        fingerprint=fingerprint,
    )


def _loop(
    model: MLP,
    opt: torch.optim.Optimizer,
    run_epoch: Callable[[torch.optim.Optimizer, dict[str, torch.Generator], int], dict[str, float]],
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    *,
    schedule: Schedule,
    seed: int,
    device: torch.device,
    on_epoch: EpochHook | None,
    checkpoint: str | os.PathLike[str] | None,
    checkpoint_every: int,
    name: str,
    fingerprint: dict[str, Any],
) -> FitResult:
    """The epoch loop shared by every model: train, score dev, keep the best, stop early, checkpoint.

    ``run_epoch(opt, generators, limit)`` runs at most ``limit`` steps and returns the epoch's
    numbers, ``steps`` among them. The hook's dict carries ``last`` (True for the final epoch,
    whether the schedule ended or patience ran out) and ``stopped_early``.
    """
    dev, yd = _labelled_rows(X_dev, y_dev, device, "development")
    gens = {
        "shuffle": make_generator(derive_seed(seed, "shuffle")),
        "dropout": make_generator(derive_seed(seed, "dropout"), device),
    }
    result = FitResult(model=model, best_score=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=device)
        _check_fingerprint(state, fingerprint, checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for key, gen in gens.items():
            gen.set_state(state["rng"][key].cpu())
        best_state = state["best_model"]
        start, result.history = int(state["epoch"]), list(state["history"])
        result.best_epoch, result.best_score = int(state["best_epoch"]), float(state["best_score"])
        logger.info("%s: resumed from %s after epoch %d", name, checkpoint, start)

    def save(epoch: int) -> None:
        if checkpoint is None:  # only called with a checkpoint file
            return
        save_checkpoint(
            checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "name": name,
                "fingerprint": fingerprint,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "best_model": best_state,
                "best_epoch": result.best_epoch,
                "best_score": result.best_score,
                "history": result.history,
                "rng": {key: gen.get_state() for key, gen in gens.items()},
            },
        )

    epochs = schedule.epochs
    epoch = start
    while not (epoch > 0 and schedule.stop(epoch, result.best_epoch)) and epoch < epochs:
        tic = time.perf_counter()
        info: dict[str, Any] = {"name": name, "epoch": epoch + 1, "epochs": epochs}
        info.update(run_epoch(opt, gens, schedule.limit(epoch)))
        score = _dev_ccc(model, dev, yd)
        dev.release()  # on disk: its pages leave after each scoring
        if score > result.best_score or best_state is None:
            result.best_score, result.best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        epoch += 1
        last = schedule.stop(epoch, result.best_epoch)
        info.update(
            dev_ccc=score,
            best_dev_ccc=result.best_score,
            best_epoch=result.best_epoch,
            seconds=time.perf_counter() - tic,
            last=last,
            stopped_early=last and epoch < epochs,
        )
        result.history.append(info)
        logger.debug("%s epoch %d/%d: loss %.4f, dev CCC %.4f", name, epoch, epochs, info["train_loss"], score)
        if on_epoch is not None:
            on_epoch(dict(info))
        if checkpoint is not None and (epoch % checkpoint_every == 0 or last):
            save(epoch)
    result.stopped_early = epoch < epochs
    if result.stopped_early:
        logger.debug(
            "%s: stopped early after epoch %d of %d (best %d, patience %s)",
            name,
            epoch,
            epochs,
            result.best_epoch,
            schedule.patience,
        )
    if best_state is not None:
        model.load_state_dict(best_state)
    model.zero_grad(set_to_none=True)  # a fitted model keeps no gradients (another copy of its weights)
    if not math.isfinite(result.best_score):
        result.best_score = float("nan")
    model.eval()
    return result


@torch.no_grad()
def _dev_ccc(model: MLP, X: FeatureRows, y: torch.Tensor) -> float:
    """Mean development CCC over the outputs; -inf when undefined (so it never wins)."""
    if len(X) == 0:
        return -math.inf
    model.eval()
    out = torch.cat([model(block) for _, block in X.blocks(_PREDICT_ROWS)])
    score = float(ccc_torch(out, y).mean())
    return score if math.isfinite(score) else -math.inf


def _new_model(
    in_dim: int, hidden, dropout: float, y_t: torch.Tensor, train: TrainConfig, seed: int, device: torch.device
) -> MLP:
    model = MLP(
        in_dim,
        hidden,
        dropout=dropout,
        out_dim=y_t.shape[1],
        init=train.init,
        generator=make_generator(derive_seed(seed, "init")),
    )
    if train.standardise_labels:
        std = y_t.std(dim=0, unbiased=False).cpu()
        model.set_output_scaling(torch.where(std > 0, std, torch.ones_like(std)), y_t.mean(dim=0).cpu())
    return model.to(device)


@torch.no_grad()
def set_output_layer(model: MLP, head: tuple[np.ndarray, np.ndarray]) -> None:
    """Copy a teacher's output layer (weight (k, H), bias (k,)) into ``model``'s."""
    for param, value in zip((model.output.weight, model.output.bias), head):
        param.copy_(torch.as_tensor(np.asarray(value), dtype=torch.float32).reshape(param.shape))


class NAdam(torch.optim.NAdam):
    """torch's NAdam, bit for bit, that keeps one buffer between steps on CPU.

    torch's multi-tensor step takes the square root of the second moment into new tensors at
    every step. For a student's first layer that is 13 MB of fresh pages a step, and faulting
    them in costs 3-4 times the square root itself (4.8 ms against 1.3 ms a step, profiled at
    batch 256). Here the root goes into a buffer per parameter, kept between steps; every
    other operation, its order and its scalars are those of ``torch.optim.nadam``'s
    multi-tensor path. The state (``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``) is
    torch's, so checkpoints load either way. Anything else (CUDA, a closure, capturable,
    differentiable, maximize, complex or mixed dtypes) is left to torch's step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._roots: dict[torch.Tensor, torch.Tensor] = {}

    def _own_step(self) -> bool:
        groups = self.param_groups
        if any(g["capturable"] or g["differentiable"] or g["maximize"] or not g["foreach"] for g in groups):
            return False
        return all(p.device.type == "cpu" and p.dtype == torch.float32 for g in groups for p in g["params"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if closure is not None or not self._own_step():
            return super().step(closure)
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            exp_avgs: list[torch.Tensor] = []
            exp_avg_sqs: list[torch.Tensor] = []
            mu_products: list[torch.Tensor] = []
            steps: list[torch.Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, mu_products, steps)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, weight_decay, momentum_decay, eps = (
                float(group["lr"]),
                group["weight_decay"],
                group["momentum_decay"],
                group["eps"],
            )
            torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
            if weight_decay != 0:
                if group["decoupled_weight_decay"]:
                    torch._foreach_mul_(params, 1 - lr * weight_decay)
                else:
                    grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
            roots = []
            for p, v in zip(params, exp_avg_sqs):
                root = self._roots.get(p)
                if root is None or root.shape != v.shape:
                    root = self._roots[p] = torch.empty_like(v, memory_format=torch.preserve_format)
                roots.append(torch.sqrt(v, out=root))
            counts = [step.item() for step in steps]
            bias_correction_sqrt = [(1 - beta2**t) ** 0.5 for t in counts]
            mus = [beta1 * (1.0 - 0.5 * (0.96 ** (t * momentum_decay))) for t in counts]
            mu_nexts = [beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * momentum_decay))) for t in counts]
            torch._foreach_mul_(mu_products, mus)
            torch._foreach_div_(roots, bias_correction_sqrt)
            torch._foreach_add_(roots, eps)
            products = [mu_product.item() for mu_product in mu_products]
            step_grads = [(lr * (1.0 - mu) / (1.0 - product)) * -1 for product, mu in zip(products, mus)]
            step_avgs = [(lr * mu_next / (1.0 - product * mu_next)) * -1 for product, mu_next in zip(products, mu_nexts)]
            torch._foreach_addcdiv_(params, grads, roots, step_grads)
            torch._foreach_addcdiv_(params, exp_avgs, roots, step_avgs)
        return None


def _optimizer(name: str, model: MLP, lr: float, momentum: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    # foreach: one multi-tensor kernel per operation; on CPU (where it is not the default)
    # it makes an NAdam step on a student ~3x faster (6 ms instead of 17 ms measured here).
    if name == "nadam":
        return NAdam(parameters, lr=lr, foreach=True, weight_decay=weight_decay, decoupled_weight_decay=True)
    if name == "adam":
        return (
            torch.optim.AdamW(parameters, lr=lr, foreach=True, weight_decay=weight_decay)
            if weight_decay
            else torch.optim.Adam(parameters, lr=lr, foreach=True)
        )
    raise ConfigError(f"The 'optimizer' parameter must be a str among {{'sgd', 'nadam', 'adam'}}. Got {name!r} instead.")


def _labelled_rows(X, y, device: torch.device, what: str) -> tuple[FeatureRows, torch.Tensor]:
    rows = FeatureRows(X, device)
    y_t = torch.as_tensor(np.array(y, dtype=np.float32))  # a copy: labels are small, and may be read-only
    if y_t.ndim == 1:
        y_t = y_t[:, None]
    if len(y_t) != len(rows):
        raise ValueError(f"The {what} set has {len(rows)} feature rows but {len(y_t)} labels.")
    if not torch.isfinite(y_t).all():
        raise ValueError(f"The {what} labels hold NaN or inf; drop unlabelled rows first.")
    return rows, y_t.to(device)


def student_fingerprint(
    config: Any, train: Any, model: Any, *, alpha: float, beta: float, batch_size: int, seed: int, n: tuple[int, int, int]
) -> dict[str, Any]:
    """What a student's checkpoint must match to be resumed: its settings and data sizes.

    Args:
        config: the student's settings (a :class:`serdistill.method.config.StudentConfig`).
        train: the :class:`serdistill.method.config.TrainConfig`.
        model: the MLP (or stack of MLPs), for ``in_dim`` and ``hidden``.
        n: rows of labelled training, unlabelled and development data.
    """
    return dict(
        kind="student",
        init=train.init,
        in_dim=model.in_dim,
        hidden=list(model.hidden),
        lr=config.lr,
        optimizer=config.optimizer,
        alpha=alpha,
        beta=beta,
        batch_size=batch_size,
        seed=seed,
        n_train=n[0],
        n_unlabelled=n[1],
        n_dev=n[2],
        head=config.head,
        mse=config.mse,
        weight_decay=config.weight_decay,
    )


def supervised_fingerprint(
    kind: str,
    train: Any,
    model: Any,
    *,
    dropout: float,
    lr: float,
    momentum: float,
    optimizer: str,
    batch_size: int,
    seed: int,
    n: tuple[int, int],
) -> dict[str, Any]:
    """What a teacher's (or baseline's) checkpoint must match to be resumed; ``n``: rows of
    training and development data."""
    return dict(
        kind=kind,
        init=train.init,
        in_dim=model.in_dim,
        hidden=list(model.hidden),
        dropout=dropout,
        lr=lr,
        momentum=momentum,
        optimizer=optimizer,
        batch_size=batch_size,
        seed=seed,
        n_train=n[0],
        n_dev=n[1],
    )


def _check_fingerprint(state: dict[str, Any], fingerprint: dict[str, Any], path: Any) -> None:
    saved = state.get("fingerprint", {})
    diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if state.get("format") != CHECKPOINT_FORMAT or diff:
        shown = ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in list(diff.items())[:5])
        raise ConfigError(
            f"Checkpoint {path} was written for a different run ({shown or 'another format'}). "
            "Delete it or use another output folder to start afresh."
        )
