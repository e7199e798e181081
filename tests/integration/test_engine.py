"""The Ray engine gives what the local one gives: map, extraction, teachers, a whole experiment.

One local Ray with 2 CPUs serves the module (started once, shut down at the end).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clirun import run_cli

ray = pytest.importorskip("ray")

from serdistill.method.config import Config  # noqa: E402
from serdistill.runtime.engine import LocalEngine, RayEngine, get_engine  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

from tasks import check_live_reports  # noqa: E402
from toy import TINY, TINY_SETS  # noqa: E402


@pytest.fixture(scope="module")
def ray_engine():
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster: no token files
    engine = RayEngine(num_cpus=2)
    yield engine
    engine.close()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


def split(n: int, seed: int, d: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.stack([4 + X[:, 0] + 0.3 * rng.normal(size=n), 4 + X[:, 1] - X[:, 2] + 0.3 * rng.normal(size=n)], 1)
    return X, y.astype(np.float32)


@pytest.mark.parametrize("make", [lambda: LocalEngine(1), lambda: LocalEngine(2)], ids=["local-1", "local-2"])
def test_map_gives_the_same_ordered_results_on_every_engine(make, ray_engine):
    items = [3.14159, -2.71828, 1.41421, 0.5772, 2.5]
    expected = [round(x, 2) for x in items]
    with make() as local:
        assert local.map(round, items, shared={"ndigits": 2}) == expected
    assert ray_engine.map(round, items, shared={"ndigits": 2}) == expected
    assert ray_engine.map(round, []) == []


def test_task_reports_reach_on_event_while_the_ray_tasks_run(monkeypatch, ray_engine, tmp_path):
    import sys

    import serdistill.runtime.engine as engine_module

    ray.cloudpickle.register_pickle_by_value(sys.modules["tasks"])  # tests/tasks.py, sent by value
    monkeypatch.setattr(engine_module, "WAIT_SECONDS", 0.05)
    check_live_reports(ray_engine, tmp_path)


def test_a_task_error_is_raised_as_itself(ray_engine):
    with pytest.raises(ValueError, match="invalid literal"):
        ray_engine.map(int, ["1", "x"])


def test_extraction_on_ray_equals_local(ray_engine, emodb_files, tmp_path):
    from serdistill.data.features import FeatureExtractor, extract_files_with_engine

    files = emodb_files[:12]
    local = FeatureExtractor("egemaps", num_workers=1, verbose=False)
    expected = local.process_files(files)
    table, rejected, stats = extract_files_with_engine(files, ray_engine, chunk_size=5, feature_set="egemaps",
                                                       cache_dir=tmp_path / "cache", verbose=False)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert table.attrs["serdistill"] == expected.attrs["serdistill"]
    assert rejected == local.rejected == [] and stats.files == 12 and stats.extracted == 12
    # the cache the tasks filled serves a second run
    _, _, again = extract_files_with_engine(files, ray_engine, chunk_size=5, feature_set="egemaps",
                                            cache_dir=tmp_path / "cache", verbose=False)
    assert again.cached == 12
    # the command: the same Parquet table with --engine ray as with the local processes
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"file": [str(f) for f in files], "speaker": "s", "split": "train", "arousal": 4.0,
                  "valence": 4.0, "dominance": 4.0}).to_csv(manifest, index=False)
    base = ["extract", str(manifest), "--feature-set", "egemaps", "--no-cache", "-q"]
    assert run_cli([*base, "-o", str(tmp_path / "local.parquet"), "--workers", "1"])[0] == 0
    code, out, err = run_cli([*base, "-o", str(tmp_path / "ray.parquet"), "--engine", "ray"])
    assert code == 0, err
    assert "12 of 12 file(s)" in out
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray.parquet"), pd.read_parquet(tmp_path / "local.parquet"),
                                  check_exact=True)


def test_teachers_on_ray_equal_the_sequential_ones(ray_engine, one_thread):
    from serdistill.method.ensemble import TeacherEnsemble

    config = Config.from_dict(TINY)
    X, y = split(80, 0)
    X_dev, y_dev = split(32, 1)
    sequential = TeacherEnsemble(config, seed=7).fit(X, y, X_dev, y_dev)
    seen = []
    parallel = TeacherEnsemble(config, seed=7, engine=ray_engine, on_epoch=seen.append).fit(X, y, X_dev, y_dev)
    np.testing.assert_array_equal(parallel.predict(X_dev), sequential.predict(X_dev))
    for a, b in zip(parallel.models_, sequential.models_):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    assert parallel.dev_ccc_ == sequential.dev_ccc_
    assert [len(h) for h in parallel.histories_] == [3, 3]
    # each epoch once, live (the two teachers train at once: their epochs interleave), each teacher's in order
    for member in (0, 1):
        assert [i["epoch"] for i in seen if i["member"] == member] == [1, 2, 3]
    assert len(seen) == 6
    with LocalEngine(2) as local:  # two spawned processes
        in_processes = TeacherEnsemble(config, seed=7, engine=local).fit(X, y, X_dev, y_dev)
    np.testing.assert_array_equal(in_processes.predict(X_dev), sequential.predict(X_dev))


def test_a_whole_model_on_ray_equals_the_sequential_one(ray_engine, one_thread):
    from serdistill.method.ensemble import TSModel

    config = Config.from_dict({**TINY, "unlabelled": {"source": "test"}})
    X, y = split(80, 0)
    X_dev, y_dev = split(32, 1)
    X_test, _ = split(24, 2)
    sequential = TSModel(config).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)
    on_ray = TSModel(config, engine=ray_engine).fit(X, y, X_dev, y_dev, X_unlabelled=X_test)
    for a, b in [(on_ray.predict(X_test, return_std=True), sequential.predict(X_test, return_std=True)),
                 (on_ray.predict_teachers(X_test, return_std=True), sequential.predict_teachers(X_test, return_std=True))]:
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert (on_ray.alpha_, on_ray.beta_) == (sequential.alpha_, sequential.beta_)
    assert [[r["dev_ccc"] for r in on_ray.grid_[g]] for g in on_ray.grid_] == \
        [[r["dev_ccc"] for r in sequential.grid_[g]] for g in sequential.grid_]


def test_experiment_with_ray_writes_the_results_of_the_local_engine(ray_engine, one_thread, tiny_corpus, tmp_path):
    manifest, features = tiny_corpus
    common = [str(manifest), "--config", str(REPO / "configs" / "quick.toml"), "--features", str(features),
              "--trials", "2", "--no-progress", "--settings", "baseline,teachers,ts_test", *TINY_SETS]
    code, _, err = run_cli(["experiment", *common, "-o", str(tmp_path / "local")])
    assert code == 0, err
    code, _, err = run_cli(["experiment", *common, "-o", str(tmp_path / "ray"), "--engine", "ray"])
    assert code == 0, err
    for name in ("results.csv", "grid.csv"):
        local = pd.read_csv(tmp_path / "local" / name)
        on_ray = pd.read_csv(tmp_path / "ray" / name)
        pd.testing.assert_frame_equal(on_ray, local, check_exact=True)
    assert len(local) == 2 * 2  # trials x grid points
    assert (tmp_path / "ray" / "report.md").is_file()


@pytest.fixture(scope="module")
def two_node_cluster():
    """An existing Ray cluster of two nodes, one CPU each (two raylets on this machine, as
    ``ray start --head`` on one machine and ``ray start --address`` on another would make)."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def test_an_experiment_on_an_existing_two_node_cluster_writes_the_local_results(two_node_cluster, one_thread,
                                                                               tiny_corpus, tmp_path):
    """`serdistill experiment --engine ray --ray-address HOST:PORT`, run as a user runs it (its own
    process, connecting to the cluster): the trials run as tasks on the two nodes, and the
    results equal those of the local engine."""
    import subprocess
    import sys

    manifest, features = tiny_corpus
    common = [str(manifest), "--config", str(REPO / "configs" / "quick.toml"), "--features", str(features),
              "--trials", "2", "--no-progress", "--settings", "baseline,teachers,ts_test", *TINY_SETS]
    code, _, err = run_cli(["experiment", *common, "-o", str(tmp_path / "local")])
    assert code == 0, err
    command = [sys.executable, "-m", "serdistill", "experiment", *common, "-o", str(tmp_path / "cluster"),
               "--engine", "ray", "--ray-address", two_node_cluster]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("results.csv", "grid.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cluster" / name), pd.read_csv(tmp_path / "local" / name),
                                      check_exact=True)


def test_train_with_ray_writes_the_bundle_of_the_local_engine(ray_engine, one_thread, tiny_corpus, tmp_path):
    from serdistill.deploy.bundle import load_bundle

    manifest, features = tiny_corpus
    common = [str(manifest), "--config", str(REPO / "configs" / "quick.toml"), "--features", str(features), "-q",
              *TINY_SETS]
    code, _, err = run_cli(["train", *common, "-o", str(tmp_path / "local.bundle"), "--threads", "1"])
    assert code == 0, err
    code, out, err = run_cli(["train", *common, "-o", str(tmp_path / "ray.bundle"), "--engine", "ray"])
    assert code == 0, err
    X = pd.read_parquet(features).to_numpy()
    local, on_ray = load_bundle(tmp_path / "local.bundle"), load_bundle(tmp_path / "ray.bundle")
    for a, b in zip(on_ray.predict_features(X), local.predict_features(X)):
        np.testing.assert_array_equal(a, b)
    assert on_ray.model.alpha_ == local.model.alpha_


def test_get_engine_names_its_choices():
    from serdistill.base.errors import ConfigError

    assert isinstance(get_engine("local", workers=1), LocalEngine)
    with pytest.raises(ConfigError, match="local, ray; got 'spark'"):
        get_engine("spark")
