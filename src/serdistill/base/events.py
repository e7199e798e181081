"""Progress events from inside a task: how a training loop on a worker tells the command.

A task calls :func:`report` with a small picklable event (each finished epoch, say); where
it goes is set by whoever runs the task (:mod:`serdistill.runtime.engine`): a queue read by the
command (a local pool's worker, a Ray task), or the ``on_event`` callback itself when the
task runs in the command's process. Without either it does nothing. This module sits below
the method and the engines, so a training loop can report without importing an engine.

Examples:
    >>> seen = []
    >>> with sink(seen.append):
    ...     report({"epoch": 1})
    >>> seen
    [{'epoch': 1}]
    >>> report({"epoch": 2})  # nobody listening: dropped
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: In a worker: the queue that its tasks' events go to (anything with ``put``).
_queue: Any = None
#: In the command's process, while tasks run here: the ``on_event`` they report to.
_sink: list[Callable[[Any], None] | None] = [None]


def report(event: Any) -> None:
    """From inside a task: hand ``event`` (small, picklable) to whoever runs the task, while
    the task goes on. Without a listener it does nothing."""
    if _sink[0] is not None:
        _sink[0](event)
    elif _queue is not None:
        _queue.put(event)


def set_queue(queue: Any) -> Any:
    """Send this process's events to ``queue`` (None: nowhere); returns the previous one."""
    global _queue
    before, _queue = _queue, queue
    return before


@contextmanager
def sink(on_event: Callable[[Any], None] | None) -> Iterator[None]:
    """While the block runs, events reported in this process go to ``on_event``."""
    before, _sink[0] = _sink[0], on_event
    try:
        yield
    finally:
        _sink[0] = before
