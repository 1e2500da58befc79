"""Lab ``partitions``: the key picks the partition, and a partition keeps its records' order."""

from collections import defaultdict

from rich.table import Table

from chatpulse.lab.kit import (
    Chat,
    create_topic,
    flush,
    make_producer,
    now_ms,
    produce_chat,
    read_all,
)
from chatpulse.lab.runner import Lab, LabContext, Outcome
from chatpulse.models import decode_chat_message

__all__ = ["LAB", "judge"]

_PARTITIONS = 6


def judge(
    records: list[tuple[str, int, int]], partitions: int
) -> tuple[Outcome, dict[int, set[str]]]:
    """The claim over records read back as (key, partition, sequence number), in offset order
    per partition: every key on one partition, its numbers increasing; keys on more than one
    partition. Also returns the keys of each partition."""
    homes: dict[str, set[int]] = defaultdict(set)
    last: dict[str, int] = {}
    out_of_order: set[str] = set()
    for key, partition, number in records:
        homes[key].add(partition)
        if number <= last.get(key, -1):
            out_of_order.add(key)
        last[key] = number
    split = sorted(key for key, where in homes.items() if len(where) > 1)
    by_partition: dict[int, set[str]] = defaultdict(set)
    for key, where in homes.items():
        for partition in where:
            by_partition[partition].add(key)
    used = len(by_partition)
    passed = bool(homes) and not split and not out_of_order and used > 1
    measured = (
        f"{len(records):,} records of {len(homes)} keys: {len(homes) - len(split)}/{len(homes)} "
        f"keys on one partition, order kept for {len(homes) - len(out_of_order)}/{len(homes)}, "
        f"keys spread over {used} of {partitions} partitions"
    )
    return Outcome(passed, measured), by_partition


def _number(value: bytes) -> int:
    return int(decode_chat_message(value).text.lstrip("#"))


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    topic = f"{ctx.settings.topic_prefix}partitions-demo"
    channels = [f"streamer{i:02d}" for i in range(12 if ctx.quick else 24)]
    per_channel = 150 if ctx.quick else 500

    say.step(
        "a topic with six partitions",
        f"Kafka splits a topic into partitions, each an ordered log on its own. The lab creates "
        f"{topic} with {_PARTITIONS} partitions.",
    )
    create_topic(ctx.settings, topic, _PARTITIONS)
    say.result(f"created {topic}: partitions 0-{_PARTITIONS - 1}")

    say.step(
        "produce chat keyed by channel",
        f"{len(channels)} channels send {per_channel} messages each, interleaved, every record "
        "keyed by its channel (as the ingest does). The producer hashes the key to choose the "
        "partition; each message's text carries its number within the channel.",
    )
    chat = Chat()
    producer = make_producer(ctx.settings)
    began = now_ms()
    for number in range(per_channel):
        for channel in channels:
            message = chat.message(channel, began + number, text=f"#{number}")
            produce_chat(producer, topic, [message])
    flush(producer)
    say.result(f"{len(channels) * per_channel:,} records acknowledged")

    say.step(
        "read every partition back",
        "A reader goes through each partition from offset 0 and notes, per record, its key, "
        "its partition and its number.",
    )
    say.look("each channel should sit in exactly one row, and its numbers come back in order")
    records = read_all(ctx.settings, topic, isolation="read_uncommitted")
    rows = sorted(records, key=lambda r: (r.partition(), r.offset()))
    observed = [(r.key().decode(), r.partition(), _number(r.value())) for r in rows]
    outcome, by_partition = judge(observed, _PARTITIONS)
    table = Table(title=f"{topic}: channels per partition")
    for column in ("partition", "records", "channels"):
        table.add_column(column)
    counts: dict[int, int] = defaultdict(int)
    for _, partition, _ in observed:
        counts[partition] += 1
    for partition in range(_PARTITIONS):
        table.add_row(
            str(partition),
            f"{counts[partition]:,}",
            ", ".join(sorted(by_partition.get(partition, set()))) or "-",
        )
    say.console.print(table)
    say.result(outcome.measured)
    say.say(
        "Same key, same partition: one consumer sees all of a channel, in the order it was "
        "sent, which is what lets the processor keep a channel's state in one place. Order "
        "holds within a partition only; across partitions there is none."
    )
    return outcome


LAB = Lab(
    name="partitions",
    summary="same key, same partition, order kept per key; different keys spread out",
    claim="records with the same key land on one partition in the order sent; "
    "different keys spread over the partitions",
    needs=frozenset({"kafka"}),
    experiment=_experiment,
)
