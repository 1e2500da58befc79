"""The on-disk spill: order, acknowledgement, restart and torn writes (no network)."""

import os
import threading
import time
from pathlib import Path

import pytest

from chatpulse.ingest.spill import Spill, SpilledRecord


def _values(records: list[SpilledRecord]) -> list[bytes]:
    return [record.value for record in records]


def _read_all(spill: Spill, *, close: bool = False) -> list[SpilledRecord]:
    records = []
    while (record := spill.next_record()) is not None:
        records.append(record)
    if close:
        spill.close()
    return records


def _fill(spill: Spill, values: range, topic: str = "t") -> None:
    for i in values:
        spill.append(topic, f"k{i % 3}".encode(), b"v%d" % i, 1000 + i)


def test_records_come_back_in_order_with_their_fields(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    spill.append("messages", None, b"no key", 5)
    _fill(spill, range(3))
    records = _read_all(spill, close=True)
    assert [(r.topic, r.key, r.value, r.timestamp) for r in records] == [
        ("messages", None, b"no key", 5),
        ("t", b"k0", b"v0", 1000),
        ("t", b"k1", b"v1", 1001),
        ("t", b"k2", b"v2", 1002),
    ]


def test_reader_follows_the_open_writer_and_segments_in_order(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(2))
    assert _values(_read_all(spill)) == [b"v0", b"v1"]
    _fill(spill, range(2, 4))
    spill.close_writer()
    _fill(spill, range(4, 6))  # a second segment
    assert len(list(tmp_path.glob("*.spill"))) == 2
    assert _values(_read_all(spill, close=True)) == [b"v2", b"v3", b"v4", b"v5"]


def test_segment_deleted_once_read_and_all_acknowledged(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(3))
    spill.close_writer()
    records = _read_all(spill)
    assert len(records) == 3
    for record in records[:2]:
        spill.acknowledge(record.position)
    assert not spill.empty
    spill.acknowledge(records[2].position)
    assert spill.empty
    assert list(tmp_path.iterdir()) == []


def test_restart_resends_only_unacknowledged_records(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(6))
    records = _read_all(spill)
    # acknowledged out of order, as delivery reports of different partitions arrive
    for index in (0, 1, 3, 5):
        spill.acknowledge(records[index].position)
    spill.close()

    reopened = Spill(tmp_path)
    assert not reopened.empty
    again = _read_all(reopened)
    assert _values(again) == [b"v2", b"v4"]
    for record in again:
        reopened.acknowledge(record.position)
    assert reopened.empty


def test_a_torn_last_record_is_dropped_and_the_rest_read(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(3))
    spill.close()
    (segment,) = tmp_path.glob("*.spill")
    data = segment.read_bytes()
    segment.write_bytes(data[:-4])  # the process died in the middle of the last write

    reopened = Spill(tmp_path)
    assert _values(_read_all(reopened, close=True)) == [b"v0", b"v1"]


def test_a_corrupt_record_ends_its_segment(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(3))
    spill.close()
    (segment,) = tmp_path.glob("*.spill")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert _values(_read_all(Spill(tmp_path), close=True)) == [b"v0", b"v1"]


def test_records_sent_directly_are_put_back_in_their_place(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    slot_before = spill.next_slot
    _fill(spill, range(10, 12))  # spilled after the direct ones below were produced
    spill.append_before(slot_before, [("t", b"k", b"direct0", 1), ("t", b"k", b"direct1", 2)])
    spill.close()
    reopened = Spill(tmp_path)
    assert _values(_read_all(reopened)) == [b"direct0", b"direct1", b"v10", b"v11"]
    # a restart spills after the old segments
    _fill(reopened, range(20, 21))
    assert _values(_read_all(reopened, close=True)) == [b"v20"]


def test_appending_after_a_torn_tail_keeps_new_records_readable(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    slot = spill.next_slot
    spill.append_before(slot, [("t", None, b"a", 1), ("t", None, b"b", 2)])
    (segment,) = tmp_path.glob("*.spill")
    segment.write_bytes(segment.read_bytes()[:-3])
    reopened = Spill(tmp_path)
    reopened.append_before(slot, [("t", None, b"c", 3)])
    assert _values(_read_all(reopened, close=True)) == [b"a", b"c"]


def test_acknowledgements_survive_two_restarts(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(4))
    first = _read_all(spill)
    spill.acknowledge(first[2].position)  # v0, v1, v3 still unacknowledged
    spill.close()

    second = Spill(tmp_path)
    again = _read_all(second)
    assert _values(again) == [b"v0", b"v1", b"v3"]
    second.acknowledge(again[1].position)  # v1; v0 still holds the low watermark back
    second.close()

    third = Spill(tmp_path)
    assert _values(_read_all(third, close=True)) == [b"v0", b"v3"]


def test_acknowledgements_are_fsynced_on_the_checkpoint_thread_without_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spill = Spill(tmp_path)
    _fill(spill, range(3))
    records = _read_all(spill)
    spill.acknowledge(records[0].position)
    segment = tmp_path / records[0].position.segment

    disk_free = threading.Event()
    synced: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # records what is synced, on which thread; a slow disk
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread().name))
        disk_free.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    started = time.monotonic()
    spill.checkpoint()
    assert time.monotonic() - started < 1.0  # the caller (the event loop) never waits
    disk_free.set()
    spill.close()  # waits for the checkpoint thread

    bookkeeping = [
        (path, thread)
        for path, thread in synced
        if path in (str(segment.with_suffix(".tmp")), str(tmp_path))
    ]
    # The .done file's content (written as .tmp, then renamed) and the directory holding the
    # rename, both fsynced, on the checkpoint thread.
    assert [path for path, _ in bookkeeping][:2] == [
        str(segment.with_suffix(".tmp")),
        str(tmp_path),
    ]
    assert {thread.split("_")[0] for _, thread in bookkeeping} == {"spill-checkpoint"}
    monkeypatch.undo()
    assert _values(_read_all(Spill(tmp_path), close=True)) == [b"v1", b"v2"]


def test_a_checkpoint_left_without_its_segment_is_removed_at_start(tmp_path: Path) -> None:
    # A crash between deleting a drained segment and its .done file: segment names start again
    # from 1 once the spill is empty, and a new segment must not take the old acknowledgements.
    (tmp_path / "000000000001a.done").write_text('{"offset": 23, "done": []}')
    spill = Spill(tmp_path)
    spill.append("t", None, b"new", 1)
    spill.close()
    assert _values(_read_all(Spill(tmp_path), close=True)) == [b"new"]  # after a restart
