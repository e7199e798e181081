"""ONNX export: one graph (normaliser + students) whose outputs match Bundle.predict_features."""
from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from clirun import run_cli
from serdistill.deploy.bundle import load_bundle, save_bundle
from serdistill.method.config import Config
from serdistill.method.ensemble import TSModel
from serdistill.base.errors import BundleError
from serdistill.data.normalise import Normaliser

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

D = 16
TINY = {
    "seed": 1,
    "train": {"batch_size": 16},
    "baseline": {"enabled": False, "hidden": [8], "epochs": 1},
    "teacher": {"hidden": [8, 8], "dropouts": [0.4, 0.5, 0.6], "epochs": 2},
    "mc": {"passes": 3},
    "student": {"hidden": [12, 8], "epochs": 2, "alphas": [0.5], "betas": [0.5]},
    "unlabelled": {"source": "none"},
}
FEATURES = {"feature_set": "ComParE_2016", "dim": D, "names": [f"f{i}" for i in range(D)]}


def _bundle(tmp_path: Path, task: str, attributes: list[str]) -> Path:
    rng = np.random.default_rng(11)
    X_raw = rng.normal(loc=300.0, scale=20.0, size=(80, D)).astype(np.float32)
    X_raw[:, 3] = 7.5  # a constant feature: z = 0 whatever comes in
    X_raw[:, 5] *= 1e4  # large values with a small relative spread
    y = 4 + (X_raw[:, :len(attributes)] - 300.0) / 40 + rng.normal(scale=0.1, size=(80, len(attributes)))
    normaliser = Normaliser().fit(X_raw[:56])
    X = normaliser.transform(X_raw)
    config = Config.from_dict({**TINY, "task": task, "attributes": attributes})
    model = TSModel(config).fit(X[:56], y[:56].astype(np.float32), X[56:], y[56:].astype(np.float32))
    return save_bundle(tmp_path / f"{task}.bundle", model, normaliser, FEATURES)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory.mktemp("export"), "single", ["arousal", "valence", "dominance"])


def _inputs(bundle, rng: np.random.Generator) -> np.ndarray:
    """Typical rows, rows far out (hitting the clip on both sides) and exact training means."""
    mean, scale = bundle.normaliser.mean_, bundle.normaliser.scale_
    typical = mean + rng.normal(size=(40, D)) * scale
    extreme = mean + rng.choice([-1, 1], size=(20, D)) * rng.uniform(5, 1e4, size=(20, D)) * scale
    huge = np.where(rng.random((4, D)) < 0.5, -3e7, 3e7)
    return np.vstack([typical, extreme, huge, mean[None, :]]).astype(np.float32)


def test_the_onnx_graph_matches_the_bundle_within_1e_5(single: Path, tmp_path: Path) -> None:
    from serdistill.deploy.export import export_onnx, onnx_session

    bundle = load_bundle(single)
    data = export_onnx(bundle, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == data
    session = onnx_session(data)
    X = _inputs(bundle, np.random.default_rng(3))
    z = bundle.normaliser.transform(X)
    assert (np.abs(z) == 10).any(axis=1).sum() >= 24  # the clip is exercised
    mean, std = session.run(None, {"features": X})
    want_mean, want_std = bundle.predict_features(X)
    assert mean.shape == std.shape == (len(X), 3) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(std, want_std, rtol=0, atol=1e-5)
    assert (std > 0).all()
    for rows in (1, 7):  # dynamic batch
        one_mean, one_std = session.run(None, {"features": X[:rows]})
        np.testing.assert_allclose(one_mean, want_mean[:rows], rtol=0, atol=1e-5)
        np.testing.assert_allclose(one_std, want_std[:rows], rtol=0, atol=1e-5)


def test_the_model_carries_its_metadata(single: Path, tmp_path: Path) -> None:
    from serdistill import __version__

    code, _, err = run_cli(["export", str(single), "-o", str(tmp_path / "m.onnx")])
    assert code == 0, err
    assert "m.onnx" in err and "matches the bundle" in err
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["attributes"]) == ["arousal", "valence", "dominance"]
    assert meta["feature_set"] == "ComParE_2016" and meta["dim"] == str(D)
    assert meta["serdistill"] == __version__
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["mean", "std"]
    assert session.get_inputs()[0].shape[1] == D and not isinstance(session.get_inputs()[0].shape[0], int)


def test_a_multi_task_bundle_exports_too(tmp_path: Path) -> None:
    from serdistill.deploy.export import export_onnx, onnx_session

    bundle = load_bundle(_bundle(tmp_path, "multi", ["valence", "arousal"]))
    X = _inputs(bundle, np.random.default_rng(5))
    mean, std = onnx_session(export_onnx(bundle)).run(None, {"features": X})
    want_mean, want_std = bundle.predict_features(X)
    np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(std, want_std, rtol=0, atol=1e-5)


def test_a_bad_bundle_path_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run_cli(["export", str(tmp_path / "nothing.bundle"), "-o", str(tmp_path / "m.onnx")])
    assert code == 2 and "does not exist" in err and "serdistill train" in err
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(BundleError):
        load_bundle(tmp_path / "nothing.bundle")


def test_without_onnx_the_error_says_what_to_install(single: Path, tmp_path: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    monkeypatch.delitem(__import__("sys").modules, "onnx", raising=False)
    code, _, err = run_cli(["export", str(single), "-o", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "pip install 'serdistill[serve]'" in err and "onnx" in err
    assert not (tmp_path / "m.onnx").exists()


def test_serve_without_fastapi_says_what_to_install(single: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_fastapi(name, *args, **kwargs):
        if name == "fastapi" or name.startswith("fastapi."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fastapi)
    for name in [m for m in __import__("sys").modules if m == "fastapi" or m.startswith("fastapi.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    code, _, err = run_cli(["serve", str(single), "--port", "1"])
    assert code == 2 and "fastapi" in err and "pip install 'serdistill[serve]'" in err
