"""The spill on a full disk: nothing raises, what could not be kept is counted, and spilling
resumes when space returns. On a real 1 MiB tmpfs when the test may mount one (root), and
with ENOSPC injected at the write boundary everywhere else."""

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpulse.ingest.errors import SpillError
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.producer import IngestProducer
from chatpulse.ingest.spill import Spill
from chatpulse.topics import Topics

RECORD = 10_000  # bytes of value per record: ~100 fill the 1 MiB filesystem


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (skipped when mounting is not permitted: not root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _value(i: int) -> bytes:
    return (b"%08d" % i) * (RECORD // 8)


def test_a_full_disk_counts_what_is_lost_and_resumes_when_space_returns(small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 800_000)  # ~200 KiB left: room for about 20 records
    spill = Spill(small_disk / "spill")
    for i in range(100):
        spill.append("t", b"k", _value(i), i)  # never raises
        spill.flush()  # as the producer does each tick: a write per record here
    kept_before = 100 - spill.lost
    assert 5 < kept_before < 30
    assert spill.lost == 100 - kept_before
    filler.unlink()  # space returns
    for i in range(100, 110):
        spill.append("t", b"k", _value(i), i)
        spill.flush()
    assert spill.lost == 100 - kept_before  # nothing more lost
    records = []
    while (record := spill.next_record()) is not None:
        records.append(record)
    spill.close()
    # Whole records only, in order: the first ones that fitted, then all after space returned.
    assert [r.timestamp for r in records] == [*range(kept_before), *range(100, 110)]
    assert all(r.value == _value(r.timestamp) for r in records)


def test_the_producer_keeps_taking_records_and_counts_the_lost_ones(small_disk: Path) -> None:
    metrics = IngestMetrics()
    spill = Spill(small_disk / "spill")
    producer = IngestProducer(
        "127.0.0.1:1",  # no broker: everything goes to memory, then to the spill
        Topics.from_prefix("unit-"),
        spill,
        metrics,
        buffer_messages=10,
        txn_id="unit-full",
        call_timeout_s=0.2,
        config_overrides={"log_level": 0},
    )
    for i in range(300):  # 3 MB into 1 MiB
        producer.send("unit-twitch-chat-messages", b"k", _value(i), i)
        if i % 10 == 0:
            producer.poll()
    producer.poll()
    assert producer.spilling
    lost = spill.lost
    assert 150 < lost < 300
    assert metrics.registry.get_sample_value("chatpulse_ingest_spill_lost_total") == lost
    producer.close(timeout_s=0.2)


class _FullDisk:
    """A segment file whose writes fail with ENOSPC until ``space`` is set."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.space = False

    def write(self, data: memoryview) -> int:
        if not self.space:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real.write(data)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_enospc_injected_at_the_write_boundary(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    spill.append("t", b"k", b"first", 1)
    spill.flush()
    full = _FullDisk(spill._writer)
    spill._writer = full  # type: ignore[assignment]
    for i in range(2, 6):
        spill.append("t", b"k", b"v%d" % i, i)
    spill.flush()
    assert spill.lost == 4
    full.space = True
    spill.append("t", b"k", b"last", 9)
    spill.flush()
    values = []
    while (record := spill.next_record()) is not None:
        values.append(record.value)
    assert values == [b"first", b"last"]
    spill._writer = full.real  # type: ignore[assignment]
    spill.close()


def test_an_unreadable_segment_is_a_spill_error(tmp_path: Path) -> None:
    (tmp_path / "000000000001a.spill").mkdir()  # a segment that cannot be opened as a file
    spill = Spill(tmp_path)
    with pytest.raises(SpillError, match=r"spill segment .*000000000001a.spill cannot be read"):
        spill.next_record()


def test_the_acknowledgement_checkpoint_is_replaced_whole(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    for i in range(3):
        spill.append("t", None, b"v%d" % i, i)
    spill.close_writer()
    first = spill.next_record()
    assert first is not None
    spill.acknowledge(first.position)
    spill.checkpoint()
    spill.wait_for_checkpoints()
    (done,) = tmp_path.glob("*.done")
    assert done.read_text() == '{"offset": 23, "done": []}'  # all below offset 23 done
    assert not list(tmp_path.glob("*.tmp"))
    spill.close()
