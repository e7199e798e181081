"""Shared fixtures: the real corpora in ../shared/data, fixed seeds."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SERDISTILL_SHARED_DATA", REPO.parent / "shared" / "data"))
EMODB = SHARED_DATA / "emodb"


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    """The real EmoDB copy in ../shared/data/emodb; tests that need it skip when it is absent."""
    if not (EMODB / "audio").is_dir():
        pytest.skip(f"EmoDB not found at {EMODB} (set SERDISTILL_SHARED_DATA to the shared data folder)")
    return EMODB


@pytest.fixture(scope="session")
def emodb_files(emodb_root: Path) -> list[Path]:
    return sorted((emodb_root / "audio").glob("*.flac"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20220918)
