"""How many epochs the paper's teachers and students need, on the largest real data here.

Trains, on EmoDB (the shipped copy; arousal; 309 training segments), the paper preset's 5
teachers (150 epochs) and 5 students (50 epochs, alpha = beta = 0.5) without early stopping,
and prints each model's best development epoch and where patience 5, 10 and 20 (epochs
without a better development CCC) would have stopped it, with the CCC it would have kept.
Information only (no target): EmoDB's epochs are 2 steps of 256; on MSP-Podcast (34,280
segments) an epoch is 134 steps, so these counts do not transfer (docs/experiment.md).
About 2 minutes on 2 cores.
"""
from __future__ import annotations

import argparse

import numpy as np

PATIENCE = (5, 10, 20)


def stop_at(dev: np.ndarray, patience: int) -> int:
    """The epoch (1-based) at which ``patience`` epochs without a better CCC stop training."""
    best, last = -np.inf, 0
    for epoch, value in enumerate(dev, 1):
        if value > best:
            best, last = value, epoch
        elif epoch - last >= patience:
            return epoch
    return len(dev)


def histories() -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Each paper-preset teacher's and student's development CCC per epoch on EmoDB (no early
    stopping), and each kind's epochs."""
    from benchmarks.bench_accuracy import emodb_dataset, normalised_splits
    from serdistill.method.config import apply_overrides, load_config
    from serdistill.method.ensemble import StudentEnsemble, TeacherEnsemble

    config = apply_overrides(load_config("paper"), ['attributes=["arousal"]', 'unlabelled.source="none"',
                                                    "student.alphas=[0.5]", "student.betas=[0.5]"])
    splits = normalised_splits(emodb_dataset(), ["arousal"])
    (X, y), (X_dev, y_dev) = splits["train"], splits["development"]
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    heads = teachers.heads() if config.student.head != "own" else None
    students = StudentEnsemble(config, seed=0).fit(X, y, X_dev, y_dev, embeddings=teachers.embed(X), heads=heads)
    curves = {kind: [np.array([e["dev_ccc"] for e in history], dtype=float) for history in found]
              for kind, found in (("teacher", teachers.histories_), ("student", students.histories_))}
    return curves, {"teacher": config.teacher.epochs, "student": config.student.epochs}


def epochs_used(patience: int) -> dict[str, float]:
    """The fraction of its epochs each model kind of the paper preset runs with ``patience``, on
    EmoDB (mean over the 5 models; the baseline counted as a teacher)."""
    curves, epochs = histories()
    used = {kind: float(np.mean([stop_at(dev, patience) for dev in found])) / epochs[kind]
            for kind, found in curves.items()}
    return {"baseline": used["teacher"], **used}


def run(args: argparse.Namespace) -> list[dict]:
    curves, _ = histories()
    rows = []
    for kind, found in curves.items():
        for i, dev in enumerate(found, 1):
            row = {"run": f"{kind} {i}", "epochs": len(dev), "best_epoch": int(np.nanargmax(dev)) + 1,
                   "best_dev": round(float(np.nanmax(dev)), 3)}
            for patience in PATIENCE:
                stop = stop_at(dev, patience)
                kept = float(np.nanmax(dev[:stop]))
                row[f"p{patience}_stop"] = stop
                row[f"p{patience}_loss"] = round(float(np.nanmax(dev)) - kept, 3)
            rows.append(row)
    return rows
