"""Engine tasks for the tests: module-level functions, importable by the pool's and Ray's workers."""
from __future__ import annotations

import time
from pathlib import Path


def report_then_wait(i: int, *, folder: str, patience: float = 30.0) -> bool:
    """A task that reports, then waits (up to ``patience`` s) for the command to have seen the report."""
    from serdistill.runtime.engine import report

    report({"task": i, "step": "started"})
    seen, deadline = Path(folder) / f"{i}.seen", time.monotonic() + patience
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    report({"task": i, "step": "done"})
    return seen.exists()


def check_live_reports(engine, folder: Path) -> None:
    """``engine.map`` hands each task's reports to ``on_event`` while the tasks run (each task
    waits until the command has seen its first report: it fails if reports came with the
    results), and a map without ``on_event`` drops them (the task waits for no reader)."""
    events = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["step"] == "started":
            (folder / f"{event['task']}.seen").touch()

    assert engine.map(report_then_wait, range(3), shared={"folder": str(folder)}, on_event=on_event) == [True] * 3
    assert sorted((e["task"], e["step"]) for e in events) == [(i, s) for i in range(3) for s in ("done", "started")]
    assert engine.map(report_then_wait, [7], shared={"folder": str(folder), "patience": 0.5}) == [False]
