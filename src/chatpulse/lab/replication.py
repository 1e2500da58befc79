"""Lab ``replication``: on a 3-broker Kafka, SIGKILL a partition's leader while a producer
writes with ``acks=all`` (``min.insync.replicas=2``): the ISR shrinks, another replica is
elected leader, every acknowledged record survives; the broker comes back and the ISR grows.

Needs a cluster: the stack named by ``--kafka-port``/``--data-dir`` (e.g. one from
``chatpulse stack up --kafka-nodes 3``), else the lab's own 3-broker stack in
``~/.local/share/chatpulse/lab-cluster`` (Kafka :29092-29097, Cassandra :29042), started for
the run and stopped afterwards (unless ``--keep``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Producer

from chatpulse.kafka_admin import admin_client
from chatpulse.lab.kit import Chat, create_topic, now_ms, read_all
from chatpulse.lab.runner import Lab, LabContext, LabError, Outcome
from chatpulse.lab.stackside import stack_of
from chatpulse.models import decode_chat_message, encode
from chatpulse.settings import Settings
from chatpulse.stack import Stack, StackError
from chatpulse.stack.stack import DEFAULT_DATA_DIR

__all__ = ["LAB", "Observed", "judge"]

LAB_CLUSTER_DIR = DEFAULT_DATA_DIR.parent / "lab-cluster"
LAB_KAFKA_PORT = 29092
LAB_CASSANDRA_PORT = 29042
_BROKERS = 3


@dataclass(frozen=True, slots=True)
class Observed:
    """What the experiment saw."""

    leaders: tuple[int, int]  # before, after the kill
    isr: tuple[list[int], list[int], list[int]]  # before, after the kill, after the return
    acknowledged: set[int]
    read: list[int]  # sequence numbers read back, in order
    failed: int  # records whose delivery failed (the producer said so: not acknowledged)


def judge(seen: Observed, killed: int) -> Outcome:
    """A new leader; the ISR lost the killed broker and got it back; every acknowledged record
    read back once."""
    before, shrunk, grown = seen.isr
    missing = seen.acknowledged - set(seen.read)
    doubled = len(seen.read) - len(set(seen.read))
    passed = (
        seen.leaders[0] == killed
        and seen.leaders[1] not in (killed, -1)
        and len(before) == _BROKERS
        and killed not in shrunk
        and len(shrunk) == _BROKERS - 1
        and sorted(grown) == sorted(before)
        and bool(seen.acknowledged)
        and not missing
        and not doubled
    )
    measured = (
        f"leader {seen.leaders[0]} -> {seen.leaders[1]}, ISR {before} -> {shrunk} -> {grown}; "
        f"{len(seen.acknowledged) - len(missing):,} of {len(seen.acknowledged):,} acknowledged "
        f"records read back, {doubled} twice, {seen.failed} refused to the producer"
    )
    return Outcome(passed, measured)


def _partition(settings: Settings, topic: str) -> tuple[int, list[int]]:
    """(leader, in-sync replicas) of the topic's partition 0, from a live broker's metadata."""
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    metadata = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
    return metadata.leader, sorted(metadata.isrs)


@dataclass
class _Writer:
    """Chat records numbered 0, 1, 2, ... with acks=all; which ones were acknowledged."""

    settings: Settings
    topic: str
    acknowledged: set[int] = field(default_factory=set)
    failed: int = 0
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def _delivered(self, error: object, record: object) -> None:
        if error is None:
            message = decode_chat_message(record.value())  # type: ignore[attr-defined]
            self.acknowledged.add(int(message.text.lstrip("#")))
        else:
            self.failed += 1

    def run(self) -> None:
        try:
            producer = Producer(
                {
                    **self.settings.kafka_client_config(),
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.timeout.ms": 120_000,
                }
            )
            chat = Chat()
            while not self.stop.is_set():
                message = chat.message("lab_replicated", now_ms(), text=f"#{self.sent}")
                producer.produce(
                    self.topic,
                    key=b"lab_replicated",
                    value=encode(message),
                    on_delivery=self._delivered,
                )
                self.sent += 1
                producer.poll(0.01)
            left = producer.flush(150)
        except BaseException as exc:  # noqa: BLE001 - handed to the lab's thread
            self.error = exc
            return
        if left:
            self.error = LabError(f"{left} records were still unacknowledged 150 s after the end")


def _cluster(ctx: LabContext) -> Stack:
    """The 3-broker stack to use (started if it is the lab's own and not running)."""
    say = ctx.say
    try:
        if ctx.explicit_stack:
            stack = stack_of(ctx)
            if stack.kafka_nodes < _BROKERS:
                raise LabError(
                    f"the stack in {stack.data_dir} has {stack.kafka_nodes} Kafka node(s); this "
                    f"lab needs {_BROKERS}: chatpulse stack up --kafka-nodes {_BROKERS} "
                    "--data-dir DIR (a new directory)"
                )
            if not all(server.is_running() for server in stack.kafka_servers):
                raise LabError(
                    f"start the cluster first: chatpulse stack up --data-dir {stack.data_dir}"
                )
            say.say(f"Using the {stack.kafka_nodes}-broker Kafka of {stack.data_dir}.")
            return stack
        stack = Stack(
            LAB_CLUSTER_DIR,
            kafka_port=LAB_KAFKA_PORT,
            cassandra_port=LAB_CASSANDRA_PORT,
            kafka_nodes=_BROKERS,
            progress=lambda message: say.say(f"  stack: {message}"),
        )
        if all(server.is_running() for server in stack.kafka_servers):
            say.say(f"Using the lab's cluster already running in {stack.data_dir}.")
            return stack
        say.say(
            f"Starting the lab's own cluster in {stack.data_dir}: {_BROKERS} Kafka brokers on "
            f":{LAB_KAFKA_PORT}-{LAB_KAFKA_PORT + _BROKERS - 1} (and one Cassandra the stack "
            "always has); a minute or two on a laptop."
        )
        stack.up(timeout=300)
    except StackError as exc:
        raise LabError(f"the cluster: {exc}") from None
    if not ctx.keep:
        ctx.on_cleanup("stop the lab's cluster", lambda: _stop(ctx, stack))
    return stack


def _stop(ctx: LabContext, stack: Stack) -> None:
    stack.down(timeout=60)
    ctx.say.say(f"Stopped the lab's cluster ({stack.data_dir}).")


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    say.step(
        "a 3-broker Kafka",
        "Each partition of a replicated topic has copies on several brokers: one leader takes "
        "the writes, the followers fetch from it. The in-sync replicas (ISR) are the copies "
        "that are caught up.",
    )
    stack = _cluster(ctx)
    settings = ctx.settings.model_copy(
        update={
            "kafka_bootstrap_servers": stack.kafka_bootstrap_servers,
            "topic_replication_factor": _BROKERS,
        }
    )
    ctx.settings = settings  # the clean-up deletes the topic on the cluster
    topic = f"{settings.topic_prefix}replicated"
    create_topic(settings, topic, 1, {"min.insync.replicas": str(_BROKERS - 1)})
    leader, isr = say.wait_for(
        "the new topic's replicas in sync",
        lambda: p if len((p := _partition(settings, topic))[1]) == _BROKERS else None,
        timeout=60,
    )[0]
    say.result(f"{topic}: 3 copies, min.insync.replicas=2; leader broker {leader}, ISR {isr}")

    say.step(
        "write with acks=all",
        "A producer writes numbered chat records non-stop. acks=all: the leader acknowledges a "
        "record only once every broker in the ISR has it, and refuses it if fewer than "
        "min.insync.replicas (2) are in sync.",
    )
    writer = _Writer(settings, topic)
    writing = threading.Thread(target=writer.run, name="lab-writer", daemon=True)
    ctx.on_cleanup("stop the producer", writer.stop.set)
    writing.start()
    say.wait_for(
        "acknowledgements",
        lambda: True if len(writer.acknowledged) > 200 else None,
        timeout=60,
        show=lambda: f"{len(writer.acknowledged):,} acknowledged",
    )
    say.result(f"{len(writer.acknowledged):,} records acknowledged so far")

    say.step(
        f"SIGKILL the leader, broker {leader}",
        "No goodbye: the controller notices when the broker's heartbeats stop (its session "
        "times out), fences it, takes it out of the ISR and makes an in-sync follower leader.",
    )
    say.look("the leader and ISR columns; the acknowledged count stalls, then goes on")
    killed_at = time.monotonic()
    stack.kill(f"kafka-{leader}")
    say.result(f"killed kafka-{leader}")

    def new_leader() -> tuple[int, list[int]] | None:
        found = _partition(settings, topic)
        return found if found[0] not in (leader, -1) and leader not in found[1] else None

    (elected, shrunk), took = say.wait_for(
        "a new leader",
        new_leader,
        timeout=90,
        show=lambda: (
            f"leader/ISR {_partition(settings, topic)}, {len(writer.acknowledged):,} acknowledged"
        ),
    )
    say.result(f"broker {elected} leads after {took:.1f}s; ISR {shrunk}")
    count = len(writer.acknowledged)
    say.wait_for(
        "writes going on",
        lambda: True if len(writer.acknowledged) > count + 100 else None,
        timeout=60,
        show=lambda: f"{len(writer.acknowledged):,} acknowledged",
    )
    say.result(
        f"{len(writer.acknowledged):,} acknowledged: two copies in sync still satisfy "
        "min.insync.replicas=2"
    )

    say.step(
        f"bring broker {leader} back",
        "`chatpulse stack up` restarts it; it truncates its log to what the new leader agrees "
        "on, fetches what it missed, and rejoins the ISR once caught up. (Leadership moves back "
        "later, to the preferred replica, by itself.)",
    )
    try:
        stack.up(timeout=240)
    except StackError as exc:
        raise LabError(f"could not restart kafka-{leader}: {exc}") from None

    def grown() -> list[int] | None:
        _, now = _partition(settings, topic)
        return now if len(now) == _BROKERS else None

    back, took = say.wait_for("the ISR to grow back", grown, timeout=120)
    say.result(f"ISR {back} {time.monotonic() - killed_at:.0f}s after the kill")

    say.step(
        "count what survived",
        "The producer stops; every record it was told was written (acknowledged) must be in "
        "the log, once.",
    )
    writer.stop.set()
    writing.join(180)
    if writer.error is not None:
        raise LabError(f"the producer failed: {writer.error}")
    read = [
        int(decode_chat_message(r.value()).text.lstrip("#"))
        for r in read_all(settings, topic, idle_s=1.0, timeout_s=120)
    ]
    seen = Observed(
        leaders=(leader, elected),
        isr=(isr, shrunk, back),
        acknowledged=set(writer.acknowledged),
        read=read,
        failed=writer.failed,
    )
    outcome = judge(seen, leader)
    say.result(outcome.measured)
    return outcome


LAB = Lab(
    name="replication",
    summary="SIGKILL a partition leader on 3 brokers: ISR shrinks, a new leader, acks=all "
    "keeps every record; ISR grows back",
    claim="with acks=all and min.insync.replicas=2, killing the leader loses no acknowledged "
    "record: a new leader is elected, the ISR shrinks and grows back",
    needs=frozenset({"cluster"}),
    experiment=_experiment,
)
