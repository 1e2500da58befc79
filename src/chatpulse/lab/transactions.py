"""Lab ``transactions``: an aborted transaction's records are in the log, yet a
``read_committed`` reader never sees them; commit and abort markers take offsets too."""

from confluent_kafka import Producer

from chatpulse.lab.kit import Chat, create_topic, end_offsets, now_ms, read_all
from chatpulse.lab.runner import Lab, LabContext, Outcome
from chatpulse.models import decode_chat_message, encode

__all__ = ["LAB", "judge", "marker_offsets"]

_PER_TRANSACTION = 5
# (what the transaction does, text of its records)
_PLAN = (("commit", "committed-1"), ("abort", "aborted"), ("commit", "committed-2"))


def marker_offsets(offsets: list[int], high_watermark: int) -> list[int]:
    """The offsets no record holds between 0 and the high watermark: control records (the
    transactions' commit or abort markers), as read_uncommitted readers skip them too."""
    held = set(offsets)
    return [offset for offset in range(high_watermark) if offset not in held]


def judge(committed_texts: list[str], uncommitted_texts: list[str], markers: list[int]) -> Outcome:
    """read_committed sees no aborted record and every committed one; read_uncommitted sees
    the aborted ones too; one marker per transaction."""
    aborted_in_committed = sum(text.startswith("aborted") for text in committed_texts)
    aborted_in_uncommitted = sum(text.startswith("aborted") for text in uncommitted_texts)
    expected_committed = _PER_TRANSACTION * sum(what == "commit" for what, _ in _PLAN)
    passed = (
        aborted_in_committed == 0
        and len(committed_texts) == expected_committed
        and aborted_in_uncommitted == _PER_TRANSACTION
        and len(uncommitted_texts) == _PER_TRANSACTION * len(_PLAN)
        and len(markers) == len(_PLAN)
    )
    measured = (
        f"read_committed: {len(committed_texts)} records, {aborted_in_committed} aborted; "
        f"read_uncommitted: {len(uncommitted_texts)} records, {aborted_in_uncommitted} aborted; "
        f"markers at offsets {', '.join(map(str, markers))}"
    )
    return Outcome(passed, measured)


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    topic = f"{ctx.settings.topic_prefix}transactions-demo"
    say.step(
        "a topic and a transactional producer",
        f"The lab creates {topic} (one partition, so offsets are easy to follow) and a producer "
        "with a transactional.id. init_transactions registers it with the transaction "
        "coordinator, which fences any older producer of the same id.",
    )
    create_topic(ctx.settings, topic, 1)
    producer = Producer(
        {
            **ctx.settings.kafka_client_config(),
            "transactional.id": f"{ctx.settings.topic_prefix}demo",
        }
    )
    producer.init_transactions(30)
    say.result("producer registered")

    say.step(
        "three transactions: commit, abort, commit",
        f"Each writes {_PER_TRANSACTION} chat records. The second is aborted: its records are "
        "already in the log (the broker appended them), so what happens to them is up to the "
        "reader.",
    )
    chat = Chat()
    for number, (action, text) in enumerate(_PLAN, start=1):
        producer.begin_transaction()
        for i in range(_PER_TRANSACTION):
            message = chat.message("lab_txn", now_ms(), text=f"{text}-{i}")
            producer.produce(topic, key=b"lab_txn", value=encode(message))
        producer.flush(30)
        if action == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
        say.result(f"transaction {number}: {_PER_TRANSACTION} records, then {action}")
    (low, high) = end_offsets(ctx.settings, topic)[0]
    say.result(f"the partition's offsets run from {low} to {high - 1} (high watermark {high})")

    say.step(
        "read it twice: read_committed and read_uncommitted",
        "Two readers from offset 0. read_committed (librdkafka's default, chatpulse's readers) "
        "skips the records of aborted transactions; read_uncommitted shows whatever the log "
        "holds. Neither returns the markers themselves: they are control records.",
    )
    say.look("the 'aborted' records, and which offsets nobody returns")
    committed = read_all(ctx.settings, topic, isolation="read_committed", idle_s=1.0)
    uncommitted = read_all(ctx.settings, topic, isolation="read_uncommitted", idle_s=1.0)
    committed_texts = [decode_chat_message(r.value()).text for r in committed]
    uncommitted_texts = [decode_chat_message(r.value()).text for r in uncommitted]
    for label, records in (("read_committed", committed), ("read_uncommitted", uncommitted)):
        shown = ", ".join(f"{r.offset()}:{decode_chat_message(r.value()).text}" for r in records)
        say.say(f"{label:>16}: {shown}")
    markers = marker_offsets([r.offset() for r in uncommitted], high)
    say.result(
        f"offsets {', '.join(map(str, markers))} hold no record: each is the commit or abort "
        "marker that ends a transaction"
    )
    say.say(
        "This is how the processor's exactly-once works: a checkpoint's outputs, changelog "
        "records and consumer offsets form one transaction; if it is aborted (a crash), "
        "read_committed readers never see a half-done checkpoint."
    )
    return judge(committed_texts, uncommitted_texts, markers)


LAB = Lab(
    name="transactions",
    summary="an aborted transaction is invisible to read_committed, visible to "
    "read_uncommitted; markers take offsets",
    claim="an aborted transaction's records are invisible to a read_committed consumer and "
    "visible to a read_uncommitted one",
    needs=frozenset({"kafka"}),
    experiment=_experiment,
)
