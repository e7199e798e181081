"""Successive halving against the full grid on EmoDB folds: the same point chosen, and the cost.

On EmoDB (the shipped copy; arousal; no unlabelled data), for each of ``--halving-folds``
speaker folds (the experiment's fold split, fold k tested, fold k+1 developing), the paper
preset's teachers are trained once; then its students search a grid twice with the same
teachers and seed: every distinct alpha/beta ratio in full (``search = "grid"``, what the
paper's selection is) and ``search = "halving"``. Printed per fold: both choices, whether
they agree, the chosen point's development and test CCC, and the student epochs each
search trained. Cut down to run in minutes (the preset's lengths and grid are options):
teachers ``--halving-teacher-epochs`` (default 60), students ``--halving-student-epochs``
(default 30), grid ``--halving-grid`` values for both alpha and beta (default 0.1 0.3 0.5
0.7 0.9: 25 points, 19 ratios; halving trains them for 4, then 7 of them for 10, then 3 in
full). About 10 minutes for 3 folds on 2 cores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("halving")
    group.add_argument("--halving-folds", type=int, default=3, metavar="K", help="speaker folds (default 3, at least 3)")
    group.add_argument("--halving-teacher-epochs", type=int, default=60, metavar="N")
    group.add_argument("--halving-student-epochs", type=int, default=30, metavar="N")
    group.add_argument("--halving-grid", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9], metavar="V",
                       help="alpha and beta values of the grid (default 0.1 0.3 0.5 0.7 0.9)")


def run(args: argparse.Namespace) -> list[dict]:
    from benchmarks.bench_accuracy import emodb_dataset, normalised_splits
    from serdistill.method.config import apply_overrides, load_config
    from serdistill.method.ensemble import StudentEnsemble, TeacherEnsemble, halving_plan
    from serdistill.study.experiment import fold_data
    from serdistill.method.metrics import ccc

    folds = max(3, int(getattr(args, "halving_folds", 3)))
    grid = [float(v) for v in getattr(args, "halving_grid", [0.1, 0.3, 0.5, 0.7, 0.9])]
    values = "[" + ", ".join(f"{v:g}" for v in grid) + "]"
    config = apply_overrides(load_config("paper"), [
        'attributes=["arousal"]', 'unlabelled.source="none"', f"protocol.folds={folds}",
        f"teacher.epochs={int(getattr(args, 'halving_teacher_epochs', 60))}",
        f"student.epochs={int(getattr(args, 'halving_student_epochs', 30))}",
        f"student.alphas={values}", f"student.betas={values}"])
    halving = apply_overrides(config, ['student.search="halving"'])
    data = emodb_dataset()
    rows, agree = [], 0
    for fold in range(folds):
        splits = normalised_splits(fold_data(data, config, fold), ["arousal"])
        (X, y), (X_dev, y_dev), (X_test, y_test) = splits["train"], splits["development"], splits["test"]
        teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
        embeddings = teachers.embed(X)
        found = {}
        for name, cfg in (("grid", config), ("halving", halving)):
            tic = time.perf_counter()
            students = StudentEnsemble(cfg, seed=0).fit(X, y, X_dev, y_dev, embeddings=embeddings)
            trained = len([r for r in students.grid_ if "same_as" not in r])  # distinct ratios
            plan = halving_plan(trained, cfg.student.epochs, cfg.student.halving_factor) if name == "halving" else [
                (trained, cfg.student.epochs)]
            epochs = sum(n * e for n, e in plan) * len(embeddings)  # every student epoch this search ran
            test = float(ccc(students.predict(X_test).ravel(), y_test.ravel()))
            found[name] = (students.alpha_, students.beta_)
            rows.append({"fold": fold, "search": name, "chosen": f"({students.alpha_:g}, {students.beta_:g})",
                         "dev_ccc": round(students.dev_ccc_, 4), "test_ccc": round(test, 4),
                         "student_epochs": epochs, "seconds": round(time.perf_counter() - tic, 1)})
            print(f"  fold {fold}: {name} chose {rows[-1]['chosen']}, dev {rows[-1]['dev_ccc']}, test "
                  f"{rows[-1]['test_ccc']}, {epochs} student epochs, {rows[-1]['seconds']} s", flush=True)
        same = found["grid"] == found["halving"]
        agree += same
        rows[-1]["same_choice"] = "yes" if same else "no"
    ratios = len({round(a / (a + b), 12) for a in grid for b in grid})
    plan = halving_plan(ratios, config.student.epochs, config.student.halving_factor)
    rows.append({"fold": "all", "search": f"halving picked the full grid's point in {agree} of {folds} folds",
                 "chosen": " -> ".join(f"{n} x {e}" for n, e in plan) + " epochs"})
    return rows
