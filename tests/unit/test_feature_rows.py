"""FeatureRows, the one way the models read features: the same rows from memory and from disk."""
from __future__ import annotations

import mmap

import numpy as np
import pytest
import torch

import serdistill.data.feature_rows as feature_rows
from serdistill.data.feature_rows import FeatureRows, concat_embeddings, release, select_embedding_rows
from serdistill.data.storage import disk_matrix, is_on_disk


def _on_disk(a: np.ndarray) -> np.ndarray:
    out = disk_matrix((len(a) + 2, a.shape[1]))[2:]  # a view whose rows start inside the file
    out[:] = a
    return out


def _resident_pages(X: np.ndarray) -> int:
    """Pages of ``X``'s mapping present in this process (from /proc/self/smaps: Rss of its range)."""
    start = X.__array_interface__["data"][0]
    with open("/proc/self/smaps") as smaps:
        lines = smaps.read().splitlines()
    for i, line in enumerate(lines):
        if "-" in line.split()[0] and ":" not in line.split()[0]:
            low, high = (int(v, 16) for v in line.split()[0].split("-"))
            if low <= start < high:
                rss = next(entry for entry in lines[i + 1:] if entry.startswith("Rss:"))
                return int(rss.split()[1]) * 1024 // mmap.PAGESIZE
    raise AssertionError("no mapping holds the array")


def test_gather_gives_the_same_rows_from_memory_and_from_disk(rng: np.random.Generator, monkeypatch) -> None:
    X = rng.standard_normal((500, 9)).astype(np.float32)
    index = torch.as_tensor(rng.integers(0, len(X), 64))
    readers: list = []
    real = feature_rows.row_reader
    monkeypatch.setattr(feature_rows, "row_reader", lambda a: readers.append(real(a)) or readers[-1])
    memory = FeatureRows(X).gather(index, torch.empty(64, 9))
    disk_rows = FeatureRows(_on_disk(X))
    assert disk_rows.on_disk and not FeatureRows(X).on_disk
    disk = disk_rows.gather(index, torch.empty(64, 9))
    disk_rows.gather(index[:5], torch.empty(5, 9))  # the reader is made once
    assert [r is None for r in readers] == [True, False]  # in memory: index_select; on disk: pread
    np.testing.assert_array_equal(memory.numpy(), X[index.numpy()])
    np.testing.assert_array_equal(disk.numpy(), memory.numpy())


def test_blocks_cover_the_rows_in_order_and_release_pages_on_disk(rng: np.random.Generator) -> None:
    X = rng.standard_normal((5000, 2000)).astype(np.float32)  # 40 MB, 8 kB a row
    D = _on_disk(X)
    rows = FeatureRows(D, budget=1 << 20)
    seen = [(start, block.clone()) for start, block in rows.blocks(4096)]
    assert [s for s, _ in seen] == [0, 2097, 4194]  # on disk: at most 16 MB (2,097 rows) a read
    np.testing.assert_array_equal(torch.cat([b for _, b in seen]).numpy(), X)
    assert _resident_pages(D) * mmap.PAGESIZE < 8 << 20  # the budget dropped the pages as the blocks passed
    # in memory the blocks are exactly ``size`` rows; start and stop bound them
    assert [(s, len(b)) for s, b in FeatureRows(X).blocks(4096)] == [(0, 4096), (4096, 904)]  # in memory: as asked
    assert [(s, len(b)) for s, b in FeatureRows(X).blocks(100, 250, 420)] == [(250, 100), (350, 70)]


def test_release_drops_every_page_of_an_on_disk_matrix(rng: np.random.Generator) -> None:
    D = _on_disk(rng.standard_normal((4000, 500)).astype(np.float32))
    assert float(np.asarray(D).sum()) != 0.0  # every page read in
    assert _resident_pages(D) * mmap.PAGESIZE > 4 << 20
    release(FeatureRows(D))
    assert _resident_pages(D) == 0
    release(np.zeros((3, 3)), None, D)  # in memory or None: nothing to do


def test_select_and_embedding_helpers_stay_on_disk_with_the_same_values(rng: np.random.Generator) -> None:
    X = rng.standard_normal((300, 8)).astype(np.float32)
    keep = rng.random(300) < 0.5
    assert not is_on_disk(FeatureRows(X).select(keep))
    picked = FeatureRows(_on_disk(X)).select(keep)
    np.testing.assert_array_equal(picked, X[keep])
    E = rng.standard_normal((3, 300, 4)).astype(np.float32)
    F = disk_matrix((3 * 300, 4)).reshape(3, 300, 4)
    F[:] = E
    np.testing.assert_array_equal(select_embedding_rows(F, keep), E[:, keep])
    joined = concat_embeddings(F, E[:, :50])
    assert is_on_disk(joined) and not is_on_disk(concat_embeddings(E, E[:, :50]))
    np.testing.assert_array_equal(joined, np.concatenate([E, E[:, :50]], axis=1))


def test_bad_shapes_and_empty_inputs() -> None:
    with pytest.raises(ValueError, match="2-D"):
        FeatureRows(np.zeros(5, np.float32))
    empty = FeatureRows.optional(None, "cpu", 7)
    assert len(empty) == 0 and empty.width == 7 and list(empty.blocks()) == []
    assert repr(FeatureRows(np.zeros((2, 3), np.float32))) == "FeatureRows(2 x 3, cpu)"
