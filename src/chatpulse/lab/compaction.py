"""Lab ``compaction``: a compacted topic keeps the newest record of each key; a tombstone
(null value) removes its key."""

from __future__ import annotations

import time
from collections import Counter

from rich.table import Table

from chatpulse.lab.kit import create_topic, flush, make_producer, read_all
from chatpulse.lab.runner import Lab, LabContext, LabError, Narrator, Outcome
from chatpulse.models import TrackedChannel, encode

__all__ = ["LAB", "judge"]

# Compaction soon: segments roll after 100 ms, the cleaner takes any segment with dirty
# records, and a tombstone is kept only 100 ms past the cleaning that reached it (the broker's
# cleaner still wakes only every 15 s: log.cleaner.backoff.ms).
_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "100",
    "min.compaction.lag.ms": "0",
}
_CHANNELS = ["shroud", "pokimane", "xqc", "summit1g", "lirik"]
_GONE = "lirik"
_ROLL_KEY = "zz_roll"


def judge(before: list[tuple[str, bool | None]], after: list[tuple[str, bool | None]]) -> Outcome:
    """(key, tracked or None for a tombstone) in offset order, before and after: before has
    several records per key; after, every key but the roll marker has one record left, the
    newest (the same as before's last), and the removed key has no value left."""
    newest_before = dict(before)
    keys_after = Counter(key for key, _ in after)
    compacted = all(n == 1 for n in keys_after.values())
    same_newest = all(dict(after).get(k) == v for k, v in newest_before.items() if v is not None)
    gone = all(value is None for key, value in after if key == _GONE)
    repeated_before = max(Counter(key for key, _ in before).values(), default=0) > 1
    passed = repeated_before and compacted and same_newest and gone
    tombstone = "its tombstone left" if (_GONE, None) in after else "no record at all"
    measured = (
        f"{len(before)} records before, {len(after)} after compaction, one per key; "
        f"{_GONE} untracked by a tombstone: {tombstone}"
    )
    return Outcome(passed, measured)


def _decode(records: list[object]) -> list[tuple[str, bool | None]]:
    out: list[tuple[str, bool | None]] = []
    for record in records:
        key = record.key().decode()  # type: ignore[attr-defined]
        value = record.value()  # type: ignore[attr-defined]
        out.append((key, None if value is None else b'"tracked":true' in value))
    return out


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    topic = f"{ctx.settings.topic_prefix}tracked-channels"
    updates = 4 if ctx.quick else 20
    say.step(
        "a compacted topic, like tracked-channels",
        f"{topic}: cleanup.policy=compact, so Kafka may delete a record once a newer one with "
        "the same key exists. Segments are made to roll after 100 ms so compaction can start "
        "within seconds (the real topic waits for 7 days or 1 GB).",
    )
    create_topic(ctx.settings, topic, 1, _TOPIC_CONFIG)

    say.step(
        "track and untrack channels, again and again",
        f"{len(_CHANNELS)} channels are tracked and untracked {updates} times each (the value "
        f"says which, as the API writes it); then {_GONE} is removed with a tombstone: a "
        "record with its key and no value.",
    )
    producer = make_producer(ctx.settings)
    for round_ in range(updates):
        for channel in _CHANNELS:
            tracked = round_ % 2 == 0 or round_ == updates - 1
            producer.produce(
                topic, key=channel.encode(), value=encode(TrackedChannel(channel, tracked))
            )
    producer.produce(topic, key=_GONE.encode(), value=None)
    flush(producer)
    time.sleep(0.3)  # older than segment.ms: the next record rolls a new segment
    producer.produce(topic, key=_ROLL_KEY.encode(), value=encode(TrackedChannel(_ROLL_KEY)))
    flush(producer)
    before = _decode(read_all(ctx.settings, topic, idle_s=0.5))
    _show(say, "before compaction", before)

    say.step(
        "wait for the log cleaner",
        "The broker's cleaner thread copies the closed segments keeping only the newest record "
        "of each key. The active segment (holding the last record) is never cleaned.",
    )
    say.look("the records per key drop to one, the offsets get holes")

    def compacted() -> list[tuple[str, bool | None]] | None:
        after = _decode(read_all(ctx.settings, topic, idle_s=0.3))
        counts = Counter(key for key, _ in after)
        return after if after and max(counts.values()) == 1 else None

    def show() -> str:
        return f"{len(read_all(ctx.settings, topic, idle_s=0.3))} records"

    try:
        after, took = say.wait_for("compaction", compacted, timeout=90, every=2.0, show=show)
    except LabError:
        after, took = _decode(read_all(ctx.settings, topic, idle_s=0.3)), 0.0
    else:
        say.result(f"compacted after {took:.0f}s")
    offsets = [r.offset() for r in read_all(ctx.settings, topic, idle_s=0.3)]
    say.result(f"offsets left: {', '.join(map(str, offsets))} (a record keeps its offset)")
    _show(say, "after compaction", after)
    outcome = judge(before, after)
    say.say(
        "A reader from the beginning still ends with the newest value of every key: that is "
        "how the ingest and the API rebuild the tracked channel list at start, from a topic "
        "that never grows past one record per channel (and a tombstone goes too, "
        "delete.retention.ms after the cleaning that reached it)."
    )
    return outcome


def _show(say: Narrator, title: str, records: list[tuple[str, bool | None]]) -> None:
    table = Table(title=f"{title}: {len(records)} records")
    for column in ("key", "records", "newest value"):
        table.add_column(column)
    counts = Counter(key for key, _ in records)
    newest = dict(records)
    for key in sorted(counts):
        value = newest[key]
        shown = "tombstone (null)" if value is None else ("tracked" if value else "untracked")
        table.add_row(key, str(counts[key]), shown)
    say.console.print(table)


LAB = Lab(
    name="compaction",
    summary="tracked-channels before and after compaction; a tombstone removes a key",
    claim="after compaction a compacted topic holds the newest record of each key only, and "
    "a tombstoned key keeps no value",
    needs=frozenset({"kafka"}),
    experiment=_experiment,
)
