"""Machine facts, CPU counters (Linux /proc) and the process and result-file chores shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def cpu_model() -> str:
    """The CPU's model name ("" when /proc/cpuinfo does not say)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return ""


def git_commit(root: Path) -> str:
    """The short commit of the checkout at ``root`` ("" outside git)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root, check=False
    )
    return done.stdout.strip()


def terminate(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM ``process`` if it still runs, and SIGKILL it if it is not gone within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def write_results(directory: Path, stem: str, text: str, result: Any, log: Callable[[str], None]) -> None:
    """``text`` to ``directory/stem.md`` and ``result`` to ``directory/stem.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.md").write_text(text)
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {directory / f'{stem}.md'} and {directory / f'{stem}.json'}")
