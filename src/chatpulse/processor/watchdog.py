"""A checkpoint commit that never returns restarts the process (exec), as a crash would.

Seen on the 3-broker cluster when the killed broker was the processor's group or transaction
coordinator: the main thread blocked in librdkafka's ``send_offsets_to_transaction`` for good
(librdkafka issues #5456: its timeout is never checked; #5511: a coordinator dropped from
the metadata is never looked up again), 8 minutes and counting, with the broker back after
30 s. No Python exception can reach a thread inside a C call, and no other thread may use
the transactional producer meanwhile, so the only way on is the one a supervisor would take:
start the process again. It restarts itself with ``execv`` (same pid, same output, same
arguments and environment), so ``chatpulse up``, systemd or a test harness sees the same
process go on. That is safe for exactly-once for the same reasons a SIGKILL is: the state
store commits after Kafka does, and the restarted instance's producer (same transactional
id) fences the open transaction, which the broker aborts.

``CHATPULSE_COMMIT_STALL_RESTART_S`` (default 120 s, 0: never) bounds a commit: a healthy
one takes well under a second, one held by Cassandra backpressure at most the flush
deadline (20 s) per attempt, so 120 s is a hang. Before restarting, every thread's stack
and one ERROR line go to the log.
"""

import contextlib
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["CommitWatchdog", "restart_process"]

logger = logging.getLogger(__name__)


class CommitWatchdog:
    """Calls ``on_stuck(seconds)`` once a commit has been running ``limit_s`` (checked by
    :meth:`check`, every ``interval_s`` in the thread :meth:`start` runs)."""

    def __init__(
        self,
        limit_s: float,
        on_stuck: Callable[[float], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.limit_s = limit_s
        self._on_stuck = on_stuck
        self._clock = clock
        self._since: float | None = None  # when the running commit began

    def started(self, at: float) -> None:
        """A commit began at ``at`` (a reading of the watchdog's clock)."""
        self._since = at

    def ended(self) -> None:
        self._since = None

    def check(self) -> bool:
        """True (after ``on_stuck``) when the running commit passed the limit."""
        since = self._since
        if since is None:
            return False
        elapsed = self._clock() - since
        if elapsed < self.limit_s:
            return False
        self._since = None  # once per commit
        self._on_stuck(elapsed)
        return True

    def start(self, interval_s: float = 2.0) -> None:
        def watch() -> None:
            while True:
                time.sleep(interval_s)
                self.check()

        threading.Thread(target=watch, name="commit-watchdog", daemon=True).start()


def restart_process(elapsed_s: float) -> None:
    """Log why, dump every thread's stack, and exec this process again with its arguments."""
    logger.error(
        "a Kafka checkpoint commit has been blocked for %.0f s (a known librdkafka hang when "
        "a transaction's coordinator dies: librdkafka #5456, #5511); restarting this process "
        "as after a crash: the restarted producer fences the open transaction, nothing is "
        "counted twice (CHATPULSE_COMMIT_STALL_RESTART_S)",
        elapsed_s,
    )
    faulthandler.dump_traceback(all_threads=True)
    for stream in (*logging.getLogger().handlers, sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):  # (a closed stream must not stop it)
            stream.flush()
    os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - this very command, again
