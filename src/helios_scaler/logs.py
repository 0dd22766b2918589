"""Logging: one JSON object per line (or plain text) on stderr, the same in every process.

The entry point configures it once; training workers apply the same setup
(:func:`current_setup`), so a worker's record is a JSON line like the server's own.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("json", "text")
#: The logging setup of this process (``log_format``, ``log_level``), once :func:`configure_logging` ran.
_setup: tuple[str, str] | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, log_level: str) -> None:
    """Log to stderr as ``json`` (one object per line) or ``text``, at ``log_level``; warnings too.

    The entry point calls it once; process pools made afterwards configure their workers the same way.
    """
    global _setup
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: accepted: {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    logging.captureWarnings(True)  # a library's warning is a log record too, not a plain-text line
    _setup = (log_format, log_level)


def current_setup() -> tuple[str, str] | None:
    """``(log_format, log_level)`` as :func:`configure_logging` last set them up in this process."""
    return _setup
