"""Records into the open transaction: what is in it, what waits, and what comes back refused.

The :class:`Sender` owns the open transaction's records (``txn``, kept to be sent again if it
aborts), the records waiting for room (``pending``) and the delivery failures librdkafka
reports. It never runs a transactional call: :mod:`chatpulse.ingest.producer` decides when to
commit or abort from the :class:`~chatpulse.ingest.transaction.Transactions` state.

Refusals: the broker refuses a whole partition batch for one bad record (a batch with one
record stamped 3 h ahead comes back ``INVALID_TIMESTAMP`` for all of its records), and a
failed delivery makes the transaction abortable. After the abort, the records reported
refused are the suspects. One suspect alone is the culprit: it is dead-lettered. Several
are probed: the others are sent again at once in a new transaction, and the suspects go
through transactions of their own, split in halves until each culprit is alone
(``2 k log2(n)`` small transactions for ``k`` culprits among ``n`` suspects). Probed records
can therefore be committed after records that followed them, about a second late; the
processor's windows take late records within their grace.
"""

import collections
import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from chatpulse.ingest.deadlettering import DeadLetters, Verdict, verdict
from chatpulse.ingest.entry import Entry
from chatpulse.ingest.spill import Position
from chatpulse.logs import RateLimitedLog

__all__ = ["Sender"]

logger = logging.getLogger(__name__)

_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_REFUSED, _HELD = Verdict.REFUSED, Verdict.HELD


class Sender:
    """The open transaction's records, the waiting ones, and refused-record handling."""

    def __init__(
        self,
        producer: Producer,
        deadletters: DeadLetters,
        topics: list[str],
        *,
        txn_max: int,
        acknowledge: Callable[[Position], None],
    ) -> None:
        self._produce = producer.produce
        self._deadletters = deadletters
        self._acknowledge = acknowledge
        self.txn_max = txn_max
        self.txn: list[Entry] = []  # the open transaction's records, in order
        self.pending: collections.deque[Entry] = collections.deque()
        self.probes: collections.deque[list[Entry]] = collections.deque()
        self.probing = False  # the open transaction holds only one probe group
        self.broken = False  # a produce found the transaction failed: commit to learn how
        self.held: KafkaError | None = None  # the topic or permissions: the producer backs off
        self.refused: dict[tuple[str, bytes | None], KafkaError] = {}
        self.acked = dict.fromkeys(topics, 0)
        self.counts = collections.Counter[str]()  # retried, failures
        self._probe_log = RateLimitedLog(logger, 10.0)

    @property
    def waiting(self) -> int:
        """Records in memory not yet committed."""
        return len(self.txn) + len(self.pending) + sum(len(group) for group in self.probes)

    def produce(self, entry: Entry) -> bool:
        """Into the open transaction; False when it has to wait (the caller keeps it)."""
        try:
            self._produce(entry.topic, entry.value, entry.key, timestamp=entry.timestamp)
        except BufferError:
            return False
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            kind = verdict(error)
            if kind is _REFUSED:
                self.refuse(entry, error.str())
                return True
            if kind is _HELD:
                self.held = error
            else:
                # The transaction failed already (abortable state): commit it to learn how.
                self.broken = True
            return False
        except (OverflowError, ValueError, TypeError) as exc:  # refused before librdkafka
            self.refuse(entry, f"the client refused the record: {exc}")
            return True
        self.txn.append(entry)
        return True

    def offer(self, entry: Entry, txn_open: bool) -> int:
        """A new record: into the open transaction when nothing waits before it, else it waits.

        Returns how many records wait (the caller spills past its bound).
        """
        pending = self.pending
        if (
            txn_open
            and not pending
            and not self.probing
            and len(self.txn) < self.txn_max
            and self.produce(entry)
        ):
            return 0
        pending.append(entry)
        return len(pending)

    def wait_first(self, entry: Entry) -> None:
        """``entry`` could not be produced now: it waits ahead of every other record."""
        self.pending.appendleft(entry)

    def take_broken(self) -> bool:
        """True (once) when a produce found the transaction failed."""
        broken, self.broken = self.broken, False
        return broken

    def end_probe(self) -> None:
        """The open transaction holds no probe any more (all of it was dead-lettered)."""
        self.probing = False

    def refuse(self, entry: Entry, reason: str) -> None:
        """Dead-letter ``entry`` (it waits first in line), or drop a refused dead letter."""
        replacement = self._deadletters.replace(entry, reason)
        if replacement is not None:
            self.pending.appendleft(replacement)
        elif type(entry.origin) is Position:  # dropped for good: never read back again
            self._acknowledge(entry.origin)

    def fill(self) -> bool:
        """Move waiting records into the open transaction while it has room; False: stop."""
        pending, txn, produce = self.pending, self.txn, self.produce
        while pending and len(txn) < self.txn_max:
            entry = pending.popleft()
            if not produce(entry):
                pending.appendleft(entry)
                return False
        return True

    def take_pending_direct(self) -> list[Entry]:
        """Remove and return the waiting records sent directly (not read from the spill).

        The spill-read ones stay waiting, in their order, ahead of everything newer.
        """
        pending = self.pending
        direct = [entry for entry in pending if type(entry.origin) is int]
        if len(direct) == len(pending):
            pending.clear()
        else:
            kept = [entry for entry in pending if type(entry.origin) is not int]
            pending.clear()
            pending.extend(kept)
        return direct

    def send_probe(self) -> None:
        """Open-transaction content: the next group of suspects, alone."""
        group = self.probes.popleft()
        self.probing = True
        for index, entry in enumerate(group):
            if not self.produce(entry):
                self.probes.appendleft(group[index:])
                return

    def committed(self) -> None:
        """The open transaction committed: its records are acknowledged for good."""
        acked, acknowledge = self.acked, self._acknowledge
        for entry in self.txn:
            acked[entry.topic] += 1
            origin = entry.origin
            if type(origin) is Position:
                acknowledge(origin)
        self.txn.clear()
        self.refused.clear()
        self.probing = False

    def resend(self, *, hold: bool = False) -> None:
        """After an abort: refused records handled (above), the others sent again in order.

        With ``hold`` (or a held error reported), the others wait first in line instead: the
        producer sends them when its backoff ends.
        """
        entries, self.txn = self.txn, []
        refused, self.refused = self.refused, {}
        self.probing = False
        self.counts["retried"] += len(entries)
        suspects = [e for e in entries if (e.topic, e.value) in refused] if refused else []
        if len(suspects) == 1:
            (culprit,) = suspects
            self.refuse(culprit, refused[(culprit.topic, culprit.value)].str())
        elif suspects:
            self._probe_log.warning(
                "Kafka refused a batch of %d records (%s): sending them again in smaller "
                "transactions to find which to dead-letter",
                len(suspects),
                refused[(suspects[0].topic, suspects[0].value)].str(),
            )
            half = len(suspects) // 2
            self.probes.appendleft(suspects[half:])
            self.probes.appendleft(suspects[:half])
        if suspects:
            taken = {id(entry) for entry in suspects}
            entries = [entry for entry in entries if id(entry) not in taken]
        if hold or self.held is not None:
            self.pending.extendleft(reversed(entries))
            return
        for index, entry in enumerate(entries):
            if not self.produce(entry):
                # It waits first in pending; the rest of the transaction right behind it.
                self.pending.extendleft(reversed(entries[index:]))
                break

    def on_delivery_error(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's report of a failed delivery (only failures are reported).

        Each one makes the transaction fail at its commit; it is aborted and its records
        are sent again, except the refused ones (see the module doc). May run on the worker
        thread (a commit serves reports while it flushes): it only records.
        """
        if err is None or err.code() in _PURGED:
            return
        self.counts["failures"] += 1
        kind = verdict(err)
        if kind is _REFUSED:
            self.refused[(msg.topic() or "", msg.value())] = err
        elif kind is _HELD:
            self.held = err

    def take_held(self) -> KafkaError | None:
        """The last held error (its topic or the permissions), cleared; None if none came."""
        held, self.held = self.held, None
        return held

    def take_all(self) -> list[Entry]:
        """Every record in memory, in stream order, emptied (at shutdown)."""
        entries = [*self.txn, *self.pending]
        for group in self.probes:
            entries.extend(group)
        self.txn.clear()
        self.pending.clear()
        self.probes.clear()
        return entries
