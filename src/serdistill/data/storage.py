"""Feature matrices held on disk: a float32 array in a memory-mapped file, read in row blocks.

A corpus the size of MSP-Podcast (50,362 segments x 6,373 ComParE features, 1.28 GB in
float32) would otherwise sit in memory twice while it is normalised: raw, and z-scored per
split. :func:`disk_matrix` gives an ordinary writable ``ndarray`` whose pages live in an
unlinked file on disk (the file disappears with the array); code that streams over it in
row blocks calls :func:`release_rows` after each block, which drops those pages from the
process (``madvise(MADV_DONTNEED)``: the data stays in the file and the page cache, and
is read back on the next access). For any other array both are no-ops, so the same code
runs on in-memory arrays unchanged.

Examples:
    >>> X = disk_matrix((3, 4))
    >>> X[:] = 1.0
    >>> release_rows(X, 0, 3)
    >>> float(X.sum())
    12.0
"""

from __future__ import annotations

import logging
import mmap
import os
import tempfile
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike


def disk_matrix(
    shape: tuple[int, int], dtype: type = np.float32, directories: Iterable[PathLike | None] = (None,)
) -> np.ndarray:
    """A zero-filled writable array of ``shape`` backed by an unlinked file in the first usable directory.

    ``None`` in ``directories`` stands for the system's temporary folder. The file's space
    is reserved at once (``posix_fallocate``), so a full disk fails here with OSError rather
    than later on a page fault.

    Raises:
        OSError: no directory could hold the file.
    """
    n, d = shape
    size = max(1, int(n) * int(d) * np.dtype(dtype).itemsize)
    error: OSError | None = None
    for directory in directories:
        try:
            fd, path = tempfile.mkstemp(prefix=".serdistill-", suffix=".matrix", dir=directory)
        except OSError as err:
            error = err
            continue
        try:
            os.unlink(path)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # pragma: no cover - not Linux
                os.ftruncate(fd, size)
            mapping = _FileMapping(fd, size)
        except OSError as err:
            os.close(fd)
            error = err
            continue
        # the descriptor stays open with the mapping: other processes reopen the file through it
        mapping.fd = fd
        weakref.finalize(mapping, os.close, fd)
        flat: np.ndarray = np.frombuffer(mapping, dtype=dtype, count=int(n) * int(d))
        return flat.reshape(n, d)
    raise error or OSError("disk_matrix: no directory given")


def large_empty(shape: tuple[int, ...], disk_bytes: float, dtype: type = np.float32) -> np.ndarray:
    """An array of ``shape``: a :func:`disk_matrix` from ``disk_bytes`` up (memory if the disk has no room).

    For arrays written once and then read a slice at a time, such as the teachers'
    embeddings (N, n, H): with :func:`release_rows` after each slice, only the slice in
    use stays in the process's memory.
    """
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(shape) >= 2 and n >= disk_bytes:
        try:
            return disk_matrix((int(np.prod(shape[:-1])), shape[-1]), dtype).reshape(shape)
        except OSError as err:
            logger.warning("Could not hold a %s array on disk (%s); keeping it in memory.", shape, err)
    return np.empty(shape, dtype=dtype)


def concat_rows(parts: Iterable[np.ndarray], disk_bytes: float, rows: int = 2048) -> np.ndarray:
    """``np.concatenate(parts)`` along the rows, a :func:`disk_matrix` from ``disk_bytes`` up.

    Copied in blocks of ``rows``, each released after use on both sides, so that neither
    the parts (when on disk) nor the result stay in the process's memory.
    """
    parts = [np.asarray(p) for p in parts]
    n = sum(len(p) for p in parts)
    out = large_empty((n, *parts[0].shape[1:]), disk_bytes, parts[0].dtype.type)
    flat_out = out.reshape(n, -1) if n else out
    at = 0
    for part in parts:
        flat = part.reshape(len(part), -1) if len(part) else part
        for start in range(0, len(part), rows):
            block = flat[start : start + rows]
            flat_out[at : at + len(block)] = block
            release_rows(flat, start, start + len(block))
            release_rows(flat_out, at, at + len(block))
            at += len(block)
    return out


class _FileMapping(mmap.mmap):
    """A :func:`disk_matrix`'s mapping, with its file's open descriptor (``fd``)."""

    fd: int


def file_reference(X: np.ndarray) -> tuple[str, int] | None:
    """Where another process of this machine finds ``X``'s bytes: (path, byte offset), or None.

    Only for arrays in a :func:`disk_matrix` (its unlinked file is reached through this
    process's descriptor, ``/proc/<pid>/fd/<fd>``: Linux), valid while ``X`` lives.
    :func:`open_reference` maps it.
    """
    found = _mapping(X)
    if found is None or not os.path.isdir("/proc/self/fd"):
        return None
    mapping, origin = found
    if not isinstance(mapping, _FileMapping):
        return None
    return f"/proc/{os.getpid()}/fd/{mapping.fd}", X.__array_interface__["data"][0] - origin


def open_reference(path: str, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str) -> np.ndarray:
    """The array a :func:`file_reference` names: the same pages, mapped copy-on-write.

    Writes (none are expected) would stay in this process; reads share the page cache
    with every other process that maps the file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        mapping = _FileMapping(fd, os.fstat(fd).st_size, access=mmap.ACCESS_COPY)
    except BaseException:
        os.close(fd)
        raise
    mapping.fd = fd  # open with the mapping, for :func:`row_reader`
    weakref.finalize(mapping, os.close, fd)
    whole = np.frombuffer(mapping, dtype=np.uint8)  # the array's base starts where the mapping does
    return np.ndarray(shape, dtype=np.dtype(dtype), buffer=whole, offset=offset, strides=strides)


def is_on_disk(X: np.ndarray) -> bool:
    """Whether ``X`` (or the array it is a view of) is a :func:`disk_matrix`."""
    return _mapping(X) is not None


def release_rows(X: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of rows ``start:stop`` of a :func:`disk_matrix` from this process (no-op otherwise)."""
    found = _mapping(X)
    if found is None or stop <= start:
        return
    mapping, origin = found
    here = X.__array_interface__["data"][0] - origin
    row = X.strides[0]
    if row <= 0:
        return
    first = here + int(start) * row
    last = here + int(stop) * row
    first -= first % mmap.PAGESIZE
    last = min(len(mapping), -(-last // mmap.PAGESIZE) * mmap.PAGESIZE)
    if last > first:
        mapping.madvise(mmap.MADV_DONTNEED, first, last - first)


def _mapping(X: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """(the mmap under ``X``, the address of its first byte), or None."""
    if not hasattr(mmap, "MADV_DONTNEED"):  # pragma: no cover - not Linux
        return None
    array, base = X, getattr(X, "base", None)
    while isinstance(base, np.ndarray):
        array, base = base, base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap):
        return None
    return base, array.__array_interface__["data"][0]


def row_blocks(X: np.ndarray, rows: np.ndarray | None, size: int):
    """Blocks of ``size`` rows of ``X`` (views), or of ``X[rows]`` (copies), releasing each after use."""
    if rows is None:
        for start in range(0, len(X), size):
            yield X[start : start + size]
            release_rows(X, start, start + size)
    else:
        for start in range(0, len(rows), size):
            index = rows[start : start + size]
            yield X[index]
            if len(index):
                release_rows(X, int(index.min()), int(index.max()) + 1)


def take_rows(X: np.ndarray, rows: np.ndarray, size: int = 2048, *, disk_bytes: float = np.inf) -> np.ndarray:
    """``X[rows]`` (a new array), gathered in blocks so that a :func:`disk_matrix` stays out of
    memory; from ``disk_bytes`` up the result is one too (:func:`large_empty`)."""
    rows = np.asarray(rows)
    out = large_empty((len(rows), *X.shape[1:]), disk_bytes, X.dtype.type)
    for i, block in enumerate(row_blocks(X, rows, size)):
        out[i * size : i * size + len(block)] = block
        release_rows(out, i * size, i * size + len(block))
    return out


def labelled_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``X`` and ``y`` whose labels are all finite (NaN = unlabelled); no copy of
    the (large) features when every row is labelled.

    Examples:
        >>> X, y = labelled_rows(np.arange(6.0).reshape(3, 2), np.array([[1.0], [np.nan], [2.0]]))
        >>> X.tolist(), y.tolist()
        ([[0.0, 1.0], [4.0, 5.0]], [[1.0], [2.0]])
    """
    keep = np.isfinite(y).all(axis=1)
    return (X, y) if keep.all() else (select_rows(X, keep), y[keep])


def select_rows(X: np.ndarray, rows: np.ndarray, disk_bytes: float = 1 << 20) -> np.ndarray:
    """``X[rows]`` for indices or a boolean mask: on disk when ``X`` is (and the result has
    ``disk_bytes`` or more), so that a subset of on-disk features never lands in memory."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if not is_on_disk(X):
        return X[rows]
    return take_rows(X, rows, disk_bytes=disk_bytes)


#: :class:`PageBudget`'s default: the bytes of random reads between two releases.
PAGE_BUDGET = 64 << 20
#: :meth:`PageBudget.chunk`: the most bytes of an on-disk array one sequential read maps.
READ_BYTES = 16 << 20


class PageBudget:
    """Random row reads from on-disk arrays that leave at most ~``budget`` bytes of their
    pages in this process.

    Training reads mini-batches of random rows: over an epoch every page of the features
    would end up mapped into the process (at MSP-Podcast size, the whole 1.28 GB matrix in
    each worker's memory). Told the bytes of each read (:meth:`read`), this drops all the
    arrays' pages from the process once ``budget`` bytes have been read since the last
    time (one ``madvise`` per array). The pages stay in the page cache while the kernel
    has room, so a later read of them is a minor fault, not a disk read: measured here,
    0.15 ms more per 256-row batch of 6,373 features (the batch's first layer alone takes
    ~50 ms). For arrays in memory it does nothing.

    Examples:
        >>> X = disk_matrix((1000, 100))
        >>> pages = PageBudget(X, None, np.zeros((3, 3)), budget=1 << 16)
        >>> len(pages.arrays)
        1
        >>> pages.read(X[:200].nbytes)   # 80 kB read: over the budget, X's pages are dropped
    """

    def __init__(self, *arrays: Any, budget: int = PAGE_BUDGET) -> None:
        self.arrays = [X for X in arrays if isinstance(X, np.ndarray) and X.ndim and is_on_disk(X)]
        self.budget = int(budget)
        self.spent = 0

    def chunk(self, rows: int, row_bytes: int) -> int:
        """Rows per sequential read: ``rows`` when every array is in memory; for arrays on disk,
        at most :data:`READ_BYTES` worth, so that no single read maps a large block at once
        (a block of 8,192 rows of 6,373 features is 209 MB; row by row the results are the same)."""
        if not self.arrays:
            return max(1, int(rows))
        return max(1, min(int(rows), READ_BYTES // max(1, int(row_bytes))))

    def read(self, nbytes: int) -> None:
        """``nbytes`` more were read from the arrays."""
        if not self.arrays:
            return
        self.spent += int(nbytes)
        if self.spent >= self.budget:
            self.release()

    def release(self) -> None:
        """Drop every page of the arrays from this process now."""
        for X in self.arrays:
            release_rows(X, 0, len(X))
        self.spent = 0


def row_reader(X: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``read(rows, out)``: ``out[:] = X[rows]`` read from ``X``'s file with ``pread``, for a
    :func:`disk_matrix` (or a row-contiguous view of one); None for any other array.

    Mini-batches of random rows read through the mapping would bring far more than the
    rows into the process: the kernel maps a whole large folio of the page cache at each
    fault (measured here, Linux 6.18: 385 MB mapped for one batch of 256 rows of 6,373
    float32, 6.2 MB). ``pread`` copies just the rows and maps nothing: 1.5 ms per such
    batch instead of 0.5 ms (the batch's first layer alone takes ~50 ms to train).

    Examples:
        >>> X = disk_matrix((5, 3))
        >>> X[:] = np.arange(15).reshape(5, 3)
        >>> row_reader(X)(np.array([4, 0]), np.empty((2, 3), np.float32)).tolist()
        [[12.0, 13.0, 14.0], [0.0, 1.0, 2.0]]
        >>> row_reader(np.zeros((5, 3))) is None
        True
    """
    found = _mapping(X)
    fd = getattr(found[0], "fd", None) if found is not None else None
    if found is None or fd is None or X.ndim != 2 or X.strides[1] != X.itemsize or X.strides[0] < X.shape[1] * X.itemsize:
        return None
    here, stride, dtype = X.__array_interface__["data"][0] - found[1], X.strides[0], X.dtype
    mapping = found[0]  # kept alive (and so the descriptor open) while the reader lives

    def read(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        if out.dtype != dtype or out.shape != (len(rows), X.shape[1]) or not out.flags.c_contiguous:
            raise ValueError(f"row_reader: out must be a C-contiguous {dtype} array of shape {(len(rows), X.shape[1])}.")
        _ = mapping
        for j, row in enumerate(np.asarray(rows).tolist()):
            if not 0 <= row < len(X):
                raise IndexError(f"row {row} is out of range for an array of {len(X)} rows.")
            os.preadv(fd, [out[j]], here + row * stride)
        return out

    return read


def release_memory(*arrays: np.ndarray | None) -> None:
    """Between stages of a long run: drop every page of ``arrays`` (those on disk) from this
    process, and hand the heap's free memory back to the system.

    Python's allocator and glibc's keep freed memory for reuse: after a stage that
    allocated and freed hundreds of MB (a training, a Monte-Carlo pass), a process that
    then idles (a worker between tasks) or does something small would otherwise keep
    counting it. ``malloc_trim`` returns it (glibc only; elsewhere only the pages go).
    """
    import gc

    for X in arrays:
        if X is not None and np.ndim(X):
            release_rows(X, 0, len(X))
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()
