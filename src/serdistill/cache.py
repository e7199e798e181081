"""The feature cache: one small ``.npy`` file per (feature settings, audio content).

Layout::

    <cache_dir>/<feature set>-<settings hash>/settings.json     what the hash stands for
    <cache_dir>/<feature set>-<settings hash>/names.json        the feature names
    <cache_dir>/<feature set>-<settings hash>/ab/abcdef....npy  one entry per audio content

An entry is keyed by the BLAKE2b hash of the file's bytes, so a renamed or moved file
still hits, and an edited one misses. The settings hash covers the feature set, feature
level, sampling rate, the openSMILE version and :data:`FEATURE_CODE_VERSION`; changing any
of them starts a fresh folder (delete old folders by hand to reclaim space).

Each entry is written atomically (a temporary file renamed over the final name) by the
parent process as results arrive, so parallel workers never write, an interrupted run
keeps every finished file, and a reader never sees half an entry. An entry that cannot
be read back (a crash mid-write on a filesystem without atomic rename, a full disk) counts
as a miss and is overwritten. Only accepted features are stored, never rejections.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from serdistill.io import write_json

logger = logging.getLogger(__name__)

FEATURE_CODE_VERSION = 1
"""Bump when a change in serdistill's reading or extraction alters feature values."""

_HASH_BYTES = 16
_BLOCK = 1 << 20


def default_cache_dir() -> Path:
    """``$SERDISTILL_CACHE/features`` if set, else ``$XDG_CACHE_HOME`` or ``~/.cache``, then ``serdistill/features``."""
    root = os.environ.get("SERDISTILL_CACHE")
    if root:
        return Path(root).expanduser() / "features"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "serdistill" / "features"


def content_hash(path: str | os.PathLike[str]) -> str:
    """BLAKE2b (128 bit) of the file's bytes, as hex.

    Raises:
        OSError: if the file cannot be read.
    """
    digest = hashlib.blake2b(digest_size=_HASH_BYTES)
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class FeatureCache:
    """Cached feature vectors for one set of feature settings.

    An entry stores ``dim`` features followed by the audio's duration and its declared
    duration (seconds), all float32, so that the duration checks can run again on a hit.

    Args:
        root: the cache folder (shared by all settings).
        settings: what the features depend on; hashed into the folder name.
        dim: the number of features.
    """

    def __init__(self, root: str | os.PathLike[str], settings: dict, *, dim: int) -> None:
        text = json.dumps(settings, sort_keys=True)
        key = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        self.settings = dict(settings)
        self.dim = dim
        self.folder = Path(root).expanduser().absolute() / f"{settings['feature_set']}-{key}"

    def _entry(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> tuple[np.ndarray, float, float] | None:
        """The features, duration and declared duration stored for ``digest``, or ``None``."""
        path = self._entry(digest)
        try:
            entry = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as err:
            logger.debug("Ignoring unreadable cache entry %s (%s)", path, err)
            return None
        if entry.dtype != np.float32 or entry.shape != (self.dim + 2,) or not np.isfinite(entry).all():
            logger.debug("Ignoring malformed cache entry %s", path)
            return None
        return entry[: self.dim], float(entry[self.dim]), float(entry[self.dim + 1])

    def put(self, digest: str, features: np.ndarray, duration: float, declared_duration: float) -> None:
        """Store one entry atomically."""
        entry = np.empty(self.dim + 2, dtype=np.float32)
        entry[: self.dim] = features
        entry[self.dim :] = (duration, declared_duration)
        path = self._entry(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, entry, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def names(self) -> list[str] | None:
        """The feature names stored with the cache, if any."""
        try:
            names = json.loads((self.folder / "names.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return names if isinstance(names, list) and len(names) == self.dim else None

    def save_names(self, names: list[str]) -> None:
        """Store the feature names and the settings beside the entries (once)."""
        if self.names() is None:
            write_json(self.folder / "names.json", list(names))
        if not (self.folder / "settings.json").exists():
            write_json(self.folder / "settings.json", self.settings)

    def __len__(self) -> int:
        """The number of entries (walks the folder; for tests and tools)."""
        return sum(1 for _ in self.folder.glob("??/*.npy"))
