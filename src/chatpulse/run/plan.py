"""What ``chatpulse up`` runs: pure functions from settings and options to child specs.

Children are the real commands (``python -m chatpulse <command>``), configured only through
``CHATPULSE_*`` environment variables, exactly as an operator would run them by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatpulse.fake_twitch.simulate import channel_names
from chatpulse.run.readiness import wait_http_ok, wait_tcp
from chatpulse.run.supervisor import ChildSpec
from chatpulse.settings import Settings

__all__ = [
    "Plan",
    "UpOptions",
    "build_plan",
    "kafka_address",
    "local_url",
    "simulated_channels",
]


def simulated_channels(count: int) -> list[str]:
    """The channels fake-twitch simulates for ``--simulate`` with ``count`` channels."""
    return channel_names(count)


@dataclass(frozen=True, slots=True)
class UpOptions:
    """``chatpulse up``'s choices (the settings hold the rest)."""

    channels: list[str] = field(default_factory=list)  # empty: simulated chat
    sim_channels: int = 36
    sim_rate: float = 150.0  # messages per second over all simulated channels
    fake_twitch_port: int = 6667
    python: str = sys.executable
    # CHATPULSE_* variables every service child gets on top of the inherited environment
    # (a local cluster's nodes and replication).
    env: dict[str, str] = field(default_factory=dict)
    # ``--secure``: each service's own ``CHATPULSE_*`` settings (its principal), by child name.
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The CA that signed the API's certificate (HTTPS), for the readiness check.
    api_ca: Path | None = None

    @property
    def simulated(self) -> bool:
        return not self.channels


@dataclass(frozen=True, slots=True)
class Plan:
    """The children in start order, and where the dashboard will be."""

    children: list[ChildSpec]
    dashboard_url: str
    channels: list[str]


def kafka_address(settings: Settings) -> tuple[str, int]:
    """Host and port of the first bootstrap server."""
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return (host or "127.0.0.1").strip("[]"), int(port or 9092)


def local_url(host: str, port: int, path: str = "/", scheme: str = "http") -> str:
    """An http(s) URL a local client can open for a server bound to host:port."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def build_plan(settings: Settings, options: UpOptions) -> Plan:
    """The children of ``chatpulse up``; they inherit the environment."""
    cmd = [options.python, "-m", "chatpulse"]
    children: list[ChildSpec] = []
    ingest_env: dict[str, str] = dict(options.env)
    if options.simulated:
        channels = simulated_channels(options.sim_channels)
        children.append(
            ChildSpec(
                name="fake-twitch",
                argv=[
                    *cmd,
                    "fake-twitch",
                    "--simulate",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(options.fake_twitch_port),
                    "--channels",
                    str(options.sim_channels),
                    "--rate",
                    f"{options.sim_rate:g}",
                ],
                style="magenta",
                ready=wait_tcp("127.0.0.1", options.fake_twitch_port),
                ready_timeout_s=30,
            )
        )
        ingest_env["CHATPULSE_TWITCH_IRC_URL"] = f"irc://127.0.0.1:{options.fake_twitch_port}"
    else:
        channels = list(options.channels)
    ingest_env["CHATPULSE_CHANNELS"] = ",".join(channels)
    api_env = {
        **options.env,
        "CHATPULSE_API_HOST": settings.api_host,
        "CHATPULSE_API_PORT": str(settings.api_port),
    }
    own = options.service_env
    scheme = "https" if settings.api_tls_cert is not None else "http"
    readyz = local_url(settings.api_host, settings.api_port, "/readyz", scheme)
    children += [
        ChildSpec(
            name="ingest",
            argv=[*cmd, "ingest"],
            env={**own.get("ingest", {}), **ingest_env},
            style="green",
        ),
        ChildSpec(
            name="process",
            argv=[*cmd, "process"],
            env={**own.get("process", {}), **options.env},
            style="yellow",
        ),
        ChildSpec(
            name="api",
            argv=[*cmd, "api"],
            env={**own.get("api", {}), **api_env},
            style="blue",
            ready=wait_http_ok(readyz, ca=options.api_ca),
            ready_timeout_s=120,
        ),
    ]
    return Plan(
        children=children,
        dashboard_url=local_url(settings.api_host, settings.api_port, "/", scheme),
        channels=channels,
    )
