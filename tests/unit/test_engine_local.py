"""The engine abstraction without a cluster: the local engine, and the error when Ray is missing."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from serdistill.runtime.engine import EngineError, LocalEngine, get_engine
from serdistill.base.errors import SerdistillError
from tasks import check_live_reports


def test_the_local_engine_maps_in_input_order_with_shared_arguments():
    with get_engine("local", workers=1) as engine:
        assert isinstance(engine, LocalEngine)
        assert engine.map(round, [1.26, 2.71, -0.55], shared={"ndigits": 1}) == [1.3, 2.7, -0.6]
        assert engine.map(abs, []) == []


def test_a_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    with pytest.raises(EngineError, match=r"pip install 'serdistill\[ray\]'") as info:
        get_engine("ray")
    assert isinstance(info.value, SerdistillError)


def test_the_commands_report_a_missing_ray_clearly(monkeypatch, tmp_path):
    from clirun import run_cli

    monkeypatch.setitem(sys.modules, "ray", None)
    manifest = tmp_path / "m.csv"
    (tmp_path / "a.wav").touch()
    manifest.write_text("file,speaker,split,arousal,valence,dominance\na.wav,s,train,4,4,4\n")
    code, _, err = run_cli(["extract", str(manifest), "-o", str(tmp_path / "f.parquet"), "--engine", "ray"])
    assert code != 0
    assert "serdistill[ray]" in err


@pytest.mark.parametrize("address", ["127.0.0.1:1", "nonsense"])
def test_an_unreachable_ray_address_fails_at_once_and_says_why(address):
    pytest.importorskip("ray")
    with pytest.raises(EngineError, match="Ray") as info:
        get_engine("ray", address=address)
    assert address in str(info.value)


# --- the process pool -------------------------------------------------------------------


def _row_sums(i: int, *, X, Y, tag):
    """A task: what a worker sees of its shared arguments."""
    from serdistill.data.storage import is_on_disk

    return float(X[i].sum()), float(Y[i].sum()), tag, is_on_disk(X) and is_on_disk(Y)


def _fail(i: int):
    if i == 2:
        raise ValueError(f"bad item {i}")
    return i


def _die(i: int):
    import os

    os._exit(3)


def test_the_pool_maps_large_arrays_as_shared_file_pages_not_copies():
    from serdistill.data.storage import disk_matrix

    X = disk_matrix((600, 512))  # 1.2 MB: shared where it is
    X[:] = np.random.default_rng(0).normal(size=X.shape)
    Y = np.random.default_rng(1).normal(size=(600, 1024)).astype(np.float32)  # 2.4 MB in memory: copied once
    with LocalEngine(2) as engine:
        first = engine.map(_row_sums, range(5), shared={"X": X, "Y": Y, "tag": "a"})
        assert [r[:3] for r in first] == [(float(X[i].sum()), float(Y[i].sum()), "a") for i in range(5)]
        assert all(r[3] for r in first)  # the worker's X and Y are file mappings, not unpickled copies
        second = engine.map(_row_sums, range(3), shared={"X": X[100:], "Y": Y, "tag": "b"})
        assert [r[:3] for r in second] == [(float(X[100 + i].sum()), float(Y[i].sum()), "b") for i in range(3)]
        assert len(engine._exports) == 1  # Y went to a file once, reused by the second call


def test_a_pool_task_error_is_raised_as_itself_and_the_pool_recovers():
    with LocalEngine(2) as engine:
        with pytest.raises(ValueError, match="bad item 2"):
            engine.map(_fail, range(4))
        assert engine.map(_fail, [0, 1, 3]) == [0, 1, 3]


def test_a_dead_worker_is_an_engine_error_that_says_what_to_do():
    with LocalEngine(2) as engine:
        with pytest.raises(EngineError, match="died") as info:
            engine.map(_die, range(2))
        assert "again" in str(info.value)


def _pid(i: int) -> int:
    import os

    return os.getpid()


def test_gpu_tasks_run_in_this_process_one_after_another():
    import os

    with LocalEngine(2) as engine:
        assert engine.map(_pid, range(3), num_gpus=1) == [os.getpid()] * 3
        assert engine._pool is None  # no worker was started


def _slow(i: int) -> int:
    import time

    time.sleep(0.5)
    return i


def test_the_pool_calls_on_wait_while_its_tasks_run(monkeypatch):
    import serdistill.runtime.engine as engine_module

    monkeypatch.setattr(engine_module, "WAIT_SECONDS", 0.05)
    calls = []
    with LocalEngine(2) as engine:
        assert engine.map(_slow, range(2), on_wait=lambda: calls.append(1)) == [0, 1]
    assert len(calls) >= 3  # the workers' start-up and 0.5 s of work, polled every 0.05 s


@pytest.mark.parametrize("workers", [1, 2])
def test_task_reports_reach_on_event_while_the_tasks_run(monkeypatch, tmp_path, workers):
    import serdistill.runtime.engine as engine_module
    import serdistill.base.events as events_module

    monkeypatch.setattr(engine_module, "WAIT_SECONDS", 0.05)
    with LocalEngine(workers) as engine:
        check_live_reports(engine, tmp_path)
    assert events_module._sink == [None]  # the command's sink is restored after map


def test_pool_training_reports_each_epoch_once_as_the_sequential_one_does():
    import torch

    from serdistill.method.config import Config
    from serdistill.method.ensemble import StudentEnsemble, TeacherEnsemble

    from toy import TINY

    config = Config.from_dict(TINY)
    rng = np.random.default_rng(0)
    X, X_dev = rng.normal(size=(60, 12)).astype(np.float32), rng.normal(size=(24, 12)).astype(np.float32)
    y, y_dev = X[:, :1] + 4, X_dev[:, :1] + 4
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for name, engine in (("here", None), ("pool", LocalEngine(2))):
            seen: list[dict] = []
            teachers = TeacherEnsemble(config, seed=1, engine=engine, on_epoch=seen.append).fit(X, y, X_dev, y_dev)
            emb = teachers.embed(X)
            StudentEnsemble(config, seed=1, engine=engine, on_epoch=seen.append).fit(X, y, X_dev, y_dev, embeddings=emb)
            if engine is not None:
                engine.close()
            runs[name] = seen
    finally:
        torch.set_num_threads(before)
    key = lambda e: (e["stage"], e.get("alpha", 0), e.get("beta", 0), e["member"], e["epoch"])  # noqa: E731
    strip = lambda e: repr({k: v for k, v in e.items() if k != "seconds"})  # noqa: E731  (repr: nan == nan)
    assert len(runs["pool"]) == len(runs["here"]) > 0
    assert sorted(map(key, runs["pool"])) == sorted(map(key, runs["here"]))  # each epoch once
    assert [strip(e) for e in sorted(runs["pool"], key=key)] == [strip(e) for e in sorted(runs["here"], key=key)]
