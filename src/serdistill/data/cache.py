"""The feature cache: one small file per (feature settings, audio content).

Layout::

    <cache_dir>/<feature set>-<settings hash>/settings.json     what the hash stands for
    <cache_dir>/<feature set>-<settings hash>/names.json        the feature names
    <cache_dir>/<feature set>-<settings hash>/ab/abcdef....sdf  one entry per audio content

An entry is keyed by the BLAKE2b hash of the file's bytes, so a renamed or moved file
still hits, and an edited one misses. The settings hash covers the feature set, feature
level, sampling rate, the openSMILE version, :data:`FEATURE_CODE_VERSION` and the entry
format; changing any of them starts a fresh folder (delete old folders by hand to reclaim
space).

An entry holds a format tag, a checksum and the values (float32: the features, the
audio's duration, its declared duration and its level in dBFS). The checksum is a BLAKE2b
of the values keyed with the audio's hash, so an entry whose values were changed, or that
was copied under another audio's name, does not match: it is logged and counts as a miss,
and the file is extracted again and the entry rewritten.

Each entry is written atomically (a temporary file renamed over the final name) by the
parent process as results arrive, so parallel workers never write, an interrupted run
keeps every finished file, and a reader never sees half an entry. Only accepted features
are stored, never rejections.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from serdistill.base.io import write_json

logger = logging.getLogger(__name__)

FEATURE_CODE_VERSION = 1
"""Bump when a change in serdistill's reading or extraction alters feature values."""

ENTRY_FORMAT = 2
"""Bump when an entry's layout changes (1: ``.npy`` without a checksum)."""

_HASH_BYTES = 16
_BLOCK = 1 << 20
_MAGIC = b"SDFC\x02\x00\x00\x00"  # serdistill feature cache, entry format 2
_EXTRA = 3  # duration, declared duration, level (dBFS) after the features
_SUFFIX = ".sdf"


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

    An entry stores ``dim`` features followed by the audio's duration, its declared
    duration (seconds) and its level (dBFS, see :func:`serdistill.data.audio.speech_level`),
    all float32, so that the checks on those can run again on a hit, and a checksum.

    Args:
        root: the cache folder (shared by all settings).
        settings: what the features depend on; hashed into the folder name.
        dim: the number of features.
    """

    def __init__(self, root: str | os.PathLike[str], settings: dict, *, dim: int) -> None:
        text = json.dumps({**settings, "cache_entry_format": ENTRY_FORMAT}, sort_keys=True)
        key = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        self.settings = dict(settings)
        self.dim = dim
        self.folder = Path(root).expanduser().absolute() / f"{settings['feature_set']}-{key}"
        self._size = len(_MAGIC) + _HASH_BYTES + 4 * (dim + _EXTRA)

    def _entry(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}{_SUFFIX}"

    def get(self, digest: str) -> tuple[np.ndarray, float, float, float] | None:
        """The features, duration, declared duration and level stored for ``digest``, or ``None``.

        An entry that is damaged (unreadable, cut off, not finite, or not matching its
        checksum) is logged as a warning and counts as a miss.
        """
        path = self._entry(digest)
        try:
            with open(path, "rb") as handle:
                data = handle.read(self._size + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            logger.warning("Cache entry %s cannot be read (%s); extracting the file again.", path, err)
            return None
        head = len(_MAGIC) + _HASH_BYTES
        payload = data[head:]
        if len(data) != self._size or data[: len(_MAGIC)] != _MAGIC or data[len(_MAGIC) : head] != _tag(digest, payload):
            logger.warning(
                "Cache entry %s does not match its checksum (damaged or changed since it was written); "
                "extracting the file again.",
                path,
            )
            return None
        entry = np.frombuffer(payload, dtype="<f4")
        if not np.isfinite(entry).all():  # pragma: no cover - the checksum covers what put() wrote
            logger.warning("Cache entry %s holds non-finite values; extracting the file again.", path)
            return None
        return entry[: self.dim], float(entry[self.dim]), float(entry[self.dim + 1]), float(entry[self.dim + 2])

    def put(self, digest: str, features: np.ndarray, duration: float, declared_duration: float, level: float) -> None:
        """Store one entry atomically."""
        entry = np.empty(self.dim + _EXTRA, dtype="<f4")
        entry[: self.dim] = features
        entry[self.dim :] = (duration, declared_duration, level)
        payload = entry.tobytes()
        path = self._entry(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(_MAGIC + _tag(digest, payload) + payload)
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
        return sum(1 for _ in self.folder.glob(f"??/*{_SUFFIX}"))

    def entry_path(self, digest: str) -> Path:
        """Where the entry of the audio content ``digest`` is (or would be) stored."""
        return self._entry(digest)


def _tag(digest: str, payload: bytes) -> bytes:
    """The checksum of an entry: BLAKE2b of its values, keyed with the audio's content hash."""
    return hashlib.blake2b(payload, digest_size=_HASH_BYTES, key=digest.encode()[:64]).digest()
