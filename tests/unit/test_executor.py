"""The executors' lifecycle: workers die with their parent and log like it; nothing holds up an exit."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from processes import alive
from processes import children as children_of

from helios_scaler import logs
from helios_scaler.training import executor

PYTHON = sys.executable
SRC = str(Path(executor.__file__).resolve().parents[2])


def wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run_python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_workers_and_the_resource_tracker_die_with_a_parent_killed_with_sigkill() -> None:
    parent = run_python(
        """
        import os, time
        from helios_scaler.training.executor import process_pool
        pool = process_pool(2)()
        print(pool.submit(os.getpid).result(timeout=60), flush=True)
        time.sleep(60)
        """
    )
    family: list[int] = []
    with parent:
        try:
            assert parent.stdout is not None
            worker = int(parent.stdout.readline())
            family = list(children_of(parent.pid))
            commands = " ".join(children_of(parent.pid).values())
            assert worker in family and "resource_tracker" in commands, commands
            parent.kill()
            parent.wait()
            assert wait_until_gone(family, timeout=5) == []
        finally:
            parent.kill()
            kill_all(family)


def test_without_prctl_the_watchdog_thread_alone_ends_an_orphan() -> None:
    """The portable fallback: only the thread polling the parent pid, no PR_SET_PDEATHSIG."""
    parent = run_python(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", '''
        import os, threading, time
        from helios_scaler.training.executor import _watch_parent
        threading.Thread(target=_watch_parent, args=(os.getppid(), 0.05), daemon=True).start()
        time.sleep(60)
        '''])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    orphan = 0
    with parent:
        try:
            assert parent.stdout is not None
            orphan = int(parent.stdout.readline())
            time.sleep(0.5)  # the child is running its watchdog
            assert alive(orphan)
            parent.kill()
            parent.wait()
            assert wait_until_gone([orphan], timeout=3) == []
        finally:
            parent.kill()
            kill_all([orphan] if orphan else [])


def test_a_worker_whose_parent_is_already_gone_exits_at_once() -> None:
    done = subprocess.run(
        [PYTHON, "-c", "from helios_scaler.training.executor import die_with_parent; die_with_parent(1); print('on')"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert (done.returncode, done.stdout) == (1, "")


def test_a_worker_logs_one_json_object_per_line_like_its_parent(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool is made after the entry point's configure_logging: its workers log as it set up."""
    monkeypatch.setattr(logs, "_setup", ("json", "INFO"))
    pool = executor.process_pool(1)()
    try:
        worker_logger = logging.getLogger("helios_scaler.models.selection")
        pool.submit(worker_logger.info, "fitted %s in a worker", "ets").result(timeout=60)
        pool.submit(worker_logger.debug, "below the level").result(timeout=60)
    finally:
        pool.shutdown()
    lines = [line for line in capfd.readouterr().err.splitlines() if "worker" in line or "level" in line]
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["message"] == "fitted ets in a worker"
    assert (entry["level"], entry["logger"]) == ("info", "helios_scaler.models.selection")
    assert set(entry) == {"time", "level", "logger", "message"}


def test_an_abandoning_shutdown_kills_a_running_fit_instead_of_waiting_for_it() -> None:
    pool = executor.process_pool(1)()
    worker = pool.submit(os.getpid).result(timeout=60)
    fit = pool.submit(time.sleep, 60)
    time.sleep(0.3)  # the worker has taken the job
    before = set(threading.enumerate())
    started = time.monotonic()
    pool.shutdown(wait=False, cancel_futures=True)
    assert isinstance(fit.exception(timeout=10), BrokenProcessPool)
    assert wait_until_gone([worker], timeout=5) == []
    # The pool's management thread, which Python joins at exit, has ended too.
    deadline = time.monotonic() + 5
    while any(t.is_alive() and not t.daemon for t in before - {threading.main_thread()}):
        assert time.monotonic() < deadline, [t.name for t in before if t.is_alive()]
        time.sleep(0.05)
    assert time.monotonic() - started < 10


def test_a_waiting_shutdown_still_lets_jobs_finish() -> None:
    """The backtest's ``shutdown()`` (wait=True) is the standard one."""
    pool = executor.process_pool(1)()
    job = pool.submit(sum, [1, 2, 3])
    pool.shutdown()
    assert job.result(timeout=0) == 6


def test_io_pool_runs_jobs_and_hands_back_results_and_errors() -> None:
    pool = executor.io_pool(2, "helios-test")
    try:
        assert pool.submit(sum, [1, 2]).result(timeout=5) == 3
        failed = pool.submit(int, "x")
        with pytest.raises(ValueError):
            failed.result(timeout=5)
        names = {t.name for t in threading.enumerate() if t.name.startswith("helios-test_")}
        assert names == {"helios-test_0", "helios-test_1"}
        assert all(t.daemon for t in threading.enumerate() if t.name in names)
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(sum, [1])


def test_io_pool_shutdown_cancels_queued_jobs_and_abandons_a_blocked_one() -> None:
    pool = executor.io_pool(1, "helios-test")
    release = threading.Event()
    blocked = pool.submit(release.wait, 30)
    queued = pool.submit(sum, [1])
    time.sleep(0.1)
    started = time.monotonic()
    pool.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - started < 1
    with pytest.raises(CancelledError):
        queued.result(timeout=1)
    release.set()
    assert blocked.result(timeout=5) is True


def test_a_job_blocked_in_the_io_pool_does_not_hold_up_the_exit() -> None:
    """ThreadPoolExecutor's threads are joined at exit: a fetch from a silent server would keep a
    stopped process alive for as long as it blocks."""
    started = time.monotonic()
    done = subprocess.run(
        [
            PYTHON,
            "-c",
            "import time; from helios_scaler.training.executor import io_pool; "
            "pool = io_pool(1); pool.submit(time.sleep, 60); time.sleep(0.1); pool.shutdown(wait=False)",
        ],
        timeout=30,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode == 0
    assert time.monotonic() - started < 10
