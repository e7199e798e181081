"""Students (or teachers) trained as one stacked network (issue 17): the same models, fewer kernel calls.

K students of one architecture become one :class:`StackedMLP` whose weights have shape
(K, in, out); a mini-batch runs through all K with batched matrix products. Everything
that makes a student itself stays its own: its initial weights (drawn exactly as
:func:`~serdistill.method.training.fit_student` draws them), its batch order (its own shuffle
generator: students that share a seed share the stream, and then one gathered batch feeds
them all), its loss weights and teacher embedding, its optimizer state, its development
score, best epoch and early stop. The optimizers are element-wise (NAdam, Adam, SGD), so
one optimizer over the stacked parameters takes exactly the K separate optimizers' steps;
the only differences from training the K students one at a time are the rounding of the
batched products (a test holds predictions to 1e-5 and the best epochs equal). A student
whose early stop comes leaves the stack (its rows and optimizer state are cut out), so the
stack never trains a finished student. Teachers stack the same way
(:func:`fit_teachers_stacked`), each drawing its dropout masks from its own generator.

Whether it pays depends on the device: on CUDA one launch serves K students (the default
there, ``[train] stacked = "auto"``); on this 2-core CPU the products cost the same FLOPs
either way and the measured speed decides (``python -m benchmarks stacked``,
docs/performance.md).

Examples:
    >>> import numpy as np
    >>> from serdistill.method.config import StudentConfig, TeacherConfig, TrainConfig
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6)).astype(np.float32)
    >>> y = X[:, :1].copy()
    >>> E = rng.normal(size=(40, 4)).astype(np.float32)
    >>> jobs = [StudentJob(target=E, alpha=a, beta=0.5, seed=1) for a in (0.2, 0.5)]
    >>> results = fit_students_stacked(X, y, X, y, jobs, config=StudentConfig(hidden=(4,), epochs=3),
    ...                                train=TrainConfig(batch_size=8))
    >>> [len(r.history) for r in results]
    [3, 3]
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serdistill.data.feature_rows import FeatureRows
from serdistill.method import torch_state
from serdistill.method.config import StudentConfig, TeacherConfig, TrainConfig
from serdistill.method.metrics import ccc_loss, ccc_torch
from serdistill.method.models import MLP, keep_mask
from serdistill.method.training import (
    EpochHook,
    FitResult,
    Schedule,
    _check_fingerprint,
    _labelled_rows,
    _new_model,
    _optimizer,
    batch_schedule,
    batches,
    n_batches,
    set_output_layer,
    student_fingerprint,
    student_weights,
    supervised_fingerprint,
)

logger = logging.getLogger(__name__)
_PREDICT_ROWS = 8192


class StackedMLP(nn.Module):
    """K same-shaped :class:`~serdistill.method.models.MLP` (each with its own dropout rate) as one network.

    Hidden layer j holds ``weights[j]`` (K, in, out) and ``biases[j]`` (K, 1, out); the
    output layer ``out_weight`` (K, H, k) and ``out_bias`` (K, 1, k); the label scaling
    ``output_scale`` and ``output_shift`` (K, 1, k). :meth:`member` gives member k back as
    the MLP's state dict.

    Examples:
        >>> nets = [MLP(5, (3,), generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
        >>> stack = StackedMLP(nets)
        >>> x = torch.randn(4, 5)
        >>> bool(torch.allclose(stack(x)[1], nets[1](x), atol=1e-6))
        True
    """

    out_weight: nn.Parameter
    out_bias: nn.Parameter
    output_scale: torch.Tensor
    output_shift: torch.Tensor
    rates: torch.Tensor

    def __init__(self, models: Sequence[MLP], *, train_output: bool = True) -> None:
        super().__init__()
        first = models[0]
        if any((m.in_dim, m.hidden, m.out_dim) != (first.in_dim, first.hidden, first.out_dim) for m in models):
            raise ValueError("A stack needs members of one architecture (in_dim, hidden, out_dim).")
        self.in_dim, self.hidden, self.out_dim = first.in_dim, first.hidden, first.out_dim

        def stack(get: Any, bias: bool = False) -> nn.Parameter:
            value = torch.stack([get(m).detach() for m in models])
            return nn.Parameter((value[:, None, :] if bias else value).contiguous())

        self.weights = nn.ParameterList(stack(lambda m, j=j: m.linears[j].weight.t()) for j in range(len(self.hidden)))
        self.biases = nn.ParameterList(stack(lambda m, j=j: m.linears[j].bias, True) for j in range(len(self.hidden)))
        self.out_weight = stack(lambda m: m.output.weight.t())
        self.out_bias = stack(lambda m: m.output.bias, True)
        self.out_weight.requires_grad_(train_output)
        self.out_bias.requires_grad_(train_output)
        self.register_buffer("output_scale", torch.stack([m.output_scale for m in models])[:, None, :].clone())
        self.register_buffer("output_shift", torch.stack([m.output_shift for m in models])[:, None, :].clone())
        self.register_buffer("rates", torch.tensor([m.dropout for m in models], dtype=torch.float64))

    def __len__(self) -> int:
        return int(self.out_weight.shape[0])

    def forward_hidden(
        self, x: torch.Tensor, *, generators: Sequence[torch.Generator] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (K, n, k) and last hidden layers (K, n, H, after the ReLU, before dropout) for
        inputs (n, d), shared, or (K, n, d).

        In training mode, member k's dropout masks come from ``generators[k]`` with
        :func:`~serdistill.method.models.keep_mask`, layer by layer: the masks the member's own
        :class:`MLP` draws from that generator.
        """
        rates = self.rates.tolist()
        drop = self.training and any(rates)
        if drop and (generators is None or len(generators) != len(rates)):
            raise ValueError(f"Training a stack with dropout needs one generator per member ({len(rates)}).")
        h = last = x
        for w, b in zip(self.weights, self.biases):
            last = h = (torch.matmul(h, w).add_(b) if h.ndim == 2 else torch.baddbmm(b, h, w)).relu_()
            if drop:
                h = h * self._masks(h, rates, generators)  # type: ignore[arg-type]
        out = torch.baddbmm(self.out_bias, h, self.out_weight)
        return torch.addcmul(self.output_shift, out, self.output_scale), last

    @staticmethod
    def _masks(h: torch.Tensor, rates: list[float], generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Each member's keep-mask times 1/(1 − p) (ones where p = 0: no draw), (K, n, width)."""
        masks = torch.ones_like(h)
        for k, (p, gen) in enumerate(zip(rates, generators)):
            if p > 0:
                keep = keep_mask(h.shape[1:], p, generator=gen, device=h.device)
                masks[k] = keep.to(h.dtype).mul_(1.0 / (1.0 - p))
        return masks

    def forward(self, x: torch.Tensor, *, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        return self.forward_hidden(x, generators=generators)[0]

    @torch.no_grad()
    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k`` as an :class:`MLP` state dict (copies)."""
        state: dict[str, torch.Tensor] = {}
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"layers.{j}.weight"] = w[k].t().clone()
            state[f"layers.{j}.bias"] = b[k, 0].clone()
        state["output.weight"] = self.out_weight[k].t().clone()
        state["output.bias"] = self.out_bias[k, 0].clone()
        state["output_scale"] = self.output_scale[k, 0].clone()
        state["output_shift"] = self.output_shift[k, 0].clone()
        return state

    @torch.no_grad()
    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the members ``rows`` (in that order), in place; the parameters are new tensors."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.out_weight.device)
        for params in (self.weights, self.biases):
            for j, p in enumerate(params):
                params[j] = nn.Parameter(p.index_select(0, index).contiguous(), requires_grad=p.requires_grad)
        for name in ("out_weight", "out_bias"):
            p = getattr(self, name)
            setattr(self, name, nn.Parameter(p.index_select(0, index).contiguous(), requires_grad=p.requires_grad))
        for name in ("output_scale", "output_shift", "rates"):
            setattr(self, name, getattr(self, name).index_select(0, index.to(getattr(self, name).device)).contiguous())


def keep_optimizer_rows(opt: torch.optim.Optimizer, new: torch.optim.Optimizer, rows: Sequence[int], size: int) -> None:
    """Load into ``new`` (over the kept parameters) the state of ``opt`` for the members ``rows``.

    Every per-element state tensor whose first dimension is the stack's ``size`` is cut to
    ``rows``; scalars (NAdam's step and mu product) are shared by the members and kept.
    """
    state = opt.state_dict()
    index = torch.as_tensor(list(rows), dtype=torch.long)
    for per_param in state["state"].values():
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == size:
                per_param[key] = value.index_select(0, index.to(value.device))
    new.load_state_dict(state)


@dataclass(frozen=True)
class StudentJob:
    """One student of a stack: its teacher's embedding, its loss weights and seed.

    Attributes:
        target, target_unlabelled: teacher i's embedding of the labelled (n, H) and the
            unlabelled (m, H) rows; students that share the array share its batches.
        alpha, beta: the loss weights of Eq. 1 (normalised as :func:`fit_student` does).
        seed: the student's seed (initial weights and batch order, as in :func:`fit_student`).
        head: teacher i's output layer (weight, bias), for ``[student] head`` ``teacher``/``frozen``.
        name: the student's name in its history and log.
        on_epoch: called after each of its epochs, as :func:`fit_student`'s hook.
    """

    target: Any
    alpha: float
    beta: float
    seed: int
    target_unlabelled: Any = None
    head: tuple[np.ndarray, np.ndarray] | None = None
    name: str = "student"
    on_epoch: EpochHook | None = None


def fit_students_stacked(
    X: np.ndarray,
    y: np.ndarray,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    jobs: Sequence[StudentJob],
    *,
    X_unlabelled: np.ndarray | None = None,
    config: StudentConfig = StudentConfig(),
    train: TrainConfig = TrainConfig(),
    checkpoint: str | os.PathLike[str] | None = None,
) -> list[FitResult]:
    """Train the students ``jobs`` together; each result equals :func:`fit_student`'s for that job.

    Args:
        X, y, X_dev, y_dev, X_unlabelled, config, train: as :func:`fit_student` (shared by
            every job).
        jobs: the students (:class:`StudentJob`).
        checkpoint: one file for the whole stack: written every ``train.checkpoint_every``
            epochs and when a student stops, resumed from when it exists.

    Returns:
        One :class:`FitResult` per job, in order, each with its best epoch's weights.
    """
    if not jobs:
        return []
    device = torch_state.resolve_device(train.device)
    X_r, y_t = _labelled_rows(X, y, device, "training")
    U_r = FeatureRows.optional(X_unlabelled, device, X_r.width)
    if len(U_r) and any(job.target_unlabelled is None for job in jobs):
        raise ValueError("fit_students_stacked got X_unlabelled but a job without target_unlabelled.")
    B, n, m = train.batch_size, len(X_r), len(U_r)

    # the members' initial networks, exactly as fit_student makes them
    models = []
    for job in jobs:
        model = _new_model(X_r.width, config.hidden, 0.0, y_t, train, job.seed, device)
        width = int(np.shape(job.target)[1])
        if model.hidden[-1] != width:
            raise ValueError(
                f"The student's last hidden layer has {model.hidden[-1]} units but the teacher "
                f"embedding has {width}; they must match."
            )
        if config.head in ("teacher", "frozen"):
            if job.head is None:
                raise ValueError(f"[student] head = {config.head!r} needs each job's teacher output layer (head=).")
            set_output_layer(model, job.head)
        models.append(model)
    stack = StackedMLP(models, train_output=config.head != "frozen").to(device)
    del models

    # per job: loss weights; shared arrays gathered once
    weights = [student_weights(j.alpha, j.beta, j.target, config) for j in jobs]
    w_alpha = torch.tensor([w[0] for w in weights], dtype=torch.float32, device=device)
    w_beta = torch.tensor([w[1] for w in weights], dtype=torch.float32, device=device)
    targets: dict[int, FeatureRows] = {}  # id(array) -> its rows
    for job in jobs:
        for array in (job.target, job.target_unlabelled):
            if array is not None and id(array) not in targets:
                targets[id(array)] = FeatureRows(array, device)
    buf_t = torch.empty((B + 1, stack.hidden[-1]), device=device)

    def loss(batch: _Batch) -> torch.Tensor:
        prediction, hidden = stack.forward_hidden(batch.x, generators=batch.dropout)
        target = _member_rows(
            jobs, batch.active, batch.kind, targets, batch.idxs, batch.member_stream, batch.shared, buf_t[: batch.size]
        )
        losses = w_beta[batch.active] * (hidden - target).square().mean(dim=(1, 2))
        if batch.kind == "labelled":
            losses = losses + w_alpha[batch.active] * _ccc_loss_members(prediction, batch.labels(y_t))
        return losses

    fingerprints = [
        student_fingerprint(
            config, train, stack, alpha=j.alpha, beta=j.beta, batch_size=B, seed=j.seed, n=(n, m, len(X_dev))
        )
        for j in jobs
    ]
    return _stacked_loop(
        stack,
        seeds=[j.seed for j in jobs],
        names=[j.name for j in jobs],
        hooks=[j.on_epoch for j in jobs],
        plan=lambda gen, limit: batch_schedule(n, m, B, generator=gen)[: limit * (2 if m else 1)],
        loss=loss,
        rows={"labelled": X_r, "unlabelled": U_r},
        optimizer=lambda: _optimizer(config.optimizer, stack, config.lr, 0.0, config.weight_decay),  # type: ignore[arg-type]
        schedule=Schedule.of(config, max(n_batches(n, B), n_batches(m, B) if m else 0)),
        X_dev=X_dev,
        y_dev=y_dev,
        train=train,
        device=device,
        checkpoint=checkpoint,
        fingerprint={"stack": fingerprints},
    )


def fit_teachers_stacked(
    X: np.ndarray,
    y: np.ndarray,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    *,
    dropouts: Sequence[float],
    seeds: Sequence[int],
    names: Sequence[str] | None = None,
    hooks: Sequence[EpochHook | None] | None = None,
    config: TeacherConfig = TeacherConfig(),
    train: TrainConfig = TrainConfig(),
    checkpoint: str | os.PathLike[str] | None = None,
) -> list[FitResult]:
    """Train teachers with the rates ``dropouts`` and the seeds ``seeds`` together; each result
    equals :func:`~serdistill.method.training.fit_teacher`'s (its own weights, batch order and dropout
    masks, drawn from its own generators in the same order)."""
    device = torch_state.resolve_device(train.device)
    X_r, y_t = _labelled_rows(X, y, device, "training")
    B, n = train.batch_size, len(X_r)
    models = [_new_model(X_r.width, config.hidden, p, y_t, train, s, device) for p, s in zip(dropouts, seeds)]
    stack = StackedMLP(models).to(device)
    del models

    def loss(batch: _Batch) -> torch.Tensor:
        prediction = stack(batch.x, generators=batch.dropout)
        return _ccc_loss_members(prediction, batch.labels(y_t))

    fingerprints = [
        supervised_fingerprint(
            "teacher",
            train,
            stack,
            dropout=p,
            lr=config.lr,
            momentum=config.momentum,
            optimizer=config.optimizer,
            batch_size=B,
            seed=s,
            n=(n, len(X_dev)),
        )
        for p, s in zip(dropouts, seeds)
    ]
    return _stacked_loop(
        stack,
        seeds=list(seeds),
        names=list(names or [f"teacher {i + 1}" for i in range(len(seeds))]),
        hooks=list(hooks or [None] * len(seeds)),
        plan=lambda gen, limit: [("labelled", b) for b in batches(n, B, generator=gen)[:limit]],
        loss=loss,
        rows={"labelled": X_r},
        optimizer=lambda: _optimizer(config.optimizer, stack, config.lr, config.momentum),  # type: ignore[arg-type]
        schedule=Schedule.of(config, n_batches(n, B)),
        X_dev=X_dev,
        y_dev=y_dev,
        train=train,
        device=device,
        checkpoint=checkpoint,
        fingerprint={"stack": fingerprints},
    )


@dataclass
class _Batch:
    """One step's mini-batch for the active members of a stack."""

    kind: str
    idxs: list[torch.Tensor]  # one index tensor per live stream
    x: torch.Tensor  # (n, d) shared by every member, or (K, n, d)
    active: list[int]
    member_stream: torch.Tensor  # each active member's position among the live streams
    shared: bool
    dropout: list[torch.Generator]  # each active member's dropout generator

    @property
    def size(self) -> int:
        return len(self.idxs[0])

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        """The batch's labels: (n, k) when shared, else (K, n, k)."""
        if self.shared:
            return y[self.idxs[0]]
        return torch.stack([y[idx] for idx in self.idxs]).index_select(0, self.member_stream)


def _stacked_loop(
    stack: StackedMLP,
    *,
    seeds: list[int],
    names: list[str],
    hooks: list[EpochHook | None],
    plan: Callable[[torch.Generator, int], list[tuple[str, torch.Tensor]]],
    loss: Callable[[_Batch], torch.Tensor],
    rows: dict[str, FeatureRows],
    optimizer: Callable[[], torch.optim.Optimizer],
    schedule: Schedule,
    X_dev: np.ndarray,
    y_dev: np.ndarray,
    train: TrainConfig,
    device: torch.device,
    checkpoint: str | os.PathLike[str] | None,
    fingerprint: dict[str, Any],
) -> list[FitResult]:
    """The epoch loop of a stack, as ``training._loop`` is for one model: per member, train,
    score, keep the best, stop early; cut the stopped members out; checkpoint the whole stack."""
    K, B = len(seeds), train.batch_size
    streams = list(dict.fromkeys(seeds))  # one batch stream per distinct seed
    stream_of = [streams.index(s) for s in seeds]
    opt = optimizer()
    gens = [torch_state.make_generator(torch_state.derive_seed(s, "shuffle")) for s in streams]
    dropout = [torch_state.make_generator(torch_state.derive_seed(s, "dropout"), device) for s in seeds]
    active = list(range(K))  # the members still in the stack, in stack order
    results = [
        FitResult(
            model=MLP(
                stack.in_dim, stack.hidden, dropout=float(stack.rates[k]), out_dim=stack.out_dim, generator=torch.Generator()
            ),
            best_score=-math.inf,
        )
        for k in range(K)
    ]
    best: list[dict[str, torch.Tensor] | None] = [None] * K
    epoch = 0
    dev, yd = _labelled_rows(X_dev, y_dev, device, "development")

    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch_state.load_checkpoint(checkpoint, map_location=device)
        _check_fingerprint(state, fingerprint, checkpoint)
        epoch, active = int(state["epoch"]), list(state["active"])
        if active:
            if active != list(range(K)):
                stack.keep(active)
                opt = optimizer()
            stack.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        for gen, saved in zip(gens + dropout, state["rng"]):
            gen.set_state(saved.cpu())
        best = list(state["best_model"])
        for result, saved in zip(results, state["results"]):
            result.history, result.best_epoch, result.best_score = list(saved[0]), int(saved[1]), float(saved[2])
            result.stopped_early = bool(saved[3])
        logger.info("stack of %d: resumed from %s after epoch %d", K, checkpoint, epoch)

    def save() -> None:
        if checkpoint is None:  # only called with a checkpoint file
            return
        torch_state.save_checkpoint(
            checkpoint,
            {
                "format": torch_state.CHECKPOINT_FORMAT,
                "fingerprint": fingerprint,
                "epoch": epoch,
                "active": active,
                "model": stack.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": [g.get_state() for g in gens + dropout],
                "best_model": best,
                "results": [(r.history, r.best_epoch, r.best_score, r.stopped_early) for r in results],
            },
        )

    buf_x = torch.empty((len(streams) * (B + 1), rows["labelled"].width), device=device)
    while active:
        tic = time.perf_counter()
        limit = schedule.limit(epoch)
        live = sorted({stream_of[k] for k in active})
        plans = {s: plan(gens[s], limit) for s in live}
        member_stream = torch.as_tensor([live.index(stream_of[k]) for k in active], device=device)
        shared = len(live) == 1
        totals = {kind: torch.zeros(len(active), dtype=torch.float64, device=device) for kind in rows}
        counts = dict.fromkeys(rows, 0)
        stack.train()
        steps = len(plans[live[0]])
        for t in range(steps):
            kind = plans[live[0]][t][0]
            idxs = [plans[s][t][1].to(device) for s in live]
            size = len(idxs[0])
            if shared:  # one batch feeds every member
                x = rows[kind].gather(idxs[0], buf_x[:size])
            else:  # one gather for every stream's batch
                x = rows[kind].gather(torch.cat(idxs), buf_x[: size * len(idxs)]).view(len(idxs), size, -1)
                if len(live) != len(active):
                    x = x.index_select(0, member_stream)
            losses = loss(
                _Batch(
                    kind=kind,
                    idxs=idxs,
                    x=x,
                    active=active,
                    member_stream=member_stream,
                    shared=shared,
                    dropout=[dropout[k] for k in active],
                )
            )
            opt.zero_grad()
            losses.sum().backward()
            opt.step()
            totals[kind] += losses.detach().double() * size
            counts[kind] += size
        scores = _dev_scores(stack, dev, yd)
        dev.release()
        epoch += 1
        seconds = (time.perf_counter() - tic) / len(active)
        finished = []
        for pos, k in enumerate(active):
            result = results[k]
            score = scores[pos]
            if score > result.best_score or best[k] is None:
                result.best_score, result.best_epoch = score, epoch
                best[k] = stack.member(pos)
            last = schedule.stop(epoch, result.best_epoch)
            info: dict[str, Any] = {"name": names[k], "epoch": epoch, "epochs": schedule.epochs}
            if "unlabelled" in rows:
                for key in ("labelled", "unlabelled"):
                    info[f"loss_{key}"] = float(totals[key][pos]) / counts[key] if counts[key] else float("nan")
                info["train_loss"] = info["loss_labelled"]
            else:
                info["train_loss"] = float(totals["labelled"][pos]) / max(counts["labelled"], 1)
            info.update(
                steps=steps,
                dev_ccc=score,
                best_dev_ccc=result.best_score,
                best_epoch=result.best_epoch,
                seconds=seconds,
                last=last,
                stopped_early=last and epoch < schedule.epochs,
                stacked=len(active),
            )
            result.history.append(info)
            if hooks[k] is not None:
                hooks[k](dict(info))  # type: ignore[misc]
            if last:
                result.stopped_early = epoch < schedule.epochs
                finished.append(k)
        if finished:
            keep = [pos for pos, k in enumerate(active) if k not in finished]
            active = [active[pos] for pos in keep]
            if active:
                old, size = opt, len(stack)
                stack.keep(keep)
                opt = optimizer()
                keep_optimizer_rows(old, opt, keep, size)
        if checkpoint is not None and (epoch % train.checkpoint_every == 0 or finished):
            save()

    for k, result in enumerate(results):
        result.model.load_state_dict(best[k])  # type: ignore[arg-type]
        result.model.to(device).eval()
        if not math.isfinite(result.best_score):
            result.best_score = float("nan")
    return results


def _ccc_loss_members(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − CCC`` per member (K,) for predictions (K, n, k) and labels (n, k) or (K, n, k)."""
    target = target.transpose(0, 1) if target.ndim == 3 else target[:, None].expand(-1, len(prediction), -1)
    return ccc_loss(prediction.transpose(0, 1), target, per_column=True).mean(dim=-1)


def _member_rows(
    jobs: Sequence[StudentJob],
    active: list[int],
    kind: str,
    targets: dict[int, FeatureRows],
    idxs: list[torch.Tensor],
    member_stream: torch.Tensor,
    shared: bool,
    buf: torch.Tensor,
) -> torch.Tensor:
    """The teacher-embedding rows of this batch: (n, H) when every member shares them, else (K, n, H)."""
    arrays = [jobs[k].target if kind == "labelled" else jobs[k].target_unlabelled for k in active]
    if shared and all(a is arrays[0] for a in arrays):
        return targets[id(arrays[0])].gather(idxs[0], buf)
    streams = member_stream.tolist()
    return torch.stack([targets[id(a)].tensor[idxs[s]] for a, s in zip(arrays, streams)])


@torch.no_grad()
def _dev_scores(stack: StackedMLP, X: FeatureRows, y: torch.Tensor) -> list[float]:
    """Each member's mean development CCC; -inf where undefined (as ``training._dev_ccc``)."""
    if len(X) == 0:
        return [-math.inf] * len(stack)
    stack.eval()
    out = torch.cat([stack(block) for _, block in X.blocks(_PREDICT_ROWS)], dim=1)
    scores = []
    for k in range(len(out)):
        score = float(ccc_torch(out[k], y).mean())
        scores.append(score if math.isfinite(score) else -math.inf)
    return scores
