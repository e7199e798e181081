"""Stacked students (issue 17, item 4): the same students as one at a time, resumable, compacted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from serdistill.method.config import StudentConfig, TrainConfig
from serdistill.method.models import MLP
from serdistill.method.stacked import StackedMLP, StudentJob, fit_students_stacked, keep_optimizer_rows
from serdistill.method.training import fit_student, predict_mlp

pytestmark = pytest.mark.usefixtures("one_thread")

N, M, D, H = 240, 96, 24, 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X[:, :2] @ np.array([[1.0], [0.5]]) + 0.5 * rng.normal(size=(N, 1)) + 4).astype(np.float32)
    X_dev = rng.normal(size=(64, D)).astype(np.float32)
    y_dev = (X_dev[:, :2] @ np.array([[1.0], [0.5]]) + 4).astype(np.float32)
    U = rng.normal(size=(M, D)).astype(np.float32)
    E = [rng.normal(size=(N, H)).astype(np.float32) for _ in range(2)]
    EU = [rng.normal(size=(M, H)).astype(np.float32) for _ in range(2)]
    heads = [(rng.normal(size=(1, H)).astype(np.float32), rng.normal(size=(1,)).astype(np.float32)) for _ in range(2)]
    return X, y, X_dev, y_dev, U, E, EU, heads


def _jobs(data):
    *_, E, EU, heads = data
    # two teachers' students (two batch streams) at three alpha/beta points each
    return [StudentJob(target=E[i], target_unlabelled=EU[i], alpha=a, beta=b, seed=100 + i, head=heads[i],
                       name=f"s{i} {a}/{b}")
            for i in range(2) for a, b in ((0.2, 0.8), (0.5, 0.5), (0.9, 0.1))]


CONFIG = StudentConfig(hidden=(16, H), epochs=30, patience=3, head="frozen", weight_decay=1.0, lr=3e-4)
TRAIN = TrainConfig(batch_size=32)


@pytest.mark.parametrize("head", ["frozen", "own"])
def test_stacked_students_equal_separate_students(data, head):
    X, y, X_dev, y_dev, U, *_ = data
    config = StudentConfig(**{**CONFIG.__dict__, "head": head})
    jobs = _jobs(data)
    stacked = fit_students_stacked(X, y, X_dev, y_dev, jobs, X_unlabelled=U, config=config, train=TRAIN)
    for job, got in zip(jobs, stacked):
        want = fit_student(X, y, X_dev, y_dev, target=job.target, target_unlabelled=job.target_unlabelled,
                           X_unlabelled=U, alpha=job.alpha, beta=job.beta, head=job.head, config=config,
                           train=TRAIN, seed=job.seed)
        assert got.best_epoch == want.best_epoch
        assert len(got.history) == len(want.history) and got.stopped_early == want.stopped_early
        np.testing.assert_allclose(predict_mlp(got.model, X_dev), predict_mlp(want.model, X_dev), atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.best_score, want.best_score, atol=1e-5)
        np.testing.assert_allclose([h["loss_labelled"] for h in got.history],
                                   [h["loss_labelled"] for h in want.history], atol=1e-5)
    # early stopping happened at different epochs: the stack was cut while it trained
    assert len({len(r.history) for r in stacked}) > 1
    assert any(r.stopped_early for r in stacked)


def test_stack_resumes_from_its_checkpoint_bit_for_bit(data, tmp_path):
    X, y, X_dev, y_dev, U, *_ = data
    jobs = _jobs(data)
    whole = fit_students_stacked(X, y, X_dev, y_dev, jobs, X_unlabelled=U, config=CONFIG, train=TRAIN)

    class Stop(Exception):
        pass

    def interrupt(info):
        if info["epoch"] == 4:
            raise Stop

    path = tmp_path / "stack.pt"
    broken = list(jobs)
    broken[-1] = StudentJob(**{**jobs[-1].__dict__, "on_epoch": interrupt})
    with pytest.raises(Stop):
        fit_students_stacked(X, y, X_dev, y_dev, broken, X_unlabelled=U, config=CONFIG,
                             train=TrainConfig(batch_size=32, checkpoint_every=1), checkpoint=path)
    assert path.is_file()
    resumed = fit_students_stacked(X, y, X_dev, y_dev, jobs, X_unlabelled=U, config=CONFIG,
                                   train=TrainConfig(batch_size=32, checkpoint_every=1), checkpoint=path)
    for a, b in zip(whole, resumed):
        assert a.best_epoch == b.best_epoch and len(a.history) == len(b.history)
        for key, value in a.model.state_dict().items():
            assert torch.equal(value, b.model.state_dict()[key]), key


def test_stack_of_one_stream_feeds_every_member_one_batch(data):
    """Grid points of one student (one seed): one gathered batch, and still the separate students."""
    X, y, X_dev, y_dev, *_ = data
    *_, E, _, heads = data
    jobs = [StudentJob(target=E[0], alpha=a, beta=b, seed=7, head=heads[0]) for a, b in ((0.1, 0.9), (0.7, 0.3))]
    stacked = fit_students_stacked(X, y, X_dev, y_dev, jobs, config=CONFIG, train=TRAIN)
    for job, got in zip(jobs, stacked):
        want = fit_student(X, y, X_dev, y_dev, target=job.target, alpha=job.alpha, beta=job.beta, head=job.head,
                           config=CONFIG, train=TRAIN, seed=job.seed)
        assert got.best_epoch == want.best_epoch
        np.testing.assert_allclose(predict_mlp(got.model, X_dev), predict_mlp(want.model, X_dev), atol=1e-5, rtol=0)


def test_stacked_mlp_members_and_cutting_keep_each_network():
    nets = [MLP(6, (5, 4), out_dim=2, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    for s, net in enumerate(nets):
        net.set_output_scaling(torch.tensor([2.0, 3.0]) + s, torch.tensor([1.0, -1.0]) * s)
    stack = StackedMLP(nets)
    x = torch.randn(7, 6)
    out, hidden = stack.forward_hidden(x)
    for k, net in enumerate(nets):
        want, want_hidden = net.forward_hidden(x)
        torch.testing.assert_close(out[k], want)
        torch.testing.assert_close(hidden[k], want_hidden)
        for key, value in net.state_dict().items():
            assert torch.equal(stack.member(k)[key], value)
    # cutting member 1 out keeps 0 and 2, and their optimizer state
    opt = torch.optim.NAdam(stack.parameters(), lr=0.1)
    stack(x).square().sum().backward()
    opt.step()
    before = {name: p.detach().clone() for name, p in stack.named_parameters()}
    moments = [opt.state[p]["exp_avg"].clone() for p in stack.parameters()]
    stack.keep([0, 2])
    new = torch.optim.NAdam(stack.parameters(), lr=0.1)
    keep_optimizer_rows(opt, new, [0, 2], 3)
    for (name, p), moment in zip(stack.named_parameters(), moments):
        assert torch.equal(p, before[name][[0, 2]])
        assert torch.equal(new.state[p]["exp_avg"], moment[[0, 2]])
    assert len(stack) == 2


def test_stacked_students_check_their_inputs(data):
    X, y, X_dev, y_dev, U, E, *_ = data
    with pytest.raises(ValueError, match="must match"):
        fit_students_stacked(X, y, X_dev, y_dev, [StudentJob(target=E[0][:, :3], alpha=0.5, beta=0.5, seed=0)],
                             config=CONFIG, train=TRAIN)
    with pytest.raises(ValueError, match="head"):
        fit_students_stacked(X, y, X_dev, y_dev, [StudentJob(target=E[0], alpha=0.5, beta=0.5, seed=0)],
                             config=CONFIG, train=TRAIN)
    with pytest.raises(ValueError, match="target_unlabelled"):
        fit_students_stacked(X, y, X_dev, y_dev, [StudentJob(target=E[0], alpha=0.5, beta=0.5, seed=0)],
                             X_unlabelled=U, config=StudentConfig(hidden=(16, H), epochs=2), train=TRAIN)
    assert fit_students_stacked(X, y, X_dev, y_dev, [], config=CONFIG, train=TRAIN) == []


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("sgd", 0.0)])
def test_stacked_teachers_equal_separate_teachers(data, optimizer, momentum):
    """Their own dropout masks (each from its own generator, in the same order), batches and early stops."""
    from serdistill.method.config import TeacherConfig
    from serdistill.method.stacked import fit_teachers_stacked
    from serdistill.method.training import fit_teacher

    X, y, X_dev, y_dev, *_ = data
    config = TeacherConfig(hidden=(16, 16, 8), dropouts=(0.2, 0.5, 0.6), optimizer=optimizer, lr=0.01,
                           momentum=momentum, epochs=25, patience=3)
    seeds = [11, 12, 13]
    stacked = fit_teachers_stacked(X, y, X_dev, y_dev, dropouts=config.dropouts, seeds=seeds, config=config, train=TRAIN)
    for p, seed, got in zip(config.dropouts, seeds, stacked):
        want = fit_teacher(X, y, X_dev, y_dev, dropout=p, config=config, train=TRAIN, seed=seed)
        assert got.best_epoch == want.best_epoch and len(got.history) == len(want.history)
        assert got.model.dropout == p
        np.testing.assert_allclose(predict_mlp(got.model, X_dev), predict_mlp(want.model, X_dev), atol=1e-5, rtol=0)
        np.testing.assert_allclose([h["train_loss"] for h in got.history], [h["train_loss"] for h in want.history],
                                   atol=1e-5)
