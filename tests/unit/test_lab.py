"""``chatpulse lab``'s runner and the labs' judges, without a network: a lab whose claim does
not hold exits non-zero with a FAIL verdict line."""

import pytest
from typer.testing import CliRunner

from chatpulse.cli import app
from chatpulse.errors import ConfigError
from chatpulse.lab import LAB_NAMES, exactly_once, load_lab, partitions, transactions
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
