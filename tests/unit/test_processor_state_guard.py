"""The processor state directory is tied to one Kafka cluster id."""

from pathlib import Path

from chatpulse.processor.state_guard import MARKER, check_state_dir


def test_fresh_dir_is_marked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert check_state_dir(state, "cluster-a") is None
    assert (state / MARKER).read_text().strip() == "cluster-a"
    assert check_state_dir(state, "cluster-a") is None  # same cluster: kept


def test_state_of_another_cluster_is_moved_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    check_state_dir(state, "cluster-a")
    (state / "group").mkdir()
    (state / "group" / "data").write_text("rocksdb")
    moved = check_state_dir(state, "cluster-b")
    assert moved is not None
    assert moved.name.startswith("state.stale-")
    assert (moved / "group" / "data").read_text() == "rocksdb"
    assert (moved / MARKER).read_text().strip() == "cluster-a"
    assert sorted(p.name for p in state.iterdir()) == [MARKER]
    assert (state / MARKER).read_text().strip() == "cluster-b"


def test_unmarked_existing_state_is_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "group").mkdir(parents=True)
    assert check_state_dir(state, "cluster-a") is None
    assert not (state / MARKER).exists()
    assert (state / "group").is_dir()
