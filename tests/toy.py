"""A tiny method config and a random data set with learnable labels, for fast tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from serdistill.dataset import Dataset
from serdistill.manifest import Manifest

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
            labels = (4 + x[0] + 0.3 * rng.normal(), 4 + x[1] - x[2] + 0.3 * rng.normal(), 4 + x[3])
            if split == "unlabeled":
                labels = (np.nan, np.nan, np.nan)
            rows.append({"file": f"{split}_{i}.wav", "speaker": f"{split}{i % 3}", "split": split,
                         "arousal": labels[0], "valence": labels[1], "dominance": labels[2]})
            features.append(x)
    manifest = Manifest.from_frame(pd.DataFrame(rows), base="/nowhere", check_files=False)
    return Dataset(manifest, np.stack(features), feature_set="toy")
