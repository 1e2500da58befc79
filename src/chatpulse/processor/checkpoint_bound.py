"""How many messages a checkpoint may hold: unbounded until Cassandra cannot write one in time.

A checkpoint's Cassandra writes must be acknowledged within the flush deadline (20 s, below the
Kafka transaction timeout), or the checkpoint is dropped, the partitions are paused and the
same records are processed again (:mod:`chatpulse.processor.cassandra_flush`). A checkpoint
ends after ``commit_interval_s`` of processing; while the processor catches up on a backlog
(after a broker failover, a restart, an outage) that is thousands of messages, each a few rows.
On a cluster that writes slowly just then (a loaded machine, a node down, hints replaying) such
a checkpoint can outlast the deadline every time: processed again, it is as large again, and
the processor never gets past it (seen on the 3 + 3 cluster of the failure tests: the same
checkpoint dropped on ``FlushTimeout`` every 25 s for minutes).

So the bound adapts, as TCP's window does: after a write failure the next checkpoints commit
once they hold half as many messages as the one that failed (never fewer than ``floor``);
each checkpoint written in time lets them grow by half again, and past ``ceiling`` the bound
is lifted. In steady state (checkpoints of ``commit_interval_s``, far below the bound) it
never acts. Counting is unchanged: a checkpoint ended early is an ordinary checkpoint.
"""

import logging

__all__ = ["CheckpointBound"]

logger = logging.getLogger(__name__)


class CheckpointBound:
    """The most messages the current checkpoint may hold (``limit``; None: no bound)."""

    def __init__(self, *, floor: int = 500, ceiling: int = 1_000_000, growth: float = 1.5) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.growth = growth
        self.limit: int | None = None
        self.held = 0  # messages kept in the current checkpoint

    def full(self) -> bool:
        """True once the current checkpoint holds ``limit`` messages: commit it now."""
        limit = self.limit
        return limit is not None and self.held >= limit

    def failed(self) -> None:
        """The checkpoint of ``held`` messages could not be written: halve the bound."""
        limit = max(self.floor, self.held // 2)
        if self.limit is None or limit < self.limit:
            logger.warning(
                "Cassandra did not take a checkpoint of %d messages in time: checkpoints now "
                "commit every %d messages until writes keep up",
                self.held,
                limit,
            )
            self.limit = limit
        self.held = 0

    def written(self) -> None:
        """The checkpoint was written in time: let the bound grow (lift it past ``ceiling``)."""
        if self.limit is not None:
            grown = int(self.limit * self.growth)
            if grown > self.ceiling:
                logger.info("Cassandra keeps up again: checkpoints are no longer bounded")
                self.limit = None
            else:
                self.limit = grown
        self.held = 0

    def dropped(self) -> None:
        """The checkpoint was dropped for another reason (an earlier hook's backpressure)."""
        self.held = 0
