"""Where independent pieces of work run: this machine's processes, or a Ray cluster.

An engine has one method, :meth:`map`: apply a module-level function to every item and
return the results in input order. The same function and items give the same results on
either engine; only where they run differs::

    >>> from serdistill.runtime.engine import get_engine
    >>> with get_engine("local", workers=1) as engine:
    ...     engine.map(abs, [-2, 3, -4])
    [2, 3, 4]

``shared`` holds large arguments every call needs (the feature matrix, a dataset). The
local engine does not copy its arrays into the workers: arrays of 1 MiB and more travel
as references to a file the workers map (:mod:`serdistill.data.storage`), so every process
reads the same pages; the Ray engine puts them in Ray's object store once (``ray.put``)
and passes the reference, so they cross the network once per node, not once per task.
See docs/scaling.md.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from serdistill.base.errors import ConfigError, SerdistillError
from serdistill.base.events import report, set_queue, sink
from serdistill.base.lifecycle import started_on_main_thread
from serdistill.base.protocols import Engine

__all__ = ["ENGINES", "Engine", "EngineError", "LocalEngine", "RayEngine", "get_engine", "report"]

logger = logging.getLogger(__name__)
ENGINES = ("local", "ray")
#: How often ``map``'s ``on_wait`` is called while tasks run elsewhere, seconds.
WAIT_SECONDS = 2.0


class EngineError(SerdistillError, RuntimeError):
    """An engine cannot start: Ray is not installed, or its cluster cannot be reached."""


class _Engine:
    """What both engines share: :class:`serdistill.base.protocols.Engine`'s context manager
    (each engine has its own ``map``, documented there)."""

    name = "engine"
    task_cpus: int = 1

    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine's processes (or its Ray connection)."""


def _bar(total: int, desc: str | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=desc is None, unit="task", dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------
# Local


#: Arrays of this many bytes and more reach local workers as file references, not pickles.
SHARE_BYTES = 1 << 20


class _SharingPickler(pickle.Pickler):
    """Pickles large arrays as references to file pages the workers map (no copy).

    An array in a :func:`~serdistill.data.storage.disk_matrix` is referenced where it is; any
    other large array is first copied once into one (kept in ``exports`` for the engine's
    life, reused by later calls with the same array).
    """

    def __init__(self, file: io.BytesIO, exports: dict[int, tuple[Any, np.ndarray]]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.exports = exports
        for key, (owner, _) in list(exports.items()):  # the copies of arrays that are gone go too
            if owner() is None:
                del exports[key]
        self.enabled = os.path.isdir("/proc/self/fd")  # files are reopened through /proc: Linux

    def reducer_override(self, obj: Any) -> Any:
        if (
            not self.enabled
            or not isinstance(obj, np.ndarray)
            or obj.nbytes < SHARE_BYTES
            or obj.ndim < 2
            or obj.dtype.hasobject
        ):
            return NotImplemented
        from serdistill.data import storage

        ref = storage.file_reference(obj)
        target = obj
        if ref is None:
            entry = self.exports.get(id(obj))
            if entry is None or entry[0]() is not obj:
                copy = storage.concat_rows([obj], 0)  # a copy on disk (in memory if the disk has no room)
                self.exports[id(obj)] = (weakref.ref(obj), copy)
            else:
                copy = entry[1]
            target, ref = copy, storage.file_reference(copy)
            if ref is None:  # the copy is in memory: an ordinary pickle, a copy per worker
                return NotImplemented
        # the file's inode too: a descriptor number can be reused by a new file with the same layout
        return _open_shared, (*ref, os.stat(ref[0]).st_ino, target.shape, target.strides, target.dtype.str)


#: In a worker: the file mappings of the current shared arguments, by path and offset.
_MAPPED: dict[tuple, np.ndarray] = {}
#: In a worker: (digest of the pickled shared arguments, the arguments), reused by the next task.
_SHARED: list[Any] = [None, None]


def _open_shared(path: str, offset: int, inode: int, shape: tuple, strides: tuple, dtype: str) -> np.ndarray:
    from serdistill.data import storage

    key = (path, inode, offset, shape, strides, dtype)
    if key not in _MAPPED:
        _MAPPED[key] = storage.open_reference(path, offset, shape, strides, dtype)
    return _MAPPED[key]


def _init_worker(events: Any, main_thread: bool = False) -> None:
    """A worker ends with its parent (:func:`serdistill.base.lifecycle.exit_with_parent`), ignores
    Ctrl-C (the parent gets it, and stops the workers itself), and sends its tasks'
    :func:`report` events to ``events``."""
    import signal

    from serdistill.base.lifecycle import exit_with_parent

    exit_with_parent(main_thread)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_queue(events)


def _call_local(fn: Callable[..., Any], item: Any, blob: bytes, digest: str) -> Any:
    if _SHARED[0] != digest:
        _SHARED[:] = [None, None]
        _MAPPED.clear()  # the last call's mappings go (the new ones are mapped again below)
        _SHARED[:] = [digest, pickle.loads(blob)]
    try:
        return fn(item, **_SHARED[1])
    finally:
        # an idle worker holds neither the shared arrays' pages nor the task's freed heap
        from serdistill.data.storage import release_memory

        release_memory(*_MAPPED.values())


class LocalEngine(_Engine):
    """This machine: ``workers`` processes (spawned, so safe with torch's threads), or this
    process when ``workers`` is 1.

    The processes start with the first :meth:`map` that needs them and serve every later
    one until :meth:`close`. Tasks that ask for a GPU (``num_gpus``) run in this process. Large
    arrays in ``shared`` are not copied into them: each maps
    the same file pages (see :class:`_SharingPickler`), so N workers do not hold N copies
    of the features.

    Args:
        workers: processes; default: the CPUs this process may use over ``task_cpus``.
        task_cpus: the CPUs (torch threads) a training task uses.
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, task_cpus: int = 1) -> None:
        self.workers = workers
        self.task_cpus = task_cpus
        self._pool: ProcessPoolExecutor | None = None
        self._events: Any = None
        self._exports: dict[int, tuple[Any, np.ndarray]] = {}

    @property
    def processes(self) -> int:
        """The worker processes :meth:`map` uses (1 = this process)."""
        return self.workers or max(1, _cpus() // int(self.task_cpus))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._events = None
        self._exports.clear()

    def _stop(self) -> None:
        """Stop the workers now, mid-task (after an error or Ctrl-C here): their checkpoints stay."""
        pool, self._pool = self._pool, None
        self._events = None  # a worker stopped while writing may leave it half-written: the next pool gets its own
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # no public way before Python 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)

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
        items = list(items)
        shared = dict(shared or {})
        # tasks that need a GPU run here, one after another: workers would all share (and each
        # initialise) the same device; Ray gives each task its own GPU on several
        workers = 1 if num_gpus else min(self.processes, len(items))
        results: list[Any] = [None] * len(items)
        with _bar(len(items), desc) as bar:
            if workers <= 1:
                with sink(on_event):
                    for i, item in enumerate(items):
                        results[i] = fn(item, **shared)
                        bar.update(1)
                return results
            buffer = io.BytesIO()
            _SharingPickler(buffer, self._exports).dump(shared)
            blob = buffer.getvalue()
            digest = hashlib.sha256(blob).hexdigest()
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._events = context.SimpleQueue()
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    initializer=_init_worker,
                    initargs=(self._events, started_on_main_thread()),
                    mp_context=context,
                )
            events = self._events
            futures: dict[Any, int] = {}
            try:
                futures = {self._pool.submit(_call_local, fn, item, blob, digest): i for i, item in enumerate(items)}
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=WAIT_SECONDS, return_when=FIRST_COMPLETED)
                    _drain(events, on_event)  # a task's events are queued before its result
                    for future in done:
                        results[futures[future]] = future.result()
                        bar.update(1)
                    if on_wait is not None:
                        on_wait()
            except BrokenProcessPool as err:
                self._stop()
                raise EngineError(
                    f"A worker process of the local engine died while running {getattr(fn, '__name__', fn)}: "
                    "killed (most often for memory: see 'dmesg'), or it could not start (a Python script "
                    "that uses the engine needs its code under 'if __name__ == \"__main__\":'). Run the "
                    "command again (finished work is kept where it is checkpointed), with --task-cpus 2 "
                    "(half the processes) if memory is short."
                ) from err
            except BaseException:  # a task's error, or Ctrl-C: the other tasks stop too
                self._stop()
                raise
        return results


def _drain(events: Any, on_event: Callable[[Any], None] | None) -> None:
    """Every event waiting in ``events``, to ``on_event`` (or dropped without one)."""
    while not events.empty():
        event = events.get()
        if on_event is not None:
            on_event(event)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# Ray


def _call_ray(fn: Callable[..., Any], keys: tuple[str, ...], events: Any, item: Any, *values: Any) -> Any:
    # Ray resolves object references passed as top-level arguments: ``values`` are the
    # shared objects themselves, fetched from the object store once per node.
    before = set_queue(None if events is None else _RayEvents(events))
    try:
        return fn(item, **dict(zip(keys, values)))
    finally:
        set_queue(before)


class _RayEvents:
    """A task's end of the map's queue actor: progress is not worth failing the task for
    (the queue is gone once the command stops waiting, e.g. after another task's error)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def put(self, event: Any) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait(event)
        except Exception:  # the actor died or was shut down: the rest is dropped
            self.queue = None


def _drain_ray(events: Any, on_event: Callable[[Any], None] | None) -> None:
    """Every event waiting in a ``ray.util.queue.Queue``, to ``on_event``."""
    if events is None:
        return
    waiting = events.size()
    for event in events.get_nowait_batch(waiting) if waiting else ():
        if on_event is not None:
            on_event(event)


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
            kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
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
        ray = self._ray
        items = list(items)
        keys = tuple((shared or {}).keys())
        refs = [ray.put(value) for value in (shared or {}).values()]  # once, not once per task
        num_cpus = self.task_cpus if num_cpus is None else num_cpus
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_call_ray)
        events = None
        if on_event is not None:  # the tasks' report()s: a queue actor on the cluster, no CPU held
            from ray.util.queue import Queue

            events = Queue(actor_options={"num_cpus": 0})
        pending = {task.remote(fn, keys, events, item, *refs): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        try:
            with _bar(len(items), desc) as bar:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
                    _drain_ray(events, on_event)  # a task's events are queued before its result
                    for ref in done:
                        results[pending.pop(ref)] = ray.get(ref)
                        bar.update(1)
                    if on_wait is not None:
                        on_wait()
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
        finally:
            if events is not None:
                events.shutdown()
        return results


# ---------------------------------------------------------------------------------------


def get_engine(
    name: str = "local",
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    workers: int | None = None,
    task_cpus: int = 1,
) -> LocalEngine | RayEngine:
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
