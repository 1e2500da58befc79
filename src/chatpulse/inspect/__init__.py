"""``chatpulse inspect``: topics, consumer groups, state, transactions and Cassandra tables.

Collection (:func:`collect_snapshot`, plain dataclasses) is separate from rendering
(:func:`render_snapshot`, rich tables), so tests assert on data and ``--json`` is free.
"""

from chatpulse.inspect.collect import collect_snapshot
from chatpulse.inspect.model import Snapshot
from chatpulse.inspect.render import render_snapshot

__all__ = ["Snapshot", "collect_snapshot", "render_snapshot"]
