"""Lab ``exactly-once``: the same chat counted by two processors, one at-least-once and one
exactly-once, each SIGKILLed twice mid-stream; the closed windows a downstream reader sees
are over-counted for the first and exact for the second.

De-duplication by message id is switched off in both (``CHATPULSE_DEDUP=false``), so what
shows is the processing guarantee alone.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from chatpulse.lab.kit import (
    Chat,
    ProcessorChild,
    closed_windows,
    committed,
    end_offsets,
    flush,
    make_producer,
    now_ms,
    produce_chat,
    stop_all,
    wait_for_growth,
)
from chatpulse.lab.runner import Lab, LabContext, LabError, Outcome
from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.topics import Topics

__all__ = ["LAB", "Tally", "judge", "tally"]

_WINDOW_MS = 2_000
_GRACE_MS = 1_000
_CHANNELS = 20
_PER_CHANNEL_PER_S = 20
_KILLS = 2


@dataclass(frozen=True, slots=True)
class Tally:
    """What a downstream reader of channel-stats counted, against what was sent."""

    sent: int  # data messages sent (the closers excluded)
    windows: int  # distinct closed windows expected
    records: int  # closed-window records read
    counted: int  # sum of their message counts
    twice: int  # windows published more than once
    wrong: int  # expected windows missing, or published with another count

    def over(self) -> int:
        return self.counted - self.sent


def tally(expected: dict[tuple[str, int], int], stats: list[dict[str, Any]]) -> Tally:
    """Compare the closed windows read (channel-stats values) with the expected counts."""
    published = Counter((s["channel"], s["window_start"]) for s in stats)
    wrong = sum(1 for key in expected if key not in published)
    wrong += sum(
        1 for s in stats if expected.get((s["channel"], s["window_start"])) != s["messages"]
    )
    return Tally(
        sent=sum(expected.values()),
        windows=len(expected),
        records=len(stats),
        counted=sum(s["messages"] for s in stats),
        twice=sum(1 for n in published.values() if n > 1),
        wrong=wrong,
    )


def judge(at_least_once: Tally, exactly_once: Tally) -> Outcome:
    """At-least-once over-counts (some window published twice); exactly-once is exact."""
    passed = (
        at_least_once.over() > 0
        and at_least_once.twice > 0
        and exactly_once.wrong == 0
        and exactly_once.twice == 0
        and exactly_once.counted == exactly_once.sent
        and exactly_once.records == exactly_once.windows
    )
    measured = (
        f"{at_least_once.sent:,} messages sent to each; at-least-once counted "
        f"{at_least_once.counted:,} (+{at_least_once.over():,}, {at_least_once.twice} windows "
        f"published twice), exactly-once counted {exactly_once.counted:,} "
        f"({exactly_once.twice} twice, {exactly_once.wrong} wrong)"
    )
    return Outcome(passed, measured)


@dataclass
class _Feeder:
    """Chat at a steady rate, the same records into both input topics, stamped now."""

    topics: list[str]
    settings: Settings
    chat: Chat = field(default_factory=Chat)
    expected: Counter[tuple[str, int]] = field(default_factory=Counter)
    last_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = make_producer(self.settings)
            channels = [f"streamer{i:02d}" for i in range(_CHANNELS)]
            tick = 0.1
            while not self.stop.is_set():
                began = time.monotonic()
                sent_at = now_ms()
                batch = [
                    self.chat.message(channel, sent_at)
                    for channel in channels
                    for _ in range(round(_PER_CHANNEL_PER_S * tick))
                ]
                for topic in self.topics:
                    produce_chat(producer, topic, batch)
                for message in batch:
                    self.expected[(message.channel, sent_at - sent_at % _WINDOW_MS)] += 1
                self.last_sent = sent_at
                time.sleep(max(0.0, tick - (time.monotonic() - began)))
            # one closer per channel, past every window's end + grace: all windows close
            closer_at = self.last_sent + _WINDOW_MS + _GRACE_MS + 100
            closers = [self.chat.message(channel, closer_at) for channel in channels]
            for topic in self.topics:
                produce_chat(producer, topic, closers)
            flush(producer)
        except BaseException as exc:  # noqa: BLE001 - handed to the lab's thread
            self.error = exc


def _progress(settings: Settings) -> tuple[int, int]:
    """(messages the group committed, messages in its input topic)."""
    topic = Topics.from_settings(settings).messages
    done = sum(
        max(0, offset) for offset in committed(settings, settings.processor_group, topic).values()
    )
    end = sum(high for _, high in end_offsets(settings, topic).values())
    return done, end


def _kill_after_a_publish(
    ctx: LabContext, alo: Settings, children: dict[str, ProcessorChild]
) -> None:
    """SIGKILL both processors right after the at-least-once one published closed windows.

    A kill at a random moment can fall just after a checkpoint, with nothing published since:
    then even at-least-once has nothing to publish twice. Killed within ~0.1 s of a publish,
    the checkpoint (every 2 s) that would cover it has most likely not run yet.
    """
    if not wait_for_growth(alo, Topics.from_settings(alo).stats, timeout_s=10):
        ctx.say.warn("no closed window published for 10 s; killing anyway")
    for guarantee, child in children.items():
        child.kill()
        ctx.say.result(f"killed the {guarantee} processor (pid {child.pid})")


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    modes = {
        guarantee: ctx.variant(
            short,
            processing_guarantee=guarantee,
            dedup=False,
            windows=[f"{_WINDOW_MS // 1000}s"],
            grace=f"{_GRACE_MS // 1000}s",
            commit_interval_s=2.0,
        )
        for short, guarantee in (("alo", "at-least-once"), ("eos", "exactly-once"))
    }
    say.step(
        "two processors, two guarantees",
        "Two copies of chatpulse's processor count the same chat, each with its own topics, "
        "consumer group, state and keyspace: one with processing_guarantee=at-least-once, one "
        f"with exactly-once. Windows of {_WINDOW_MS // 1000} s (grace {_GRACE_MS // 1000} s) "
        "close all the time, and each closed window is published to channel-stats once... "
        "in principle. De-duplication by message id is off in both (CHATPULSE_DEDUP=false), so "
        "nothing but the guarantee stands between a crash and a double count. Each checkpoint "
        "(every 2 s) commits the consumed offsets.",
    )
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: initialize(s, timeout=120), modes.values()))
    say.result("topics and keyspaces created for both")

    inputs = [Topics.from_settings(s).messages for s in modes.values()]
    feeder = _Feeder(inputs, ctx.settings)
    feeding = threading.Thread(target=feeder.run, name="lab-feeder", daemon=True)
    children = {
        guarantee: ProcessorChild(settings, ctx.workdir / f"process-{guarantee}.log", say.warn)
        for guarantee, settings in modes.items()
    }
    ctx.on_cleanup("stop the processors", lambda: stop_all(children.values()))
    ctx.on_cleanup("stop the chat", feeder.stop.set)

    def show() -> str:
        return "; ".join(
            f"{guarantee}: {done:,}/{end:,} committed"
            for guarantee, (done, end) in ((g, _progress(s)) for g, s in modes.items())
        )

    def caught_up(target: dict[str, int]) -> bool | None:
        for child in children.values():
            child.check_alive()
        if feeder.error is not None:
            raise LabError(f"the chat producer failed: {feeder.error}")
        ok = all(_progress(s)[0] >= target[g] for g, s in modes.items())
        return True if ok else None

    say.step(
        "start the chat and both processors",
        f"{_CHANNELS} channels, {_CHANNELS * _PER_CHANNEL_PER_S} messages a second, the same "
        "records into both input topics.",
    )
    feeding.start()
    for child in children.values():
        child.start()
    say.wait_for(
        "both processors counting", lambda: caught_up({g: 1 for g in modes}), timeout=120, show=show
    )
    say.result(show())

    for kill in range(1, _KILLS + 1):
        time.sleep(2.0 if ctx.quick else 5.0)
        say.step(
            f"SIGKILL number {kill}",
            "Both processors are killed at the same moment, in the middle of a checkpoint "
            "interval: whatever they published since their last commit is out there, but the "
            "offsets say those messages were not processed. Then both start again.",
        )
        marks = {g: _progress(s)[0] + 1 for g, s in modes.items()}
        _kill_after_a_publish(ctx, modes["at-least-once"], children)
        for child in children.values():
            child.start()
        say.look(
            "at-least-once replays from its last commit and publishes those windows again; "
            "exactly-once aborts the dead transaction (its restart fences the old producer), "
            "so read_committed readers never saw them"
        )
        _, took = say.wait_for(
            "both back and committing again",
            lambda marks=marks: caught_up(marks),  # type: ignore[misc]
            timeout=150,
            show=show,
        )
        say.result(
            f"both committing again {took:.1f}s after the restart (start-up, then the group "
            "waits up to 10 s for the dead member's session to expire)"
        )

    say.step(
        "stop the chat and let every window close",
        "The producer stops; one last message per channel, a few seconds later in event time, "
        "closes every window that holds chat.",
    )
    feeder.stop.set()
    feeding.join(60)
    if feeder.error is not None:
        raise LabError(f"the chat producer failed: {feeder.error}")
    ends = {g: _progress(s)[1] for g, s in modes.items()}
    say.wait_for("both processors done", lambda: caught_up(ends), timeout=120, show=show)

    say.step(
        "count downstream",
        "A read_committed reader goes through each channel-stats topic and adds up the "
        "closed windows' message counts, as any consumer of chatpulse's output would.",
    )
    expected = dict(feeder.expected)
    tallies = {
        g: tally(expected, closed_windows(s, Topics.from_settings(s).stats))
        for g, s in modes.items()
    }
    table = Table(title="closed windows read downstream")
    for column in ("guarantee", "sent", "windows", "window records", "counted", "over", "twice"):
        table.add_column(column, justify="right")
    for guarantee, t in tallies.items():
        table.add_row(
            guarantee,
            f"{t.sent:,}",
            f"{t.windows:,}",
            f"{t.records:,}",
            f"{t.counted:,}",
            f"{t.over():+,}",
            str(t.twice),
        )
    say.console.print(table)
    for child in children.values():
        child.stop(30)
    outcome = judge(tallies["at-least-once"], tallies["exactly-once"])
    say.result(outcome.measured)
    say.say(
        "At-least-once lost nothing, but what it published before each crash came again after "
        "it. Exactly-once put the outputs and the offsets in one transaction: a crash aborts "
        "both together. (Cassandra's rows are idempotent upserts: exact in both modes.)"
    )
    return outcome


LAB = Lab(
    name="exactly-once",
    summary="SIGKILL a processor twice: at-least-once over-counts downstream, exactly-once "
    "stays exact",
    claim="with two SIGKILLs, an at-least-once processor over-counts downstream and an "
    "exactly-once one counts every message exactly once",
    needs=frozenset({"kafka", "cassandra"}),
    experiment=_experiment,
)
