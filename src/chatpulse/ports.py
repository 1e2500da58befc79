"""Local TCP ports: is one free, and picking free ones (the stack, ``chatpulse up``, tests)."""

import errno
import random
import socket

__all__ = ["free_port", "free_ports", "is_port_free"]


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it, from the ephemeral range).

    For a server started at once by the caller; a port that must stay free for a while (a
    server started later, or one that also binds ``port + 1``) wants :func:`free_ports`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, *, low: int = 20000, high: int = 31000) -> list[int]:
    """``count`` distinct ports now free on 127.0.0.1, each with its +1 neighbour free too.

    Drawn below Linux's ephemeral range (32768+) so no client socket takes one meanwhile; the
    neighbour is checked because a server's second listener defaults to ``port + 1``.
    """
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(low, high - 1)
        if {port, port + 1} & {p + d for p in chosen for d in (-1, 0, 1)}:
            continue
        if is_port_free(port) and is_port_free(port + 1):
            chosen.append(port)
    return chosen
