"""A tiny method config and a random data set with learnable labels, for fast tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from serdistill.data.dataset import Dataset
from serdistill.data.manifest import Manifest

#: The whole method, cut to seconds: 2 attributes, 2 teachers, 16-unit layers, 3 epochs.
TINY = {
    "attributes": ["arousal", "valence"],
    "train": {"batch_size": 16},
    "baseline": {"hidden": [16, 16], "epochs": 3},
    "teacher": {"hidden": [16, 16], "dropouts": [0.3, 0.5], "epochs": 3},
    "mc": {"passes": 5},
    "student": {"hidden": [16], "epochs": 3, "alphas": [0.3, 0.7], "betas": [0.5]},
}

#: A tiny method as ``serdistill`` command-line overrides (arousal only), for the ``tiny_corpus`` fixture.
TINY_SETS = [f"--set={k}" for k in (
    'attributes=["arousal"]', "train.batch_size=16", "baseline.hidden=[16]", "baseline.epochs=2",
    "teacher.hidden=[16, 16]", "teacher.dropouts=[0.3, 0.5]", "teacher.epochs=2", "mc.passes=4",
    "student.hidden=[16]", "student.epochs=2", "student.alphas=[0.3, 0.7]", "student.betas=[0.5]")]


def make_dataset(n_per_split: dict[str, int], *, d: int = 12, seed: int = 0) -> Dataset:
    """Random features; labels that depend on the first four of them (the 'unlabeled' split has none)."""
    rng = np.random.default_rng(seed)
    rows, features = [], []
    for split, n in n_per_split.items():
        for i in range(n):
            x = rng.normal(size=d).astype(np.float32)
            labels = tuple(np.clip((4 + x[0] + 0.3 * rng.normal(), 4 + x[1] - x[2] + 0.3 * rng.normal(), 4 + x[3]),
                                   1, 7))  # the manifest's 1..7 scale
            if split == "unlabeled":
                labels = (np.nan, np.nan, np.nan)
            rows.append({"file": f"{split}_{i}.wav", "speaker": f"{split}{i % 3}", "split": split,
                         "arousal": labels[0], "valence": labels[1], "dominance": labels[2]})
            features.append(x)
    manifest = Manifest.from_frame(pd.DataFrame(rows), base="/nowhere", check_files=False)
    return Dataset(manifest, np.stack(features), feature_set="toy")


#: A tiny method for :func:`compare_bundle`: 3 teachers, 8-unit layers, seconds to train.
TINY_COMPARE = {
    "seed": 2,
    "train": {"batch_size": 16},
    "baseline": {"enabled": False, "hidden": [8], "epochs": 1},
    "teacher": {"hidden": [8, 8], "dropouts": [0.4, 0.5, 0.6], "epochs": 2},
    "mc": {"passes": 3},
    "student": {"hidden": [8], "epochs": 2, "alphas": [0.5], "betas": [0.5]},
    "unlabelled": {"source": "none"},
}


def compare_bundle(folder) -> "Path":
    """A bundle on ComParE_2016's 6,373 features, trained in seconds on random features, in ``folder``."""
    from pathlib import Path

    from serdistill.deploy.bundle import save_bundle
    from serdistill.method.config import Config
    from serdistill.method.ensemble import TSModel
    from serdistill.data.features import FeatureSet, feature_names, feature_settings
    from serdistill.data.normalise import Normaliser

    fs = FeatureSet.ComParE_2016
    rng = np.random.default_rng(4)
    X_raw = rng.lognormal(mean=0.0, sigma=2.0, size=(64, fs.dim)).astype(np.float32)
    y = (4 + np.log(X_raw[:, :3]) / 2).astype(np.float32)
    normaliser = Normaliser().fit(X_raw[:48])
    X = normaliser.transform(X_raw)
    model = TSModel(Config.from_dict(TINY_COMPARE)).fit(X[:48], y[:48], X[48:], y[48:])
    features = {"feature_set": fs.value, "dim": fs.dim, "settings": feature_settings(fs), "names": feature_names(fs)}
    return save_bundle(Path(folder) / "compare.bundle", model, normaliser, features)
