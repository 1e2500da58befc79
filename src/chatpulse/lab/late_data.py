"""Lab ``late-data``: event-time windows with a grace period. A message out of order but
inside the grace counts in its window; one that comes after its window closed is left out of
it and counted as late (it still counts in the channel's total)."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

from rich.table import Table

from chatpulse.lab.kit import (
    Chat,
    ProcessorChild,
    closed_windows,
    flush,
    make_producer,
    now_ms,
    produce_chat,
    read_totals,
    stop_all,
)
from chatpulse.lab.runner import Lab, LabContext, LabError, Outcome
from chatpulse.ports import free_port
from chatpulse.provision import initialize
from chatpulse.topics import Topics

__all__ = ["LAB", "Script", "judge", "script"]

_WINDOW_MS = 10_000
_GRACE_MS = 2_000
_CHANNEL = "lab_late"
_LATE = re.compile(r'^chatpulse_processor_late_total\{window="10s"\} ([0-9.e+]+)$', re.M)


@dataclass(frozen=True, slots=True)
class Script:
    """The messages' event times (ms) in the order sent, and what each is."""

    start: int  # the first window's start
    sends: list[tuple[int, str]]


def script(now: int) -> Script:
    """Five in-order messages in window W0 = [s, s+10 s), one in W1, one out of order for
    W0 within the grace, one in W1 that closes W0 (s+12 s reached), one for W0 after it
    closed (late), and a closer for W1. ``s`` is a window start about a minute ago."""
    start = now - 60_000 - now % _WINDOW_MS
    sends = [(start + 1_000 * i, "in order, window 0") for i in range(1, 6)]
    sends += [
        (start + 10_500, "window 1 opens; window 0 still open (closes at its end + 2 s grace)"),
        (start + 9_000, "out of order for window 0, inside the grace: counted in window 0"),
        (start + 13_000, "window 1; the channel's time passes 12 s: window 0 closes"),
        (start + 8_000, "for window 0, after it closed: late"),
        (start + 25_000, "closes window 1"),
    ]
    return Script(start, sends)


def judge(plan: Script, windows: dict[int, int], late: float, total: int | None) -> Outcome:
    """Window 0 holds the five in-order and the in-grace messages (6), window 1 its two, one
    late message is counted as late, the total holds all ten."""
    first, second = plan.start, plan.start + _WINDOW_MS
    passed = windows.get(first) == 6 and windows.get(second) == 2 and late == 1 and total == 10
    measured = (
        f"window 0 counted {windows.get(first)} (5 in order + 1 within grace), window 1 "
        f"{windows.get(second)}, late counter {late:g}, channel total {total} of 10 sent"
    )
    return Outcome(passed, measured)


def _late_counter(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    match = _LATE.search(text)
    return float(match.group(1)) if match else 0.0


def _experiment(ctx: LabContext) -> Outcome:
    say = ctx.say
    metrics_port = free_port()
    settings = ctx.settings.model_copy(
        update={
            "windows": [f"{_WINDOW_MS // 1000}s"],
            "grace": f"{_GRACE_MS // 1000}s",
            "processor_metrics_port": metrics_port,
        }
    )
    plan = script(now_ms())
    say.step(
        "windows by event time",
        f"The processor counts chat in tumbling windows of {_WINDOW_MS // 1000} s by the time "
        f"each message was sent (event time), not when it arrives. A window stays open "
        f"{_GRACE_MS // 1000} s past its end (the grace period) for messages that come out of "
        "order; it closes when the channel's newest message passes end + grace.",
    )
    initialize(settings, timeout=120)
    child = ProcessorChild(settings, ctx.workdir / "process.log", say.warn)
    ctx.on_cleanup("stop the processor", lambda: stop_all([child]))
    child.start()

    say.step(
        "send ten messages, in this order",
        "Times are seconds after window 0's start (s); window 0 is [s, s+10), window 1 "
        "[s+10, s+20).",
    )
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("sent at", justify="right")
    table.add_column("what")
    for number, (sent_at, what) in enumerate(plan.sends, start=1):
        table.add_row(str(number), f"s+{(sent_at - plan.start) / 1000:.1f}", what)
    say.console.print(table)
    chat = Chat()
    producer = make_producer(settings)
    topic = Topics.from_settings(settings).messages
    produce_chat(producer, topic, [chat.message(_CHANNEL, t) for t, _ in plan.sends])
    flush(producer)

    say.step(
        "read the closed windows and the late counter",
        "channel-stats gets each window once it closes; the processor's metrics count the "
        "late message (chatpulse_processor_late); Cassandra's channel total counts everything.",
    )
    say.look("window 0's count: 6, not 5 (grace) and not 7 (late)")

    def both_closed() -> dict[int, int] | None:
        child.check_alive()
        stats = closed_windows(settings, Topics.from_settings(settings).stats)
        found = {s["window_start"]: s["messages"] for s in stats if s["channel"] == _CHANNEL}
        return found if len(found) >= 2 else None

    windows, _ = say.wait_for("both windows closed", both_closed, timeout=120)

    def late_seen() -> float | None:
        late = _late_counter(metrics_port)
        return late if late >= 1 else None

    try:
        late, _ = say.wait_for("the late counter", late_seen, timeout=20)
    except LabError:
        late = _late_counter(metrics_port)
    total = read_totals(settings).get(_CHANNEL)
    child.stop()
    outcome = judge(plan, windows, late, total)
    say.result(outcome.measured)
    say.say(
        "The grace period trades freshness for completeness: a longer one counts more "
        "stragglers in their window but publishes each window later (CHATPULSE_GRACE)."
    )
    return outcome


LAB = Lab(
    name="late-data",
    summary="messages inside and beyond the grace period: which window counts them, the "
    "late counter",
    claim="a message out of order within the grace counts in its window; one after its "
    "window closed is left out of it and counted as late",
    needs=frozenset({"kafka", "cassandra"}),
    experiment=_experiment,
)
