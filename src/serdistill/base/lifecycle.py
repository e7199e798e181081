"""Worker processes that end with their parent.

A process pool's worker waits for work on a queue whose other end its siblings also hold,
so when the parent is killed outright (``kill -9``, the OOM killer) nothing wakes it: it
would live on, holding its memory, until killed by hand. :func:`exit_with_parent`, called
first in every worker, prevents that in two ways:

- on Linux, the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``): the
  worker is killed the moment the thread that started it ends. It is set only when that
  thread is the parent's main thread (the caller says so), because a pool started from
  another thread would otherwise lose its workers when that thread ends;
- everywhere, a daemon thread that waits on the parent's sentinel (a pipe the parent
  holds open until it dies) and ends the process when it closes.

Examples:
    >>> import concurrent.futures, multiprocessing, threading
    >>> pool = concurrent.futures.ProcessPoolExecutor(                     # doctest: +SKIP
    ...     2, initializer=exit_with_parent,
    ...     initargs=(threading.current_thread() is threading.main_thread(),))
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
_EXIT_STATUS = 70  # EX_SOFTWARE: the worker did not finish its work


def started_on_main_thread() -> bool:
    """Whether the caller runs on the main thread (pass it to :func:`exit_with_parent`)."""
    return threading.current_thread() is threading.main_thread()


def exit_with_parent(kernel_signal: bool = True) -> None:
    """End this (worker) process when its parent process dies.

    Args:
        kernel_signal: also ask Linux for SIGKILL on the death of the thread that started
            this process; pass :func:`started_on_main_thread` as the parent saw it.
    """
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing child: nothing to watch
        return
    if kernel_signal and sys.platform.startswith("linux"):
        _set_parent_death_signal()
    if parent.pid is not None and os.getppid() != parent.pid:  # died before we got here
        os._exit(_EXIT_STATUS)
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return
    thread = threading.Thread(target=_watch, args=(sentinel,), name="serdistill-parent-watch", daemon=True)
    thread.start()


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (another libc): the sentinel thread still watches
        pass


def _watch(sentinel: int) -> None:
    from multiprocessing.connection import wait

    try:
        wait([sentinel])
    except OSError:
        pass
    os._exit(_EXIT_STATUS)  # the parent is gone: its results have nowhere to go


__all__ = ["exit_with_parent", "started_on_main_thread"]
