"""Lab ``changelog``: a processor whose local state is deleted rebuilds it from its changelog
topic at start, and counting continues exactly where it was."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from chatpulse.kafka_admin import admin_client
from chatpulse.lab.kit import (
    Chat,
    ProcessorChild,
    committed,
    end_offsets,
    flush,
    make_producer,
    now_ms,
    produce_chat,
    read_totals,
    stop_all,
)
from chatpulse.lab.runner import Lab, LabContext, LabError, Narrator, Outcome
from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.topics import Topics

__all__ = ["LAB", "judge", "recovery_seconds"]

_CHANNELS = 10


def recovery_seconds(log: str) -> float | None:
    """Seconds from Quix's last "Beginning recovery check" to the "Recovery process complete"
    after it, from the log's timestamps; None when the log has no finished recovery."""
    began: datetime | None = None
    took: float | None = None
    for line in log.splitlines():
        if "Beginning recovery check" in line:
            began = _stamp(line)
        elif "Recovery process complete" in line and began is not None:
            ended = _stamp(line)
            if ended is not None:
                took = (ended - began).total_seconds()
    return took


def _stamp(line: str) -> datetime | None:
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None


def judge(
    *,
    before: dict[str, int],
    added: dict[str, int],
    after: dict[str, int],
    replayed: int,
    recovered_partitions: int,
    seconds: float | None,
) -> Outcome:
    """The totals after the restart are the totals before plus what came after, per channel,
    and the state was really rebuilt from the changelog (partitions recovered, records read)."""
    expected = {c: before.get(c, 0) + added.get(c, 0) for c in {*before, *added}}
    passed = after == expected and recovered_partitions > 0 and replayed > 0 and bool(before)
    timing = f"{seconds:.1f}s" if seconds is not None else "no recovery seen"
    measured = (
        f"{recovered_partitions} partitions rebuilt from {replayed:,} changelog records in "
        f"{timing}; totals {sum(after.values()):,} = {sum(before.values()):,} before + "
        f"{sum(added.values()):,} after"
        + ("" if after == expected else f", expected {sum(expected.values()):,}")
    )
    return Outcome(passed, measured)


def _produce(settings: Settings, count: int, chat: Chat) -> dict[str, int]:
    producer = make_producer(settings)
    topic = Topics.from_settings(settings).messages
    names = [f"streamer{i:02d}" for i in range(_CHANNELS)]
    base = now_ms() - count  # one message a millisecond, the last one now
    messages = [chat.message(names[i % _CHANNELS], base + i) for i in range(count)]
    produce_chat(producer, topic, messages)
    flush(producer)
    sent: dict[str, int] = {}
    for message in messages:
        sent[message.channel] = sent.get(message.channel, 0) + 1
    return sent


def _wait_done(say: Narrator, settings: Settings, child: ProcessorChild) -> float:
    topic = Topics.from_settings(settings).messages
    end = sum(high for _, high in end_offsets(settings, topic).values())

    def progress() -> int:
        offsets = committed(settings, settings.processor_group, topic).values()
        return sum(max(0, offset) for offset in offsets)

    def done() -> bool | None:
        child.check_alive()
        return True if progress() >= end else None

    _, took = say.wait_for(
        "the processor to commit every message",
        done,
        timeout=150,
        show=lambda: f"{progress():,}/{end:,}",
    )
    return took


def _wait_totals(say: Narrator, settings: Settings, wanted: dict[str, int]) -> dict[str, int]:
    def exact() -> dict[str, int] | None:
        totals = read_totals(settings)
        return totals if totals == wanted else None

    try:
        totals, _ = say.wait_for("Cassandra's channel totals", exact, timeout=30)
    except LabError:
        totals = read_totals(settings)
    return totals


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    settings = ctx.settings
    first_batch, second_batch = (3_000, 1_000) if ctx.quick else (20_000, 5_000)
    chat = Chat()
    say.step(
        "count some chat",
        f"The processor counts {first_batch:,} messages of {_CHANNELS} channels. Its state "
        "(per channel: totals, open windows, recent message ids) lives in RocksDB in its state "
        "directory, and every change also goes, at each checkpoint, to a compacted changelog "
        "topic.",
    )
    initialize(settings, timeout=120)
    before_sent = _produce(settings, first_batch, chat)
    child = ProcessorChild(settings, ctx.workdir / "process.log", say.warn)
    ctx.on_cleanup("stop the processor", lambda: stop_all([child]))
    child.start()
    _wait_done(say, settings, child)
    before = _wait_totals(say, settings, before_sent)
    say.result(f"Cassandra's channel totals: {sum(before.values()):,} messages")

    say.step(
        "stop it and delete its local state",
        f"SIGTERM, then the state directory {settings.state_dir} goes. Only the changelog "
        "topic still knows the totals.",
    )
    child.stop()
    state_bytes = _size(settings.state_dir)
    shutil.rmtree(settings.state_dir)
    changelogs = [
        name
        for name in _topics(settings)
        if name.startswith(f"changelog__{settings.processor_group}--")
    ]
    replayed = sum(
        high - low for name in changelogs for low, high in end_offsets(settings, name).values()
    )
    say.result(
        f"deleted {state_bytes / 1024:,.0f} KiB of RocksDB; the changelog {', '.join(changelogs)} "
        f"holds {replayed:,} records"
    )

    say.step(
        "more chat, and restart",
        f"{second_batch:,} more messages arrive while it is down. At start, Quix finds no local "
        "state for its partitions and replays the changelog into a new RocksDB before it "
        "consumes any message.",
    )
    say.look("'Recovery' in the processor's log, and how long the replay takes")
    added = _produce(settings, second_batch, chat)
    child.start()
    _wait_done(say, settings, child)
    log = child.log.read_text(errors="replace")
    recovered = child.log_count("Recovery successful")
    seconds = recovery_seconds(log)
    say.result(
        f"recovery: {recovered} partitions rebuilt in "
        + (f"{seconds:.1f}s" if seconds is not None else "(not seen in the log)")
    )

    say.step(
        "did counting continue exactly?",
        "If the state had been lost, the totals would restart from zero; rebuilt from the "
        "changelog, each channel's total is what it had plus what came after.",
    )
    wanted = {c: before_sent.get(c, 0) + added.get(c, 0) for c in {*before_sent, *added}}
    after = _wait_totals(say, settings, wanted)
    child.stop()
    outcome = judge(
        before=before,
        added=added,
        after=after,
        replayed=replayed,
        recovered_partitions=recovered,
        seconds=seconds,
    )
    say.result(outcome.measured)
    return outcome


def _topics(settings: Settings) -> list[str]:
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    return sorted(admin.list_topics(timeout=10).topics)


LAB = Lab(
    name="changelog",
    summary="delete the processor's local state: it is rebuilt from the changelog topic",
    claim="a processor whose local state was deleted rebuilds it from the changelog topic "
    "and counts on exactly",
    needs=frozenset({"kafka", "cassandra"}),
    experiment=_experiment,
)
