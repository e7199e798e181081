"""Small I/O helpers: atomic writes, so a failed or interrupted run never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""The permissions of files written here: what ``open`` would give (mkstemp's own 0600 would hide them)."""
DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` in one step.

    The temporary file is removed if the block raises, so ``path`` is either the old
    file or the complete new one, never a partial write.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def installed_versions(*names: str) -> dict[str, str]:
    """The versions of serdistill, Python, torch, NumPy and openSMILE, the platform, and of the
    packages ``names`` ("not installed" for those that are not): what bundles and runs record."""
    import importlib.metadata
    import platform

    import torch

    from serdistill import __version__

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    found = {
        "serdistill": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opensmile": version("opensmile"),
        "platform": platform.platform(),
    }
    return {**found, **{name: version(name) for name in names if name not in found}}


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite (a score for JSON).

    Examples:
        >>> finite_or_none(0.5), finite_or_none(float("nan")), finite_or_none(None)
        (0.5, None, None)
    """
    return float(value) if value is not None and math.isfinite(float(value)) else None


def jsonable(value: Any) -> Any:
    """``value`` for strict JSON: non-finite floats become None, numpy scalars and arrays plain
    Python, mappings (with str keys) and sequences converted all the way down.

    Examples:
        >>> jsonable({"a": float("nan"), 1: (np.float32(0.5), np.arange(2))})
        {'a': None, '1': [0.5, [0, 1]]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serialisable")


def working_folder() -> str:
    """The working folder as the user named it: ``$PWD`` when it is the working folder (a
    shell keeps the symlinks one went through there), else ``os.getcwd()`` (symlinks resolved).

    Examples:
        >>> os.path.samefile(working_folder(), os.getcwd())
        True
    """
    cwd = os.getcwd()
    logical = os.environ.get("PWD")
    if logical and logical != cwd and os.path.isabs(logical):
        try:
            if os.path.samefile(logical, cwd):
                return logical
        except OSError:
            pass
    return cwd


def absolute(path: str | os.PathLike[str], cwd: str | None = None) -> str:
    """``path`` made absolute and normalised, without resolving symlinks.

    A path through a symlink stays as given; a relative one joins ``cwd`` (default:
    :func:`working_folder`). ``..`` is collapsed textually, as ``os.path.normpath`` does.

    Examples:
        >>> absolute("b/../c.wav", cwd="/data/link")
        '/data/link/c.wav'
        >>> absolute("/x/./y.wav")
        '/x/y.wav'
    """
    path = os.fspath(path)
    if not os.path.isabs(path):
        path = os.path.join(working_folder() if cwd is None else cwd, path)
    return os.path.normpath(path)
