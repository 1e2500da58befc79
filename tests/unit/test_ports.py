"""chatpulse.ports: the one home of the free-port helpers."""

import socket

from chatpulse.ports import free_port, free_ports, is_port_free


def test_a_listening_port_is_not_free_and_a_picked_one_is() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not is_port_free(taken)
    assert is_port_free(free_port())


def test_free_ports_are_distinct_below_the_ephemeral_range_with_free_neighbours() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(20000 <= port < 31000 for port in ports)
    assert all(abs(a - b) > 1 for a in ports for b in ports if a != b)
    assert all(is_port_free(port) and is_port_free(port + 1) for port in ports)
