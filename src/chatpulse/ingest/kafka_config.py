"""The ingest producer's librdkafka settings (its transactional id: chatpulse.transactional).

Why these settings (transactions, a commit every 100 ms, failure-only delivery reports) is
explained in :mod:`chatpulse.ingest.producer`. Baselines (bench/ingest.py) use the same
settings without the transactional id.
"""

from typing import Any

__all__ = ["producer_config"]

_TRANSACTION_TIMEOUT_MS = 60_000


def producer_config(
    bootstrap_servers: str, buffer_messages: int, txn_id: str | None = None
) -> dict[str, Any]:
    """librdkafka settings of the ingest producer; transactional when ``txn_id`` is given."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "chatpulse-ingest",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": buffer_messages,
        "queue.buffering.max.kbytes": 2_097_151,
        "reconnect.backoff.max.ms": 2_000,
    }
    if txn_id is not None:
        # message.timeout.ms follows the transaction timeout: a record that times out aborts
        # the transaction, whose records we send again, so nothing is lost.
        config["transactional.id"] = txn_id
        config["transaction.timeout.ms"] = _TRANSACTION_TIMEOUT_MS
        # Successes are known from the commit; only failures need a report (saves a Python
        # call per record).
        config["delivery.report.only.error"] = True
    return config
