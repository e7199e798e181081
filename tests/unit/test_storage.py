"""Large feature matrices: on-disk arrays, row-block normalisation, the streaming Parquet reader.

Each path must give exactly what the in-memory, whole-array code gives.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import serdistill.data.feature_table as feature_table
import serdistill.data.dataset as dataset
from serdistill.data.dataset import load_dataset
from serdistill.base.errors import FeatureError
from serdistill.data.feature_table import ParquetFeatures, read_features, write_features
from serdistill.data.manifest import Manifest
from serdistill.data.normalise import Normaliser
from serdistill.data.storage import disk_matrix, is_on_disk, release_rows, take_rows


def test_disk_matrix_keeps_its_values_after_release(rng: np.random.Generator) -> None:
    X = rng.standard_normal((5000, 7)).astype(np.float32)
    D = disk_matrix(X.shape)
    D[:] = X
    assert is_on_disk(D) and is_on_disk(D[3:10]) and not is_on_disk(X)
    release_rows(D, 0, len(D))
    release_rows(D[100:], 5, 50)  # a view: its own row offsets
    np.testing.assert_array_equal(D, X)
    rows = np.sort(rng.choice(len(X), 3100, replace=False))
    np.testing.assert_array_equal(take_rows(D, rows), X[rows])


def test_normaliser_rows_equal_a_copy_of_the_rows(rng: np.random.Generator) -> None:
    X = (rng.standard_normal((5000, 7)) * 3 + 2).astype(np.float32)  # more rows than one block
    rows = np.sort(rng.choice(len(X), 3100, replace=False))
    copy = Normaliser().fit(X[rows])
    streamed = Normaliser().fit(X, rows=rows)
    np.testing.assert_array_equal(copy.mean_, streamed.mean_)
    np.testing.assert_array_equal(copy.scale_, streamed.scale_)
    np.testing.assert_array_equal(copy.transform(X[rows[::-1]]), copy.transform(X, rows=rows[::-1]))
    D = disk_matrix(X.shape)
    D[:] = X
    np.testing.assert_array_equal(Normaliser().fit(D, rows=rows).transform(D, rows=rows), copy.transform(X[rows]))
    bad = X.copy()
    bad[rows[2], 1] = np.nan
    with pytest.raises(FeatureError, match=r"rows 2\)"):
        copy.transform(bad, rows=rows)


@pytest.mark.parametrize("on_disk", [False, True])
def test_load_dataset_streams_parquet_as_read_features_would(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, on_disk: bool
) -> None:
    n = 300
    files = [f"/x/f{i}.wav" for i in range(n)]
    table = pd.DataFrame(rng.standard_normal((n, 11)).astype(np.float32), index=pd.Index(files, name="file"),
                         columns=[f"c{j}" for j in range(11)])
    table.attrs["serdistill"] = {"feature_set": "toy"}
    path = write_features(pd.concat([table, table.iloc[:5] + 1]), tmp_path / "f.parquet")  # duplicates: first kept
    splits = np.array(["train", "development", "test", "unlabeled"])[rng.integers(0, 4, n)]
    order = rng.permutation(n)
    frame = pd.DataFrame({"file": [files[i] for i in order] + ["/x/missing.wav"],
                          "speaker": "s", "split": [*splits[order], "train"],
                          "arousal": 1.0, "valence": 2.0, "dominance": 3.0})
    manifest = Manifest.from_frame(frame, check_files=False)
    monkeypatch.setattr(feature_table, "CHUNK_BYTES", 4 * 320 * 3)  # several blocks of columns
    data = load_dataset(manifest, features=path, verbose=False, on_disk=on_disk)
    reference = read_features(path)
    reference = reference[~reference.index.duplicated()]
    np.testing.assert_array_equal(data.X, reference.loc[data.manifest.files].to_numpy())
    assert data.feature_names == list(reference.columns) and data.settings == {"feature_set": "toy"}
    assert data.dropped == ["/x/missing.wav"] and is_on_disk(data.X) == on_disk
    normaliser = data.normaliser()
    expected = Normaliser().fit(data.X[data.mask("train")])
    np.testing.assert_array_equal(normaliser.mean_, expected.mean_)
    monkeypatch.setattr(dataset, "SPLIT_DISK_BYTES", 0)  # every normalised split of a matrix on disk goes to disk
    for split in ("train", "test", "unlabeled"):
        X, _ = data.arrays(split, normaliser=normaliser)
        np.testing.assert_array_equal(X, expected.transform(data.X[data.mask(split)]))
        assert is_on_disk(X) == on_disk
        np.testing.assert_array_equal(data.arrays(split)[0], data.X[data.mask(split)])
    assert ParquetFeatures(path).shape == (n + 5, 11)


def test_load_dataset_names_non_finite_files_from_parquet(tmp_path: Path, rng: np.random.Generator) -> None:
    files = [f"/x/f{i}.wav" for i in range(4)]
    values = rng.standard_normal((4, 3)).astype(np.float32)
    values[2, 1] = np.inf
    path = write_features(pd.DataFrame(values, index=pd.Index(files, name="file"), columns=["a", "b", "c"]),
                          tmp_path / "f.parquet")
    frame = pd.DataFrame({"file": files, "speaker": "s", "split": "train", "arousal": 1.0, "valence": 1.0,
                          "dominance": 1.0})
    with pytest.raises(FeatureError, match=r"1 file\(s\) have NaN or infinite features .*/x/f2.wav"):
        load_dataset(Manifest.from_frame(frame, check_files=False), features=path, verbose=False)


def test_concat_rows_equals_numpy_in_memory_and_on_disk(rng: np.random.Generator) -> None:
    from serdistill.data.feature_rows import concat_embeddings
    from serdistill.data.storage import concat_rows

    a, b = rng.standard_normal((7, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)
    on_disk = disk_matrix(a.shape)
    on_disk[:] = a
    for parts, disk_bytes in (([a, b], np.inf), ([on_disk, b], 0)):
        out = concat_rows(parts, disk_bytes, rows=2)
        np.testing.assert_array_equal(out, np.concatenate([a, b]))
        assert is_on_disk(out) == (disk_bytes == 0)
    e, f = rng.standard_normal((2, 4, 3)).astype(np.float32), rng.standard_normal((2, 5, 3)).astype(np.float32)
    e_on_disk = disk_matrix((2 * 4, 3)).reshape(2, 4, 3)
    e_on_disk[:] = e
    joined = concat_embeddings(e_on_disk, f)  # on disk when the first part is
    np.testing.assert_array_equal(joined, np.concatenate([e, f], axis=1))
    assert is_on_disk(joined)


def _mapped_file_mb() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Rss_File") or line.startswith("Pss_File")) / 1024


needs_smaps = pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/self/smaps_rollup")


def test_row_reader_reads_the_rows_of_arrays_and_views_on_disk(rng: np.random.Generator) -> None:
    from serdistill.runtime.engine import _open_shared
    from serdistill.data.storage import file_reference, row_reader

    X = rng.standard_normal((300, 9)).astype(np.float32)
    D = disk_matrix(X.shape)
    D[:] = X
    E = disk_matrix((3 * 40, 9)).reshape(3, 40, 9)  # stacked embeddings: teacher 1's slice
    E[:] = rng.standard_normal(E.shape).astype(np.float32)
    path, offset = file_reference(D[50:])
    shared = _open_shared(path, offset, Path(path).stat().st_ino, (250, 9), D.strides, "<f4")  # as a worker sees it
    rows = rng.choice(40, 17)
    for array in (D, D[50:], E[1], shared):
        got = row_reader(array)(rows, np.empty((len(rows), 9), np.float32))
        np.testing.assert_array_equal(got, array[rows])
    assert row_reader(X) is None and row_reader(D[:, ::2]) is None  # in memory; columns not contiguous
    with pytest.raises(IndexError, match="row 300"):
        row_reader(D)(np.array([1, 300]), np.empty((2, 9), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        row_reader(D)(np.array([1]), np.empty((1, 9), np.float64))


@needs_smaps
def test_page_budget_and_release_memory_drop_the_pages_they_mapped() -> None:
    from serdistill.data.storage import PageBudget, release_memory

    D = disk_matrix((2560, 4096))  # 40 MiB
    D[:] = 1.0
    release_rows(D, 0, len(D))
    base = _mapped_file_mb()
    pages = PageBudget(D, budget=30 << 20)
    assert float(D[:1280].sum()) == 1280 * 4096  # 20 MiB read through the mapping
    pages.read(D[:1280].nbytes)
    assert _mapped_file_mb() - base > 15  # under the budget: kept
    pages.read(D[1280:].nbytes)
    assert _mapped_file_mb() - base < 5  # over it: dropped
    assert float(D.sum()) == D.size  # read again: the same data
    assert _mapped_file_mb() - base > 35
    release_memory(D, None, np.ones((3, 3)))
    assert _mapped_file_mb() - base < 5


def test_select_rows_keeps_a_subset_of_on_disk_features_on_disk(rng: np.random.Generator) -> None:
    from serdistill.data.storage import select_rows

    X = rng.standard_normal((700, 600)).astype(np.float32)
    D = disk_matrix(X.shape)
    D[:] = X
    mask = rng.random(700) < 0.7
    for rows in (mask, np.flatnonzero(mask)):
        on_disk, in_memory = select_rows(D, rows), select_rows(X, rows)
        np.testing.assert_array_equal(on_disk, X[rows])
        np.testing.assert_array_equal(in_memory, X[rows])
        assert is_on_disk(on_disk) and not is_on_disk(in_memory)
    assert not is_on_disk(select_rows(D, [1, 2]))  # 4.8 kB: under 1 MiB, in memory


def test_select_embedding_rows_keeps_teacher_embeddings_on_disk(rng: np.random.Generator) -> None:
    from serdistill.method.ensemble import select_embedding_rows

    E = rng.standard_normal((3, 500, 16)).astype(np.float32)
    D = disk_matrix((3 * 500, 16)).reshape(3, 500, 16)  # as TeacherEnsemble.mc_stack makes them
    D[:] = E
    mask = rng.random(500) < 0.6
    for rows in (mask, np.flatnonzero(mask), np.array([], int)):
        on_disk, in_memory = select_embedding_rows(D, rows), select_embedding_rows(E, rows)
        np.testing.assert_array_equal(on_disk, E[:, rows])
        np.testing.assert_array_equal(in_memory, E[:, rows])
        assert is_on_disk(on_disk) == bool(len(np.flatnonzero(rows) if rows.dtype == bool else rows))
        assert not is_on_disk(in_memory)
