"""Lab ``consumer-groups``: a second processor joins the group and takes half the partitions;
when it leaves they move back; the counts stay exact through both rebalances."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.table import Table

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

__all__ = ["LAB", "Assignment", "judge"]

# member id -> the messages topic's partitions it holds
Assignment = dict[str, list[int]]


def assignment(settings: Settings) -> tuple[str, Assignment]:
    """The group's state and each member's partitions of the messages topic."""
    group = settings.processor_group
    topic = Topics.from_settings(settings).messages
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    members: Assignment = {}
    for member in description.members:
        held = member.assignment.topic_partitions if member.assignment else []
        members[member.member_id] = sorted(tp.partition for tp in held if tp.topic == topic)
    return description.state.name, members


def _spans(partitions: list[int]) -> str:
    return f"[{partitions[0]}-{partitions[-1]}]" if partitions else "[]"


def judge(
    *,
    alone: Assignment,
    shared: Assignment,
    back: Assignment,
    sent: dict[str, int],
    counted: dict[str, int],
    partitions: int,
    took: tuple[float, float],
) -> Outcome:
    """One member with every partition; two splitting them; one with all again; exact counts."""
    everything = list(range(partitions))
    halves = sorted(shared.values())
    passed = (
        list(alone.values()) == [everything]
        and len(shared) == 2
        and sorted(p for held in halves for p in held) == everything
        and all(held for held in halves)
        and list(back.values()) == [everything]
        and set(back) <= set(shared)  # the one left is one of the two
        and counted == sent
    )
    measured = (
        f"{' + '.join(_spans(h) for h in halves)} with two members after a {took[0]:.1f}s "
        f"rebalance, {_spans(next(iter(back.values()), []))} again {took[1]:.1f}s after the "
        f"second was stopped; {sum(counted.values()):,} of {sum(sent.values()):,} messages counted"
    )
    return Outcome(passed, measured)


@dataclass
class _Feeder:
    settings: Settings
    channels: int
    rate: int
    sent: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = make_producer(self.settings)
            topic = Topics.from_settings(self.settings).messages
            chat = Chat()
            names = [f"streamer{i:02d}" for i in range(self.channels)]
            while not self.stop.is_set():
                sent_at = now_ms()
                batch = [
                    chat.message(names[i % self.channels], sent_at) for i in range(self.rate // 10)
                ]
                produce_chat(producer, topic, batch)
                self.sent.update(m.channel for m in batch)
                time.sleep(0.1)
            flush(producer)
        except BaseException as exc:  # noqa: BLE001 - handed to the lab's thread
            self.error = exc


def _experiment(ctx: LabContext) -> Outcome:  # noqa: PLR0915 - one story, step by step
    say = ctx.say
    settings = ctx.settings
    partitions = settings.messages_partitions
    say.step(
        "one processor, the whole topic",
        f"The processor joins the consumer group {settings.processor_group}. With one member, "
        f"Kafka's group coordinator gives it all {partitions} partitions of the input topic.",
    )
    initialize(settings, timeout=120)
    feeder = _Feeder(settings, channels=12, rate=200)
    feeding = threading.Thread(target=feeder.run, name="lab-feeder", daemon=True)
    first = ProcessorChild(settings, ctx.workdir / "process-1.log", say.warn)
    second = ProcessorChild(
        settings.model_copy(update={"state_dir": ctx.workdir / "state-2"}),
        ctx.workdir / "process-2.log",
        say.warn,
    )
    ctx.on_cleanup("stop the processors", lambda: stop_all((first, second)))
    ctx.on_cleanup("stop the chat", feeder.stop.set)
    feeding.start()
    first.start()

    def members_holding(count: int) -> Assignment | None:
        for child in (first, second)[:count]:  # the ones meant to be running
            child.check_alive()
        state, members = assignment(settings)
        held = [m for m in members.values() if m]
        if state == "STABLE" and len(members) == count and len(held) == count:
            return members
        return None

    def show() -> str:
        state, members = assignment(settings)
        return f"{state}, " + ", ".join(_spans(p) for p in members.values()) or state

    alone, _ = say.wait_for(
        "the first processor in the group", lambda: members_holding(1), timeout=120, show=show
    )
    _print(say, "one member", alone)

    say.step(
        "a second processor joins",
        "Another instance starts with the same group and its own state directory. The group "
        "rebalances: with Quix's eager range assignor every member gives its partitions up, "
        "then each gets a share.",
    )
    say.look("the group state goes PREPARING_REBALANCE then back to STABLE, the partitions split")
    second.start()
    joined = _wait_rebalance(say, settings, lambda: members_holding(2), "the second member joins")
    shared, took_join = joined
    _print(say, "two members", shared)

    def recovered() -> int | None:
        second.check_alive()
        return second.log_count("Recovery successful") or None

    try:
        partitions_rebuilt, _ = say.wait_for("its state rebuilt", recovered, timeout=60)
    except LabError:
        partitions_rebuilt = 0
    say.result(
        f"the new member rebuilt the state of {partitions_rebuilt} partitions from the "
        "changelog topic before counting them (its log: 'Recovery successful')"
    )

    say.step(
        "the second processor leaves",
        "SIGTERM: it commits its last checkpoint and leaves the group at once (a crash would "
        "make the group wait for its session to time out, 10 s).",
    )
    signalled = time.monotonic()
    second.stop()
    back, took_leave = _wait_rebalance(
        say, settings, lambda: members_holding(1), "its partitions move back", signalled
    )
    _print(say, "one member again", back)

    say.step(
        "count check",
        "The chat stops; once the remaining processor has committed everything, Cassandra's "
        "channel totals must equal what was sent: no message lost or doubled by the moves.",
    )
    feeder.stop.set()
    feeding.join(30)
    if feeder.error is not None:
        raise LabError(f"the chat producer failed: {feeder.error}")
    topic = Topics.from_settings(settings).messages
    end = sum(high for _, high in end_offsets(settings, topic).values())

    def done() -> bool | None:
        first.check_alive()
        offsets = committed(settings, settings.processor_group, topic).values()
        return True if sum(max(0, o) for o in offsets) >= end else None

    say.wait_for("the processor done", done, timeout=120)
    sent = dict(feeder.sent)

    def totals_exact() -> dict[str, int] | None:
        totals = read_totals(settings)
        return totals if totals == sent else None

    try:
        counted, _ = say.wait_for("Cassandra's totals to match", totals_exact, timeout=30)
    except LabError:
        counted = read_totals(settings)
    first.stop()
    outcome = judge(
        alone=alone,
        shared=shared,
        back=back,
        sent=sent,
        counted=counted,
        partitions=partitions,
        took=(took_join, took_leave),
    )
    say.result(outcome.measured)
    return outcome


def _wait_rebalance(
    say: Narrator,
    settings: Settings,
    settled: Callable[[], Assignment | None],
    what: str,
    since: float | None = None,
) -> tuple[Assignment, float]:
    """Wait for ``settled``; the seconds from ``since`` (a monotonic time), else from the group
    leaving STABLE (else the start of the wait) to settling."""
    left_stable: list[float] = []

    def watch() -> Assignment | None:
        state, _ = assignment(settings)
        if state != "STABLE" and not left_stable:
            left_stable.append(time.monotonic())
        return settled()

    began = time.monotonic()
    members, _ = say.wait_for(what, watch, timeout=150, every=0.25)
    if since is not None:
        took = time.monotonic() - since
        say.result(f"rebalance: {took:.1f}s from the SIGTERM to stable again")
    else:
        took = time.monotonic() - (left_stable[0] if left_stable else began)
        say.result(f"rebalance: {took:.1f}s from the group leaving STABLE to stable again")
    return members, took


def _print(say: Narrator, title: str, members: Assignment) -> None:
    table = Table(title=title)
    table.add_column("member")
    table.add_column("partitions of the input topic")
    for member, held in members.items():
        table.add_row(member[-24:], ", ".join(map(str, held)))
    say.console.print(table)


LAB = Lab(
    name="consumer-groups",
    summary="a second processor joins: partitions move (rebalance timed); it leaves: they "
    "move back",
    claim="a second member takes half the partitions and gives them back when it leaves, "
    "and every message is counted exactly once through both rebalances",
    needs=frozenset({"kafka", "cassandra"}),
    experiment=_experiment,
)
