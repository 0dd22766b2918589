"""The CLI's bounded exit: the loop is settled without a hang, and a stuck shutdown still ends in time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import helios_scaler
from helios_scaler.__main__ import ShutdownDeadline, _settle
from helios_scaler.store import ForecastStore

SRC = str(Path(helios_scaler.__file__).resolve().parents[1])


class QuietDeadline(ShutdownDeadline):
    """A deadline whose watchdog never ends the test process."""

    def _expired(self) -> None:
        pass


def run_cli_code(code: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    return done, time.monotonic() - started


def test_the_loop_settles_while_many_stream_waiters_are_still_unwinding() -> None:
    """asyncio.run cancels the unwinding waiters a second time and, on Python 3.11, hangs for ever."""

    async def serve_streams(store: ForecastStore, stopping: asyncio.Event) -> None:
        async def stream() -> None:  # the shape of StreamIsActive: wait for a change or the stop, drop the rest
            while not stopping.is_set():
                waiter = asyncio.ensure_future(store.wait_for_change(store.snapshot.version, 5))
                stopper = asyncio.ensure_future(stopping.wait())
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()

        streams = [asyncio.create_task(stream()) for _ in range(200)]
        await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.gather(*streams)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve_streams(ForecastStore(), asyncio.Event()))
        started = time.monotonic()
        assert _settle(loop, QuietDeadline(5.0)) == []
        assert asyncio.all_tasks(loop) == set()
        assert time.monotonic() - started < 2
    finally:
        loop.close()


def test_a_stuck_shutdown_is_ended_by_the_watchdog_after_the_grace() -> None:
    done, seconds = run_cli_code(
        """
        import time
        from helios_scaler.__main__ import ShutdownDeadline
        from helios_scaler.logs import configure_logging
        configure_logging("json", "INFO")
        ShutdownDeadline(0.5, margin=0.2).arm()
        time.sleep(30)  # a shutdown step that never returns
        """
    )
    assert done.returncode == 1
    assert 0.6 <= seconds < 5
    entry = json.loads(done.stderr.splitlines()[-1])
    assert entry["level"] == "error"
    assert entry["message"].startswith("shutdown did not finish within the grace of 0.5s")


def test_a_thread_still_blocked_after_the_stop_is_abandoned_at_the_deadline() -> None:
    """What a fetch from a Prometheus that never answers does to a stopped server."""
    done, seconds = run_cli_code(
        """
        import sys, threading, time
        from helios_scaler.__main__ import ShutdownDeadline
        from helios_scaler.logs import configure_logging
        configure_logging("json", "INFO")
        deadline = ShutdownDeadline(0.5)
        deadline.arm()
        threading.Thread(target=time.sleep, args=(30,), name="helios-fetch_0").start()
        sys.exit(deadline.finish(0))
        """
    )
    assert done.returncode == 0
    assert 0.4 <= seconds < 5
    entry = json.loads(done.stderr.splitlines()[-1])
    assert entry["level"] == "warning"
    assert "abandoning thread helios-fetch_0 after the grace of 0.5s" in entry["message"]


def test_with_nothing_left_to_wait_for_the_exit_is_immediate() -> None:
    done, seconds = run_cli_code(
        """
        import sys
        from helios_scaler.__main__ import ShutdownDeadline
        deadline = ShutdownDeadline(20.0)
        deadline.arm()
        sys.exit(deadline.finish(3))
        """
    )
    assert (done.returncode, done.stderr) == (3, "")
    assert seconds < 10
