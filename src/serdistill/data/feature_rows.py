"""The one seam between the models and a feature matrix, wherever its rows live.

Training, Monte-Carlo dropout, prediction and scoring read features through
:class:`FeatureRows` and nothing else. The matrix may be an ordinary array, a tensor on
any device, or a :func:`~serdistill.data.storage.disk_matrix` whose pages must not pile up in
the process (MSP-Podcast's 1.28 GB in every worker). FeatureRows decides how rows are
read, and the code above it is the same for all of them:

- :meth:`FeatureRows.gather`: a mini-batch of random rows into a buffer (from disk with
  ``pread``, which maps nothing; in memory with ``index_select``);
- :meth:`FeatureRows.blocks`: the rows in order, in slices, with the pages released under
  a budget as they pass;
- :meth:`FeatureRows.select`: a subset of rows (on disk when the matrix is);
- :meth:`FeatureRows.release`: drop every page of the matrix from the process.

For arrays in memory the budget and the releases cost nothing, and every path gives the
same numbers bit for bit (``tests/unit/test_storage.py``).

Examples:
    >>> rows = FeatureRows(np.arange(12, dtype=np.float32).reshape(4, 3))
    >>> rows.gather(torch.tensor([3, 0]), torch.empty(2, 3)).tolist()
    [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]]
    >>> [(start, tuple(block.shape)) for start, block in rows.blocks(3)]
    [(0, (3, 3)), (3, (1, 3))]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from serdistill.data.storage import (
    PAGE_BUDGET,
    PageBudget,
    concat_rows,
    is_on_disk,
    large_empty,
    release_rows,
    row_reader,
    select_rows,
    take_rows,
)

#: :meth:`FeatureRows.blocks`' default: rows per slice of a sequential pass.
BLOCK_ROWS = 8192


class FeatureRows:
    """The rows of a (n, d) float32 feature matrix, for reading in batches and blocks.

    Args:
        X: an array (in memory or a :func:`~serdistill.data.storage.disk_matrix`), a tensor, or a
            FeatureRows (its matrix is used again).
        device: where :attr:`tensor` lives; a CPU float32 array is used in place, anything
            else is copied there once.
        budget: bytes of reads between two releases of an on-disk matrix's pages.

    Attributes:
        array: the matrix as given (an ndarray or a tensor).
        tensor: the same rows as a contiguous float32 tensor on ``device`` (a view of
            ``array`` on the CPU when it is float32 already).
    """

    def __init__(self, X: Any, device: str | torch.device = "cpu", *, budget: int = PAGE_BUDGET) -> None:
        if isinstance(X, FeatureRows):
            X = X.array
        self.array: Any = X
        tensor = torch.as_tensor(X, dtype=torch.float32)
        if tensor.ndim != 2:
            raise ValueError(f"Expected a 2-D array (segments x features); got shape {tuple(tensor.shape)}.")
        self.tensor = tensor.to(torch.device(device)).contiguous()
        self._pages = PageBudget(X, budget=budget)
        self._reader: list[Callable[[np.ndarray, np.ndarray], np.ndarray] | None] = []  # made on the first gather

    @classmethod
    def optional(cls, X: Any, device: str | torch.device, width: int) -> FeatureRows:
        """``FeatureRows(X, device)``, or an empty one of ``width`` columns when ``X`` is None or empty."""
        if X is None or len(X) == 0:
            return cls(torch.zeros((0, width)), device)
        return cls(X, device)

    def __len__(self) -> int:
        return len(self.tensor)

    def __repr__(self) -> str:
        where = "disk" if self.on_disk else str(self.tensor.device)
        return f"FeatureRows({len(self)} x {self.width}, {where})"

    @property
    def width(self) -> int:
        """Features per row."""
        return int(self.tensor.shape[1])

    @property
    def on_disk(self) -> bool:
        """Whether the rows live in a :func:`~serdistill.data.storage.disk_matrix`."""
        return isinstance(self.array, np.ndarray) and is_on_disk(self.array)

    def gather(self, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (a tensor of row numbers) into ``out`` (len(index), width), which is returned.

        A random batch read through an on-disk matrix's mapping would map hundreds of MB of
        it into the process (the kernel maps whole folios); read with ``pread`` it maps
        nothing. The numbers are the same.
        """
        if not self._reader:
            X = self.array
            self._reader.append(
                row_reader(X)
                # on disk: random rows with pread, not through the mapping
                if (
                    isinstance(X, np.ndarray)
                    and self.tensor.device.type == "cpu"
                    and X.size
                    and self.tensor.data_ptr() == X.__array_interface__["data"][0]
                )
                else None
            )
        read = self._reader[0]
        if read is None:
            return torch.index_select(self.tensor, 0, index, out=out)
        return torch.from_numpy(read(index.numpy(), out.numpy()))

    def blocks(self, size: int = BLOCK_ROWS, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, slice of :attr:`tensor`) over rows ``start:stop`` in order, ``size`` rows a
        slice (fewer for an on-disk matrix: at most 16 MB a read), the pages released under the
        budget as the slices pass."""
        stop = len(self) if stop is None else stop
        row_bytes = self.width * 4
        step = self._pages.chunk(size, row_bytes)
        for first in range(start, stop, step):
            block = self.tensor[first : min(first + step, stop)]
            yield first, block
            self._pages.read(len(block) * row_bytes)

    def select(self, rows: np.ndarray) -> np.ndarray:
        """``array[rows]`` for indices or a boolean mask, on disk when the matrix is."""
        return select_rows(np.asarray(self.array), rows)

    def release(self) -> None:
        """Drop every page of an on-disk matrix from this process now (a no-op in memory)."""
        self._pages.release()


def release(*arrays: Any) -> None:
    """Drop the pages of each on-disk array (or FeatureRows) among ``arrays``; the rest are left alone."""
    for X in arrays:
        if isinstance(X, FeatureRows):
            X.release()
        elif isinstance(X, np.ndarray) and X.ndim:
            release_rows(X, 0, len(X))


def select_embedding_rows(E: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``E[:, rows]`` of teacher embeddings (N, n, H), for indices or a boolean mask: on disk
    when ``E`` is (a teacher at a time, each slice's pages released), else in memory."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if not is_on_disk(E) or not len(rows):
        return E[:, rows]
    out = large_empty((len(E), len(rows), E.shape[2]), 0, E.dtype.type)
    for i in range(len(E)):
        out[i] = take_rows(E[i], rows)  # teacher i's rows: one (k, H) in memory at a time
        release_rows(out[i], 0, len(rows))
    return out


def concat_embeddings(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Teacher embeddings (N, n, H) and (N, m, H) joined into (N, n + m, H): on disk, a teacher
    at a time with each slice's pages released, when ``a`` is on disk; else in memory."""
    if not is_on_disk(a):
        return np.concatenate([a, b], axis=1)
    out = large_empty((len(a), a.shape[1] + b.shape[1], a.shape[2]), 0)
    for i in range(len(a)):
        out[i] = concat_rows([a[i], b[i]], np.inf)
        for array in (a[i], b[i], out[i]):
            release_rows(array, 0, len(array))
    return out
