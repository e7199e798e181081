"""Shared fixtures: the real EmoDB audio shipped with serdistill, fixed seeds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, 2 threads on tiny matrices can be 100x
    slower, and bit-identical results are promised for the same seed *and* thread count
    (the Ray tasks use 1 too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    """The real EmoDB copy shipped inside the package (serdistill/data/emodb)."""
    from serdistill.data.corpora.emodb import default_root

    root = default_root()
    assert (root / "audio").is_dir(), f"EmoDB should ship with serdistill at {root}"
    return root


@pytest.fixture(scope="session")
def emodb_files(emodb_root: Path) -> list[Path]:
    return sorted((emodb_root / "audio").glob("*.flac"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20220918)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A manifest of 72 empty files (train, development, test) and a feature table for them."""
    import pandas as pd

    from serdistill.data.feature_table import write_features

    root = tmp_path_factory.mktemp("tiny")
    rows, features = [], []
    rng = np.random.default_rng(3)
    (root / "audio").mkdir()
    for split_name, n in {"train": 40, "development": 16, "test": 16}.items():
        for i in range(n):
            x = rng.normal(size=12).astype(np.float32)
            path = root / "audio" / f"{split_name}_{i}.wav"
            path.touch()  # the manifest checks that files exist; their features are given
            rows.append({"file": str(path), "speaker": f"{split_name}{i % 3}", "split": split_name,
                         # on the 1..7 scale the manifest checks
                         "arousal": np.clip(4 + x[0] + 0.3 * rng.normal(), 1, 7),
                         "valence": np.clip(4 + x[1] - x[2], 1, 7), "dominance": np.clip(4 + x[3], 1, 7)})
            features.append(x)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    table = pd.DataFrame(np.stack(features), index=pd.Index([r["file"] for r in rows], name="file"),
                         columns=[f"f{j}" for j in range(12)])
    return root / "manifest.csv", write_features(table, root / "features.parquet")
