"""Stacked students against one student at a time: seconds per student epoch, on CPU or CUDA.

Students of the paper's shape (6,373 features, 2 x 512, NAdam, Eq. 1, frozen teacher head)
on synthetic rows (the cost does not depend on the values): ``--stacked-rows`` labelled rows
and a quarter as many unlabelled ones (MSP-Podcast's ratio), 1,000 development rows, one
timed epoch after one warm-up epoch, at the paper's batch (256) and the quick preset's (64);
the ways alternate, each run ``--stacked-repeats`` times, and its fastest run counts (on a
shared machine one run of the same code varied by 25%).
Four ways to train K = 5 students:

- ``separate``: :func:`~serdistill.method.training.fit_student` five times (the reference);
- ``stacked, 5 students of 1 point``: five seeds, so five batch streams (bmm on gathered batches);
- ``stacked, 1 student at 5 points``: one seed, so one batch feeds all five (what grid
  points of one teacher's student share);
- ``stacked code, each student alone``: stacks of one (the stacked layout of the weights,
  (in, out), without the batching).

Ratios are reference time / stacked time, measured in this run; ``[train] stacked = "auto"``
uses stacking where it wins (it is on for CUDA; the CPU figures are in docs/performance.md).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

D, H, K = 6373, 512, 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stacked")
    group.add_argument("--stacked-device", default="cpu", help="torch device (default cpu)")
    group.add_argument("--stacked-rows", type=int, default=5120, metavar="N",
                       help="labelled training rows (default 5,120: 20 steps of 256)")
    group.add_argument("--stacked-repeats", type=int, default=2, metavar="R",
                       help="runs of each way, alternating; the fastest counts (default 2)")


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from serdistill.method.config import StudentConfig, TrainConfig
    from serdistill.method.stacked import StudentJob, fit_students_stacked
    from serdistill.method.training import fit_student

    device = getattr(args, "stacked_device", "cpu")
    n = int(getattr(args, "stacked_rows", 5120))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, D)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    U = rng.normal(size=(n // 4, D)).astype(np.float32)
    X_dev, y_dev = rng.normal(size=(1000, D)).astype(np.float32), rng.normal(size=(1000, 1)).astype(np.float32)
    E = [rng.normal(size=(n, H)).astype(np.float32) for _ in range(K)]
    EU = [rng.normal(size=(n // 4, H)).astype(np.float32) for _ in range(K)]
    heads = [(rng.normal(size=(1, H)).astype(np.float32) * 0.05, np.zeros(1, np.float32)) for _ in range(K)]
    config = StudentConfig(hidden=(H, H), optimizer="nadam", lr=1e-4, head="frozen", weight_decay=10.0, epochs=2)
    print(f"  {n} labelled + {n // 4} unlabelled rows x {D}, device {device}, {torch.get_num_threads()} torch threads",
          flush=True)

    def timed(fn) -> float:
        """Seconds per student epoch: each student's second epoch (the first warms up), averaged."""
        results = fn()
        return sum(r.history[1]["seconds"] for r in results) / len(results)

    repeats = max(1, int(getattr(args, "stacked_repeats", 2)))
    rows = []
    for B in (256, 64):
        train = TrainConfig(batch_size=B, device=device)
        members = [StudentJob(target=E[i], target_unlabelled=EU[i], alpha=0.5, beta=0.5, seed=i, head=heads[i])
                   for i in range(K)]
        points = [StudentJob(target=E[0], target_unlabelled=EU[0], alpha=a, beta=1 - a, seed=0, head=heads[0])
                  for a in (0.1, 0.3, 0.5, 0.7, 0.9)]
        ways = {
            "separate (reference)": lambda: [fit_student(
                X, y, X_dev, y_dev, target=j.target, target_unlabelled=j.target_unlabelled, X_unlabelled=U,
                alpha=j.alpha, beta=j.beta, head=j.head, config=config, train=train, seed=j.seed) for j in members],
            f"stacked, {K} students of 1 point": lambda: fit_students_stacked(
                X, y, X_dev, y_dev, members, X_unlabelled=U, config=config, train=train),
            f"stacked, 1 student at {K} points": lambda: fit_students_stacked(
                X, y, X_dev, y_dev, points, X_unlabelled=U, config=config, train=train),
            "stacked code, each student alone (K = 1)": lambda: [r for j in members for r in fit_students_stacked(
                X, y, X_dev, y_dev, [j], X_unlabelled=U, config=config, train=train)],
        }
        # the ways alternate, each run `repeats` times; its fastest run counts (noise only slows)
        seconds: dict[str, float] = {}
        for _ in range(repeats):
            for name, way in ways.items():
                seconds[name] = min(seconds.get(name, float("inf")), timed(way))
        reference = seconds["separate (reference)"]
        for name, value in seconds.items():
            rows.append({"batch": B, "way": name, "s_per_student_epoch": round(value, 3),
                         "ratio": round(reference / value, 2)})
        print(f"  batch {B}: " + ", ".join(f"{name.split(' (')[0]} {value:.2f} s" for name, value in seconds.items()),
              flush=True)
    return rows
