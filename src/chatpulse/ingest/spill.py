"""The on-disk spill: records that could not be handed to Kafka, kept in order until they can.

A spill is a directory of append-only segment files, read oldest first (by file name).
Every record is one frame::

    >II  body length, CRC-32 of the body
    >qHH timestamp (ms), topic length, key length (0xFFFF = no key)
         topic, key, value (UTF-8 / raw bytes)

A torn or corrupt frame (the process died in the middle of a write) ends its segment: the
reader logs how many bytes it drops and moves on. Writes go through a buffered file that is
flushed to the OS at every :meth:`Spill.flush` (the service calls it a few times a second) and
fsynced at most once per ``fsync_interval_s``: a crash of the process loses at most the last
unflushed tick, a crash of the machine at most the last interval.

A full disk (``ENOSPC``, ``EDQUOT``) is not fatal: the frames that could not be written are
cut off the segment (it stays whole frames), counted in :attr:`Spill.lost` (the ingest's
``chatpulse_ingest_spill_lost_total``) and logged, rate-limited; later writes are tried
again, so spilling resumes by itself when space returns. Any other I/O error, and a spill
that cannot be read, is a :class:`SpillError` that ends the ingest with one line.

Which records of a segment Kafka has acknowledged is kept in ``<segment>.done`` (the offset
below which every record is done, plus the offsets done above it), so a restart resends only
what was never acknowledged. A segment is deleted once it is read to the end and every record
in it is acknowledged. The ``.done`` file is written to a temporary file, fsynced, renamed
over the old one and the directory fsynced, so a power cut leaves the old or the new one.
Those writes (two fsyncs each) run on a worker thread of their own, one at a time in the
order :meth:`Spill.checkpoint` took them, so the event loop never waits for the disk; the
``.done`` file of a deleted segment is removed through the same queue, after its last write
(a ``.done`` file left without its segment by a crash is removed at the next start).

Hand-written: no maintained library offers an append-only, crash-tolerant record log for
Python with per-record acknowledgement; the format is a dozen lines.
"""

import concurrent.futures
import contextlib
import errno
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from chatpulse.ingest.errors import SpillError
from chatpulse.logs import RateLimitedLog

__all__ = ["Position", "Spill", "SpilledRecord"]

logger = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")
_HEAD = struct.Struct(">qHH")
_NO_KEY = 0xFFFF
_SUFFIX = ".spill"
_DONE_SUFFIX = ".done"
_WRITE_BUFFER = 1 << 20  # frames are written out past this many bytes, and at every flush
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True, slots=True)
class Position:
    """Where a spilled record lives: segment file name and byte offset of its frame."""

    segment: str
    offset: int


@dataclass(frozen=True, slots=True)
class SpilledRecord:
    """One record read back from the spill."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp: int
    position: Position


def encode_frame(topic: str, key: bytes | None, value: bytes, timestamp: int) -> bytes:
    """One frame's bytes (see the module docstring)."""
    topic_bytes = topic.encode()
    key_length = _NO_KEY if key is None else len(key)
    body = b"".join(
        (_HEAD.pack(timestamp, len(topic_bytes), key_length), topic_bytes, key or b"", value)
    )
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes, position: Position) -> SpilledRecord:
    timestamp, topic_length, key_length = _HEAD.unpack_from(body)
    start = _HEAD.size
    topic = body[start : start + topic_length].decode()
    start += topic_length
    key: bytes | None = None
    if key_length != _NO_KEY:
        key = body[start : start + key_length]
        start += key_length
    return SpilledRecord(topic, key, body[start:], timestamp, position)


@dataclass(slots=True)
class _Segment:
    """Reading and acknowledgement state of one segment file."""

    name: str
    path: Path
    read_offset: int = 0
    reader: BinaryIO | None = None
    exhausted: bool = False
    in_flight: set[int] = field(default_factory=set)
    done_above: set[int] = field(default_factory=set)
    skip: set[int] = field(default_factory=set)
    dirty: bool = False

    @property
    def done_path(self) -> Path:
        return self.path.with_suffix(_DONE_SUFFIX)

    def low_watermark(self) -> int:
        return min(self.in_flight) if self.in_flight else self.read_offset


class Spill:
    """A directory of spill segments: append at the newest, read and acknowledge from the oldest."""

    def __init__(self, directory: Path, *, fsync_interval_s: float = 1.0) -> None:
        self.directory = directory
        self._fsync_interval_s = fsync_interval_s
        self._last_fsync = time.monotonic()
        self._segments: dict[str, _Segment] = {}
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for path in sorted(directory.glob(f"*{_SUFFIX}")):
                self._segments[path.name] = self._load(path)
            for done_path in directory.glob(f"*{_DONE_SUFFIX}"):
                # Left by a crash between deleting a segment and its .done file: a later
                # segment of the same name must not take its acknowledgements.
                if not done_path.with_suffix(_SUFFIX).exists():
                    done_path.unlink()
        except OSError as exc:
            raise SpillError(f"spill directory {directory} cannot be read: {exc}") from None
        self._next_seq = 1 + max((_seq(name) for name in self._segments), default=0)
        self._writer: BinaryIO | None = None  # unbuffered: self._buffer is the buffer
        self._writer_name: str | None = None
        self._buffer = bytearray()
        self._buffered = 0  # records in self._buffer
        self._written = 0  # bytes of whole frames in the open segment
        self._full = False
        self._full_log = RateLimitedLog(logger, 10.0)
        self.records_written = 0
        self.lost = 0  # records that could not be written (disk full)
        # Checkpoint writes, one at a time in order (see the module doc).
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spill-checkpoint")
        self._writes: list[concurrent.futures.Future[list[str]]] = []
        if self._segments:
            logger.info(
                "spill %s holds %d segment(s), %d bytes: draining it before new records",
                directory,
                len(self._segments),
                self.size_bytes(),
            )

    @staticmethod
    def _load(path: Path) -> _Segment:
        segment = _Segment(path.name, path)
        done_path = segment.done_path
        if done_path.exists():
            try:
                text = done_path.read_text()
            except OSError as exc:
                raise SpillError(f"spill checkpoint {done_path} cannot be read: {exc}") from None
            try:
                state = json.loads(text)
                segment.read_offset = int(state["offset"])
                segment.skip = {int(offset) for offset in state["done"]}
            except (ValueError, KeyError, TypeError):
                logger.warning(
                    "spill checkpoint %s unreadable: resending the whole segment", done_path
                )
        return segment

    # -- state -----------------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        """True when no segment exists (everything spilled was acknowledged or none was)."""
        return not self._segments

    @property
    def next_slot(self) -> int:
        """Sequence number of the next segment: records sent directly now sort just before it."""
        return self._next_seq

    def size_bytes(self) -> int:
        """Bytes on disk in all segments."""
        return sum(seg.path.stat().st_size for seg in self._segments.values() if seg.path.exists())

    # -- writing ---------------------------------------------------------------------------

    def append(self, topic: str, key: bytes | None, value: bytes, timestamp: int) -> None:
        """Append one record to the newest segment (opening one if none is open)."""
        if self._writer is None:
            name = f"{self._next_seq:012d}a{_SUFFIX}"
            self._next_seq += 1
            if not self._open_writer(name):
                self._lose(1, "cannot create a segment")
                return
        self._buffer += encode_frame(topic, key, value, timestamp)
        self._buffered += 1
        self.records_written += 1
        if len(self._buffer) >= _WRITE_BUFFER:
            self._write_out()

    def _open_writer(self, name: str) -> bool:
        """Open segment ``name`` for appending; False when the disk is full."""
        path = self.directory / name
        try:
            if path.exists():
                # Appending after a torn frame would hide every later record from the reader.
                valid = _valid_length(path)
                if valid < path.stat().st_size:
                    os.truncate(path, valid)
            self._writer = path.open("ab", buffering=0)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                return False
            raise SpillError(f"spill segment {path} cannot be written: {exc}") from None
        self._written = path.stat().st_size
        self._writer_name = name
        segment = self._segments.get(name)
        if segment is None:
            self._segments[name] = _Segment(name, path)
        else:
            segment.exhausted = False
        logger.info("spilling to %s", path)
        return True

    def _write_out(self) -> None:
        """Write the buffered frames; on a full disk cut them off and count them lost."""
        if not self._buffer or self._writer is None:
            return
        data = memoryview(self._buffer)
        try:
            done = 0
            while done < len(data):
                done += self._writer.write(data[done:]) or 0
        except OSError as exc:
            data.release()
            if exc.errno not in _DISK_FULL:
                raise SpillError(f"spill segment {self._writer_name} write failed: {exc}") from None
            with contextlib.suppress(OSError):  # frees the space a partial write took
                os.ftruncate(self._writer.fileno(), self._written)
            self._lose(self._buffered, str(exc))
        else:
            data.release()
            self._written += len(self._buffer)
            if self._full:
                self._full = False
                logger.warning(
                    "spill %s: writing again (%d records lost so far)", self.directory, self.lost
                )
        self._buffer.clear()
        self._buffered = 0

    def _lose(self, count: int, why: str) -> None:
        self.lost += count
        self._full = True
        self._full_log.error(
            "spill %s: disk full (%s): %d records could not be kept (%d in all); "
            "reading chat goes on, spilling resumes when there is space",
            self.directory,
            why,
            count,
            self.lost,
        )

    def close_writer(self) -> None:
        """Flush, fsync and close the open segment; the next append opens a new one."""
        if self._writer is not None:
            self._write_out()
            with contextlib.suppress(OSError):  # a full disk: what could not be kept is counted
                os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None
            self._writer_name = None

    def append_before(self, slot: int, records: list[tuple[str, bytes | None, bytes, int]]) -> None:
        """Write records that were sent directly before segment ``slot`` existed, in that place.

        Used at shutdown for records Kafka never acknowledged: they are older than the segments
        from ``slot`` on and younger than those before it, so they go to ``<slot-1>b``.
        """
        if not records:
            return
        self.close_writer()
        if not self._open_writer(f"{slot - 1:012d}b{_SUFFIX}"):
            self._lose(len(records), "cannot create a segment")
            return
        for topic, key, value, timestamp in records:
            self._buffer += encode_frame(topic, key, value, timestamp)
        self._buffered += len(records)
        self.records_written += len(records)
        self.close_writer()
        self._segments = dict(sorted(self._segments.items()))

    def flush(self) -> None:
        """Hand buffered writes to the OS; fsync when the interval has passed."""
        if self._writer is None:
            return
        self._write_out()
        now = time.monotonic()
        if now - self._last_fsync >= self._fsync_interval_s:
            with contextlib.suppress(OSError):  # ENOSPC here: the next write tells, and counts
                os.fsync(self._writer.fileno())
            self._last_fsync = now

    # -- reading and acknowledging ---------------------------------------------------------

    def next_record(self) -> SpilledRecord | None:
        """The oldest record not yet handed out, or None when all written ones were."""
        for segment in list(self._segments.values()):
            if segment.exhausted:
                continue
            if segment.name == self._writer_name:
                self.flush()
            record = self._read(segment)
            if record is not None:
                return record
            if segment.name == self._writer_name:
                # The open segment grows while we read: later records must wait for it.
                return None
            segment.exhausted = True
            if segment.reader is not None:
                segment.reader.close()
                segment.reader = None
            self._maybe_delete(segment)
        return None

    def _read(self, segment: _Segment) -> SpilledRecord | None:
        try:
            return self._read_frame(segment)
        except OSError as exc:
            raise SpillError(f"spill segment {segment.path} cannot be read: {exc}") from None

    def _read_frame(self, segment: _Segment) -> SpilledRecord | None:
        if segment.reader is None:
            segment.reader = segment.path.open("rb")
        reader = segment.reader
        while True:
            reader.seek(segment.read_offset)
            header = reader.read(_FRAME.size)
            if len(header) < _FRAME.size:
                self._note_torn(segment, len(header))
                return None
            length, crc = _FRAME.unpack(header)
            body = reader.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                self._note_torn(segment, _FRAME.size + len(body))
                return None
            offset = segment.read_offset
            segment.read_offset += _FRAME.size + length
            segment.dirty = True
            if offset in segment.skip:  # acknowledged before a restart
                segment.skip.discard(offset)
                segment.done_above.add(offset)
                continue
            segment.in_flight.add(offset)
            return _decode_body(body, Position(segment.name, offset))

    def _note_torn(self, segment: _Segment, size: int) -> None:
        if size and segment.name != self._writer_name:
            logger.warning(
                "spill segment %s: dropping a torn last record of %d bytes at offset %d",
                segment.name,
                size,
                segment.read_offset,
            )

    def acknowledge(self, position: Position) -> None:
        """Kafka acknowledged the record at ``position``: it will never be resent."""
        segment = self._segments.get(position.segment)
        if segment is None:
            return
        segment.in_flight.discard(position.offset)
        segment.done_above.add(position.offset)
        segment.dirty = True
        self._maybe_delete(segment)

    def _maybe_delete(self, segment: _Segment) -> None:
        if segment.exhausted and not segment.in_flight and segment.name != self._writer_name:
            if segment.reader is not None:
                segment.reader.close()
            segment.path.unlink(missing_ok=True)
            # After any checkpoint write of it still queued.
            self._writes.append(self._disk.submit(_unlink, segment.done_path))
            del self._segments[segment.name]
            logger.info("spill segment %s drained and deleted", segment.name)

    def checkpoint(self) -> None:
        """Persist which records were acknowledged, for segments that changed; never blocks.

        What to write is taken now; the writes run on the checkpoint thread, in order. A write
        that failed (a full disk) leaves its segment dirty for a later checkpoint.
        """
        self._collect_writes()
        jobs: list[tuple[str, Path, str]] = []
        for segment in self._segments.values():
            if not segment.dirty:
                continue
            low = segment.low_watermark()
            segment.done_above = {offset for offset in segment.done_above if offset >= low}
            done = sorted(segment.done_above | {o for o in segment.skip if o >= low})
            jobs.append(
                (segment.name, segment.done_path, json.dumps({"offset": low, "done": done}))
            )
            segment.dirty = False
        if jobs:
            self._writes.append(self._disk.submit(self._write_checkpoints, jobs))

    def _write_checkpoints(self, jobs: list[tuple[str, Path, str]]) -> list[str]:
        """On the checkpoint thread: write each ``.done`` file; return the segments that failed."""
        failed = []
        for name, done_path, text in jobs:
            try:
                _write_durably(done_path, text)
            except OSError as exc:  # a full disk: written again at a later checkpoint
                self._full_log.error("spill checkpoint %s not written: %s", done_path, exc)
                failed.append(name)
        return failed

    def wait_for_checkpoints(self) -> None:
        """Block until every checkpoint taken so far is on disk (or failed and is dirty again)."""
        self._collect_writes(wait=True)

    def _collect_writes(self, *, wait: bool = False) -> None:
        """Take the finished checkpoint writes' outcomes (all of them with ``wait``)."""
        if wait:
            concurrent.futures.wait(self._writes)
        still: list[concurrent.futures.Future[list[str]]] = []
        for write in self._writes:
            if not write.done():
                still.append(write)
                continue
            for name in write.result():
                segment = self._segments.get(name)
                if segment is not None:
                    segment.dirty = True
        self._writes = still

    def close(self) -> None:
        """Close the writer and the readers and persist the acknowledgements."""
        self.close_writer()
        self.checkpoint()
        self.wait_for_checkpoints()
        if any(segment.dirty for segment in self._segments.values()):
            self.checkpoint()  # a last try for what a full disk refused
            self.wait_for_checkpoints()
        self._disk.shutdown(wait=True)
        for segment in self._segments.values():
            if segment.reader is not None:
                segment.reader.close()
                segment.reader = None


def _write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temporary file, fsync, rename, fsync of the directory."""
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _unlink(path: Path) -> list[str]:
    with contextlib.suppress(OSError):  # at worst a stale file, removed at the next start
        path.unlink(missing_ok=True)
    return []


def _valid_length(path: Path) -> int:
    """Length of the prefix of ``path`` made of whole, intact frames."""
    offset = 0
    with path.open("rb") as file:
        while True:
            header = file.read(_FRAME.size)
            if len(header) < _FRAME.size:
                return offset
            length, crc = _FRAME.unpack(header)
            body = file.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                return offset
            offset += _FRAME.size + length


def _seq(name: str) -> int:
    digits = name.split(".", 1)[0].rstrip("ab")
    return int(digits) if digits.isdigit() else 0
