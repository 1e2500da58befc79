"""``chatpulse fake-twitch`` argument checks (serving itself is tested in tests/integration)."""

import pytest
from typer.testing import CliRunner

from chatpulse.cli import app
from chatpulse.errors import ConfigError


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "use exactly one of --replay FILE and --simulate"),
        (["--simulate", "--replay", "x.txt"], "use exactly one of --replay FILE and --simulate"),
        (["--simulate", "--channels", "0"], "--channels must be >= 1 and --rate > 0"),
        (["--simulate", "--rate", "0"], "--channels must be >= 1 and --rate > 0"),
        (["--replay", "x.txt", "--channel", "no spaces"], "--channel: not a Twitch channel name"),
        (["--replay", "/nonexistent/capture.txt"], "--replay: cannot read capture /nonexistent/"),
    ],
)
def test_bad_arguments_stop_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["fake-twitch", *args])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith(message)
    assert result.exception.exit_code == 2


def test_help_explains_both_modes() -> None:
    result = CliRunner().invoke(app, ["fake-twitch", "--help"], terminal_width=100)
    assert result.exit_code == 0
    for words in ("--replay", "--simulate", "--speed", "--channel", "--rate", "--seed", "SIGUSR1"):
        assert words in result.output
