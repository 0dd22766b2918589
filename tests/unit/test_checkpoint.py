"""Checkpoint files (warm restarts): a fitted WorldCup98 model saved and read back serves the same
forecast; truncated, corrupt, foreign-version and other-series files are ignored and counted, never
served; a crash mid-save leaves the old file."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from helios_scaler.models.selection import select_and_fit
from helios_scaler.training import checkpoint as module
from helios_scaler.training.checkpoint import Checkpoint, FileRepository, Owner, decode, encode, file_name
from helios_scaler.trigger import ScalerMetadata, Target

MINUTE = timedelta(minutes=1)
META = ScalerMetadata.parse({"query": "sum(rate(hits[1m]))", "threshold": "250", "leadTime": "2m"})
KEY = META.series_key("http://prometheus:9090")
OTHER = META.series_key("http://other:9090")


@pytest.fixture(scope="module")
def saved(worldcup) -> Checkpoint:
    frame = worldcup(datetime(1998, 6, 1, tzinfo=UTC), timedelta(days=2))
    fitted = select_and_fit(frame, MINUTE, 3, window=3, target=Target(250.0, MINUTE, timedelta(minutes=2)))
    owner = Owner("shop", "web", META)
    return Checkpoint(KEY, fitted, frame, datetime(2026, 12, 4, tzinfo=UTC), (owner,))


class Ignored(Counter[str]):
    def __call__(self, reason: str) -> None:
        self[reason] += 1


def test_a_saved_checkpoint_serves_the_same_forecast(tmp_path: Path, saved: Checkpoint) -> None:
    FileRepository(tmp_path).save(saved)
    ignored = Ignored()
    loaded = FileRepository(tmp_path, ignored).load(KEY)
    assert loaded is not None and not ignored
    assert loaded.key == KEY and loaded.owners == saved.owners and loaded.trained_at == saved.trained_at
    assert loaded.history.equals(saved.history)
    mean, bands = loaded.fitted.forecast(loaded.history, (None, 0.9))
    expected_mean, expected_bands = saved.fitted.forecast(saved.history, (None, 0.9))
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(bands[0.9], expected_bands[0.9])


def test_load_all_finds_every_series_and_hands_each_out_once(tmp_path: Path, saved: Checkpoint) -> None:
    repository = FileRepository(tmp_path)
    repository.save(saved)
    repository.save(Checkpoint(OTHER, saved.fitted, saved.history.tail(100), saved.trained_at))
    restarted = FileRepository(tmp_path)
    assert {checkpoint.key for checkpoint in restarted.load_all()} == {KEY, OTHER}
    first = restarted.load(OTHER)
    assert first is not None and first.history.height == 100
    restarted.discard(OTHER)
    assert restarted.load(OTHER) is None
    assert not (tmp_path / file_name(OTHER)).exists()


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header_only":
        path.write_bytes(data[:10])
    elif how == "flipped":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "version":
        path.write_bytes(data.replace(module.MAGIC + (1).to_bytes(4, "big"), module.MAGIC + (99).to_bytes(4, "big"), 1))
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", "truncated"),
        ("header_only", "truncated"),
        ("flipped", "corrupt"),
        ("version", "version"),
        ("garbage", "corrupt"),
    ],
)
def test_an_unusable_file_is_ignored_and_counted(tmp_path: Path, saved: Checkpoint, how: str, reason: str) -> None:
    FileRepository(tmp_path).save(saved)
    corrupt(tmp_path / file_name(KEY), how)
    ignored = Ignored()
    repository = FileRepository(tmp_path, ignored)
    assert repository.load_all() == []
    assert repository.load(KEY) is None
    assert ignored == {reason: 2}


def test_a_checkpoint_of_another_series_is_never_served(tmp_path: Path, saved: Checkpoint) -> None:
    """A file copied (or renamed) to another series' name: its key does not match, so it is ignored."""
    FileRepository(tmp_path).save(saved)
    (tmp_path / file_name(KEY)).rename(tmp_path / file_name(OTHER))
    ignored = Ignored()
    repository = FileRepository(tmp_path, ignored)
    assert repository.load(OTHER) is None
    assert repository.load_all() == []
    assert ignored == {"other_series": 2}


def test_a_payload_of_another_schema_is_refused(saved: Checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(saved)
    monkeypatch.setattr(module, "SCHEMA", 2)
    with pytest.raises(module.Unusable) as info:
        decode(data)
    assert info.value.reason == "version"


def test_a_crash_mid_save_leaves_the_old_file_and_the_leftover_is_cleaned(tmp_path: Path, saved: Checkpoint) -> None:
    repository = FileRepository(tmp_path)
    repository.save(saved)
    before = (tmp_path / file_name(KEY)).read_bytes()
    leftover = tmp_path / f"{file_name(KEY)}{module.TEMPORARY}12345-1"
    leftover.write_bytes(encode(saved)[:1000])  # a save killed after writing its first kilobyte
    restarted = FileRepository(tmp_path)
    assert not leftover.exists()
    assert (tmp_path / file_name(KEY)).read_bytes() == before
    assert restarted.load(KEY) is not None
