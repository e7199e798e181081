"""The experiment protocol on a tiny synthetic data set: settings, sharing, resume, report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from serdistill.method.config import Config
from serdistill.data.dataset import Dataset
from serdistill.base.errors import ConfigError
from serdistill.study.experiment import collect, plan, run_experiment, trial_seed
from serdistill.method.metrics import ccc
from toy import TINY as BASE, make_dataset

TINY = {**BASE, "protocol": {"trials": 2}}


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_dataset({"train": 60, "development": 24, "test": 24, "unlabeled": 40})


def test_plan_adds_what_a_setting_needs_and_says_what_cannot_run(data):
    config = Config.from_dict({**TINY, "protocol": {"settings": ["ts_pseudo", "abl_u0_mc1_n1"]}})
    settings, not_run = plan(config, data)
    assert settings == ["ts_test", "ts_pseudo", "abl_u0_mc1_n5", "abl_u0_mc1_n1"]
    no_pool = make_dataset({"train": 20, "development": 8, "test": 8})
    _, not_run = plan(Config.from_dict(TINY), no_pool)
    assert "unlabeled split" in not_run["ts_unlabeled"]


def test_every_setting_runs_and_the_report_is_written(data, tmp_path):
    config = Config.from_dict(TINY)
    result = run_experiment(data, config, tmp_path / "run", progress=False)
    table = result.results
    settings, _ = plan(config, data)
    assert len(settings) == 13  # Table 1, Table 2, ridge and SVR
    assert set(table["setting"]) == set(settings)
    assert len(table) == 2 * 13 * 2  # trials x settings x attributes
    assert np.isfinite(table["ccc"]).all()
    # the grid: trials x attributes x points
    assert len(result.grid) == 2 * 2 * 2
    for name in ("report.md", "report.html", "results.csv", "results.json", "grid.csv", "consistency.csv",
                 "config.toml", "meta.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert "T-S (test)" in (tmp_path / "run" / "report.md").read_text()
    # the N = 1 rows are the first member of the N = 5 ensembles
    full = np.load(tmp_path / "run/trials/0/arousal/ts_test.npz")["members"]
    one = json.loads((tmp_path / "run/trials/0/arousal/abl_u1_mc1_n1.json").read_text())
    from serdistill.method.metrics import ccc
    X_test, y_test = data.arrays("test", attributes=("arousal",), normaliser=data.normaliser())
    assert one["ccc"]["arousal"] == pytest.approx(ccc(full[0][:, 0].astype(float), y_test[:, 0].astype(float)))
    # work folders (checkpoints) are removed once a group is finished
    assert not list((tmp_path / "run").rglob("work"))
    # the trials differ (different seeds)
    base = table[(table.setting == "ts_test") & (table.attribute == "arousal")]["ccc"].to_numpy()
    assert base[0] != base[1]


def test_a_killed_run_resumes_without_recomputing(data, tmp_path):
    config = Config.from_dict({**TINY, "protocol": {"trials": 1}})

    class Kill(Exception):
        pass

    seen: list[tuple[str, str]] = []

    def kill_in_top75(info):
        seen.append((info["group"], info["setting"]))
        if info["setting"] == "ts_top75":
            raise Kill

    with pytest.raises(Kill):
        run_experiment(data, config, tmp_path / "run", progress=False, on_progress=kill_in_top75)
    finished = {p.stem for p in (tmp_path / "run/trials/0/arousal").glob("*.json")}
    assert {"baseline", "teachers", "ts_test"} <= finished and "ts_top75" not in finished
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run/trials/0/arousal").glob("*.json")}

    resumed: list[tuple[str, str]] = []
    result = run_experiment(data, config, tmp_path / "run", progress=False,
                            on_progress=lambda info: resumed.append((info["group"], info["setting"])))
    # finished settings were read back: their files untouched, no epoch of them ran again
    for name, stamp in stamps.items():
        assert (tmp_path / "run/trials/0/arousal" / name).stat().st_mtime_ns == stamp
    assert ("arousal", "ts_test") not in resumed and ("arousal", "baseline") not in resumed
    assert ("arousal", "ts_top75") in resumed
    assert len(result.results) == 13 * 2

    # and it matches a run that was never killed
    clean = run_experiment(data, config, tmp_path / "clean", progress=False, report=False)
    merged = result.results.merge(clean.results, on=["trial", "setting", "attribute"])
    np.testing.assert_allclose(merged["ccc_x"], merged["ccc_y"], atol=1e-5)


def test_without_an_unlabeled_split_the_rest_runs(tmp_path):
    data = make_dataset({"train": 40, "development": 16, "test": 16})
    config = Config.from_dict({**TINY, "attributes": ["arousal"], "protocol": {"trials": 1}})
    result = run_experiment(data, config, tmp_path / "run", progress=False)
    assert "ts_unlabeled" not in set(result.results["setting"])
    assert len(set(result.results["setting"])) == 12
    assert "no unlabeled split" in (tmp_path / "run" / "report.md").read_text()


def test_a_run_folder_of_another_config_is_refused(data, tmp_path):
    config = Config.from_dict({**TINY, "protocol": {"trials": 1, "settings": ["baseline"]}})
    run_experiment(data, config, tmp_path / "run", progress=False, report=False)
    other = config.updated({"baseline": {"epochs": 4}})
    with pytest.raises(ConfigError, match="baseline.epochs"):
        run_experiment(data, other, tmp_path / "run", progress=False, report=False)
    # more trials of the same config are fine: the first is read back
    more = config.updated({"protocol": {"trials": 2}})
    result = run_experiment(data, more, tmp_path / "run", progress=False, report=False)
    assert sorted(set(result.results["trial"])) == [0, 1]


def test_trial_ts_test_is_the_tsmodel_of_that_seed(data, tmp_path):
    """T-S (test) of a trial is exactly TSModel.fit with the trial's seed and source 'test'."""
    from serdistill.method.ensemble import TSModel

    config = Config.from_dict({**TINY, "attributes": ["arousal"], "baseline": {"enabled": False},
                               "protocol": {"trials": 1, "settings": ["ts_test"]}})
    result = run_experiment(data, config, tmp_path / "run", progress=False, report=False)
    normaliser = data.normaliser()
    X, y = data.arrays("train", attributes=("arousal",), normaliser=normaliser)
    Xd, yd = data.arrays("development", attributes=("arousal",), normaliser=normaliser)
    Xt, yt = data.arrays("test", attributes=("arousal",), normaliser=normaliser)
    model = TSModel(config.updated({"seed": trial_seed(config, 0), "unlabelled": {"source": "test"}}))
    model.fit(X, y, Xd, yd, X_unlabelled=Xt)
    from serdistill.method.metrics import ccc
    expected = ccc(model.predict(Xt)[:, 0].astype(float), yt[:, 0].astype(float))
    got = result.results.query("setting == 'ts_test'")["ccc"].item()
    assert got == pytest.approx(expected, abs=1e-5)


def test_collect_reads_what_was_written(data, tmp_path):
    config = Config.from_dict({**TINY, "protocol": {"trials": 1, "settings": ["baseline", "teachers", "ts_test"]}})
    run_experiment(data, config, tmp_path / "run", progress=False, report=False)
    results, grid, consistency = collect(tmp_path / "run", config)
    assert set(results["setting"]) == {"baseline", "teachers", "ts_test"}
    assert set(consistency["who"]) == {"teachers", "students"}
    assert len(consistency) == 2 * 2 * 24  # attributes x who x test segments


def test_data_on_disk_give_the_results_in_memory_give(data, tmp_path, monkeypatch):
    """Raw matrix, normalised splits, embeddings and the pseudo-label set on disk: the same numbers."""
    import serdistill.data.dataset as dataset_module
    import serdistill.method.ensemble.teachers as ensemble_module
    from serdistill.data.storage import disk_matrix

    config = Config.from_dict({**TINY, "protocol": {"trials": 1, "settings": ["ts_pseudo", "abl_u1_mc0_n5"]}})
    memory = run_experiment(data, config, tmp_path / "memory", progress=False, report=False)
    monkeypatch.setattr(dataset_module, "SPLIT_DISK_BYTES", 0)
    monkeypatch.setattr(ensemble_module, "EMBEDDINGS_DISK_BYTES", 0)
    raw = disk_matrix(data.X.shape)
    raw[:] = data.X
    on_disk = Dataset(data.manifest, raw, feature_set=data.feature_set)
    disk = run_experiment(on_disk, config, tmp_path / "disk", progress=False, report=False)
    merged = memory.results.merge(disk.results, on=["trial", "setting", "attribute"])
    assert len(merged) == len(memory.results) > 0
    np.testing.assert_array_equal(merged["ccc_x"], merged["ccc_y"])


def test_folds_put_each_speaker_group_in_test_once_with_development_from_the_rest(tmp_path):
    from serdistill.study.experiment import fold_data, speaker_folds_of
    from serdistill.method.reference import LinearReference

    data = make_dataset({"train": 36, "development": 18, "test": 18, "unlabeled": 12})  # 9 labelled speakers
    config = Config.from_dict({**TINY, "attributes": ["arousal"],
                               "protocol": {"trials": 2, "folds": 3, "settings": ["baseline", "ridge"]}})
    result = run_experiment(data, config, tmp_path / "run", progress=False)
    assert sorted(set(result.results["trial"])) == [0, 1, 2, 3, 4, 5]  # 3 folds x 2 trials
    folds = speaker_folds_of(data, config)
    tested = []
    for fold in range(3):
        split = fold_data(data, config, fold).manifest.table
        by_split = {s: set(split.loc[split["split"] == s, "speaker"]) for s in ("train", "development", "test")}
        assert by_split["test"] == {s for s, f in folds.items() if f == fold}
        assert by_split["development"] == {s for s, f in folds.items() if f == (fold + 1) % 3}
        assert not by_split["test"] & by_split["development"] and not (by_split["test"] | by_split["development"]) & by_split["train"]
        assert (split.loc[split["split"] == "unlabeled", "file"] == data.manifest.table.loc[
            data.manifest.table["split"] == "unlabeled", "file"]).all()  # the unannotated rows stay
        tested += sorted(by_split["test"])
        # the ridge row of each run is a ridge fitted on that fold's train split, chosen on its development split
        fd = fold_data(data, config, fold)
        normaliser = fd.normaliser()
        (X, y), (X_dev, y_dev), (X_test, y_test) = (fd.arrays(s, attributes=("arousal",), normaliser=normaliser)
                                                     for s in ("train", "development", "test"))
        expected = ccc(LinearReference("ridge").fit(X, y, X_dev, y_dev).predict(X_test)[:, 0].astype(float),
                       y_test[:, 0].astype(float))
        rows = result.results[(result.results.setting == "ridge") & (result.results.trial % 3 == fold)]
        assert rows["ccc"].tolist() == pytest.approx([expected, expected])
    assert sorted(tested) == sorted(folds)  # every speaker is tested exactly once
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert [f["test_speakers"] for f in meta["folds"]["folds"]] == [sorted(s for s, f in folds.items() if f == k)
                                                                   for k in range(3)]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Speaker-independent cross-validation: 3 folds x 2 trials" in report and "### Per fold" in report
    assert "test CCC over 6 runs (folds x trials)" in report and "over 6 trials" not in report


def test_folds_need_enough_speakers():
    data = make_dataset({"train": 6, "development": 3, "test": 3})  # 9 speakers
    with pytest.raises(ConfigError, match="must be 0 .* or at least 3"):
        Config.from_dict({**TINY, "protocol": {"folds": 2}})
    from serdistill.base.errors import CorpusError

    with pytest.raises(CorpusError, match="needs 3 to 9 folds here"):
        run_experiment(data, Config.from_dict({**TINY, "protocol": {"folds": 10}}), "/nonexistent/run", progress=False)


def test_more_trials_on_a_finished_cross_validation_only_add_runs(tmp_path):
    data = make_dataset({"train": 18, "development": 9, "test": 9})  # 9 speakers
    one = Config.from_dict({**TINY, "attributes": ["arousal"], "protocol": {"trials": 1, "folds": 3, "settings": ["ridge"]}})
    first = run_experiment(data, one, tmp_path / "run", progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "trials").rglob("ridge.json")}
    two = one.updated({"protocol": {"trials": 2}})
    second = run_experiment(data, two, tmp_path / "run", progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # runs 0-2 (trial 0 of folds 0-2) kept
    assert sorted(set(second.results["trial"])) == [0, 1, 2, 3, 4, 5]
    old = first.results.set_index("trial")["ccc"]
    assert second.results.set_index("trial")["ccc"].loc[[0, 1, 2]].tolist() == old.loc[[0, 1, 2]].tolist()
    # run 3 is fold 0's second trial: the same split, so the same deterministic ridge
    assert second.results.set_index("trial")["ccc"].loc[3] == pytest.approx(old.loc[0])
