"""serdistill: speech emotion recognition with students taught by probabilistic teachers.

The modules sit in one folder per layer (docs/architecture.md): ``base``, ``data``,
``method``, ``study``, ``deploy``, ``runtime``. Each module is also importable under its
name from before the layer folders: ``serdistill.ensemble`` is ``serdistill.method.ensemble``
(the same module object), so ``from serdistill.ensemble import TSModel`` keeps working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

# OpenMP threads that wait by spinning (libgomp's default) make torch's many short
# operations 5-10x slower as soon as another process shares the cores (measured here: a
# teacher epoch 69 s instead of 10 s, a student fit 4x slower). Waiting passively costs
# little on an idle machine. It must be set before torch loads; a user's value is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Each layer's modules (and packages), bottom up; ``tests/unit/test_architecture.py`` holds them to it.
LAYERS = {
    "base": ("errors", "io", "lifecycle", "events", "protocols"),
    "data": (
        "manifest",
        "corpora",
        "audio",
        "segments",
        "features",
        "cache",
        "feature_table",
        "storage",
        "feature_rows",
        "dataset",
        "normalise",
    ),
    "method": (
        "config",
        "metrics",
        "models",
        "torch_state",
        "training",
        "stacked",
        "mc_dropout",
        "reference",
        "health",
        "ensemble",
    ),
    "study": ("settings", "analysis", "experiment", "results", "stats", "findings", "report", "render", "plots"),
    "deploy": ("bundle", "export", "serve", "web"),
    "runtime": ("engine", "cli"),
}
_HOMES = {f"{__name__}.{name}": f"{__name__}.{layer}.{name}" for layer, names in LAYERS.items() for name in names}


class _ShortNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``serdistill.NAME`` (and its submodules) as the module in its layer's folder."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        head = ".".join(fullname.split(".")[:2])
        if head not in _HOMES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        head = ".".join(spec.name.split(".")[:2])
        module = importlib.import_module(_HOMES[head] + spec.name[len(head) :])
        self._spec = module.__spec__  # the import system is about to set the alias's spec: restored below
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the module keeps its own name, spec and file


sys.meta_path.insert(0, _ShortNames())  # first: a submodule of a short name must not load twice

from serdistill.base.errors import SerdistillError  # noqa: E402 (after OMP_WAIT_POLICY)
from serdistill.data.manifest import ATTRIBUTES, Manifest, read_manifest  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ATTRIBUTES", "LAYERS", "Manifest", "SerdistillError", "__version__", "read_manifest"]
