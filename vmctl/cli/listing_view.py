"""The VM table of ``ls`` (and of ``ps`` outside a stack's directory)."""

from __future__ import annotations

import click

from vmctl.cli.context import App
from vmctl.cli.output import emit_json, human_size, table


def show_listing(app: App, *, show_all: bool, as_json: bool, quiet: bool) -> None:
    """Print this store's VMs (running ones; all with `show_all`) as a table, names or JSON."""
    from vmctl.core import listing

    rows = listing.listing(app.session, show_all=show_all)
    if as_json or app.json:
        emit_json(rows)
        return
    if quiet:
        for row in rows:
            click.echo(row["name"])
        return
    table(
        [
            (r["name"], r["image"], r["state"], r["cpus"], human_size(r["memory_mib"] * 1024 * 1024),
             ", ".join(r["ports_text"]), r["created"])
            for r in rows
        ],
        ["NAME", "IMAGE", "STATE", "CPUS", "MEMORY", "PORTS", "CREATED"],
    )
