"""Where fitted models are kept between runs: the model repository seam, and its files.

The trainer saves a :class:`Checkpoint` after every successful fit (and, between fits, every
few minutes so the history tail stays recent) and, when it starts tracking a series, asks the
repository for one before fitting from nothing.  :class:`NoRepository` keeps nothing (every
start is a cold start); :class:`FileRepository` keeps one file per series in a state directory,
so that a restarted server serves forecasts at once and only fetches the points it missed.

A checkpoint file is written atomically (a temporary file in the same directory, written,
fsynced, renamed over the old one, then the directory fsynced): a crash at any moment leaves
the old file or the new one, never half of one.  It starts with a header — magic, schema
number, payload length and SHA-256 — so a truncated, corrupt or foreign file, one from another
schema version, or one whose series is not the one asked for is *ignored* (logged, counted),
never served.  The payload is a pickle: the state directory must be writable by the scaler only
(the chart mounts a volume private to the pod).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import polars as pl

from helios_scaler.demand import series_id
from helios_scaler.models.selection import FittedSeries
from helios_scaler.trigger import ScalerMetadata, SeriesKey

logger = logging.getLogger(__name__)

#: Bump when the payload's shape changes: older files are then ignored (and replaced at the next save).
SCHEMA = 1
MAGIC = b"HELIOSCK"
_HEADER = struct.Struct(">8sIQ32s")  # magic, schema, payload length, SHA-256 of the payload
SUFFIX = ".ckpt"
TEMPORARY = ".tmp-"


@dataclass(frozen=True)
class Owner:
    """A ScaledObject trigger that asked for the series: re-registered at a restart."""

    namespace: str
    name: str
    meta: ScalerMetadata


@dataclass(frozen=True)
class Checkpoint:
    """A fitted series as it stood after a fit: enough to serve again without refitting."""

    key: SeriesKey
    fitted: FittedSeries
    #: The history the model has seen (its tail, on the series' grid).
    history: pl.DataFrame
    trained_at: datetime
    #: The triggers that asked for the series when it was saved.
    owners: tuple[Owner, ...] = ()


class ModelRepository(Protocol):
    def load(self, key: SeriesKey) -> Checkpoint | None:
        """The newest checkpoint of ``key``, or None (never raises for a missing or unusable one)."""
        ...

    def load_all(self) -> list[Checkpoint]:
        """Every usable checkpoint (at start: the series to serve again)."""
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` as the newest of its series (blocking I/O: call it off the event loop)."""
        ...

    def discard(self, key: SeriesKey) -> None:
        """Forget ``key`` (nobody asks for the series any more)."""
        ...


class NoRepository:
    """Keeps nothing: every series starts from its history."""

    def load(self, key: SeriesKey) -> Checkpoint | None:
        return None

    def load_all(self) -> list[Checkpoint]:
        return []

    def save(self, checkpoint: Checkpoint) -> None:
        return None

    def discard(self, key: SeriesKey) -> None:
        return None


def file_name(key: SeriesKey) -> str:
    """The file of ``key``'s checkpoint: named by the series' id (a hash of the whole key; the query may
    hold any character).  Two series sharing an id would only share a file: the key inside decides."""
    return series_id(key) + SUFFIX


def encode(checkpoint: Checkpoint) -> bytes:
    """Header + pickled payload."""
    payload = pickle.dumps((SCHEMA, checkpoint), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(MAGIC, SCHEMA, len(payload), hashlib.sha256(payload).digest()) + payload


class Unusable(Exception):
    """A checkpoint file that must not be served; ``reason`` is the counter's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decode(data: bytes, key: SeriesKey | None = None) -> Checkpoint:
    """The checkpoint in ``data``; :class:`Unusable` (reason ``truncated``, ``corrupt``, ``version`` or
    ``other_series``) unless it is whole, of this schema and, with ``key``, of that series."""
    if len(data) < _HEADER.size:
        raise Unusable("truncated", f"{len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, schema, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Unusable("corrupt", "not a helios-scaler checkpoint (bad magic)")
    if schema != SCHEMA:
        raise Unusable("version", f"schema {schema}, this server reads schema {SCHEMA}")
    payload = data[_HEADER.size :]
    if len(payload) != length:
        raise Unusable("truncated", f"payload of {len(payload)} bytes, the header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise Unusable("corrupt", "checksum mismatch")
    try:
        # Our own file, checksummed; the state directory is private to the scaler (see the module docstring).
        stored_schema, checkpoint = pickle.loads(payload)
    except Exception as exc:  # a payload from other code: anything may be raised
        raise Unusable("corrupt", f"cannot be read: {type(exc).__name__}: {exc}") from exc
    if stored_schema != SCHEMA or not isinstance(checkpoint, Checkpoint):
        raise Unusable("version", f"payload of schema {stored_schema!r} / {type(checkpoint).__name__}")
    if key is not None and checkpoint.key != key:
        raise Unusable("other_series", f"holds query {checkpoint.key.query[:100]!r}, not {key.query[:100]!r}")
    return checkpoint


class FileRepository:
    """One checkpoint file per series in ``directory`` (created if missing); see the module docstring.

    ``ignored(reason)`` is called for every file that is not served (telemetry counts them)."""

    def __init__(self, directory: Path, ignored: Callable[[str], None] = lambda reason: None) -> None:
        self.directory = directory
        self._ignored = ignored
        self._preloaded: dict[SeriesKey, Checkpoint] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(f"*{SUFFIX}{TEMPORARY}*"):  # a crash in the middle of a save
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _read(self, path: Path, key: SeriesKey | None) -> Checkpoint | None:
        try:
            return decode(path.read_bytes(), key)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._reject(path, Unusable("unreadable", str(exc)))
        except Unusable as exc:
            self._reject(path, exc)
        return None

    def _reject(self, path: Path, error: Unusable) -> None:
        logger.warning("checkpoint %s ignored (%s): %s", path.name, error.reason, error)
        self._ignored(error.reason)

    def load_all(self) -> list[Checkpoint]:
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            checkpoint = self._read(path, None)
            if checkpoint is None:
                continue
            if path.name != file_name(checkpoint.key):
                self._reject(path, Unusable("other_series", "its series belongs to another file name"))
                continue
            found.append(checkpoint)
            self._preloaded[checkpoint.key] = checkpoint
        return found

    def load(self, key: SeriesKey) -> Checkpoint | None:
        preloaded = self._preloaded.pop(key, None)
        return preloaded if preloaded is not None else self._read(self.directory / file_name(key), key)

    def save(self, checkpoint: Checkpoint) -> None:
        target = self.directory / file_name(checkpoint.key)
        temporary = target.with_name(f"{target.name}{TEMPORARY}{os.getpid()}-{threading.get_ident()}")
        data = encode(checkpoint)
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self, key: SeriesKey) -> None:
        self._preloaded.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / file_name(key)).unlink()
