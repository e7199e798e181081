"""The interfaces that let a lower layer use what a higher one builds.

:class:`Engine` is what extraction (:mod:`serdistill.data.features`), training
(:mod:`serdistill.method.ensemble`) and the experiment take to spread their work; the
runtime layer implements it (:class:`serdistill.runtime.engine.LocalEngine`, processes on
this machine, and :class:`serdistill.runtime.engine.RayEngine`, a Ray cluster), and
:func:`serdistill.runtime.engine.get_engine` makes one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Engine"]


@runtime_checkable
class Engine(Protocol):
    """Runs module-level functions on many items in parallel, in input order.

    Examples:
        >>> from serdistill.runtime.engine import LocalEngine
        >>> isinstance(LocalEngine(workers=1), Engine)
        True
    """

    name: str
    task_cpus: int

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        shared: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float = 0,
        desc: str | None = None,
        on_wait: Callable[[], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """``[fn(item, **shared) for item in items]``, computed in parallel, in input order.

        Args:
            fn: a module-level (picklable) function.
            items: picklable arguments, one call each.
            shared: keyword arguments every call gets, sent to each worker once.
            num_cpus, num_gpus: the resources one call needs (Ray schedules by them); default
                CPUs: ``task_cpus``.
            desc: the progress bar's label; None shows no bar.
            on_wait: called every :data:`serdistill.runtime.engine.WAIT_SECONDS` or so while
                tasks run elsewhere (e.g. to show progress that the tasks leave in files); not
                called for tasks run here.
            on_event: called here with each event the tasks
                :func:`serdistill.base.events.report`, as they report it (local engine: within
                ``WAIT_SECONDS``; Ray: never).
        """
        ...

    def close(self) -> None:
        """Release the engine's processes (or its cluster connection)."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...
