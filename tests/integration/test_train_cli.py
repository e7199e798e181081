"""train, evaluate and predict on the real EmoDB audio shipped with serdistill.

EmoDB is split by speaker (6 train, 2 development, 2 test speakers). The features are
extracted once per module into a cache under the session's temporary folder; ``train``
reads them back through that cache, ``evaluate`` from the Parquet table, ``predict`` from
the audio again (cache hits).
"""
from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clirun import run_cli as _run
from serdistill.deploy.bundle import FILES, load_bundle
from serdistill.runtime.cli import train as train_cli
from serdistill.data.feature_table import read_features
from serdistill.data.manifest import read_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "configs" / "quick.toml")
# configs/quick.toml cut down to about two minutes on 2 busy cores: 3 teachers, one (alpha, beta).
# One torch thread: predictable on cores shared with other jobs (2 threads: 1.4x faster on idle
# cores, up to 3x slower on busy ones).
FAST = ["--threads", "1", "--set", "train.batch_size=64", "--set", "baseline.momentum=0.9",
        "--set", "teacher.momentum=0.9", "--set", "teacher.dropouts=[0.45, 0.55, 0.65]", "--set", "teacher.epochs=20",
        "--set", "baseline.epochs=20", "--set", "mc.passes=20", "--set", "student.epochs=15",
        "--set", "student.alphas=[0.7]", "--set", "student.betas=[0.3]"]
# smaller still, for the resume test: one attribute, a checkpoint after every epoch.
TINY = ["--threads", "1", "--set", 'attributes=["arousal"]', "--set", "baseline.epochs=3", "--set", "baseline.hidden=[32]",
        "--set", "teacher.hidden=[32, 32]", "--set", "teacher.dropouts=[0.5, 0.6]", "--set", "teacher.epochs=4",
        "--set", "mc.passes=5", "--set", "student.hidden=[32]", "--set", "student.epochs=3",
        "--set", "student.alphas=[0.5]", "--set", "student.betas=[0.5]", "--set", "train.checkpoint_every=1"]
ARTIFACTS = ("file", "arousal", "valence", "dominance", "arousal_std", "valence_std", "dominance_std", "duration")


@pytest.fixture(scope="module")
def emodb(tmp_path_factory: pytest.TempPathFactory, emodb_root: Path) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("emodb")
    manifest, features, cache = root / "manifest.csv", root / "features.parquet", root / "cache"
    assert _run(["corpus", "emodb", str(emodb_root), "-o", str(manifest)])[0] == 0
    code, _, err = _run(["extract", str(manifest), "-o", str(features), "--workers", "2",
                         "--cache-dir", str(cache), "-q"])
    assert code == 0, err
    return SimpleNamespace(root=root, manifest=manifest, features=features, cache=cache)


@pytest.fixture(scope="module")
def trained(emodb: SimpleNamespace) -> SimpleNamespace:
    bundle = emodb.root / "emodb.bundle"
    tic = time.perf_counter()
    code, out, err = _run(["train", str(emodb.manifest), "--config", QUICK, "-o", str(bundle),
                           "--cache-dir", str(emodb.cache), "--workers", "2", *FAST])
    seconds = time.perf_counter() - tic
    assert code == 0, err
    print(f"\ntrain: {seconds:.1f} s\n{out}")
    return SimpleNamespace(bundle=bundle, out=out, err=err, seconds=seconds)


def test_train_writes_a_complete_bundle_and_a_summary(trained: SimpleNamespace) -> None:
    assert sorted(p.name for p in trained.bundle.iterdir()) == sorted(FILES)
    assert not train_cli.checkpoint_dir(trained.bundle).exists()  # removed after success
    bundle = load_bundle(trained.bundle)
    assert bundle.features["feature_set"] == "ComParE_2016" and bundle.features["dim"] == 6373
    assert len(bundle.features["names"]) == 6373 and bundle.features["settings"]["opensmile"]
    assert bundle.metrics["data"]["splits"] == {"train": 309, "development": 109, "test": 117}
    assert bundle.metrics["unlabelled"]["source"] == "test" and bundle.metrics["unlabelled"]["n"] == 117
    assert bundle.config.teacher.dropouts == (0.45, 0.55, 0.65) and bundle.config.student.alphas == (0.7,)
    dev = bundle.metrics["development"]["arousal"]
    assert dev["students"] > 0.5 and dev["teachers"] > 0.5 and dev["baseline"] > 0.5
    for line in ("Development CCC", "baseline", "teachers", "students", "alpha/beta", "0.7/0.3", "Trained in"):
        assert line in trained.out
    assert "arousal: teacher 1/3 (p=0.45): best dev CCC" in trained.err  # one line per finished model


def test_evaluate_writes_the_scores_and_arousal_is_learnt(trained: SimpleNamespace, emodb: SimpleNamespace) -> None:
    target = emodb.root / "test.json"
    code, out, err = _run(["evaluate", str(trained.bundle), str(emodb.manifest), "--split", "test",
                           "--features", str(emodb.features), "--json", str(target), "-q"])
    assert code == 0, err
    result = json.loads(target.read_text())
    print(f"\nevaluate (test split):\n{out}")
    assert list(result) == ["split", "n", "ccc"]
    assert result["split"] == "test" and result["n"] == 117
    assert list(result["ccc"]) == ["students", "teachers", "baseline", "ridge", "svr"]
    for scores in result["ccc"].values():
        assert list(scores) == ["arousal", "valence", "dominance"]
        assert all(isinstance(v, float) and -1 <= v <= 1 for v in scores.values())
    # EmoDB arousal is easy. Measured with FAST on this split: students 0.806, teachers 0.738,
    # baseline 0.755 (valence 0.448 / 0.296 / 0.446, dominance 0.844 / 0.800 / 0.798).
    assert result["ccc"]["students"]["arousal"] > 0.7
    assert result["ccc"]["teachers"]["arousal"] > 0.5
    assert result["ccc"]["baseline"]["arousal"] > 0.5
    assert "students" in out and "Split test: 117 file(s)" in out


def test_evaluate_extracts_through_the_cache_when_no_features_are_given(trained: SimpleNamespace,
                                                                         emodb: SimpleNamespace) -> None:
    target = emodb.root / "dev.json"
    code, _, err = _run(["evaluate", str(trained.bundle), str(emodb.manifest), "--split", "development",
                         "--cache-dir", str(emodb.cache), "--workers", "1", "--json", str(target), "-q"])
    assert code == 0, err
    result = json.loads(target.read_text())
    students = load_bundle(trained.bundle).metrics["development"]
    assert result["n"] == 109
    for attribute in ("arousal", "valence", "dominance"):  # the same development CCC as at training
        assert result["ccc"]["students"][attribute] == pytest.approx(students[attribute]["students"], abs=1e-4)


def test_evaluate_names_a_missing_split(trained: SimpleNamespace, emodb: SimpleNamespace) -> None:
    code, _, err = _run(["evaluate", str(trained.bundle), str(emodb.manifest), "--split", "Test2"])
    assert code == 2
    assert "Split 'Test2' is not in manifest" in err and "'development'" in err


@pytest.fixture(scope="module")
def audio_folder(emodb: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Eight test-split files (in a nested folder), a file of random bytes and a 10 ms file."""
    folder = tmp_path_factory.mktemp("recordings")
    nested = folder / "session" / "take1"
    nested.mkdir(parents=True)
    test = read_manifest(emodb.manifest).split("test").files[:8]
    good = []
    for i, source in enumerate(test):
        target = (nested if i % 2 else folder) / Path(source).name
        target.write_bytes(Path(source).read_bytes())
        good.append(target)
    bad = folder / "broken.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    short = folder / "click.wav"
    sf.write(short, 0.1 * np.random.default_rng(1).standard_normal(160), 16000)  # 10 ms
    (folder / "notes.txt").write_text("not audio, not picked up")
    return SimpleNamespace(folder=folder, good=good, test=test, bad=bad, short=short)


def test_predict_a_folder_reports_bad_files_and_goes_on(trained: SimpleNamespace, emodb: SimpleNamespace,
                                                        audio_folder: SimpleNamespace) -> None:
    output = audio_folder.folder.parent / "predictions.csv"
    code, _, err = _run(["predict", str(trained.bundle), str(audio_folder.folder), "-o", str(output),
                         "--cache-dir", str(emodb.cache), "--workers", "1", "-q"])
    assert code == 0, err
    table = pd.read_csv(output)
    assert tuple(table.columns) == ARTIFACTS
    assert sorted(table["file"]) == sorted(str(p) for p in audio_folder.good)
    values = table.drop(columns="file").to_numpy()
    assert np.isfinite(values).all()
    assert (table.filter(like="_std") > 0).all(axis=None)
    np.testing.assert_allclose(table["duration"], 2.0, atol=1e-3)  # this copy of EmoDB: all 2.00 s
    rejected = pd.read_csv(output.with_name("predictions.csv.rejected.csv"))
    assert dict(zip(rejected["file"], rejected["kind"])) == {str(audio_folder.bad): "unreadable",
                                                             str(audio_folder.short): "too_short"}
    assert "Rejected 2 of 10 file(s)" in err and str(audio_folder.bad) in err and str(audio_folder.short) in err

    # the same numbers as predicting from the extracted feature table
    bundle = load_bundle(trained.bundle)
    features = read_features(emodb.features).loc[audio_folder.test]
    mean, std = bundle.predict_features(features.to_numpy())
    by_name = table.set_index(table["file"].map(lambda f: Path(f).name))
    names = [Path(f).name for f in audio_folder.test]
    np.testing.assert_allclose(by_name.loc[names, ["arousal", "valence", "dominance"]], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_name.loc[names, ["arousal_std", "valence_std", "dominance_std"]], std,
                               rtol=1e-4, atol=1e-5)


def test_predict_writes_csv_to_stdout_from_files_and_a_manifest(trained: SimpleNamespace, emodb: SimpleNamespace,
                                                                audio_folder: SimpleNamespace) -> None:
    code, out, err = _run(["predict", str(trained.bundle), str(audio_folder.good[0]), str(emodb.manifest),
                           "--split", "development", "-o", "-", "--cache-dir", str(emodb.cache), "-q"])
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert tuple(table.columns) == ARTIFACTS and len(table) == 1 + 109
    assert table["file"].iloc[0] == str(audio_folder.good[0])


def test_predict_exits_2_when_no_file_can_be_used(trained: SimpleNamespace, audio_folder: SimpleNamespace,
                                                  tmp_path: Path) -> None:
    output = tmp_path / "none.csv"
    code, _, err = _run(["predict", str(trained.bundle), str(audio_folder.bad), str(audio_folder.short),
                         "-o", str(output), "--no-cache", "-q"])
    assert code == 2
    assert "None of the 2 file(s) could be used" in err and "nothing was written" in err
    assert not output.exists()
    assert len(pd.read_csv(tmp_path / "none.csv.rejected.csv")) == 2
    code, _, err = _run(["predict", str(trained.bundle), str(tmp_path / "empty"), "-o", str(output)])
    assert code == 2 and "unreadable" in err  # a path that is not there is a rejected file


def test_train_refuses_cuda_without_cuda(emodb: SimpleNamespace, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = _run(["train", str(emodb.manifest), "--config", QUICK, "-o", str(tmp_path / "b"),
                         "--device", "cuda", "--features", str(emodb.features)])
    assert code == 2 and "no CUDA device" in err and "cpu" in err
    assert not (tmp_path / "b").exists()


def test_train_resumes_an_interrupted_run(emodb: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    # --workers 1: trained in this process, so the interruption comes mid-teacher
    argv = ["--config", QUICK, "--features", str(emodb.features), "--workers", "1", *TINY]
    reference = tmp_path / "reference.bundle"
    assert _run(["train", str(emodb.manifest), "-o", str(reference), "-q", *argv])[0] == 0

    seen: list[tuple] = []
    interrupt = [True]
    original = train_cli.Progress.__call__

    def interrupt_at_second_teacher(self, info):  # Ctrl-C during teacher 2's third epoch, once
        seen.append((info["stage"], info.get("member"), info["epoch"]))
        if interrupt[0] and seen[-1] == ("teacher", 1, 3):
            interrupt[0] = False
            raise KeyboardInterrupt
        original(self, info)

    bundle = tmp_path / "run.bundle"
    monkeypatch.setattr(train_cli.Progress, "__call__", interrupt_at_second_teacher)
    code, _, err = _run(["train", str(emodb.manifest), "-o", str(bundle), *argv])
    assert code == 130 and "interrupted" in err
    ckpt = train_cli.checkpoint_dir(bundle)
    assert not bundle.exists() and (ckpt / "arousal" / "teacher1.pt").is_file()

    code, _, err = _run(["train", str(emodb.manifest), "-o", str(bundle), *argv, "--set", "teacher.lr=0.01"])
    assert code == 2 and "another config" in err and "--restart" in err  # checkpoints of another run

    seen.clear()
    code, _, err = _run(["train", str(emodb.manifest), "-o", str(bundle), *argv])
    assert code == 0, err
    assert seen[0] == ("teacher", 1, 3)  # baseline and teacher 1 not retrained; teacher 2 goes on
    assert not ckpt.exists()
    X = read_features(emodb.features).to_numpy()[:50]
    resumed, uninterrupted = load_bundle(bundle).predict_features(X), load_bundle(reference).predict_features(X)
    np.testing.assert_allclose(resumed[0], uninterrupted[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(resumed[1], uninterrupted[1], rtol=1e-4, atol=1e-5)
    assert math.isfinite(load_bundle(bundle).metrics["development"]["arousal"]["students"])


def test_train_on_the_process_pool_stops_on_ctrl_c_and_resumes(emodb: SimpleNamespace, tmp_path: Path,
                                                               monkeypatch) -> None:
    # the default engine with 2 processes: teachers and students are pool tasks (1 torch thread each)
    argv = ["--config", QUICK, "--features", str(emodb.features), "--workers", "2", *TINY]
    reference = tmp_path / "reference.bundle"
    assert _run(["train", str(emodb.manifest), "-o", str(reference), "-q", *argv])[0] == 0

    bundle = tmp_path / "run.bundle"
    ckpt = train_cli.checkpoint_dir(bundle)
    original = train_cli.Progress.__call__
    seen: list[tuple] = []

    def ctrl_c_at_a_teachers_second_epoch(self, info):  # the workers report each epoch as it ends
        seen.append((info["stage"], info.get("member"), info["epoch"]))
        if info["stage"] == "teacher" and info["epoch"] == 2:
            raise KeyboardInterrupt
        original(self, info)

    monkeypatch.setattr(train_cli.Progress, "__call__", ctrl_c_at_a_teachers_second_epoch)
    code, _, err = _run(["train", str(emodb.manifest), "-o", str(bundle), *argv])
    assert code == 130 and "interrupted" in err and not bundle.exists()
    assert ("teacher", 0, 4) not in seen and ("teacher", 1, 4) not in seen  # stopped mid-teachers
    import torch

    files = [ckpt / "arousal" / f"teacher{i}.pt" for i in range(2)]
    assert any(f.is_file() for f in files)
    # where each teacher stood when Ctrl-C was handled (on a busy machine it may have finished)
    stood = {i: (torch.load(f, weights_only=False)["epoch"], f.stat().st_mtime_ns) if f.is_file() else (0, None)
             for i, f in enumerate(files)}

    seen.clear()

    stamps: dict[int, int] = {}

    def record(self, info):
        seen.append((info["stage"], info.get("member"), info["epoch"]))
        if info["stage"] == "teacher":  # its checkpoint as of its last epoch seen
            stamps[info["member"]] = files[info["member"]].stat().st_mtime_ns
        original(self, info)

    monkeypatch.setattr(train_cli.Progress, "__call__", record)
    code, _, err = _run(["train", str(emodb.manifest), "-o", str(bundle), *argv])
    assert code == 0, err
    for i, (epoch, stamp) in stood.items():  # each teacher went on from its checkpoint, none from scratch
        if epoch == 4:  # it had finished: not retrained (its epochs are replayed from its checkpoint)
            assert stamps[i] == stamp, (i, seen)
        else:
            assert min(e for s, m, e in seen if s == "teacher" and m == i) == epoch + 1, (i, epoch, seen)
    assert ("baseline", None, 1) not in seen and not ckpt.exists()  # the baseline was not retrained
    X = read_features(emodb.features).to_numpy()[:50]
    resumed, uninterrupted = load_bundle(bundle).predict_features(X), load_bundle(reference).predict_features(X)
    np.testing.assert_array_equal(resumed[0], uninterrupted[0])
    np.testing.assert_array_equal(resumed[1], uninterrupted[1])


def test_progress_keeps_each_of_several_concurrent_models_apart() -> None:
    import io

    stream = io.StringIO()  # not a terminal: the finished-model lines only
    progress = train_cli.Progress(stream=stream)
    for epoch in (1, 2):  # two teachers of a pool, their epochs interleaved
        for member, seconds in ((0, 1.0), (1, 10.0)):
            progress({"group": "arousal", "stage": "teacher", "member": member, "name": f"teacher {member + 1}/2",
                      "epoch": epoch, "epochs": 2, "seconds": seconds, "dev_ccc": 0.1 * epoch,
                      "best_dev_ccc": 0.2, "best_epoch": 2})
    assert stream.getvalue().splitlines() == [
        "arousal: teacher 1/2: best dev CCC 0.200 at epoch 2/2 (2.0 s)",
        "arousal: teacher 2/2: best dev CCC 0.200 at epoch 2/2 (20.0 s)"]
    assert progress.models == {}
