"""Where model fitting runs: an executor factory, injected into the trainer and the backtest.

Fitting runs in processes: statsforecast's AutoETS and MSTL hold the GIL, and in a thread
pool they stall the event loop that serves gRPC for up to ~0.7 s (measured in
``benchmarks/bench_training.py``).  A factory, not an executor, is injected so that the
trainer can start a fresh pool when a worker dies (``BrokenProcessPool``).

The pool's workers are tied to the process that started them:

* they die with it, even on ``kill -9`` (``PR_SET_PDEATHSIG`` on Linux, and everywhere a
  thread that notices the parent is gone).  multiprocessing's resource tracker then exits
  by itself: it reads a pipe whose last writers were the parent and the workers;
* they log the way it logs (:func:`helios_scaler.logs.configure_logging` records the setup,
  every worker applies it), so a worker's record is one JSON line like the server's own;
* ``shutdown(wait=False, cancel_futures=True)`` abandons the fits in flight by killing the
  workers: a running fit would otherwise hold up the parent's exit (Python joins the pool's
  management thread and its workers at exit).

Also here: the pool of threads for blocking I/O (:func:`io_pool`), whose threads never hold
up the exit.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, ParamSpec, TypeVar

from helios_scaler import logs

#: Makes a new executor for model fitting; called once at start and again after a worker died.
ExecutorFactory = Callable[[], Executor]

P = ParamSpec("P")
T = TypeVar("T")

#: How often a worker looks whether its parent is still there (the portable fallback).
PARENT_POLL_SECONDS = 0.5
#: ``prctl`` option: the signal the kernel sends this process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def process_pool(workers: int, log_format: str | None = None, log_level: str | None = None) -> ExecutorFactory:
    """``workers`` spawned processes.  "spawn": forking a process that has started polars' thread
    pool can deadlock.

    Workers log as ``log_format``/``log_level`` say, by default as :func:`~helios_scaler.logs.configure_logging`
    set up this process (if it never ran, workers leave Python's default logging alone).
    """

    def make() -> Executor:
        setup = logs.current_setup() if log_format is None else (log_format, log_level or "INFO")
        return _ProcessPool(
            max(1, workers),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(), *(setup or (None, None))),
        )

    return make


class _ProcessPool(ProcessPoolExecutor):
    """A process pool whose ``shutdown(wait=False, cancel_futures=True)`` abandons the jobs in flight.

    The standard pool lets a running job finish, and Python waits for it at exit (it joins the
    pool's management thread, which waits for the workers): a fit of minutes would hold up a
    SIGTERM for minutes.  Here the workers are killed instead; their futures fail with
    ``BrokenProcessPool``.  ``shutdown()`` with ``wait=True`` (the backtest) is unchanged.
    """

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        abandon = cancel_futures and not wait
        # ``_processes`` (pid → Process) is the pool's own table, stable since Python 3.8
        # (3.14 adds ``kill_workers()``); ``shutdown`` drops it, so it is read first.
        workers = list((getattr(self, "_processes", None) or {}).values()) if abandon else []
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        for worker in workers:
            if worker.is_alive():
                worker.kill()


def _init_worker(parent_pid: int, log_format: str | None, log_level: str | None) -> None:
    """The initializer of every worker: die with the parent, log like it."""
    die_with_parent(parent_pid)
    if log_format is not None:
        logs.configure_logging(log_format, log_level or "INFO")


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid``, its parent, is gone (even after ``kill -9``).

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``; precisely:
    when the parent's thread that started this process ends — the event loop's thread, which
    lives as long as the server).  Everywhere, a daemon thread polls ``os.getppid()``: an orphan
    is re-parented, so its parent pid changes.  If the parent is already gone, exit now.
    """
    logger = logging.getLogger(__name__)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            prctl = libc.prctl
            prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:  # no libc symbol: the watchdog thread still covers it
            logger.debug("prctl(PR_SET_PDEATHSIG) is not available: %s", exc)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="helios-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int, every: float = PARENT_POLL_SECONDS) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every)
    os._exit(1)  # no clean-up: the results have nobody to go to


class InlineExecutor(Executor):
    """Runs each job at once in the calling thread (the backtest with one worker; unit tests)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def inline() -> Executor:
    """An :data:`ExecutorFactory` for :class:`InlineExecutor`."""
    return InlineExecutor()


def for_workers(workers: int) -> ExecutorFactory:
    """A process pool for two or more workers, else fitting inline (no process to start)."""
    return process_pool(workers) if workers > 1 else inline


_Job = tuple[Future[Any], Callable[[], Any]]


class IoPool(Executor):
    """A thread pool for blocking I/O whose threads never hold up the process' exit.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one
    range query to a Prometheus that never answers keeps a stopped server alive for the
    whole query timeout (or forever, if the answer trickles in).  These threads are daemons:
    after ``shutdown(wait=False)`` a blocked job is abandoned with the process.
    """

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, call, job
        self._jobs.put(None)  # wake the next thread

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    self._cancel_queued()
                self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_queued(self) -> None:
        pending: list[_Job | None] = []
        while True:
            try:
                pending.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        for job in pending:
            if job is not None:
                job[0].cancel()


def io_pool(workers: int, name: str = "helios-io") -> Executor:
    """An :class:`IoPool`: ``workers`` daemon threads for blocking I/O (range queries, file reads)."""
    return IoPool(workers, name)
