"""The supervisor behind ``chatpulse up``, with small Python children (no network)."""

import asyncio
import io
import os
import signal
import sys
import time

import pytest
from rich.console import Console

from chatpulse.ports import free_port
from chatpulse.run.errors import ChildFailedError, StartupInterruptedError
from chatpulse.run.readiness import wait_tcp
from chatpulse.run.supervisor import ChildSpec, Supervisor

PY = sys.executable


def _supervisor(stop_timeout_s: float = 5.0) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    return Supervisor(console, stop_timeout_s=stop_timeout_s), out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); asyncio reaps our children, so treat reaped as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


SLEEPER = "import time, sys; print('hello from', sys.argv[1], flush=True); time.sleep(60)"


async def test_prefixed_output_and_clean_stop_in_reverse_order() -> None:
    supervisor, out = _supervisor()
    for name in ("first", "second"):
        await supervisor.start(ChildSpec(name=name, argv=[PY, "-c", SLEEPER, name]))
    pids = [child.process.pid for child in supervisor.running]
    await asyncio.sleep(1.0)
    codes = await supervisor.stop_all()
    assert list(codes) == ["second", "first"]  # reverse start order
    assert codes == {"second": -signal.SIGTERM, "first": -signal.SIGTERM}
    assert not any(_alive(pid) for pid in pids)
    text = out.getvalue()
    assert "first      │ hello from first" in text
    assert "second     │ hello from second" in text
    assert f"started first (pid {pids[0]})" in text
    assert f"stopped second (pid {pids[1]}, exit code -15)" in text


async def test_child_death_is_reported() -> None:
    supervisor, out = _supervisor()
    await supervisor.start(ChildSpec(name="steady", argv=[PY, "-c", SLEEPER, "steady"]))
    await supervisor.start(
        ChildSpec(name="fragile", argv=[PY, "-c", "import sys; print('bye'); sys.exit(3)"])
    )
    dead = await asyncio.wait_for(supervisor.serve(), 10)
    assert dead is not None
    assert dead.name == "fragile"
    codes = await supervisor.stop_all()
    assert codes == {"fragile": 3, "steady": -signal.SIGTERM}
    assert "exited unexpectedly with code 3" in out.getvalue()


async def test_sigkill_after_timeout_when_sigterm_is_ignored() -> None:
    supervisor, out = _supervisor(stop_timeout_s=0.5)
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    await supervisor.start(ChildSpec(name="stubborn", argv=[PY, "-c", stubborn]))
    await asyncio.sleep(0.8)  # let it install the handler
    codes = await supervisor.stop_all()
    assert codes == {"stubborn": -signal.SIGKILL}
    assert "ignored SIGTERM" in out.getvalue()


async def test_readiness_waits_for_the_port() -> None:
    supervisor, out = _supervisor()
    port = free_port()
    server = (
        "import socket, sys, time; time.sleep(0.7); s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); print('listening', flush=True); "
        "time.sleep(60)"
    )
    spec = ChildSpec(name="server", argv=[PY, "-c", server], ready=wait_tcp("127.0.0.1", port))
    await supervisor.start(spec)
    assert "listening" in out.getvalue()
    assert "server ready after" in out.getvalue()
    await supervisor.stop_all()


async def test_child_dying_before_ready_fails_start() -> None:
    supervisor, _ = _supervisor()
    spec = ChildSpec(
        name="broken",
        argv=[PY, "-c", "raise SystemExit(7)"],
        ready=wait_tcp("127.0.0.1", free_port()),
    )
    with pytest.raises(ChildFailedError, match="broken exited during start-up with code 7") as err:
        await supervisor.start(spec)
    assert err.value.exit_code == 7
    await supervisor.stop_all()


async def test_readiness_timeout() -> None:
    supervisor, _ = _supervisor()
    spec = ChildSpec(
        name="silent",
        argv=[PY, "-c", SLEEPER, "silent"],
        ready=wait_tcp("127.0.0.1", free_port()),
        ready_timeout_s=0.5,
    )
    with pytest.raises(ChildFailedError, match="silent not ready after"):
        await supervisor.start(spec)
    codes = await supervisor.stop_all()
    assert codes == {"silent": -signal.SIGTERM}


async def test_start_without_waiting_then_wait_ready() -> None:
    supervisor, out = _supervisor()
    port = free_port()
    server = (
        "import socket, time; time.sleep(0.5); s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
    )
    spec = ChildSpec(name="late", argv=[PY, "-c", server], ready=wait_tcp("127.0.0.1", port))
    await supervisor.start(spec, wait=False)
    assert "late ready" not in out.getvalue()
    await supervisor.wait_ready("late")
    assert "late ready after" in out.getvalue()
    await supervisor.stop_all()


async def test_call_blocking_returns_raises_and_is_interruptible() -> None:
    supervisor, _ = _supervisor()
    assert await supervisor.call_blocking("sum", lambda: 1 + 1) == 2

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await supervisor.call_blocking("fail", fail)
    asyncio.get_running_loop().call_later(0.2, supervisor.request_stop)
    started = time.monotonic()
    with pytest.raises(StartupInterruptedError, match="interrupted during slow"):
        await supervisor.call_blocking("slow", lambda: time.sleep(3))
    assert time.monotonic() - started < 2


async def test_sigint_requests_a_stop() -> None:
    supervisor, out = _supervisor()
    supervisor.install_signal_handlers()
    try:
        await supervisor.start(ChildSpec(name="worker", argv=[PY, "-c", SLEEPER, "w"]))
        pid = supervisor.running[0].process.pid
        asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGINT)
        assert await asyncio.wait_for(supervisor.serve(), 10) is None
        assert supervisor.stop_requested
        await supervisor.stop_all()
    finally:
        supervisor.remove_signal_handlers()
    assert not _alive(pid)
    assert "SIGINT received: stopping everything" in out.getvalue()


async def test_child_env_and_long_lines() -> None:
    supervisor, out = _supervisor()
    script = "import os; print(os.environ['CHATPULSE_X']); print('y' * 200000)"
    spec = ChildSpec(name="env", argv=[PY, "-c", script], env={"CHATPULSE_X": "from-spec"})
    await supervisor.start(spec)
    await supervisor.running[0].process.wait()
    await supervisor.stop_all()
    assert "env        │ from-spec" in out.getvalue()
    assert "y" * 1000 in out.getvalue()
