"""The spill as the producer uses it: where records go while Kafka lags, and their way back.

Past the memory bound every new record goes to the spill, behind the ones already there, so
order holds. Once a transaction is open again the spill is read back in order into it; a
spilled record is acknowledged in the spill only when its transaction commits. When the
reader catches up with the writer, records go straight to Kafka again. At shutdown the
records still in memory go back to the spill in their place in the stream.
"""

import logging

from chatpulse.ingest.entry import Entry
from chatpulse.ingest.sender import Sender
from chatpulse.ingest.spill import Spill

__all__ = ["SpillDrain"]

logger = logging.getLogger(__name__)


class SpillDrain:
    """Spilling on, draining back, and the shutdown put-back for one :class:`Spill`."""

    def __init__(self, spill: Spill, sender: Sender) -> None:
        self.spill = spill
        self._sender = sender
        self.spilling = not spill.empty  # a spill left by a former run is read first
        self.slot = spill.next_slot  # records sent directly sort before this segment
        self.spilled = 0  # records written since the metrics last took the count
        self.unspilled = 0

    def append(self, topic: str, key: bytes | None, value: bytes, timestamp: int) -> None:
        """While spilling: a new record goes to the spill, behind the ones there."""
        self.spill.append(topic, key, value, timestamp)
        self.spilled += 1

    def start_spilling(self) -> None:
        """Memory is full: the waiting records sent directly go to disk, then every new one.

        Records read from the spill (back in memory after an abort, or their dead-letter
        replacements) stay in memory, first in line: their frame is still in the spill,
        unacknowledged, so a second copy would be read again after a restart and sent twice.
        They are at most one transaction's worth (they came from it).
        """
        logger.warning(
            "Kafka is not keeping up (%d records held in memory): spilling to %s",
            self._sender.waiting,
            self.spill.directory,
        )
        direct = self._sender.take_pending_direct()
        append = self.spill.append
        for entry in direct:
            append(entry.topic, entry.key, entry.value, entry.timestamp)
        self.spilled += len(direct)
        self.spilling = True

    def drain(self) -> None:
        """Read spilled records into the open transaction while it has room."""
        sender = self._sender
        for _ in range(sender.txn_max - len(sender.txn)):
            record = self.spill.next_record()
            if record is None:
                self._caught_up()
                return
            entry = Entry(record.topic, record.key, record.value, record.timestamp, record.position)
            self.unspilled += 1
            if not sender.produce(entry):
                sender.wait_first(entry)
                return  # it waits in pending, ahead of the spill's next records
            if sender.pending:
                return  # a dead letter took its place: it goes first

    def _caught_up(self) -> None:
        """The reader reached the writer: close it and send new records directly."""
        self.spill.close_writer()
        if self.spill.next_record() is not None:  # pragma: no cover - close adds nothing
            raise AssertionError("spill grew after close")
        self.spilling = False
        self.slot = self.spill.next_slot
        logger.info("spill read back into the producer: sending records directly again")

    def put_back(self, entries: list[Entry]) -> int:
        """At shutdown: records sent directly go back in their place; returns how many.

        Spilled ones stay unacknowledged in the spill, where they already are.
        """
        by_slot: dict[int, list[tuple[str, bytes | None, bytes, int]]] = {}
        for entry in entries:
            origin = entry.origin
            if type(origin) is int:
                by_slot.setdefault(origin, []).append(
                    (entry.topic, entry.key, entry.value, entry.timestamp)
                )
        for slot in sorted(by_slot):
            self.spill.append_before(slot, by_slot[slot])
        return sum(len(records) for records in by_slot.values())
