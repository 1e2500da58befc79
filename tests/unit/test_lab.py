"""``chatpulse lab``'s runner and the labs' judges, without a network: a lab whose claim does
not hold exits non-zero with a FAIL verdict line."""

import pytest
from typer.testing import CliRunner

from chatpulse.cli import app
from chatpulse.errors import ConfigError
from chatpulse.lab import (
    LAB_NAMES,
    changelog,
    compaction,
    consumer_groups,
    exactly_once,
    late_data,
    load_lab,
    partitions,
    replication,
    security,
    transactions,
)
from chatpulse.lab import cli as lab_cli
from chatpulse.lab.runner import Lab, LabContext, LabError, Outcome


def _rigged(experiment) -> Lab:  # type: ignore[no-untyped-def]
    return Lab(
        name="partitions",
        summary="rigged",
        claim="records with the same key land on one partition",
        needs=frozenset(),  # nothing to start, nothing to clean: no network
        experiment=experiment,
    )


def _run(monkeypatch: pytest.MonkeyPatch, lab: Lab) -> tuple[int, str]:
    monkeypatch.setattr(lab_cli, "load_lab", lambda name: lab)
    result = CliRunner().invoke(app, ["lab", "partitions", "--no-pause"])
    return result.exit_code, result.output


def test_a_lab_whose_claim_fails_exits_non_zero_with_a_fail_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def split_key(ctx: LabContext) -> Outcome:
        # an experiment rigged to fail: one key read back from two partitions
        outcome, _ = partitions.judge([("a", 0, 0), ("a", 1, 1), ("b", 2, 0)], 6)
        return outcome

    code, output = _run(monkeypatch, _rigged(split_key))
    assert code == 1
    last = output.strip().splitlines()[-1]
    assert last == (
        "lab partitions: FAIL - records with the same key land on one partition (3 records of "
        "2 keys: 1/2 keys on one partition, order kept for 2/2, keys spread over 3 of 6 "
        "partitions)"
    )


def test_a_lab_whose_claim_holds_exits_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def kept(ctx: LabContext) -> Outcome:
        outcome, _ = partitions.judge([("a", 0, 0), ("a", 0, 1), ("b", 2, 0)], 6)
        return outcome

    code, output = _run(monkeypatch, _rigged(kept))
    assert code == 0
    assert output.strip().splitlines()[-1].startswith("lab partitions: PASS - ")


def test_an_experiment_that_cannot_measure_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: LabContext) -> Outcome:
        raise LabError("gave up after 5s waiting for the processor")

    code, output = _run(monkeypatch, _rigged(broken))
    assert code == 1
    assert (
        output.strip()
        .splitlines()[-1]
        .endswith("(not measured: gave up after 5s waiting for the processor)")
    )


def test_an_unknown_lab_is_a_one_line_error() -> None:
    result = CliRunner().invoke(app, ["lab", "nosuch"])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.exit_code == 2
    assert str(result.exception) == f"no lab 'nosuch'; the labs: {', '.join(LAB_NAMES)}"


def test_the_list_has_one_line_per_lab() -> None:
    result = CliRunner().invoke(app, ["lab"])
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines[: len(LAB_NAMES)]] == list(LAB_NAMES)
    assert all(load_lab(name).summary in result.output.replace("\n", " ") for name in LAB_NAMES)


def test_partitions_judge_finds_order_broken_within_a_key() -> None:
    outcome, by_partition = partitions.judge([("a", 0, 1), ("a", 0, 0), ("b", 1, 0)], 6)
    assert not outcome.passed
    assert "order kept for 1/2" in outcome.measured
    assert by_partition == {0: {"a"}, 1: {"b"}}


def test_partitions_judge_wants_keys_spread() -> None:
    outcome, _ = partitions.judge([("a", 0, 0), ("b", 0, 0)], 6)
    assert not outcome.passed


def test_transactions_judge_and_markers() -> None:
    assert transactions.marker_offsets([0, 1, 2, 3, 4, 6, 7], 9) == [5, 8]
    committed = [f"committed-1-{i}" for i in range(5)] + [f"committed-2-{i}" for i in range(5)]
    aborted = [f"aborted-{i}" for i in range(5)]
    uncommitted = committed[:5] + aborted + committed[5:]
    assert transactions.judge(committed, uncommitted, [5, 11, 17]).passed
    # an aborted record seen by read_committed breaks the claim
    assert not transactions.judge([*committed, "aborted-0"], uncommitted, [5, 11, 17]).passed


def test_exactly_once_tally_and_judge() -> None:
    expected = {("a", 0): 3, ("a", 2000): 2, ("b", 0): 4}

    def stat(channel: str, start: int, messages: int) -> dict[str, object]:
        return {"channel": channel, "window_start": start, "messages": messages, "closed": True}

    exact = [stat("a", 0, 3), stat("a", 2000, 2), stat("b", 0, 4)]
    doubled = [*exact, stat("a", 0, 3)]
    t_exact = exactly_once.tally(expected, exact)
    t_doubled = exactly_once.tally(expected, doubled)
    assert (t_exact.sent, t_exact.counted, t_exact.twice, t_exact.wrong) == (9, 9, 0, 0)
    assert (t_doubled.counted, t_doubled.over(), t_doubled.twice) == (12, 3, 1)
    assert exactly_once.judge(t_doubled, t_exact).passed
    # both exact: at-least-once showed nothing, the claim is not demonstrated
    assert not exactly_once.judge(t_exact, t_exact).passed
    # a window missing downstream is wrong even when the sum happens to match
    missing = exactly_once.tally(expected, [stat("a", 0, 5), stat("b", 0, 4)])
    assert missing.wrong == 2
    assert not exactly_once.judge(t_doubled, missing).passed


def test_compaction_judge() -> None:
    before = [("xqc", True), ("xqc", False), ("lirik", True), ("lirik", None), ("zz_roll", True)]
    assert compaction.judge(before, [("xqc", False), ("lirik", None), ("zz_roll", True)]).passed
    assert compaction.judge(before, [("xqc", False), ("zz_roll", True)]).passed  # tombstone gone
    # not compacted yet: two records of a key
    assert not compaction.judge(before, before).passed
    # the removed key's old value still readable
    assert not compaction.judge(before, [("xqc", False), ("lirik", True)]).passed
    # a key left with an older value than its newest
    assert not compaction.judge(before, [("xqc", True), ("lirik", None)]).passed


def test_changelog_recovery_seconds_and_judge() -> None:
    log = (
        "2026-12-03 17:13:26,275 INFO    quixstreams.state.recovery: Beginning recovery check...\n"
        "2026-12-03 17:13:27,100 INFO    quixstreams.state.recovery: Recovery successful for x\n"
        "2026-12-03 17:13:27,647 INFO    quixstreams.state.recovery: Recovery process complete!"
    )
    assert changelog.recovery_seconds(log) == pytest.approx(1.372)
    assert changelog.recovery_seconds("nothing here") is None
    before, added = {"a": 3, "b": 2}, {"a": 1, "c": 4}
    exact = {"a": 4, "b": 2, "c": 4}
    common = {"replayed": 12, "recovered_partitions": 2, "seconds": 1.4}
    assert changelog.judge(before=before, added=added, after=exact, **common).passed
    # state lost: totals restarted from what came after
    assert not changelog.judge(before=before, added=added, after=added, **common).passed
    # exact totals but nothing was rebuilt from the changelog: not this claim
    no_recovery = {**common, "recovered_partitions": 0}
    assert not changelog.judge(before=before, added=added, after=exact, **no_recovery).passed


def test_late_data_script_and_judge() -> None:
    plan = late_data.script(1_764_780_000_000)
    assert plan.start % 10_000 == 0
    assert len(plan.sends) == 10
    start = plan.start
    assert late_data.judge(plan, {start: 6, start + 10_000: 2}, 1.0, 10).passed
    # the late message counted in its closed window
    assert not late_data.judge(plan, {start: 7, start + 10_000: 2}, 0.0, 10).passed
    # the in-grace message left out
    assert not late_data.judge(plan, {start: 5, start + 10_000: 2}, 2.0, 10).passed


def test_consumer_groups_judge() -> None:
    every = [0, 1, 2, 3, 4, 5]
    sent = {"a": 10, "b": 5}
    common = {"sent": sent, "partitions": 6, "took": (2.5, 0.4)}
    good = {
        "alone": {"m1": every},
        "shared": {"m1": [0, 1, 2], "m2": [3, 4, 5]},
        "back": {"m1": every},
    }
    assert consumer_groups.judge(**good, counted=sent, **common).passed
    # a message counted twice through a rebalance
    assert not consumer_groups.judge(**good, counted={"a": 11, "b": 5}, **common).passed
    # the second member never got partitions
    lopsided = {**good, "shared": {"m1": every, "m2": []}}
    assert not consumer_groups.judge(**lopsided, counted=sent, **common).passed


def test_replication_judge() -> None:
    acked = set(range(100))
    good = replication.Observed(
        leaders=(2, 3),
        isr=([1, 2, 3], [1, 3], [1, 2, 3]),
        acknowledged=acked,
        read=list(range(105)),  # records written but not acknowledged yet may be there too
        failed=0,
    )
    assert replication.judge(good, killed=2).passed
    lost = replication.Observed(good.leaders, good.isr, acked, list(range(99)), 0)
    assert not replication.judge(lost, killed=2).passed
    doubled = replication.Observed(good.leaders, good.isr, acked, [*range(100), 50], 0)
    assert not replication.judge(doubled, killed=2).passed
    # the killed broker never left the ISR
    stale = replication.Observed(
        good.leaders, ([1, 2, 3], [1, 2, 3], [1, 2, 3]), acked, good.read, 0
    )
    assert not replication.judge(stale, killed=2).passed
    # no new leader
    same = replication.Observed((2, 2), good.isr, acked, good.read, 0)
    assert not replication.judge(same, killed=2).passed


def test_security_judge() -> None:
    refused = "TOPIC_AUTHORIZATION_FAILED"
    good = security.Observed(refused, None, refused, 0.25, 0.06, 1, 1)
    outcome = security.judge(good)
    assert outcome.passed
    assert outcome.measured == (
        "without an ACL: TOPIC_AUTHORIZATION_FAILED; ACL added: accepted after 0.25s; "
        "ACL removed: TOPIC_AUTHORIZATION_FAILED after 0.06s; 1 of 1 acknowledged records in "
        "the topic"
    )
    # accepted without an ACL: the authorizer let everyone in
    assert not security.judge(security.Observed(None, None, refused, 0, 0, 2, 2)).passed
    # refused for another reason than authorization (a login refused, a timeout)
    other = security.Observed("SASL_AUTHENTICATION_FAILED", None, refused, 0, 0, 1, 1)
    assert not security.judge(other).passed
    still = security.Observed(refused, None, None, 0.2, 60.0, 1, 1)
    assert not security.judge(still).passed
    assert "ACL removed: still accepted" in security.judge(still).measured
    # an acknowledged record missing from the topic, or none written at all
    assert not security.judge(security.Observed(refused, None, refused, 0, 0, 2, 1)).passed
    assert not security.judge(security.Observed(refused, None, refused, 0, 0, 0, 0)).passed
