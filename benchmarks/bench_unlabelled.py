"""Why unlabelled batches hurt students: own, teacher and frozen output layers on EmoDB speaker folds.

For each fold and attribute (``--unlabelled-folds``, ``--unlabelled-attributes``): the
default preset's teachers once, then the students of every ``--unlabelled-heads`` with and
without the test segments as unlabelled data. Per variant it prints the students'
ensemble test CCC, and two measures of *how* the students predict:

- ``head_on_emb``: each student's output layer applied to its teacher's embedding of the
  test segments (CCC, mean over students). Near 0: the student reads the label from the
  residual between its hidden layer and the embedding, not from what it matched.
- ``mse_rel``: the MSE between student hidden layer and teacher embedding, relative to the
  embedding's mean square, on train, development and test.

Target: with the teacher's output layer, unlabelled data does not lower the students' test
CCC in the mean over the folds run. The numbers behind docs/experiment.md, "The unlabelled
branch".
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.bench_accuracy import emodb_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("unlabelled")
    group.add_argument("--unlabelled-folds", default="0,1,2,3,4", metavar="LIST", help="folds of 5 (default: all)")
    group.add_argument("--unlabelled-attributes", default="arousal", metavar="LIST",
                       help="attributes (default: arousal)")
    group.add_argument("--unlabelled-heads", default="own,teacher,frozen", metavar="LIST",
                       help="student heads to compare (default: own,teacher,frozen)")
    group.add_argument("--unlabelled-config", default="default", metavar="CONFIG", help="preset or file (default: default)")
    group.add_argument("--unlabelled-set", action="append", default=[], metavar="KEY=VALUE",
                       help="config overrides (repeatable)")


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from serdistill.method.config import apply_overrides, load_config
    from serdistill.data.corpora import build_manifest
    from serdistill.data.dataset import load_dataset
    from serdistill.method.ensemble import StudentEnsemble, TeacherEnsemble
    from serdistill.study.experiment import fold_data
    from serdistill.method.metrics import ccc
    from serdistill.method.training import derive_seed

    data = load_dataset(build_manifest("emodb", emodb_root()), workers=os.cpu_count() or 1, verbose=False)
    rows = []
    for attribute in args.unlabelled_attributes.split(","):
        base = apply_overrides(load_config(args.unlabelled_config),
                               [*args.unlabelled_set, "protocol.folds=5", f'attributes=["{attribute}"]'])
        for fold in (int(f) for f in args.unlabelled_folds.split(",")):
            split = fold_data(data, base, fold)
            normaliser = split.normaliser()
            (X, y), (X_dev, y_dev), (X_test, y_test) = (split.arrays(s, attributes=(attribute,), normaliser=normaliser)
                                                         for s in ("train", "development", "test"))
            seed = derive_seed(base.seed, "fold", fold)
            teachers = TeacherEnsemble(base, seed=seed).fit(X, y, X_dev, y_dev)
            emb = {name: teachers.mc_stack(A).embeddings for name, A in (("train", X), ("dev", X_dev), ("test", X_test))}
            teacher_ccc = ccc(np.asarray(teachers.predict(X_test), np.float64).ravel(), y_test[:, 0].astype(np.float64))
            for head in args.unlabelled_heads.split(","):
                config = base.updated({"student": {"head": head}})
                for unlabelled in (False, True):
                    students = StudentEnsemble(config, seed=seed).fit(
                        X, y, X_dev, y_dev, embeddings=emb["train"], heads=teachers.heads(),
                        X_unlabelled=X_test if unlabelled else None,
                        embeddings_unlabelled=emb["test"] if unlabelled else None)
                    members = students.predict_members(X_test)[:, :, 0]
                    on_emb, mse = [], {k: [] for k in emb}
                    with torch.no_grad():
                        for i, model in enumerate(students.models_):
                            E = torch.as_tensor(np.asarray(emb["test"][i]))
                            out = model.output(E) * model.output_scale + model.output_shift
                            on_emb.append(ccc(out[:, 0].double().numpy(), y_test[:, 0].astype(np.float64)))
                            for name, A in (("train", X), ("dev", X_dev), ("test", X_test)):
                                _, hidden = model.forward_hidden(torch.as_tensor(A))
                                target = torch.as_tensor(np.asarray(emb[name][i]))
                                mse[name].append(float(((hidden - target) ** 2).mean() / (target ** 2).mean()))
                    rows.append({
                        "attribute": attribute, "fold": fold, "head": head, "unlabelled": "test" if unlabelled else "none",
                        "students": ccc(members.mean(axis=0).astype(np.float64), y_test[:, 0].astype(np.float64)),
                        "members": float(np.mean([ccc(m.astype(np.float64), y_test[:, 0].astype(np.float64))
                                                  for m in members])),
                        "teachers": teacher_ccc, "head_on_emb": float(np.mean(on_emb)),
                        **{f"mse_rel_{k}": float(np.mean(v)) for k, v in mse.items()},
                    })
                    print(rows[-1], flush=True)
    for head in args.unlabelled_heads.split(","):
        for attribute in args.unlabelled_attributes.split(","):
            pick = [r for r in rows if r["head"] == head and r["attribute"] == attribute]
            gain = np.mean([r["students"] for r in pick if r["unlabelled"] == "test"]) - \
                np.mean([r["students"] for r in pick if r["unlabelled"] == "none"])
            rows.append({"attribute": attribute, "head": head, "unlabelled": "test - none", "students": gain,
                         **({"target": f"{attribute}, head {head}: unlabelled data does not lower the students",
                             "passed": bool(gain >= 0)} if head != "own" else {})})
    return rows
