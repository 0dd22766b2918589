"""Where model fitting runs: an executor factory, injected into the trainer and the backtest.

Fitting runs in processes: statsforecast's AutoETS and MSTL hold the GIL, and in a thread
pool they stall the event loop that serves gRPC for up to ~0.7 s (measured in
``benchmarks/bench_training.py``).  A factory, not an executor, is injected so that the
trainer can start a fresh pool when a worker dies (``BrokenProcessPool``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import ParamSpec, TypeVar

#: Makes a new executor for model fitting; called once at start and again after a worker died.
ExecutorFactory = Callable[[], Executor]

P = ParamSpec("P")
T = TypeVar("T")


def process_pool(workers: int) -> ExecutorFactory:
    """``workers`` spawned processes.  "spawn": forking a process that has started polars' thread
    pool can deadlock."""

    def make() -> Executor:
        return ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"))

    return make


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
