"""Watching VMs: ``stats`` (resource use, refreshed) and ``events`` (lifecycle, as it happens).

Both run until Ctrl-C, which ends them with exit status 0 (an interrupted watch is not a failure).

Output for scripts: ``stats --json --no-stream`` prints one JSON list (one object per VM);
streaming ``stats --json`` prints one such list per refresh, each on one line (JSON Lines);
``events --json`` prints one JSON object per event, one per line.
"""

from __future__ import annotations

import json

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json, human_size, table
from vmctl.cli.complete import complete_vms

_CLEAR = "\x1b[2J\x1b[H"   # clear the terminal and go home: a streaming table redraws in place


def _binary_size(n: int | None) -> str:
    """Memory the way `docker stats` shows it (binary units: MiB, GiB)."""
    if n is None:
        return "--"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.4g}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover


def _pair(a: int | None, b: int | None, size=human_size) -> str:
    return "--" if a is None and b is None else f"{size(a) if a is not None else '--'} / {size(b) if b is not None else '--'}"


def _percent(value: float | None) -> str:
    return "--" if value is None else f"{value:.2f}%"


def _stats_table(rows: list[dict]) -> None:
    table(
        [(r["name"], _percent(r["cpu_percent"]), _pair(r["memory_used_bytes"], r["memory_limit_bytes"], _binary_size),
          _percent(r["memory_percent"]), _pair(r["net_rx_bytes"], r["net_tx_bytes"]),
          _pair(r["block_read_bytes"], r["block_write_bytes"]), r["state"])
         for r in rows],
        ["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "STATE"],
    )


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...", shell_complete=complete_vms)
@click.option("--no-stream", is_flag=True, help="Print one frame and exit.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: one list with --no-stream; streaming, one list per line per refresh.")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=1.0, hidden=True,
              help="Seconds between refreshes.")
@click.option("--frames", "max_frames", type=click.IntRange(1), hidden=True, help="Stop after N frames.")
@pass_app
def stats(app: App, names, no_stream, as_json, interval, max_frames):
    """Show VMs' CPU, memory, network and block I/O use, refreshed every second (Ctrl-C ends).

    Without NAME: every running or paused VM. CPU % is of one host CPU (200 % = two busy). Memory
    is the guest's own view when its balloon driver reports it, else the host's resident memory
    of the VM's QEMU process (QEMU's own included). The first figures need two samples.
    """
    from vmctl.core import monitor

    as_json = as_json or app.json
    limit = 1 if no_stream else max_frames
    redraw = not as_json and limit is None and click.get_text_stream("stdout").isatty()
    shown = 0
    try:
        for rows in monitor.frames(app.session, names, interval=interval):
            if as_json and limit == 1:
                emit_json(rows)
            elif as_json:
                click.echo(json.dumps(rows, sort_keys=True))
            else:
                if redraw:
                    click.echo(_CLEAR, nl=False)
                elif shown:
                    click.echo("")   # frames one after another, a blank line between
                _stats_table(rows)
            shown += 1
            if limit is not None and shown >= limit:
                return
    except KeyboardInterrupt:
        return


@click.command()
@click.option("--filter", "-f", "filters", multiple=True, metavar="KEY=VALUE",
              help="vm=NAME, event=EVENT or detail=DETAIL (repeatable: values of one key are alternatives, "
                   "different keys must all match).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, one per line.")
@click.option("--max-events", type=click.IntRange(1), hidden=True, help="Exit after N events.")
@click.option("--timeout", type=click.FloatRange(0), hidden=True, help="Exit after SECONDS.")
@pass_app
def events(app: App, filters, as_json, max_events, timeout):
    """Print VMs' lifecycle events (started, stopped, paused, ...) as they happen, until Ctrl-C.

    Events: defined, undefined, started, paused, resumed, stopped, shutdown, suspended, crashed;
    each with libvirt's detail (booted, destroyed, from-snapshot, ...; "snapshot" marks the pause
    and resume around a snapshot with memory). Only vmctl's VMs.
    """
    from vmctl.core import events as core

    wanted = core.parse_filters(filters)   # a bad filter is a usage error before connecting
    as_json = as_json or app.json
    try:
        for ev in core.watch(app.session, wanted, max_events=max_events, timeout=timeout):
            if as_json:
                click.echo(json.dumps(ev, sort_keys=True))
            else:
                click.echo(f"{ev['time']} vm {ev['vm']} {ev['event']} ({ev['detail']})")
    except KeyboardInterrupt:
        return


def register(group: click.Group) -> None:
    group.add_command(stats)
    group.add_command(events)
