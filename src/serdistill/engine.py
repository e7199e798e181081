"""Where independent pieces of work run: this machine's processes, or a Ray cluster.

An engine has one method, :meth:`map`: apply a module-level function to every item and
return the results in input order. The same function and items give the same results on
either engine; only where they run differs::

    >>> from serdistill.engine import get_engine
    >>> with get_engine("local", workers=1) as engine:
    ...     engine.map(abs, [-2, 3, -4])
    [2, 3, 4]

``shared`` holds large arguments every call needs (the feature matrix, a dataset): the
local engine gives them to each worker process once, the Ray engine puts them in Ray's
object store once (``ray.put``) and passes the reference, so they cross the network once
per node, not once per task. See docs/scaling.md.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable

from serdistill.errors import ConfigError, SerdistillError

__all__ = ["ENGINES", "EngineError", "LocalEngine", "RayEngine", "get_engine"]

logger = logging.getLogger(__name__)
ENGINES = ("local", "ray")


class EngineError(SerdistillError, RuntimeError):
    """An engine cannot start: Ray is not installed, or its cluster cannot be reached."""


class _Engine:
    """What both engines share: the context manager and the argument checks."""

    name = "engine"
    task_cpus: int = 1

    def __enter__(self) -> "_Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine's processes (or its Ray connection)."""

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, shared: dict[str, Any] | None = None,
            num_cpus: float | None = None, num_gpus: float = 0, desc: str | None = None) -> list[Any]:
        """``[fn(item, **shared) for item in items]``, computed in parallel, in input order.

        Args:
            fn: a module-level (picklable) function.
            items: picklable arguments, one call each.
            shared: keyword arguments every call gets, sent to each worker once.
            num_cpus, num_gpus: the resources one call needs (Ray schedules by them); default
                CPUs: ``task_cpus``.
            desc: the progress bar's label; None shows no bar.
        """
        raise NotImplementedError


def _bar(total: int, desc: str | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=desc is None, unit="task", dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------
# Local


_SHARED: dict[str, Any] = {}


def _init_local(shared: dict[str, Any]) -> None:
    _SHARED.clear()
    _SHARED.update(shared)


def _call_local(fn: Callable[..., Any], item: Any) -> Any:
    return fn(item, **_SHARED)


class LocalEngine(_Engine):
    """This machine: ``workers`` processes (spawned, so safe with torch's threads), or this
    process when ``workers`` is 1.

    Args:
        workers: processes; default: the CPUs this process may use over ``task_cpus``.
        task_cpus: the CPUs (torch threads) a training task uses.
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, task_cpus: int = 1) -> None:
        self.workers = workers
        self.task_cpus = task_cpus

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, shared: dict[str, Any] | None = None,
            num_cpus: float | None = None, num_gpus: float = 0, desc: str | None = None) -> list[Any]:
        items = list(items)
        shared = dict(shared or {})
        workers = min(self.workers or max(1, _cpus() // int(self.task_cpus)), len(items))
        results: list[Any] = [None] * len(items)
        with _bar(len(items), desc) as bar:
            if workers <= 1:
                for i, item in enumerate(items):
                    results[i] = fn(item, **shared)
                    bar.update(1)
                return results
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_local, initargs=(shared,)) as pool:
                futures = {pool.submit(_call_local, fn, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
        return results


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# Ray


def _call_ray(fn: Callable[..., Any], keys: tuple[str, ...], item: Any, *values: Any) -> Any:
    # Ray resolves object references passed as top-level arguments: ``values`` are the
    # shared objects themselves, fetched from the object store once per node.
    return fn(item, **dict(zip(keys, values)))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EngineError(
            "The Ray engine needs the 'ray' package, which is not installed; got --engine ray. "
            "Install it with: pip install 'serdistill[ray]' (or use --engine local)."
        ) from None
    return ray


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on (Ray itself retries for minutes)."""
    if address is None or address in ("auto", "local"):
        return
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"A Ray address is HOST:PORT (e.g. 10.0.0.1:6379) or 'auto'; got {address!r}.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise EngineError(
            f"Could not reach the Ray cluster at {address!r} ({err}); expected the address that "
            "'ray start --head' printed on the head node. Check that the cluster runs ('ray status' "
            "there) and that this machine reaches that port, or use --engine local."
        ) from None


class RayEngine(_Engine):
    """A Ray cluster: each call of :meth:`map` is one Ray task with the resources it asks for.

    Args:
        address: an existing cluster (``ray start --head`` prints it, e.g. ``10.0.0.1:6379``,
            or ``auto``); None starts a local Ray for this process (stopped by :meth:`close`).
        num_cpus: the CPUs of the local Ray started when ``address`` is None (default: all).
        task_cpus: the CPUs a task asks for unless :meth:`map` says otherwise (and the torch
            threads of a training task).

    When Ray is already initialised in this process, that connection is used and left open.

    Raises:
        EngineError: Ray is not installed, or ``address`` cannot be reached.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, task_cpus: int = 1) -> None:
        ray = _import_ray()
        self.task_cpus = task_cpus
        self.address = address or None
        self._owner = not ray.is_initialized()
        if self._owner:
            _check_reachable(self.address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                                      "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = num_cpus
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as err:  # ConnectionError, TimeoutError, ValueError, RuntimeError by version
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray"
                raise EngineError(
                    f"Could not start or reach {where} ({type(err).__name__}: {err}). Check the address "
                    "('ray status' on the head node prints it; the head needs 'ray start --head'), or "
                    "use --engine local."
                ) from None
        self._ray = ray

    def close(self) -> None:
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()
        self._owner = False

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, shared: dict[str, Any] | None = None,
            num_cpus: float | None = None, num_gpus: float = 0, desc: str | None = None) -> list[Any]:
        ray = self._ray
        items = list(items)
        keys = tuple((shared or {}).keys())
        refs = [ray.put(value) for value in (shared or {}).values()]  # once, not once per task
        num_cpus = self.task_cpus if num_cpus is None else num_cpus
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_call_ray)
        pending = {task.remote(fn, keys, item, *refs): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        try:
            with _bar(len(items), desc) as bar:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        results[pending.pop(ref)] = ray.get(ref)
                        bar.update(1)
        except ray.exceptions.RayTaskError as err:
            # the other tasks are left to finish, not cancelled: ray.cancel racing a task that is
            # just finishing can abort this process (Ray 2.60); a local Ray stops them at close()
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None  # the task's own error (AudioError, ConfigError, ...)
            raise
        except ray.exceptions.RayError as err:  # a worker or node died, out of memory, ...
            raise EngineError(
                f"A Ray task of {getattr(fn, '__name__', fn)} failed outside serdistill's code "
                f"({type(err).__name__}: {err}); check the cluster ('ray status', the nodes' memory) "
                "and run the command again: finished work is kept where it is checkpointed."
            ) from err
        return results


# ---------------------------------------------------------------------------------------


def get_engine(name: str = "local", *, address: str | None = None, num_cpus: int | None = None,
               workers: int | None = None, task_cpus: int = 1) -> LocalEngine | RayEngine:
    """The engine called ``name``.

    Args:
        name: ``"local"`` (processes on this machine) or ``"ray"``.
        address: Ray only: an existing cluster's address; None starts a local Ray.
        num_cpus: Ray only: the CPUs of a local Ray started here.
        workers: local only: processes (default: the CPUs available).
        task_cpus: the CPUs (and torch threads) of one training task.

    Raises:
        ConfigError: an unknown name.
        EngineError: Ray is not installed or not reachable.
    """
    if name == "local":
        return LocalEngine(workers, task_cpus=task_cpus)
    if name == "ray":
        return RayEngine(address, num_cpus=num_cpus, task_cpus=task_cpus)
    raise ConfigError(f"The engine must be one of {', '.join(ENGINES)}; got {name!r}.")
