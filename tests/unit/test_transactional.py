"""Transactional ids: stable per instance, distinct across directories and machines."""

import socket
from pathlib import Path

import pytest

from chatpulse.errors import ConfigError
from chatpulse.settings import load_settings
from chatpulse.transactional import transactional_id


def test_same_instance_and_directory_give_the_same_id(tmp_path: Path) -> None:
    first = transactional_id("p-chatpulse-ingest", tmp_path / "spill", "host-a")
    again = transactional_id("p-chatpulse-ingest", tmp_path / "spill" / ".." / "spill", "host-a")
    assert first == again  # a restart fences its former self
    assert first.startswith("p-chatpulse-ingest-host-a-")
    assert len(first.rsplit("-", 1)[1]) == 16


def test_two_machines_with_the_same_directory_do_not_collide(tmp_path: Path) -> None:
    # The case: same default directory on two hosts fenced each other in turn.
    a = transactional_id("chatpulse-processor", tmp_path / "state", "host-a")
    b = transactional_id("chatpulse-processor", tmp_path / "state", "host-b")
    assert a != b


def test_two_directories_on_one_machine_do_not_collide(tmp_path: Path) -> None:
    a = transactional_id("chatpulse-processor", tmp_path / "one", "host-a")
    b = transactional_id("chatpulse-processor", tmp_path / "two", "host-a")
    assert a != b


def test_the_instance_id_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATPULSE_INSTANCE_ID", raising=False)
    assert load_settings().instance_id == socket.gethostname()
    monkeypatch.setenv("CHATPULSE_INSTANCE_ID", "ingest-eu-1")
    assert load_settings().instance_id == "ingest-eu-1"


@pytest.mark.parametrize("bad", ["", "has space", "slash/y", "-leading", "x" * 64])
def test_a_bad_instance_id_stops_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("CHATPULSE_INSTANCE_ID", bad)
    with pytest.raises(ConfigError, match=r"^invalid setting CHATPULSE_INSTANCE_ID: "):
        load_settings()
