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


def run(args: argparse.Namespace) -> list[dict]:
    from benchmarks.bench_accuracy import emodb_root
    from serdistill.config import apply_overrides, load_config
    from serdistill.corpora import build_manifest
    from serdistill.dataset import load_dataset
    from serdistill.ensemble import StudentEnsemble, TeacherEnsemble

    config = apply_overrides(load_config("paper"), ['attributes=["arousal"]', 'unlabelled.source="none"',
                                                    "student.alphas=[0.5]", "student.betas=[0.5]"])
    data = load_dataset(build_manifest("emodb", emodb_root()), verbose=False)
    normaliser = data.normaliser()
    X, y = data.arrays("train", attributes=["arousal"], normaliser=normaliser)
    X_dev, y_dev = data.arrays("development", attributes=["arousal"], normaliser=normaliser)
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    heads = teachers.heads() if config.student.head != "own" else None
    students = StudentEnsemble(config, seed=0).fit(X, y, X_dev, y_dev, embeddings=teachers.embed(X), heads=heads)
    rows = []
    for kind, histories in (("teacher", teachers.histories_), ("student", students.histories_)):
        for i, history in enumerate(histories, 1):
            dev = np.array([e["dev_ccc"] for e in history], dtype=float)
            row = {"run": f"{kind} {i}", "epochs": len(dev), "best_epoch": int(np.nanargmax(dev)) + 1,
                   "best_dev": round(float(np.nanmax(dev)), 3)}
            for patience in PATIENCE:
                stop = stop_at(dev, patience)
                kept = float(np.nanmax(dev[:stop]))
                row[f"p{patience}_stop"] = stop
                row[f"p{patience}_loss"] = round(float(np.nanmax(dev)) - kept, 3)
            rows.append(row)
    return rows
