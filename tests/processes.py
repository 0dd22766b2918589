"""Processes seen through /proc (Linux): the children of a process, and whether one still runs."""

from __future__ import annotations

import os


def children(pid: int) -> dict[int, str]:
    """pid → command line of every process whose parent is ``pid`` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry)] = command
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not reaped by whoever adopted it, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"
