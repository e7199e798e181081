"""The estimators: TSModel, the ensembles, unlabelled data selection, state and resumable grids."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import serdistill.method.ensemble.tasks as ensemble_tasks
import serdistill.method.ensemble.teachers as ensemble_teachers
from serdistill.method.config import Config, UnlabelledConfig
from serdistill.method.ensemble import (
    Baseline,
    StudentEnsemble,
    TeacherEnsemble,
    TSModel,
    select_unlabelled,
    stacked_predict,
    summarise_teachers,
)
from serdistill.method.ensemble.common import _dev_score
from serdistill.base.errors import ConfigError, NotFittedError
from serdistill.method.metrics import ccc
from serdistill.method.models import MLP

D = 12
TINY = {
    "attributes": ["arousal", "valence"],
    "train": {"batch_size": 16},
    "baseline": {"hidden": [16, 16], "epochs": 3},
    "teacher": {"hidden": [16, 16], "dropouts": [0.3, 0.5], "epochs": 4, "lr": 0.01},
    "mc": {"passes": 6},
    "student": {"hidden": [16], "epochs": 3, "lr": 0.003, "alphas": [0.3], "betas": [0.6]},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: fast on tiny matrices on a shared machine, and a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)).astype(np.float32)
    y = np.stack([4 + X[:, 0] + 0.3 * rng.normal(size=n), 4 + X[:, 1] - X[:, 2] + 0.3 * rng.normal(size=n)], 1)
    return X, y.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    X, y = make_split(96, 0)
    X_dev, y_dev = make_split(48, 1)
    X_test, y_test = make_split(40, 2)
    return X, y, X_dev, y_dev, X_test, y_test


def tiny(**changes) -> Config:
    return Config.from_dict(TINY).updated(changes)


@pytest.fixture(scope="module")
def fitted(data):
    X, y, X_dev, y_dev, X_test, _ = data
    return TSModel(tiny()).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)


# --- TSModel ----------------------------------------------------------------------------


def test_tsmodel_predict_shapes(fitted, data):
    X_test = data[4]
    mean = fitted.predict(X_test)
    assert mean.shape == (40, 2) and mean.dtype == np.float32 and np.isfinite(mean).all()
    mean2, std = fitted.predict(X_test, return_std=True)
    np.testing.assert_array_equal(mean, mean2)
    assert std.shape == (40, 2) and (std >= 0).all() and std.max() > 0  # two students disagree somewhat
    t_mean, t_std = fitted.predict_teachers(X_test, return_std=True)
    assert t_mean.shape == t_std.shape == (40, 2) and t_std.min() > 0
    assert fitted.predict_baseline(X_test).shape == (40, 2)
    out = fitted.predict_all(X_test)
    for key in ("student_members", "teacher_members", "teacher_members_std", "teacher_one_pass"):
        assert out[key].shape == (2, 40, 2), key
    np.testing.assert_allclose(out["students"], mean, atol=1e-6)
    np.testing.assert_allclose(out["students_std"], std, atol=1e-6)
    np.testing.assert_allclose(out["student_members"].mean(axis=0), mean, atol=1e-6)


def test_tsmodel_records_what_it_did(fitted):
    assert fitted.attributes_ == ["arousal", "valence"]
    assert fitted.alpha_ == {"arousal": 0.3, "valence": 0.3} and fitted.beta_ == {"arousal": 0.6, "valence": 0.6}
    assert fitted.unlabelled_["n"] == 40 and fitted.unlabelled_["source"] == "test"
    for name in ("arousal", "valence"):
        history = fitted.history_[name]
        assert len(history["baseline"]) == 3 and len(history["teachers"]) == 2
        assert all(len(h) == 4 for h in history["teachers"]) and all(len(h) == 3 for h in history["students"])
        assert set(fitted.dev_ccc_[name]) >= {"baseline", "teachers", "students"}


def test_tsmodel_learns_something(data):
    X, y, X_dev, y_dev, X_test, y_test = data
    config = tiny(attributes=["arousal"], baseline={"enabled": False}, teacher={"epochs": 20}, student={"epochs": 20})
    model = TSModel(config).fit(X, y[:, :1], X_dev, y_dev[:, :1], X_unlabelled=X_test)
    assert ccc(model.predict(X_test)[:, 0], y_test[:, 0]) > 0.7  # about 0.83 here
    assert ccc(model.predict_teachers(X_test)[:, 0], y_test[:, 0]) > 0.5


def test_tsmodel_multi_task(data):
    X, y, X_dev, y_dev, X_test, _ = data
    model = TSModel(tiny(task="multi", baseline={"enabled": False}, unlabelled={"source": "none"})).fit(X, y, X_dev, y_dev)
    mean, std = model.predict(X_test, return_std=True)
    assert mean.shape == std.shape == (40, 2)
    assert list(model.alpha_) == ["arousal+valence"]
    assert np.isnan(model.predict_baseline(X_test)).all()


def test_tsmodel_errors(data):
    X, y, X_dev, y_dev, X_test, _ = data
    with pytest.raises(NotFittedError, match="not fitted"):
        TSModel(tiny()).predict(X_test)
    with pytest.raises(ConfigError, match="X_unlabelled"):
        TSModel(tiny()).fit(X, y, X_dev, y_dev)
    with pytest.raises(ValueError, match="one column per attribute"):
        TSModel(tiny()).fit(X, y[:, :1], X_dev, y_dev[:, :1], X_unlabelled=X_test)
    with pytest.raises(ConfigError, match="Config"):
        TSModel({"seed": 1}).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)


def test_tsmodel_nan_labels_are_skipped_per_attribute(data):
    X, y, X_dev, y_dev, X_test, _ = data
    y = y.copy()
    y[:10, 1] = np.nan
    config = tiny(baseline={"enabled": False}, unlabelled={"source": "none"}, student={"epochs": 1},
                  teacher={"epochs": 1})
    model = TSModel(config).fit(X, y, X_dev, y_dev)
    assert np.isfinite(model.predict(X_test)).all()


# --- state ------------------------------------------------------------------------------


def test_state_dict_round_trip(fitted, data):
    X_test = data[4]
    clone = TSModel.from_state_dict(fitted.state_dict())
    a, b = fitted.predict_all(X_test), clone.predict_all(X_test)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert clone.alpha_ == fitted.alpha_ and clone.grid_ == json.loads(json.dumps(fitted.grid_))


def test_save_load_round_trip(fitted, data, tmp_path):
    X_test = data[4]
    fitted.save(tmp_path / "model")
    assert (tmp_path / "model" / "model.json").is_file() and (tmp_path / "model" / "weights.pt").is_file()
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["config"]["teacher"]["dropouts"] == [0.3, 0.5]
    loaded = TSModel.load(tmp_path / "model")
    for get in (lambda m: m.predict(X_test, return_std=True),
                lambda m: m.predict_teachers(X_test, return_std=True),
                lambda m: (m.predict_baseline(X_test),)):
        for x, y in zip(get(fitted), get(loaded)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ConfigError, match="not a saved TSModel"):
        TSModel.load(tmp_path / "nothing")


def test_from_state_dict_checks_format(fitted):
    state = fitted.state_dict()
    state["meta"]["format"] = 99
    with pytest.raises(ConfigError, match="format"):
        TSModel.from_state_dict(state)


# --- unlabelled data --------------------------------------------------------------------


def test_select_unlabelled_none_and_test(data):
    X_test = data[4]
    X_u, info = select_unlabelled(UnlabelledConfig(source="none"), X_test=X_test)
    assert X_u is None and info["n"] == 0
    X_u, info = select_unlabelled(UnlabelledConfig(source="test"), X_test=X_test)
    assert X_u is X_test and info == {"source": "test", "n": 40, "indices": None}
    with pytest.raises(ConfigError, match="test features"):
        select_unlabelled(UnlabelledConfig(source="test"))


def test_select_unlabelled_pool(data, caplog):
    X_test = data[4]
    pool = np.arange(300 * 3, dtype=np.float32).reshape(300, 3)
    config = UnlabelledConfig(source="unlabeled")
    X_u, info = select_unlabelled(config, X_test=X_test, X_pool=pool, seed=0)
    assert X_u.shape == (40, 3) and info["n"] == 40 and info["source"] == "unlabeled"
    idx = np.array(info["indices"])
    assert len(set(idx.tolist())) == 40 and (np.diff(idx) > 0).all() and idx.max() < 300
    np.testing.assert_array_equal(X_u, pool[idx])
    again, info_again = select_unlabelled(config, X_test=X_test, X_pool=pool, seed=0)
    other, info_other = select_unlabelled(config, X_test=X_test, X_pool=pool, seed=1)
    assert info_again["indices"] == info["indices"]  # same seed, same draw
    assert info_other["indices"] != info["indices"]  # a new trial, a new draw
    sized, _ = select_unlabelled(UnlabelledConfig(source="unlabeled", size=7), X_test=X_test, X_pool=pool)
    assert len(sized) == 7
    with caplog.at_level(logging.WARNING):
        everything, _ = select_unlabelled(UnlabelledConfig(source="unlabeled", size=500), X_pool=pool)
    assert len(everything) == 300 and "pool has 300" in caplog.text


def test_select_unlabelled_needs_a_pool(data):
    for pool in (None, np.zeros((0, 3), np.float32)):
        with pytest.raises(ConfigError, match="pool of unannotated segments.*source = 'test'"):
            select_unlabelled(UnlabelledConfig(source="unlabeled"), X_test=data[4], X_pool=pool)
    with pytest.raises(ConfigError, match="size"):
        select_unlabelled(UnlabelledConfig(source="unlabeled"), X_pool=np.zeros((5, 3), np.float32))


def test_keep_fraction_keeps_lowest_std(data, monkeypatch):
    X, y, X_dev, y_dev, X_test, _ = data
    seen = {}
    fit = StudentEnsemble.fit

    def spy(self, *args, X_unlabelled=None, **kwargs):
        seen[len(seen)] = X_unlabelled
        return fit(self, *args, X_unlabelled=X_unlabelled, **kwargs)

    monkeypatch.setattr(StudentEnsemble, "fit", spy)
    config = tiny(attributes=["arousal"], baseline={"enabled": False}, unlabelled={"keep_fraction": 0.25})
    model = TSModel(config).fit(X, y[:, :1], X_dev, y_dev[:, :1], X_unlabelled=X_test)
    kept = seen[0]
    assert kept.shape == (10, D) and model.unlabelled_["kept"] == {"arousal": 10}
    # the teachers' pooled std (N teachers x T passes) of every candidate, recomputed
    _, std = model.predict_teachers(X_test, return_std=True)
    order = np.argsort(std[:, 0], kind="stable")
    expected = X_test[np.sort(order[:10])]
    np.testing.assert_array_equal(kept, expected)
    assert std[order[:10], 0].max() <= std[order[10:], 0].min()


@pytest.mark.parametrize("keep_fraction", [1.0, 0.5])
def test_unlabelled_rows_and_their_embeddings_stay_aligned(data, monkeypatch, keep_fraction):
    """Each unlabelled row reaches the students with its own teachers' embedding, in every path
    (all rows, or the kept lowest-std rows); the heads are the teachers' output layers."""
    X, y, X_dev, y_dev, X_test, _ = data
    seen = {}
    fit = StudentEnsemble.fit

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(StudentEnsemble, "fit", spy)
    config = tiny(attributes=["arousal"], baseline={"enabled": False}, unlabelled={"keep_fraction": keep_fraction},
                  student={"head": "frozen"})
    model = TSModel(config).fit(X, y[:, :1], X_dev, y_dev[:, :1], X_unlabelled=X_test)
    teachers = model._groups[0].teachers
    full = teachers.mc_stack(X_test).embeddings  # the same mask streams as in fit
    rows = np.flatnonzero((X_test[:, None, :] == seen["X_unlabelled"][None]).all(axis=2).any(axis=1))
    assert len(rows) == len(seen["X_unlabelled"]) == round(keep_fraction * len(X_test))
    # row r of the unlabelled features has row r of the embedding, for every teacher
    order = [int(np.flatnonzero((X_test == row).all(axis=1))[0]) for row in seen["X_unlabelled"]]
    np.testing.assert_array_equal(seen["embeddings_unlabelled"], full[:, order])
    np.testing.assert_array_equal(seen["embeddings"], teachers.mc_stack(X).embeddings)
    np.testing.assert_array_equal(seen["heads"][0], np.stack([m.output.weight.detach().numpy() for m in teachers.models_]))
    for student, teacher in zip(model._groups[0].students.models_, teachers.models_):  # frozen: the teacher's
        torch.testing.assert_close(student.output.weight, teacher.output.weight)


# --- teachers ---------------------------------------------------------------------------


def test_teacher_ensemble_mc(data):
    X, y, X_dev, y_dev, X_test, _ = data
    teachers = TeacherEnsemble(tiny()).fit(X, y[:, :1], X_dev, y_dev[:, :1])
    assert len(teachers.models_) == 2 and [m.dropout for m in teachers.models_] == [0.3, 0.5]
    emb = teachers.embed(X_test)
    assert emb.shape == (2, 40, 16)
    np.testing.assert_array_equal(emb, teachers.embed(X_test))  # deterministic
    assert not np.allclose(emb[0], emb[1])
    mean, std = teachers.predict(X_test, return_std=True)
    assert mean.shape == std.shape == (40,)
    results = teachers.mc_predict(X_test)
    np.testing.assert_allclose(mean, np.mean([r.prediction[:, 0] for r in results], axis=0), atol=1e-5)
    pooled = np.concatenate([r.samples[:, :, 0] for r in results])  # (N·T, n)
    np.testing.assert_allclose(std, pooled.std(axis=0), atol=1e-5)
    m2, s2 = summarise_teachers(results, return_std=True)
    np.testing.assert_array_equal(m2, mean)
    # the stacked form holds the same numbers, once
    stacked = teachers.mc_stack(X_test)
    np.testing.assert_array_equal(stacked.embeddings, np.stack([r.embedding for r in results]))
    np.testing.assert_array_equal(stacked.samples, np.stack([r.samples for r in results]))
    np.testing.assert_array_equal(summarise_teachers(stacked, return_std=True)[1], s2)
    off = teachers.mc_stack(X_test, enabled=False)  # the "no MC dropout" setting: one pass, dropout off
    assert off.samples.shape == (2, 1, 40, 1)
    np.testing.assert_allclose(off.samples[0, 0], teachers.models_[0].eval()(torch.as_tensor(X_test)).detach().numpy(),
                               atol=1e-5)


def test_baseline_estimator(data):
    X, y, X_dev, y_dev, X_test, _ = data
    baseline = Baseline(tiny()).fit(X, y[:, 0], X_dev, y_dev[:, 0])
    assert baseline.predict(X_test).shape == (40,) and len(baseline.history_) == 3
    with pytest.raises(ValueError, match="features"):
        baseline.predict(X_test[:, :5])


# --- students ---------------------------------------------------------------------------


def _student_inputs(data, N: int = 2):
    X, y, X_dev, y_dev, X_test, _ = data
    rng = np.random.default_rng(4)
    W = rng.normal(size=(N, D, 16)).astype(np.float32)
    return dict(X=X, y=y[:, :1], X_dev=X_dev, y_dev=y_dev[:, :1],
                embeddings=np.maximum(np.einsum("nd,kdh->knh", X, W), 0),
                X_unlabelled=X_test, embeddings_unlabelled=np.maximum(np.einsum("nd,kdh->knh", X_test, W), 0))


GRID = {"alphas": [0.1, 0.9], "betas": [0.2, 0.8], "epochs": 2}


def test_student_grid_picks_best_dev_pair(data):
    inputs = _student_inputs(data)
    students = StudentEnsemble(tiny(student=GRID)).fit(**inputs)
    assert [(r["alpha"], r["beta"]) for r in students.grid_] == [(0.1, 0.2), (0.1, 0.8), (0.9, 0.2), (0.9, 0.8)]
    best = max(students.grid_, key=lambda r: r["dev_ccc"])
    assert (students.alpha_, students.beta_) == (best["alpha"], best["beta"])
    assert students.dev_ccc_ == best["dev_ccc"]
    # the kept students are the best pair's: their ensemble scores that pair's dev CCC
    score = _dev_score(students.predict(inputs["X_dev"]).reshape(-1, 1), inputs["y_dev"])
    assert score == pytest.approx(best["dev_ccc"], abs=1e-6)
    assert len({round(r["dev_ccc"], 6) for r in students.grid_}) > 1  # the grid points differ
    assert students.n_unlabelled_ == 40
    mean, std = students.predict(inputs["X_dev"], return_std=True)
    assert mean.shape == std.shape == (48,)
    members = students.predict_members(inputs["X_dev"])
    assert members.shape == (2, 48, 1)
    np.testing.assert_allclose(std, members[:, :, 0].std(axis=0), atol=1e-6)


def test_student_fixed_pair(data):
    students = StudentEnsemble(tiny(student=GRID), alpha=0.5, beta=0.5).fit(**_student_inputs(data))
    assert len(students.grid_) == 1 and (students.alpha_, students.beta_) == (0.5, 0.5)


class Stop(Exception):
    pass


def test_student_grid_resume_reuses_finished_points(data, tmp_path, monkeypatch):
    inputs = _student_inputs(data)
    config = tiny(student=GRID)
    full = StudentEnsemble(config).fit(**inputs)

    calls = []
    fit_student = ensemble_tasks.fit_student

    def counting(*args, **kwargs):
        calls.append((kwargs["alpha"], kwargs["beta"]))
        return fit_student(*args, **kwargs)

    monkeypatch.setattr(ensemble_tasks, "fit_student", counting)

    def stop_at_third_point(info):
        if (info["alpha"], info["beta"]) == (0.9, 0.2):
            raise Stop

    with pytest.raises(Stop):
        StudentEnsemble(config, on_epoch=stop_at_third_point, checkpoint_dir=tmp_path).fit(**inputs)
    done = json.loads((tmp_path / "grid.json").read_text())
    assert sorted(done) == ["a0.1_b0.2", "a0.1_b0.8"]
    calls.clear()
    resumed = StudentEnsemble(config, checkpoint_dir=tmp_path).fit(**inputs)
    assert sorted(set(calls)) == [(0.9, 0.2), (0.9, 0.8)]  # only the unfinished points trained
    assert len(calls) == 4  # 2 points x 2 students
    assert [(r["alpha"], r["beta"]) for r in resumed.grid_] == [(r["alpha"], r["beta"]) for r in full.grid_]
    assert [r["dev_ccc"] for r in resumed.grid_] == pytest.approx([r["dev_ccc"] for r in full.grid_], abs=1e-7)
    assert (resumed.alpha_, resumed.beta_) == (full.alpha_, full.beta_)
    np.testing.assert_array_equal(resumed.predict(inputs["X_dev"]), full.predict(inputs["X_dev"]))

    # a third run finds everything done: no training, the best students come from disk
    calls.clear()
    again = StudentEnsemble(config, checkpoint_dir=tmp_path).fit(**inputs)
    assert calls == []
    np.testing.assert_array_equal(again.predict(inputs["X_dev"]), full.predict(inputs["X_dev"]))
    assert (again.alpha_, again.beta_) == (full.alpha_, full.beta_)


def test_student_input_checks(data):
    inputs = _student_inputs(data)
    with pytest.raises(ValueError, match="embeddings must be"):
        StudentEnsemble(tiny()).fit(**{**inputs, "embeddings": inputs["embeddings"][:, :10]})
    with pytest.raises(ValueError, match="embeddings_unlabelled"):
        StudentEnsemble(tiny()).fit(**{**inputs, "embeddings_unlabelled": None})


def test_stacked_predict_equals_each_model():
    gen = torch.Generator().manual_seed(0)
    models = [MLP(D, (16, 8), out_dim=2, init="torch", generator=gen).set_output_scaling(2.0, 3.0).eval()
              for _ in range(3)]
    X = np.random.default_rng(0).normal(size=(20, D)).astype(np.float32)
    stacked = stacked_predict(models, X, rows=7)
    assert stacked.shape == (3, 20, 2)
    with torch.no_grad():
        for i, m in enumerate(models):
            np.testing.assert_allclose(stacked[i], m(torch.from_numpy(X)).numpy(), atol=1e-5)


def test_student_predict_follows_weight_changes(data):
    """predict reuses packed weights between calls, but never stale ones."""
    inputs = _student_inputs(data)
    students = StudentEnsemble(tiny(student=GRID), alpha=0.5, beta=0.5).fit(**inputs)
    X_dev = inputs["X_dev"]
    before = students.predict_members(X_dev)
    np.testing.assert_array_equal(before, students.predict_members(X_dev))
    with torch.no_grad():
        students.models_[1].output.weight.mul_(2.0)  # in place
    after = students.predict_members(X_dev)
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[1], before[1])
    np.testing.assert_allclose(after, stacked_predict(students.models_, X_dev), atol=1e-6)
    students.models_ = students.models_[::-1]  # new list, other order
    np.testing.assert_array_equal(students.predict_members(X_dev), after[::-1])


def test_large_embeddings_live_on_disk_with_the_same_results(data, monkeypatch):
    from serdistill.data.storage import is_on_disk

    X, y, X_dev, y_dev, X_test, _ = data
    in_memory = TSModel(tiny()).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)
    teachers = in_memory._groups[0].teachers
    assert not is_on_disk(teachers.mc_stack(X).embeddings)
    monkeypatch.setattr(ensemble_teachers, "EMBEDDINGS_DISK_BYTES", 0)  # every embedding array "large"
    stacked = teachers.mc_stack(X)
    assert is_on_disk(stacked.embeddings)
    np.testing.assert_array_equal(stacked.embeddings, np.stack([r.embedding for r in teachers.mc_predict(X)]))
    on_disk = TSModel(tiny()).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)
    for a, b in zip(in_memory.predict(X_test, return_std=True), on_disk.predict(X_test, return_std=True)):
        np.testing.assert_array_equal(a, b)


# --- the alpha/beta grid trains each ratio once ------------------------------------------


def test_points_of_one_ratio_train_the_same_students_and_the_grid_trains_each_ratio_once(data):
    X, y, X_dev, y_dev, X_test, _ = data
    config = tiny(student={"alphas": [0.2, 0.4], "betas": [0.4, 0.8]})  # ratios 1/2, 1/4, 1, 1/2
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    embeddings = teachers.embed(X)

    def alone(a, b):
        return StudentEnsemble(config, alpha=a, beta=b, seed=0).fit(X, y, X_dev, y_dev, embeddings=embeddings)

    full = {(a, b): alone(a, b) for a in (0.2, 0.4) for b in (0.4, 0.8)}
    # the same ratio trains bit for bit the same students (normalised loss weights)
    np.testing.assert_array_equal(full[(0.2, 0.4)].predict_members(X_test), full[(0.4, 0.8)].predict_members(X_test))
    assert not np.array_equal(full[(0.2, 0.4)].predict_members(X_test), full[(0.4, 0.4)].predict_members(X_test))
    grid = StudentEnsemble(config, seed=0).fit(X, y, X_dev, y_dev, embeddings=embeddings)
    rows = {(r["alpha"], r["beta"]): r for r in grid.grid_}
    assert rows[(0.4, 0.8)]["same_as"] == [0.2, 0.4] and rows[(0.4, 0.8)]["seconds"] == 0.0
    assert sum("same_as" in r for r in grid.grid_) == 1  # 4 points, 3 ratios: 3 trained
    # the de-duplicated grid picks the full grid's point (the first best in grid order) with its CCC
    scores = {point: model.grid_[0]["dev_ccc"] for point, model in full.items()}
    best = max(scores.values())
    chosen = next(point for point in [(0.2, 0.4), (0.2, 0.8), (0.4, 0.4), (0.4, 0.8)] if scores[point] == best)
    assert (grid.alpha_, grid.beta_) == chosen and grid.dev_ccc_ == pytest.approx(best, abs=0)
    for point, model in full.items():
        assert rows[point]["dev_ccc"] == model.grid_[0]["dev_ccc"], point
    np.testing.assert_array_equal(grid.predict_members(X_test), full[chosen].predict_members(X_test))


def test_sgd_students_are_not_normalised_nor_shared(data):
    X, y, X_dev, y_dev, _, _ = data
    config = tiny(student={"optimizer": "sgd", "alphas": [0.2, 0.4], "betas": [0.4, 0.8]})
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    grid = StudentEnsemble(config, seed=0).fit(X, y, X_dev, y_dev, embeddings=teachers.embed(X))
    assert not any("same_as" in r for r in grid.grid_)  # SGD's step scales with the loss: every point trains


# --- stacked students (issue 17, item 4) --------------------------------------------------


def test_stacked_grid_trains_the_same_students_and_picks_the_same_point(data, tmp_path):
    X, y, X_dev, y_dev, X_test, _ = data
    config = tiny(student={"alphas": [0.2, 0.4, 0.9], "betas": [0.4, 0.8]})  # 6 points, 5 ratios
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    embeddings, embeddings_u = teachers.embed(X), teachers.embed(X_test)
    kwargs = dict(embeddings=embeddings, X_unlabelled=X_test, embeddings_unlabelled=embeddings_u)
    separate = StudentEnsemble(config.updated({"train": {"stacked": "off"}}), seed=0).fit(X, y, X_dev, y_dev, **kwargs)
    stacked_config = config.updated({"train": {"stacked": "on", "stack_points": 2}})
    stacked = StudentEnsemble(stacked_config, seed=0, checkpoint_dir=tmp_path).fit(X, y, X_dev, y_dev, **kwargs)
    assert (stacked.alpha_, stacked.beta_) == (separate.alpha_, separate.beta_)
    for a, b in zip(separate.grid_, stacked.grid_):
        assert (a["alpha"], a["beta"], a.get("same_as")) == (b["alpha"], b["beta"], b.get("same_as"))
        assert a["best_epochs"] == b["best_epochs"]
        assert a["dev_ccc"] == pytest.approx(b["dev_ccc"], abs=1e-5)
    np.testing.assert_allclose(stacked.predict_members(X_test), separate.predict_members(X_test), atol=1e-5, rtol=0)
    assert not list(tmp_path.glob("stack_*.pt"))  # the stacks' checkpoints go once the grid is done
    assert stacked.histories_[0][0]["stacked"] >= 1


def test_stacking_is_on_for_cuda_and_off_for_the_cpu_by_default():
    assert tiny().train.stacked == "auto" and not tiny().train.stacks()
    assert tiny(train={"device": "cuda"}).train.stacks()
    assert tiny(train={"stacked": "on"}).train.stacks() and not tiny(train={"device": "cuda", "stacked": "off"}).train.stacks()
    with pytest.raises(ConfigError, match="stacked"):
        tiny(train={"stacked": "yes"})


# --- successive halving (issue 17, item 3) ------------------------------------------------

HALVING = {"alphas": [0.1, 0.5, 0.9], "betas": [0.2, 0.6, 1.0], "epochs": 6, "search": "halving"}  # 9 ratios


def test_halving_trains_the_best_third_in_full_and_picks_among_them(data, tmp_path, monkeypatch):
    X, y, X_dev, y_dev, X_test, _ = data
    config = tiny(student=HALVING)
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    embeddings = teachers.embed(X)
    halving = StudentEnsemble(config, seed=0, checkpoint_dir=tmp_path).fit(X, y, X_dev, y_dev, embeddings=embeddings)
    rows = {(r["alpha"], r["beta"]): r for r in halving.grid_}
    dropped = [p for p, r in rows.items() if r.get("eliminated")]
    finalists = [p for p, r in rows.items() if not r.get("eliminated")]
    assert len(dropped) == 6 and len(finalists) == 3
    assert all(rows[p]["budget_epochs"] == 2 and rows[p]["halving_round"] == 1 for p in dropped)
    # a round's score is the prefix of the full training: the same as training that point for 2 epochs
    a, b = dropped[0]
    short = StudentEnsemble(tiny(student={**HALVING, "epochs": 2}), alpha=a, beta=b, seed=0).fit(
        X, y, X_dev, y_dev, embeddings=embeddings)
    assert rows[(a, b)]["dev_ccc"] == short.grid_[0]["dev_ccc"]
    # the survivors were the three best of round 1, and the choice is the best of them in full
    round1 = json.loads((tmp_path / "halving.json").read_text())["1"]
    assert min(round1[StudentEnsemble._key(*p)]["dev_ccc"] for p in finalists) >= max(rows[p]["dev_ccc"] for p in dropped)
    full = {p: StudentEnsemble(config, alpha=p[0], beta=p[1], seed=0).fit(X, y, X_dev, y_dev, embeddings=embeddings)
            for p in finalists}
    chosen = max(finalists, key=lambda p: full[p].grid_[0]["dev_ccc"])
    assert (halving.alpha_, halving.beta_) == chosen
    np.testing.assert_array_equal(halving.predict_members(X_test), full[chosen].predict_members(X_test))
    # a rerun reads the finished rounds and the finished grid: nothing trains again
    monkeypatch.setattr(StudentEnsemble, "_train_points", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(StudentEnsemble, "_fit_one", lambda *a, **k: pytest.fail("trained again"))
    again = StudentEnsemble(config, seed=0, checkpoint_dir=tmp_path).fit(X, y, X_dev, y_dev, embeddings=embeddings)
    assert (again.alpha_, again.beta_) == chosen


def test_grid_as_ratios_and_small_grids_are_not_halved(data):
    X, y, X_dev, y_dev, _, _ = data
    config = tiny(student={"ratios": [0.5, 2.0], "search": "halving", "epochs": 2})
    assert config.student.grid() == [(1 / 3, 2 / 3), (2 / 3, 1 / 3)]
    teachers = TeacherEnsemble(config, seed=0).fit(X, y, X_dev, y_dev)
    students = StudentEnsemble(config, seed=0).fit(X, y, X_dev, y_dev, embeddings=teachers.embed(X))
    assert len(students.grid_) == 2 and not any(r.get("eliminated") for r in students.grid_)


def test_stacked_teacher_ensemble_equals_the_separate_one(data, tmp_path):
    X, y, X_dev, y_dev, X_test, _ = data
    separate = TeacherEnsemble(tiny(), seed=0).fit(X, y, X_dev, y_dev)
    stacked = TeacherEnsemble(tiny(train={"stacked": "on"}), seed=0, checkpoint_dir=tmp_path).fit(X, y, X_dev, y_dev)
    assert [h[-1]["best_epoch"] for h in separate.histories_] == [h[-1]["best_epoch"] for h in stacked.histories_]
    np.testing.assert_allclose(stacked.embed(X_test), separate.embed(X_test), atol=1e-5, rtol=0)
    assert (tmp_path / "teachers_stack.pt").is_file()


def test_every_estimator_says_it_is_not_fitted_with_one_error(data):
    from serdistill.data.normalise import Normaliser

    X_test = data[4]
    for estimator, call in ((Baseline(tiny()), "predict"), (TeacherEnsemble(tiny()), "predict"),
                            (TeacherEnsemble(tiny()), "embed"), (TeacherEnsemble(tiny()), "heads"),
                            (StudentEnsemble(tiny()), "predict"), (StudentEnsemble(tiny()), "predict_members"),
                            (TSModel(tiny()), "predict_all"), (Normaliser(), "transform")):
        args = () if call == "heads" else (X_test,)
        with pytest.raises(NotFittedError, match=f"This {type(estimator).__name__} is not fitted yet") as caught:
            getattr(estimator, call)(*args)
        assert isinstance(caught.value, (ValueError, AttributeError))  # as scikit-learn's NotFittedError


def test_estimators_follow_the_scikit_learn_contract(data):
    from sklearn.base import clone

    X, y, X_dev, y_dev, X_test, _ = data
    for estimator in (Baseline(tiny(), seed=3), TeacherEnsemble(tiny(), seed=3), StudentEnsemble(tiny(), alpha=0.3, beta=0.6),
                      TSModel(tiny(), checkpoint_dir=None)):
        copy = clone(estimator)
        assert type(copy) is type(estimator) and copy is not estimator
        assert copy.get_params() == estimator.get_params()
        assert estimator.set_params(config=tiny(seed=5)) is estimator and estimator.config.seed == 5
        with pytest.raises(ValueError, match="Invalid parameter 'depth'"):
            estimator.set_params(depth=3)
    fitted = Baseline(tiny(), seed=1).fit(X, y, X_dev, y_dev)
    fresh = clone(fitted)  # the parameters, not the fitted state
    assert not hasattr(fresh, "model_") and fresh.seed == 1
    assert "seed=1" in repr(fresh)
