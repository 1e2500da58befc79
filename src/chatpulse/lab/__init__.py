"""``chatpulse lab``: experiments that state a Kafka claim, provoke it on the real stack,
measure, and say whether it held (docs/learning-kafka.md links each concept to its lab).

One module per lab, each defining ``LAB`` (a :class:`~chatpulse.lab.runner.Lab`); the runner
and narrator they share are in ``runner.py``, their tools in ``kit.py``, the stack in
``stackside.py``.
"""

import importlib

from chatpulse.lab.runner import Lab

__all__ = ["LAB_NAMES", "load_lab"]

# In the order a learner meets the concepts (docs/learning-kafka.md).
_MODULES = {
    "partitions": "chatpulse.lab.partitions",
    "consumer-groups": "chatpulse.lab.consumer_groups",
    "exactly-once": "chatpulse.lab.exactly_once",
    "changelog": "chatpulse.lab.changelog",
    "transactions": "chatpulse.lab.transactions",
    "compaction": "chatpulse.lab.compaction",
    "late-data": "chatpulse.lab.late_data",
    "replication": "chatpulse.lab.replication",
    "security": "chatpulse.lab.security",
}
LAB_NAMES = tuple(_MODULES)


def load_lab(name: str) -> Lab:
    """The lab called ``name`` (KeyError when there is none)."""
    lab: Lab = importlib.import_module(_MODULES[name]).LAB
    return lab
