"""The VM table of ``ls`` (and of ``ps`` outside a stack's directory)."""

from __future__ import annotations

import click

from vmctl.cli.context import App
from vmctl.cli.output import emit_json, human_size, table


def show_listing(app: App, *, show_all: bool, as_json: bool, quiet: bool, all_hosts: bool = False) -> None:
    """Print this store's VMs (running ones; all with `show_all`) as a table, names or JSON;
    with `all_hosts`, this machine's and every host's, with a HOST column."""
    from vmctl.core import listing

    if all_hosts:
        from vmctl.core import fleet

        rows, errors = fleet.listing_all(app.session, listing.listing, show_all=show_all)
        for line in errors:
            app.say(f"vmctl: warning: host {line}")
    else:
        rows = listing.listing(app.session, show_all=show_all)
    if as_json or app.json:
        emit_json(rows)
        return
    if quiet:
        for row in rows:
            click.echo(row["name"])
        return
    with_host = all_hosts or app.session.host is not None
    table(
        [
            (r["name"], *((r["host"] or "local",) if with_host else ()), r["image"], r["state"], r["cpus"],
             human_size(r["memory_mib"] * 1024 * 1024), ", ".join(r["ports_text"]), r["created"])
            for r in rows
        ],
        ["NAME", *(("HOST",) if with_host else ()), "IMAGE", "STATE", "CPUS", "MEMORY", "PORTS", "CREATED"],
    )
