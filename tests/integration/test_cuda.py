"""The GPU path (``--device cuda``): skipped where torch sees no CUDA device, as in CI.

Where one is there (e.g. the project's lent GPU machine: ``make test`` or
``pytest tests/integration/test_cuda.py`` on it), every training and inference path runs
on it: MC dropout's fast path against its naive form with the same masks, a whole
TSModel, a bundle trained on the GPU used on the CPU, and the ``train`` command.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clirun import run_cli
from serdistill.method.config import Config
from serdistill.method.ensemble import TSModel
from serdistill.method.mc_dropout import mc_dropout, mc_dropout_naive
from serdistill.method.metrics import ccc
from serdistill.method.models import MLP
from toy import TINY, TINY_SETS, make_dataset

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def _splits(data, config):
    normaliser = data.normaliser()
    return {s: data.arrays(s, attributes=config.attributes, normaliser=normaliser)
            for s in ("train", "development", "test")}


def test_mc_dropout_fast_path_on_the_gpu_equals_the_naive_one():
    X = np.random.default_rng(0).normal(size=(300, 40)).astype(np.float32)
    net = MLP(40, (64, 64, 64), dropout=0.5, generator=torch.Generator().manual_seed(0)).cuda()
    fast = mc_dropout(net, X, passes=30, seed=3, block_rows=128, return_masks=True)
    naive = mc_dropout_naive(net, X, fast.masks)
    np.testing.assert_allclose(fast.samples, naive.samples, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fast.embedding, naive.embedding, atol=1e-4, rtol=1e-4)
    assert fast.prediction_std.min() > 0  # dropout was active
    again = mc_dropout(net, X, passes=30, seed=3, block_rows=128)
    np.testing.assert_array_equal(again.samples, fast.samples)  # the mask stream is seeded on the GPU too
    off = mc_dropout(net, X, passes=30, enabled=False)
    np.testing.assert_allclose(off.prediction, net.eval()(torch.as_tensor(X).cuda()).detach().cpu().numpy(), atol=1e-5)


def test_a_whole_model_trains_on_the_gpu_and_predicts_like_its_cpu_copy():
    config = Config.from_dict({**TINY, "train": {**TINY["train"], "device": "cuda"},
                               "teacher": {**TINY["teacher"], "epochs": 30}, "student": {**TINY["student"], "epochs": 30}})
    data = make_dataset({"train": 160, "development": 60, "test": 60})
    arrays = _splits(data, config)
    (X, y), (X_dev, y_dev), (X_test, y_test) = arrays["train"], arrays["development"], arrays["test"]
    model = TSModel(config).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)
    prediction = model.predict(X_test)
    assert prediction.shape == y_test.shape and np.isfinite(prediction).all()
    assert ccc(prediction[:, 0].astype(np.float64), y_test[:, 0].astype(np.float64)) > 0.05  # it learned (CPU: 0.18)
    teachers, std = model.predict_teachers(X_test, return_std=True)
    assert np.isfinite(teachers).all() and (std > 0).all()


def test_train_on_cuda_writes_a_bundle_that_runs_on_the_cpu(tmp_path: Path, tiny_corpus):
    import pandas as pd

    from serdistill.deploy.bundle import load_bundle

    manifest, features = tiny_corpus
    bundle = tmp_path / "gpu.bundle"
    code, _, err = run_cli(["train", str(manifest), "--config", str(REPO / "configs" / "quick.toml"), "--features",
                            str(features), "-q", "--device", "cuda", "--workers", "1", "-o", str(bundle), *TINY_SETS])
    assert code == 0, err
    X = pd.read_parquet(features).to_numpy()
    on_cpu, on_gpu = load_bundle(bundle, device="cpu"), load_bundle(bundle, device="cuda")
    for a, b in zip(on_gpu.predict_features(X), on_cpu.predict_features(X)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_stacked_students_on_the_gpu_equal_separate_ones():
    """On CUDA the students train stacked by default ([train] stacked = "auto"): the same students."""
    from serdistill.method.config import StudentConfig, TrainConfig
    from serdistill.method.stacked import StudentJob, fit_students_stacked
    from serdistill.method.training import fit_student, predict_mlp

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 20)).astype(np.float32)
    y = (X[:, :1] + 4).astype(np.float32)
    U = rng.normal(size=(60, 20)).astype(np.float32)
    E, EU = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(60, 8)).astype(np.float32)
    assert TrainConfig(device="cuda").stacks()
    config, train = StudentConfig(hidden=(16, 8), epochs=8, patience=3, lr=3e-4), TrainConfig(batch_size=32, device="cuda")
    jobs = [StudentJob(target=E, target_unlabelled=EU, alpha=a, beta=1 - a, seed=s) for s in (1, 2) for a in (0.3, 0.7)]
    stacked = fit_students_stacked(X, y, X, y, jobs, X_unlabelled=U, config=config, train=train)
    for job, got in zip(jobs, stacked):
        want = fit_student(X, y, X, y, target=E, target_unlabelled=EU, X_unlabelled=U, alpha=job.alpha, beta=job.beta,
                           config=config, train=train, seed=job.seed)
        assert got.best_epoch == want.best_epoch
        np.testing.assert_allclose(predict_mlp(got.model, X, device="cuda"), predict_mlp(want.model, X, device="cuda"),
                                   atol=1e-4, rtol=0)
