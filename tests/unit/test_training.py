"""Training loops: the student loss, the batch schedule, seeds, checkpoints and resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from serdistill.method.config import StudentConfig, TeacherConfig, TrainConfig
from serdistill.base.errors import ConfigError
from serdistill.method.metrics import ccc
from serdistill.method.training import (
    Schedule,
    batch_schedule,
    batches,
    derive_seed,
    fit_baseline,
    fit_student,
    fit_teacher,
    n_batches,
    predict_mlp,
    student_loss,
)
from serdistill.method.config import BaselineConfig

pytestmark = pytest.mark.usefixtures("one_thread")

D = 10


def make_data(n: int, *, seed: int = 0, d: int = D, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (4.0 + X[:, 0] - 0.5 * X[:, 1] + 0.3 * X[:, 2] * X[:, 3] + noise * rng.normal(size=n)).astype(np.float32)
    return X, y


@pytest.fixture
def data():
    X, y = make_data(80, seed=0)
    X_dev, y_dev = make_data(40, seed=1)
    return X, y, X_dev, y_dev


TEACHER = TeacherConfig(hidden=(16, 16), lr=0.01, momentum=0.9, epochs=6)
STUDENT = StudentConfig(hidden=(16,), lr=0.003, epochs=5)
TRAIN = TrainConfig(batch_size=16)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- student_loss -----------------------------------------------------------------------


def test_student_loss_labelled_by_hand():
    prediction = torch.tensor([[1.0], [2.0], [4.0]])
    labels = torch.tensor([[1.0], [3.0], [5.0]])
    hidden = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 3.0]])
    # MSE over all 6 entries: (1 + 0 + 0 + 4 + 0 + 9) / 6 = 14/6
    mse = 14.0 / 6.0
    # CCC: means 7/3 and 3; var_p = (16/9 + 1/9 + 25/9)/3 = 14/9, var_y = (4 + 0 + 4)/3 = 8/3,
    # cov = ((-4/3)(-2) + (-1/3)(0) + (5/3)(2))/3 = (8/3 + 10/3)/3 = 2; (mean gap)² = 4/9
    c = 2 * 2 / (14 / 9 + 8 / 3 + 4 / 9)
    assert c == pytest.approx(ccc(prediction.numpy()[:, 0], labels.numpy()[:, 0]))
    loss = student_loss(prediction, hidden, target, alpha=0.3, beta=0.7, labels=labels)
    assert float(loss) == pytest.approx(0.3 * (1 - c) + 0.7 * mse, abs=1e-5)
    # the weights really weigh: swapping them changes the value
    swapped = student_loss(prediction, hidden, target, alpha=0.7, beta=0.3, labels=labels)
    assert float(swapped) == pytest.approx(0.7 * (1 - c) + 0.3 * mse, abs=1e-5)
    assert abs(float(swapped) - float(loss)) > 0.1


def test_student_loss_unlabelled_is_mse_only():
    prediction = torch.tensor([[1.0], [2.0], [4.0]])
    hidden = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 3.0]])
    for alpha in (0.1, 0.9):
        loss = student_loss(prediction, hidden, target, alpha=alpha, beta=0.4)
        assert float(loss) == pytest.approx(0.4 * 14.0 / 6.0, abs=1e-6)


def test_student_loss_gradients_reach_both_layers():
    prediction = torch.tensor([[1.0], [2.0], [4.0]], requires_grad=True)
    hidden = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]], requires_grad=True)
    target = torch.zeros(3, 2)
    student_loss(prediction, hidden, target, alpha=0.5, beta=0.5, labels=torch.tensor([[1.0], [3.0], [2.0]])).backward()
    assert prediction.grad.abs().sum() > 0 and hidden.grad.abs().sum() > 0
    prediction.grad, hidden.grad = None, None
    student_loss(prediction, hidden, target, alpha=0.5, beta=0.5).backward()
    assert prediction.grad is None and hidden.grad.abs().sum() > 0


# --- batches and the schedule -----------------------------------------------------------


def test_batches_cover_once_and_merge_a_last_single():
    g = torch.Generator().manual_seed(0)
    out = batches(33, 8, generator=g)
    assert [len(b) for b in out] == [8, 8, 8, 9]
    assert sorted(torch.cat(out).tolist()) == list(range(33))
    assert [len(b) for b in batches(34, 8, generator=g)] == [8, 8, 8, 8, 2]
    assert [len(b) for b in batches(1, 8, generator=g)] == [1]


@pytest.mark.parametrize("n_l, n_u", [(50, 23), (23, 50), (40, 40), (9, 100)])
def test_batch_schedule_alternates_and_covers_longer_stream_once(n_l, n_u):
    B = 8
    steps = batch_schedule(n_l, n_u, B, generator=torch.Generator().manual_seed(1))
    kinds = [k for k, _ in steps]
    assert kinds == ["unlabelled", "labelled"] * (len(steps) // 2)
    lab = torch.cat([i for k, i in steps if k == "labelled"]).tolist()
    unl = torch.cat([i for k, i in steps if k == "unlabelled"]).tolist()
    n_batches_l, n_batches_u = len(batches(n_l, B, generator=torch.Generator())), len(batches(n_u, B, generator=torch.Generator()))
    assert len(steps) == 2 * max(n_batches_l, n_batches_u)
    longer, n_longer, shorter, n_shorter = (lab, n_l, unl, n_u) if n_batches_l >= n_batches_u else (unl, n_u, lab, n_l)
    assert sorted(longer) == list(range(n_longer))  # exactly once
    assert set(shorter) == set(range(n_shorter))  # the shorter one cycled: all seen, some twice
    assert all(0 <= i < n_l for i in lab) and all(0 <= i < n_u for i in unl)


def test_batch_schedule_cycles_shorter_stream_with_fresh_permutations():
    steps = batch_schedule(64, 16, 8, generator=torch.Generator().manual_seed(2))
    unl = [i.tolist() for k, i in steps if k == "unlabelled"]
    assert len(unl) == 8
    first, second = sum(unl[:2], []), sum(unl[2:4], [])
    assert sorted(first) == sorted(second) == list(range(16))
    assert any(sum(unl[2 * j:2 * j + 2], []) != first for j in range(1, 4))  # not the same order every time


def test_batch_schedule_without_unlabelled():
    steps = batch_schedule(20, 0, 8, generator=torch.Generator().manual_seed(0))
    assert [k for k, _ in steps] == ["labelled"] * 3  # 8, 8, 4
    assert sorted(torch.cat([i for _, i in steps]).tolist()) == list(range(20))


def test_batch_schedule_is_seeded():
    a = batch_schedule(30, 50, 8, generator=torch.Generator().manual_seed(3))
    b = batch_schedule(30, 50, 8, generator=torch.Generator().manual_seed(3))
    c = batch_schedule(30, 50, 8, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert not all(torch.equal(x, y) for (_, x), (_, y) in zip(a, c))


def test_derive_seed_streams():
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert len({derive_seed(0, "a"), derive_seed(0, "b"), derive_seed(1, "a"), derive_seed(0, "a", 1)}) == 4
    assert 0 <= derive_seed(2**40, "x", 3) < 2**63


# --- seeds ------------------------------------------------------------------------------


def test_teacher_same_seed_identical(data):
    X, y, X_dev, y_dev = data
    a = fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TEACHER, train=TRAIN, seed=3)
    b = fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TEACHER, train=TRAIN, seed=3)
    c = fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TEACHER, train=TRAIN, seed=4)
    assert_same_weights(weights(a.model), weights(b.model))
    np.testing.assert_array_equal(predict_mlp(a.model, X_dev), predict_mlp(b.model, X_dev))
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert not torch.equal(a.model.layers[0].weight, c.model.layers[0].weight)
    assert not np.allclose(predict_mlp(a.model, X_dev), predict_mlp(c.model, X_dev))


def test_student_same_seed_identical(data):
    X, y, X_dev, y_dev = data
    rng = np.random.default_rng(0)
    target, X_u = rng.random((len(X), 16)).astype(np.float32), rng.normal(size=(30, D)).astype(np.float32)
    target_u = rng.random((30, 16)).astype(np.float32)
    kwargs = dict(target=target, alpha=0.5, beta=0.5, X_unlabelled=X_u, target_unlabelled=target_u,
                  config=STUDENT, train=TRAIN)
    a = fit_student(X, y, X_dev, y_dev, seed=1, **kwargs)
    b = fit_student(X, y, X_dev, y_dev, seed=1, **kwargs)
    c = fit_student(X, y, X_dev, y_dev, seed=2, **kwargs)
    assert_same_weights(weights(a.model), weights(b.model))
    assert not torch.equal(a.model.layers[0].weight, c.model.layers[0].weight)
    assert all(np.isfinite(h["loss_unlabelled"]) for h in a.history)


def test_no_global_rng_touched(data):
    X, y, X_dev, y_dev = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TEACHER.__class__(hidden=(8,), epochs=1), train=TRAIN)
    assert torch.equal(torch.rand(3), expected)


# --- learning ---------------------------------------------------------------------------


def test_teacher_overfits_a_tiny_set():
    X, y = make_data(32, seed=5, noise=0.5)
    config = TeacherConfig(hidden=(64, 64), lr=0.05, momentum=0.9, epochs=150)
    result = fit_teacher(X, y, X, y, dropout=0.1, config=config, train=TrainConfig(batch_size=8), seed=0)
    train_ccc = ccc(predict_mlp(result.model, X)[:, 0], y)
    assert train_ccc > 0.97
    assert result.history[0]["train_loss"] > 0.3 > result.history[-1]["train_loss"]
    # and it predicts on the labels' scale (standardised labels are mapped back)
    assert abs(float(predict_mlp(result.model, X).mean()) - float(y.mean())) < 0.2


def test_student_learns_the_embedding(data):
    X, y, X_dev, y_dev = data
    W = np.random.default_rng(3).normal(size=(D, 16)).astype(np.float32)
    target = np.maximum(X @ W, 0)
    config = StudentConfig(hidden=(16,), lr=0.01, epochs=20)
    result = fit_student(X, y, X_dev, y_dev, target=target, alpha=0.1, beta=0.9, config=config, train=TRAIN)
    losses = [h["loss_labelled"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    _, hidden = predict_mlp(result.model, X, hidden=True)
    assert hidden.shape == (len(X), 16)
    assert np.mean((hidden - target) ** 2) < np.mean((target - target.mean(0)) ** 2)


def test_student_rejects_a_wrong_embedding_width(data):
    X, y, X_dev, y_dev = data
    with pytest.raises(ValueError, match="must match"):
        fit_student(X, y, X_dev, y_dev, target=np.zeros((len(X), 8), np.float32), alpha=0.5, beta=0.5,
                    config=STUDENT, train=TRAIN)
    with pytest.raises(ValueError, match="target_unlabelled"):
        fit_student(X, y, X_dev, y_dev, target=np.zeros((len(X), 16), np.float32), alpha=0.5, beta=0.5,
                    X_unlabelled=X[:5], config=STUDENT, train=TRAIN)


def test_nan_labels_rejected(data):
    X, y, X_dev, y_dev = data
    y = y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TEACHER, train=TRAIN)


# --- best epoch -------------------------------------------------------------------------


def test_best_dev_epoch_is_kept(data):
    X, y, X_dev, _ = data
    # a development set whose labels run against the training relation: learning the
    # training set makes development CCC worse, so an early epoch must be the best one
    y_dev = (4.0 - X_dev[:, 0] + 0.5 * X_dev[:, 1]).astype(np.float32)
    seen = []
    result = fit_teacher(X, y, X_dev, y_dev, dropout=0.2, config=TeacherConfig(hidden=(16, 16), lr=0.02, momentum=0.9, epochs=8),
                         train=TRAIN, seed=0, on_epoch=lambda info: seen.append(info))
    scores = [h["dev_ccc"] for h in result.history]
    assert len(scores) == 8 and [s["epoch"] for s in seen] == list(range(1, 9))
    assert result.best_epoch == int(np.argmax(scores)) + 1 < 8
    assert result.best_score == pytest.approx(max(scores))
    assert scores[-1] < result.best_score - 0.05
    # the returned model is the best epoch's, not the last one's
    assert ccc(predict_mlp(result.model, X_dev)[:, 0], y_dev) == pytest.approx(result.best_score, abs=1e-5)
    assert seen[-1]["best_epoch"] == result.best_epoch and seen[-1]["best_dev_ccc"] == result.best_score
    assert not result.model.training


def test_baseline_uses_its_config(data):
    X, y, X_dev, y_dev = data
    result = fit_baseline(X, y, X_dev, y_dev, config=BaselineConfig(hidden=(8, 8, 8), dropout=0.3, epochs=2),
                          train=TRAIN)
    assert result.model.hidden == (8, 8, 8) and result.model.dropout == 0.3
    assert len(result.history) == 2


# --- step budgets and early stopping ----------------------------------------------------


class CountingSGD(torch.optim.SGD):
    """SGD that counts its steps (every optimizer step the loops take)."""

    calls = 0

    def step(self, closure=None):
        CountingSGD.calls += 1
        return super().step(closure)


@pytest.mark.parametrize("n", [300, 30_000])
def test_the_number_of_optimizer_steps_follows_the_step_budget(n, monkeypatch):
    """A 300-row and a 30,000-row training set both take exactly the budgeted steps (epochs derived)."""
    import serdistill.method.training as training

    X, y = make_data(n, d=4)
    X_dev, y_dev = make_data(40, seed=1, d=4)
    monkeypatch.setattr(training.torch.optim, "SGD", CountingSGD)
    CountingSGD.calls = 0
    config = TeacherConfig(hidden=(8,), lr=0.01, epochs=1, steps=120)
    result = fit_teacher(X, y, X_dev, y_dev, dropout=0.1, config=config, train=TrainConfig(batch_size=64))
    assert CountingSGD.calls == 120 == result.steps
    per_epoch = n_batches(n, 64)  # 5 and 469
    assert len(result.history) == -(-120 // per_epoch)  # 24 epochs, or one cut short
    assert [h["steps"] for h in result.history][:-1] == [per_epoch] * (len(result.history) - 1)


def test_student_step_budget_counts_labelled_batches(data):
    X, y, X_dev, y_dev = data  # 80 labelled rows: 5 batches of 16
    rng = np.random.default_rng(0)
    common = dict(target=rng.random((80, 16)).astype(np.float32), alpha=0.5, beta=0.5, train=TRAIN)
    alone = fit_student(X, y, X_dev, y_dev, config=StudentConfig(hidden=(16,), steps=12), **common)
    assert alone.steps == 12 and len(alone.history) == 3
    # 30 unlabelled rows (2 batches) beside them: each labelled step comes after an unlabelled one
    paired = fit_student(X, y, X_dev, y_dev, config=StudentConfig(hidden=(16,), steps=12),
                         X_unlabelled=rng.normal(size=(30, D)).astype(np.float32),
                         target_unlabelled=rng.random((30, 16)).astype(np.float32), **common)
    assert paired.steps == 24 and len(paired.history) == 3


def test_min_epochs_lengthens_a_step_budget_on_a_large_set():
    assert Schedule.of(TeacherConfig(steps=600, min_epochs=20), n_batches(300, 64)).epochs == 120
    large = Schedule.of(TeacherConfig(steps=600, min_epochs=20), n_batches(34_280, 64))
    assert large.epochs == 20 and large.limit(19) == n_batches(34_280, 64)
    # patience in epochs and in steps: the longer wins
    assert Schedule.of(TeacherConfig(patience=10, patience_steps=200), 5).patience == 40
    assert Schedule.of(TeacherConfig(patience=10, patience_steps=200), 535).patience == 10


def test_early_stopping_stops_and_keeps_the_best_epoch(data):
    X, y, X_dev, _ = data
    y_dev = (4.0 - X_dev[:, 0] + 0.5 * X_dev[:, 1]).astype(np.float32)  # learning makes dev worse
    config = TeacherConfig(hidden=(16, 16), lr=0.02, momentum=0.9, epochs=40, patience=3)
    seen = []
    result = fit_teacher(X, y, X_dev, y_dev, dropout=0.2, config=config, train=TRAIN, seed=0,
                         on_epoch=seen.append)
    scores = [h["dev_ccc"] for h in result.history]
    assert result.stopped_early and len(scores) == result.best_epoch + 3 < 40
    assert max(scores[result.best_epoch:]) <= result.best_score  # no better epoch after the best
    assert result.best_score == max(scores)
    assert ccc(predict_mlp(result.model, X_dev)[:, 0], y_dev) == pytest.approx(result.best_score, abs=1e-5)
    assert seen[-1]["last"] and seen[-1]["stopped_early"] and not any(s["last"] for s in seen[:-1])
    # without patience it runs every epoch
    full = fit_teacher(X, y, X_dev, y_dev, dropout=0.2, config=TeacherConfig(**{**config.to_dict(), "patience": None}),
                       train=TRAIN, seed=0)
    assert len(full.history) == 40 and not full.stopped_early
    assert [h["dev_ccc"] for h in full.history][:len(scores)] == scores  # the same run until it stopped


def test_early_stopped_run_resumes_as_stopped(tmp_path, data):
    X, y, X_dev, _ = data
    y_dev = (4.0 - X_dev[:, 0] + 0.5 * X_dev[:, 1]).astype(np.float32)
    config = TeacherConfig(hidden=(16, 16), lr=0.02, momentum=0.9, epochs=40, patience=3)
    kwargs = dict(dropout=0.2, config=config, train=TRAIN, seed=0, checkpoint=tmp_path / "t.pt")
    first = fit_teacher(X, y, X_dev, y_dev, **kwargs)
    epochs = []
    again = fit_teacher(X, y, X_dev, y_dev, on_epoch=epochs.append, **kwargs)
    assert epochs == [] and again.stopped_early and again.best_epoch == first.best_epoch
    assert_same_weights(weights(first.model), weights(again.model))


def test_student_head_starts_from_the_teachers_output_layer(data, monkeypatch):
    import serdistill.method.training as training

    X, y, X_dev, y_dev = data
    rng = np.random.default_rng(3)
    head = (rng.normal(size=(1, 16)).astype(np.float32), np.array([0.25], np.float32))
    common = dict(target=rng.random((80, 16)).astype(np.float32), alpha=0.5, beta=0.5, train=TRAIN, seed=1)
    config = StudentConfig(hidden=(16,), epochs=1, head="teacher")
    first = {}
    loop = training._loop

    def before_training(model, *args, **kwargs):  # the output layer the loop starts from
        first["weight"], first["bias"] = model.output.weight.detach().clone(), model.output.bias.detach().clone()
        return loop(model, *args, **kwargs)

    monkeypatch.setattr(training, "_loop", before_training)
    fit_student(X, y, X_dev, y_dev, config=config, head=head, **common)
    np.testing.assert_array_equal(first["weight"].numpy(), head[0])
    np.testing.assert_array_equal(first["bias"].numpy(), head[1])
    fit_student(X, y, X_dev, y_dev, config=StudentConfig(hidden=(16,), epochs=1), head=head, **common)
    assert not np.allclose(first["weight"].numpy(), head[0])  # 'own': drawn, the head is ignored
    with pytest.raises(ValueError, match="head = 'teacher' needs the teacher's output layer"):
        fit_student(X, y, X_dev, y_dev, config=config, **common)


# --- checkpoints ------------------------------------------------------------------------


class Stop(Exception):
    pass


def stop_at(epoch: int):
    def hook(info):
        if info["epoch"] == epoch:
            raise Stop

    return hook


@pytest.mark.parametrize("every, stop", [(1, 4), (2, 3), (3, 5)])
def test_teacher_resume_gives_the_same_weights(tmp_path, data, every, stop):
    X, y, X_dev, y_dev = data
    train = TrainConfig(batch_size=16, checkpoint_every=every)
    kwargs = dict(dropout=0.5, config=TEACHER, train=train, seed=9)
    full = fit_teacher(X, y, X_dev, y_dev, **kwargs)
    path = tmp_path / "teacher.pt"
    with pytest.raises(Stop):
        fit_teacher(X, y, X_dev, y_dev, checkpoint=path, on_epoch=stop_at(stop), **kwargs)
    assert path.is_file()
    epochs_run = []
    resumed = fit_teacher(X, y, X_dev, y_dev, checkpoint=path, on_epoch=lambda i: epochs_run.append(i["epoch"]), **kwargs)
    # resumed after the last checkpoint before the interruption
    assert epochs_run[0] == (stop - 1) // every * every + 1 and epochs_run[-1] == TEACHER.epochs
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert [h["dev_ccc"] for h in full.history] == [h["dev_ccc"] for h in resumed.history]
    assert (full.best_epoch, full.best_score) == (resumed.best_epoch, resumed.best_score)
    # a finished checkpoint resumes to the end without training again
    again = fit_teacher(X, y, X_dev, y_dev, checkpoint=path, on_epoch=stop_at(1), **kwargs)
    assert_same_weights(weights(full.model), weights(again.model))


def test_student_resume_gives_the_same_weights(tmp_path, data):
    X, y, X_dev, y_dev = data
    rng = np.random.default_rng(1)
    kwargs = dict(target=rng.random((len(X), 16)).astype(np.float32), alpha=0.4, beta=0.6,
                  X_unlabelled=rng.normal(size=(50, D)).astype(np.float32),
                  target_unlabelled=rng.random((50, 16)).astype(np.float32),
                  config=STUDENT, train=TRAIN, seed=2)
    full = fit_student(X, y, X_dev, y_dev, **kwargs)
    path = tmp_path / "student.pt"
    with pytest.raises(Stop):
        fit_student(X, y, X_dev, y_dev, checkpoint=path, on_epoch=stop_at(3), **kwargs)
    resumed = fit_student(X, y, X_dev, y_dev, checkpoint=path, **kwargs)
    assert_same_weights(weights(full.model), weights(resumed.model))  # NAdam state restored too
    assert len(resumed.history) == STUDENT.epochs


def test_mismatched_checkpoint_raises(tmp_path, data):
    X, y, X_dev, y_dev = data
    path = tmp_path / "teacher.pt"
    config = TeacherConfig(hidden=(16, 16), epochs=2)
    fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=config, train=TRAIN, checkpoint=path)
    with pytest.raises(ConfigError, match="different run.*lr"):
        fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TeacherConfig(hidden=(16, 16), epochs=2, lr=0.01),
                    train=TRAIN, checkpoint=path)
    with pytest.raises(ConfigError, match="dropout"):
        fit_teacher(X, y, X_dev, y_dev, dropout=0.6, config=config, train=TRAIN, checkpoint=path)
    with pytest.raises(ConfigError, match="n_train"):
        fit_teacher(X[:60], y[:60], X_dev, y_dev, dropout=0.5, config=config, train=TRAIN, checkpoint=path)
    # the same run reads it back fine
    fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=config, train=TRAIN, checkpoint=path)


def test_training_on_disk_reads_batches_from_the_file_and_matches_memory(data, monkeypatch):
    """Features and embeddings on disk: the batches are read with pread (row_reader), and
    the models are bit-identical to those trained on the same arrays in memory."""
    import serdistill.data.feature_rows as feature_rows
    from serdistill.data.storage import disk_matrix

    def on_disk(a: np.ndarray) -> np.ndarray:
        out = disk_matrix((len(a) + 3, a.shape[1]))[3:]  # a view: its rows start inside the file
        out[:] = a
        return out

    readers: list = []
    real = feature_rows.row_reader
    monkeypatch.setattr(feature_rows, "row_reader", lambda X: readers.append(real(X)) or readers[-1])
    X, y, X_dev, y_dev = data
    rng = np.random.default_rng(0)
    target, X_u = rng.random((len(X), 16)).astype(np.float32), rng.normal(size=(30, D)).astype(np.float32)
    target_u = rng.random((30, 16)).astype(np.float32)
    a = fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=TEACHER, train=TRAIN, seed=3)
    assert readers == [None]  # in memory: index_select
    readers.clear()
    b = fit_teacher(on_disk(X), y, on_disk(X_dev), y_dev, dropout=0.5, config=TEACHER, train=TRAIN, seed=3)
    assert len(readers) == 1 and readers[0] is not None
    assert_same_weights(weights(a.model), weights(b.model))
    kwargs = dict(alpha=0.5, beta=0.5, config=STUDENT, train=TRAIN, seed=1)
    c = fit_student(X, y, X_dev, y_dev, target=target, X_unlabelled=X_u, target_unlabelled=target_u, **kwargs)
    readers.clear()
    d = fit_student(on_disk(X), y, X_dev, y_dev, target=on_disk(target), X_unlabelled=on_disk(X_u),
                    target_unlabelled=on_disk(target_u), **kwargs)
    assert len(readers) == 4 and all(r is not None for r in readers)
    assert_same_weights(weights(c.model), weights(d.model))


def test_frozen_head_stays_the_teachers_and_relative_mse_rescales_beta(data):
    from serdistill.method.training import embedding_mean_square

    X, y, X_dev, y_dev = data
    rng = np.random.default_rng(4)
    target = (2.0 * rng.random((80, 16))).astype(np.float32)
    head = (rng.normal(size=(1, 16)).astype(np.float32), np.array([0.1], np.float32))
    frozen = fit_student(X, y, X_dev, y_dev, target=target, alpha=0.5, beta=0.5, head=head, train=TRAIN, seed=1,
                         config=StudentConfig(hidden=(16,), epochs=3, head="frozen"))
    np.testing.assert_array_equal(frozen.model.output.weight.detach().numpy(), head[0])
    np.testing.assert_array_equal(frozen.model.output.bias.detach().numpy(), head[1])
    assert frozen.model.layers[0].weight.requires_grad  # the rest trains
    # relative MSE is the plain one with beta divided by the embedding's mean square
    scale = embedding_mean_square(target)
    assert scale == pytest.approx(float(np.mean(target.astype(np.float64) ** 2)))
    relative = fit_student(X, y, X_dev, y_dev, target=target, alpha=0.5, beta=0.5, train=TRAIN, seed=1,
                           config=StudentConfig(hidden=(16,), epochs=3, mse="relative"))
    plain = fit_student(X, y, X_dev, y_dev, target=target, alpha=0.5, beta=0.5 / scale, train=TRAIN, seed=1,
                        config=StudentConfig(hidden=(16,), epochs=3))
    for a, b in zip(relative.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b)


def test_student_weight_decay_is_decoupled_and_shrinks_the_weights(data):
    X, y, X_dev, y_dev = data
    target = np.random.default_rng(5).random((80, 16)).astype(np.float32)
    common = dict(target=target, alpha=0.5, beta=0.5, train=TRAIN, seed=1)
    plain = fit_student(X, y, X_dev, y_dev, config=StudentConfig(hidden=(16,), epochs=4, patience=None), **common)
    decayed = fit_student(X, y, X_dev, y_dev, config=StudentConfig(hidden=(16,), epochs=4, weight_decay=500.0), **common)
    norm = lambda m: float(m.layers[0].weight.detach().norm())  # noqa: E731
    assert norm(decayed.model) < 0.6 * norm(plain.model)  # (1 - lr * 500) ** 20 steps = 0.36
    opt = __import__("serdistill.method.training", fromlist=["_optimizer"])._optimizer("nadam", plain.model, 1e-4, 0.0, 2.0)
    assert opt.defaults["weight_decay"] == 2.0 and opt.defaults["decoupled_weight_decay"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no CUDA device is")
def test_a_missing_cuda_device_is_named_as_asked():
    from serdistill.base.errors import ConfigError
    from serdistill.method.training import resolve_device

    with pytest.raises(ConfigError, match=r"asks for 'cuda:1', but torch .* sees no CUDA device: set device = 'cpu'"):
        resolve_device("cuda:1")


def test_weights_are_stored_input_major_and_train_as_nn_linears_would(data, monkeypatch):
    """The layout of models._linear changes the speed only: nn.Linear's initial values, the
    gradient and NAdam's state in the same layout, the same trained student to float rounding."""
    from serdistill.method import models
    from serdistill.method.training import _optimizer

    X, y, X_dev, y_dev = data
    net = models.MLP(D, (16, 8), generator=torch.Generator().manual_seed(0))
    plain = torch.nn.Linear(D, 16)
    with torch.no_grad():
        bound = (6.0 / (D + 16)) ** 0.5
        plain.weight.uniform_(-bound, bound, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.linears[0].weight, plain.weight)  # drawn as before the layout changed
    optimizer = _optimizer("nadam", net, 1e-3, 0.0)
    net(torch.as_tensor(X)).square().mean().backward()
    optimizer.step()
    for layer in net.linears:
        assert layer.weight.t().is_contiguous() and not layer.weight.is_contiguous()
        assert layer.weight.grad.stride() == layer.weight.stride()
        assert optimizer.state[layer.weight]["exp_avg"].stride() == layer.weight.stride()

    kwargs = dict(target=np.random.default_rng(0).random((len(X), 16)).astype(np.float32), alpha=0.5, beta=0.5,
                  config=STUDENT, train=TRAIN, seed=1)
    now = fit_student(X, y, X_dev, y_dev, **kwargs)
    monkeypatch.setattr(models, "_linear", lambda a, b: torch.nn.utils.skip_init(torch.nn.Linear, a, b))
    before = fit_student(X, y, X_dev, y_dev, **kwargs)
    assert before.model.linears[0].weight.is_contiguous()
    assert now.best_epoch == before.best_epoch
    for key, value in weights(now.model).items():
        torch.testing.assert_close(value, weights(before.model)[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_our_nadam_is_torchs_bit_for_bit_and_shares_its_state(weight_decay):
    """training.NAdam keeps a buffer between steps and nothing else: torch's NAdam's values, and
    a checkpoint of either resumes in the other."""
    import copy

    from serdistill.method.models import MLP
    from serdistill.method.training import NAdam

    ours_net = MLP(D, (16, 8), generator=torch.Generator().manual_seed(0))
    torch_net = copy.deepcopy(ours_net)
    kwargs = dict(lr=1e-2, foreach=True, weight_decay=weight_decay, decoupled_weight_decay=True)
    ours, theirs = NAdam(ours_net.parameters(), **kwargs), torch.optim.NAdam(torch_net.parameters(), **kwargs)
    generator = torch.Generator().manual_seed(1)
    for step in range(12):
        x = torch.randn(8, D, generator=generator)
        for net, optimizer in ((ours_net, ours), (torch_net, theirs)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
        if step == 5:  # swap the optimizers' states: each goes on from the other's checkpoint
            state_ours, state_theirs = ours.state_dict(), theirs.state_dict()
            ours.load_state_dict(copy.deepcopy(state_theirs))
            theirs.load_state_dict(copy.deepcopy(state_ours))
    for a, b in zip(ours_net.parameters(), torch_net.parameters()):
        assert torch.equal(a, b)
    assert ours._roots, "the buffer was not used: the comparison tested torch's step against itself"
