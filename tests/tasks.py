"""Engine tasks for the tests: module-level functions, importable by the pool's and Ray's workers."""
from __future__ import annotations

import time
from pathlib import Path


def report_then_wait(i: int, *, folder: str, patience: float = 30.0) -> bool:
    """A task that reports, then waits (up to ``patience`` s) for the command to have seen the report."""
    from serdistill.engine import report

    report({"task": i, "step": "started"})
    seen, deadline = Path(folder) / f"{i}.seen", time.monotonic() + patience
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    report({"task": i, "step": "done"})
    return seen.exists()
