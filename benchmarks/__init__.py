"""serdistill's benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench``).

A benchmark is a module ``benchmarks/bench_<name>.py`` exposing:

- ``run(args) -> list[dict]``: measure, return one dict per row of the results table.
  A row that checks a target carries ``passed`` (True or False) and ``target`` (text).
  Raise :class:`Skip` with the reason when it cannot run (data absent, no GPU, ...).
- optionally ``add_arguments(parser)``: its own options, named ``--<name>-...``.
- optionally a module docstring: its first line is what ``--list`` shows.

Modules are found by name, so adding a file is all it takes to register one.
"""
from __future__ import annotations

import serdistill  # noqa: F401  first: it sets OpenMP's passive waiting before torch loads, as the CLI does

import importlib
import pkgutil
from types import ModuleType
from typing import Any, Sequence

PREFIX = "bench_"


class Skip(Exception):
    """A benchmark cannot run here; the message says why and how to make it run."""


def available() -> list[str]:
    """The names of all benchmarks (``bench_extract.py`` -> ``extract``), sorted."""
    return sorted(m.name[len(PREFIX):] for m in pkgutil.iter_modules(__path__) if m.name.startswith(PREFIX))


def load(name: str) -> ModuleType:
    """The module of benchmark ``name`` (``extract`` or ``bench_extract``)."""
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if name not in available():
        raise KeyError(f"No benchmark {name!r}; expected one of {', '.join(available())}.")
    return importlib.import_module(f"{__name__}.{PREFIX}{name}")


def summary(module: ModuleType) -> str:
    """The first line of a benchmark module's docstring."""
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a plain-text table; columns in order of first appearance; floats to 3 significant digits."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "PASS" if value else "FAIL"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
