"""serdistill: speech emotion recognition with students taught by probabilistic teachers."""
from __future__ import annotations

from serdistill.errors import SerdistillError
from serdistill.manifest import ATTRIBUTES, Manifest, read_manifest

__version__ = "0.1.0"

__all__ = ["ATTRIBUTES", "Manifest", "SerdistillError", "__version__", "read_manifest"]
