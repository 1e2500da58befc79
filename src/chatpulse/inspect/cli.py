"""``chatpulse inspect``: a terminal view of the running system, for learners and operators."""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import Annotated

import orjson
import typer
from rich.console import Console

from chatpulse.inspect.collect import collect_snapshot
from chatpulse.inspect.render import SECTIONS, render_snapshot
from chatpulse.logs import configure_logging
from chatpulse.settings import load_settings

__all__ = ["inspect_command"]


def _sections(only: str | None) -> list[str]:
    if only is None:
        return list(SECTIONS)
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise typer.BadParameter(
            f"unknown section(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(SECTIONS)}",
            param_hint="--only",
        )
    return chosen


def inspect_command(
    *,
    watch: Annotated[
        float | None,
        typer.Option(min=0.5, help="Refresh every N seconds until Ctrl-C.", metavar="N"),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON instead of tables (one line per refresh)."),
    ] = False,
    count: Annotated[
        bool,
        typer.Option(
            "--count", help="Exact row counts per Cassandra table (a full scan: small data only)."
        ),
    ] = False,
    everything: Annotated[
        bool,
        typer.Option("--all", help="Every topic and group, not only this chatpulse's (prefix)."),
    ] = False,
    transactions: Annotated[
        bool,
        typer.Option(help="Read the transactional producers from __transaction_state."),
    ] = True,
    only: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated sections to show: {', '.join(SECTIONS)} (default: all).",
            metavar="SECTIONS",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds per request.")] = 10.0,
) -> None:
    """Show topics (partitions, records), brokers and each partition's leader, replicas and
    in-sync replicas (under-replicated ones highlighted), consumer groups (members, assignments,
    lag), changelog topics and local state stores, transactional producers, and Cassandra nodes
    (up or down) and tables.

    Reads the same CHATPULSE_* settings as the services, so it looks where they work.
    """
    configure_logging("ERROR")
    sections = _sections(only)
    if not transactions:
        sections = [name for name in sections if name != "transactions"]
    take = partial(
        collect_snapshot,
        load_settings(),
        everything=everything,
        count_rows=count,
        transactions="transactions" in sections,
        cassandra="cassandra" in sections,
        timeout=timeout,
    )
    console = Console()
    try:
        if as_json:
            while True:
                sys.stdout.write(orjson.dumps(take().to_dict()).decode() + "\n")
                sys.stdout.flush()
                if watch is None:
                    return
                time.sleep(watch)
        while True:
            view = render_snapshot(take(), sections)
            if watch is None:
                console.print(view)
                return
            # Clear and redraw like watch(1): the view is often taller than the terminal,
            # which a rich Live display would crop.
            console.clear()
            console.print(view)
            console.print(f"refreshing every {watch:g}s; Ctrl-C to stop", style="dim")
            time.sleep(watch)
    except KeyboardInterrupt:
        console.print("stopped watching", style="dim")
