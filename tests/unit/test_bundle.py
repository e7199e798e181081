"""The model bundle: round trip, atomic writes, and the checks made on loading."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serdistill.deploy import bundle as bundle_module
from serdistill.deploy.bundle import (
    FILES,
    Bundle,
    VersionWarning,
    file_sha256,
    load_bundle,
    save_bundle,
    version_differences,
)
from serdistill.method.config import Config
from serdistill.method.ensemble import TSModel
from serdistill.base.errors import BundleError
from serdistill.method.metrics import ccc
from serdistill.data.normalise import Normaliser

D = 16
QUICK = str(Path(__file__).resolve().parents[2] / "configs" / "quick.toml")
TINY = {
    "seed": 1,
    "train": {"batch_size": 16},
    "baseline": {"hidden": [8], "epochs": 2},
    "teacher": {"hidden": [8, 8], "dropouts": [0.4, 0.6], "epochs": 2},
    "mc": {"passes": 3},
    "student": {"hidden": [8], "epochs": 2, "alphas": [0.5], "betas": [0.5]},
    "unlabelled": {"source": "none"},
}
FEATURES = {"feature_set": "ComParE_2016", "dim": D,
            "settings": {"feature_set": "ComParE_2016", "opensmile": "2.5.1", "feature_level": "Functionals",
                         "sampling_rate": 16000, "feature_code_version": 1},
            "names": [f"f{i}" for i in range(D)]}


@pytest.fixture(scope="module")
def fitted() -> tuple[TSModel, Normaliser, np.ndarray]:
    rng = np.random.default_rng(7)
    X_raw = rng.normal(loc=3.0, scale=2.0, size=(96, D)).astype(np.float32)
    y = 4 + X_raw[:, :3] / 2 + rng.normal(scale=0.1, size=(96, 3)).astype(np.float32)
    y[::7, 2] = np.nan  # some unlabelled dominance
    normaliser = Normaliser().fit(X_raw[:64])
    X = normaliser.transform(X_raw)
    model = TSModel(Config.from_dict(TINY)).fit(X[:64], y[:64], X[64:], y[64:])
    return model, normaliser, X_raw


@pytest.fixture
def saved(tmp_path: Path, fitted) -> Path:
    model, normaliser, _ = fitted
    return save_bundle(tmp_path / "model.bundle", model, normaliser, FEATURES, extra={"data": {"train": 64}})


def test_round_trip_gives_identical_predictions_and_uncertainty(saved: Path, fitted) -> None:
    model, normaliser, X_raw = fitted
    bundle = load_bundle(saved)
    assert isinstance(bundle, Bundle)
    assert sorted(p.name for p in saved.iterdir()) == sorted(FILES)
    mean, std = bundle.predict_features(X_raw)
    want_mean, want_std = model.predict(normaliser.transform(X_raw), return_std=True)
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(std, want_std)
    assert mean.shape == std.shape == (len(X_raw), 3) and (std > 0).all()
    got, want = bundle.predict_all(X_raw), model.predict_all(normaliser.transform(X_raw))
    for key in ("students", "teachers", "teachers_std", "baseline"):
        np.testing.assert_array_equal(got[key], want[key])
    assert bundle.config == model.config
    assert bundle.features == FEATURES
    assert bundle.attributes == ["arousal", "valence", "dominance"]
    assert set(bundle.versions) == {"serdistill", "python", "torch", "numpy", "opensmile", "platform"}
    assert bundle.metrics["data"] == {"train": 64}
    assert set(bundle.metrics["development"]) == {"arousal", "valence", "dominance"}
    assert set(bundle.metrics["failed"]) == {"arousal", "valence", "dominance"}  # lists of failed members
    assert all(isinstance(v, list) for v in bundle.metrics["failed"].values())
    assert {"ridge", "svr"} <= set(bundle.metrics["development"]["arousal"])
    assert bundle.metrics["alpha"] == {"arousal": 0.5, "valence": 0.5, "dominance": 0.5}
    assert bundle.info["version"] == bundle_module.BUNDLE_FORMAT
    assert set(bundle.info["files"]) == set(FILES) - {"bundle.json"}
    np.testing.assert_array_equal(bundle.normaliser.transform(X_raw), normaliser.transform(X_raw))


def test_evaluate_scores_each_attribute_on_its_labelled_rows(saved: Path, fitted) -> None:
    _, _, X_raw = fitted
    bundle = load_bundle(saved)
    out = bundle.predict_all(X_raw)
    y = out["students"].astype(np.float64)
    y[:10, 0] = np.nan
    y[:, 1] = np.nan  # no valence labels at all
    y[1:, 2] = np.nan  # a single dominance label: no score
    scores = bundle.evaluate(X_raw, y)
    assert set(scores) == {"students", "teachers", "baseline", "ridge", "svr"}
    assert scores["students"]["valence"] is None and scores["students"]["dominance"] is None
    assert scores["students"]["arousal"] == pytest.approx(1.0)
    for kind in ("teachers", "baseline", "ridge", "svr"):
        assert scores[kind]["arousal"] == pytest.approx(ccc(out[kind][10:, 0], y[10:, 0]))


def test_save_replaces_an_existing_bundle_only_when_complete(saved: Path, fitted, monkeypatch) -> None:
    model, normaliser, X_raw = fitted
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def broken() -> dict:
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_module, "installed_versions", broken)  # fails half-way through the build
    with pytest.raises(RuntimeError, match="disk full"):
        save_bundle(saved, model, normaliser, FEATURES)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no half bundle, no temp folder
    monkeypatch.undo()
    other = Config.from_dict({**TINY, "seed": 2})
    retrained = TSModel(other).fit(normaliser.transform(X_raw[:64]), np.full((64, 3), 4.0) + X_raw[:64, :3] / 2,
                                   normaliser.transform(X_raw[64:]), np.full((32, 3), 4.0) + X_raw[64:, :3] / 2)
    save_bundle(saved, retrained, normaliser, FEATURES)
    assert load_bundle(saved).config.seed == 2
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_save_refuses_to_replace_what_is_not_a_bundle(tmp_path: Path, fitted) -> None:
    model, normaliser, _ = fitted
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="not a serdistill bundle"):
        save_bundle(folder, model, normaliser, FEATURES)
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_save_checks_that_the_parts_fit(tmp_path: Path, fitted) -> None:
    model, normaliser, _ = fitted
    with pytest.raises(BundleError, match=r"model 16, normaliser 16, feature description 88"):
        save_bundle(tmp_path / "b", model, normaliser, {**FEATURES, "dim": 88})
    with pytest.raises(BundleError, match="lacks dim"):
        save_bundle(tmp_path / "b", model, normaliser, {"feature_set": "ComParE_2016"})
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["weights.pt", "normaliser.json", "versions.json", "bundle.json"])
def test_a_missing_file_is_named(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(BundleError, match=rf"incomplete: {name} missing"):
        load_bundle(saved)


def test_a_missing_bundle_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"does not exist\. Create one with 'serdistill train"):
        load_bundle(tmp_path / "nothing")


def test_a_damaged_file_is_reported(saved: Path) -> None:
    weights = saved / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"weights.pt has 100 bytes; bundle.json records \d+"):
        load_bundle(saved)


def test_another_format_version_cannot_be_read(saved: Path) -> None:
    info = json.loads((saved / "bundle.json").read_text())
    info["version"] = bundle_module.BUNDLE_FORMAT + 1
    (saved / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match="format version 2.*Upgrade serdistill"):
        load_bundle(saved)


def test_features_of_another_dimension_or_set_are_refused(saved: Path, fitted) -> None:
    _, _, X_raw = fitted
    bundle = load_bundle(saved)
    with pytest.raises(BundleError, match=r"expects 16 ComParE_2016 features per row; got an array of shape \(4, 15\)"):
        bundle.predict_features(X_raw[:4, :15])
    with pytest.raises(BundleError, match=r"trained on ComParE_2016 features \(16 values per file\); "
                                          r"the data has eGeMAPSv02 features \(88 values\).*--feature-set compare"):
        bundle.check_features("eGeMAPSv02", 88)
    with pytest.raises(BundleError, match="ComParE_2016 features"):
        bundle.check_features("eGeMAPSv02", 16)
    with pytest.warns(VersionWarning, match=r"opensmile '2.5.1' \(bundle\) vs '2.4.0'"):
        bundle.check_features("ComParE_2016", 16, {**FEATURES["settings"], "opensmile": "2.4.0"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bundle.check_features("ComParE_2016", 16, FEATURES["settings"])
        bundle.check_features(None, 16)


def test_other_installed_versions_warn_and_say_which(saved: Path, fitted, monkeypatch) -> None:
    _, _, X_raw = fitted
    real = bundle_module.installed_versions()
    monkeypatch.setattr(bundle_module, "installed_versions",
                        lambda: {**real, "serdistill": "9.4.0", "torch": "3.0.0", "numpy": "0.1"})
    with pytest.warns(VersionWarning, match=r"serdistill \S+ \(bundle\) vs 9.4.0 \(installed\); "
                                            r"torch \S+ \(bundle\) vs 3.0.0 \(installed\)") as record:
        bundle = load_bundle(saved)
    assert "numpy" not in str(record[0].message)
    assert bundle.predict_features(X_raw[:2])[0].shape == (2, 3)


def test_same_versions_load_silently(saved: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_bundle(saved)


@pytest.mark.parametrize(("recorded", "installed", "expected"), [
    ({"serdistill": "0.1.0", "torch": "2.1.0"}, {"serdistill": "0.1.9", "torch": "2.13.0+cpu"}, []),
    ({"serdistill": "0.1.0"}, {"serdistill": "0.2.0"}, ["serdistill 0.1.0 (bundle) vs 0.2.0 (installed)"]),
    ({"torch": "1.13.1"}, {"torch": "2.0.0"}, ["torch 1.13.1 (bundle) vs 2.0.0 (installed)"]),
    ({"opensmile": "2.5.0"}, {"opensmile": "2.5.1"}, ["opensmile 2.5.0 (bundle) vs 2.5.1 (installed)"]),
    ({"numpy": "1.0", "python": "3.8"}, {"numpy": "2.0", "python": "3.12"}, []),
])
def test_version_differences(recorded: dict, installed: dict, expected: list[str]) -> None:
    assert version_differences(recorded, installed) == expected


def test_a_copied_bundle_loads_elsewhere(saved: Path, tmp_path: Path, fitted) -> None:
    _, _, X_raw = fitted
    copy = shutil.copytree(saved, tmp_path / "elsewhere" / "copy.bundle")
    np.testing.assert_array_equal(load_bundle(copy).predict_features(X_raw)[0],
                                  load_bundle(saved).predict_features(X_raw)[0])


# ---------------------------------------------------------------------------------------
# train and evaluate commands on a small feature table (no audio needed)


@pytest.fixture
def toy_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """60 placeholder files (36 train, 12 development, 12 test) and a 16-feature table."""
    from serdistill.data.feature_table import write_features

    rng = np.random.default_rng(3)
    files = []
    for i in range(60):
        path = tmp_path / "audio" / f"{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        path.touch()
        files.append(str(path))
    X = rng.normal(size=(60, D)).astype(np.float32)
    labels = np.clip(4 + X[:, :3] + rng.normal(scale=0.2, size=(60, 3)), 1, 7)  # the 1..7 scale
    manifest = pd.DataFrame({"file": files, "speaker": [f"s{i // 6}" for i in range(60)],
                             "split": ["train"] * 36 + ["development"] * 12 + ["test"] * 12,
                             "arousal": labels[:, 0], "valence": labels[:, 1], "dominance": labels[:, 2]})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    table = pd.DataFrame(X, index=pd.Index(files, name="file"), columns=[f"f{i}" for i in range(D)])
    return tmp_path / "manifest.csv", write_features(table, tmp_path / "features.parquet")


TINY_ARGS = ["--set", "baseline.hidden=[8]", "--set", "baseline.epochs=2", "--set", "teacher.hidden=[8, 8]",
             "--set", "teacher.dropouts=[0.4, 0.6]", "--set", "teacher.epochs=3", "--set", "mc.passes=3",
             "--set", "student.hidden=[8]", "--set", "student.epochs=2", "--set", "student.alphas=[0.5]",
             "--set", "student.betas=[0.5]", "--set", "train.batch_size=12"]


def test_train_and_evaluate_commands_on_a_feature_table(toy_corpus, tmp_path: Path, capsys) -> None:
    from serdistill.runtime.cli import main

    manifest, features = toy_corpus
    out = tmp_path / "toy.bundle"
    code = main(["train", str(manifest), "--config", QUICK, "-o", str(out),
                 "--features", str(features), "-q", "--threads", "1", *TINY_ARGS])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Development CCC" in printed and "0.5/0.5" in printed and f"Wrote {out}" in printed
    bundle = load_bundle(out)
    assert bundle.metrics["data"]["splits"] == {"train": 36, "development": 12, "test": 12}
    assert bundle.metrics["unlabelled"] == {**bundle.metrics["unlabelled"], "source": "test", "n": 12}
    assert bundle.features["dim"] == D and bundle.features["names"][:2] == ["f0", "f1"]

    target = tmp_path / "scores.json"
    assert main(["evaluate", str(out), str(manifest), "--features", str(features), "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert list(result) == ["split", "n", "ccc"] and result["split"] == "test" and result["n"] == 12
    assert all(isinstance(v, float) for kind in result["ccc"].values() for v in kind.values())
    printed = capsys.readouterr().out
    assert "Split test: 12 file(s)" in printed and "students" in printed

    no_baseline = tmp_path / "nb.bundle"
    assert main(["train", str(manifest), "--config", QUICK, "-o", str(no_baseline), "-q",
                 "--features", str(features), *TINY_ARGS, "--set", "baseline.enabled=false",
                 "--set", 'attributes=["valence"]', "--set", "unlabelled.source=none"]) == 0
    assert main(["evaluate", str(no_baseline), str(manifest), "--features", str(features),
                 "--json", str(target)]) == 0
    assert json.loads(target.read_text())["ccc"]["baseline"] == {"valence": None}
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["baseline"] == ["-"] and rows["ridge"] != ["-"]  # no baseline trained; the references are


@pytest.mark.parametrize(("change", "message"), [
    ({"split": "train"}, "no development files"),
    ({"split": ["train"] * 48 + ["development"] * 12}, "has no test split"),
    ({"arousal": np.nan}, "too few arousal labels to train"),
])
def test_train_says_what_the_manifest_lacks(toy_corpus, tmp_path: Path, capsys, change, message) -> None:
    from serdistill.runtime.cli import main

    manifest, features = toy_corpus
    table = pd.read_csv(manifest)
    for column, value in change.items():
        table[column] = value
    table.to_csv(manifest, index=False)
    code = main(["train", str(manifest), "--config", QUICK, "-o", str(tmp_path / "b"), "-q",
                 "--features", str(features), *TINY_ARGS])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.ckpt").exists()


def test_train_refuses_to_overwrite_what_is_not_a_bundle_before_training(toy_corpus, tmp_path: Path,
                                                                          capsys) -> None:
    from serdistill.runtime.cli import main

    manifest, features = toy_corpus
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    code = main(["train", str(manifest), "--config", QUICK, "-o", str(tmp_path / "notes"),
                 "--features", str(features), *TINY_ARGS])
    assert code == 2 and "is not a serdistill bundle" in capsys.readouterr().err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_a_bundle_has_the_usual_permissions(saved: Path) -> None:
    from serdistill.base.io import DIR_MODE, FILE_MODE

    assert saved.stat().st_mode & 0o777 == DIR_MODE  # not mkdtemp's 0700: others may read a shared model
    assert {p.name: p.stat().st_mode & 0o777 for p in saved.iterdir()} == dict.fromkeys(FILES, FILE_MODE)


def _edit(bundle: Path, name: str, change) -> None:
    """Change one JSON file of a bundle and record its new size and checksum, as a save would."""
    data = json.loads((bundle / name).read_text())
    change(data)
    (bundle / name).write_text(json.dumps(data))
    _record(bundle, name)


def _record(bundle: Path, name: str) -> None:
    info = json.loads((bundle / "bundle.json").read_text())
    info["files"][name] = {"bytes": (bundle / name).stat().st_size, "sha256": file_sha256(bundle / name)}
    (bundle / "bundle.json").write_text(json.dumps(info))


def test_a_bundle_trained_on_cuda_runs_on_the_cpu_without_cuda(saved: Path, fitted) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _, _, X_raw = fitted
    before = load_bundle(saved).predict_features(X_raw)[0]
    _edit(saved, "model.json", lambda meta: meta["config"]["train"].update(device="cuda"))
    bundle = load_bundle(saved)
    assert bundle.config.train.device == "cpu"
    np.testing.assert_array_equal(bundle.predict_features(X_raw)[0], before)
    with pytest.raises(BundleError, match="no CUDA device"):
        load_bundle(saved, device="cuda")


def test_a_hand_edited_config_toml_is_refused_and_model_json_rules_when_recorded(saved: Path) -> None:
    text = (saved / "config.toml").read_text().replace("seed = 1", "seed = 5")
    (saved / "config.toml").write_text(text)
    with pytest.raises(BundleError, match="config.toml does not match the SHA-256"):
        load_bundle(saved)
    _record(saved, "config.toml")  # the edit recorded in bundle.json: the file is what the bundle says
    with pytest.warns(UserWarning, match="differs from the config in model.json"):
        assert load_bundle(saved).config.seed == 1
