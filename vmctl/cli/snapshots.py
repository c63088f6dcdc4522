"""Snapshot commands (snapshot create/ls/revert/rm/inspect), ``commit`` and ``image history``."""

from __future__ import annotations

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json, human_size, table
from vmctl.cli.complete import complete_images, complete_snapshots, complete_vms
from vmctl.errors import UsageError


@click.group(name="snapshot")
def snapshot_group():
    """Save a VM's disks (and memory) and go back to them later."""


@click.command(name="create")
@click.argument("name", shell_complete=complete_vms)
@click.argument("snap", required=False, shell_complete=complete_snapshots)
@click.option("--memory", "memory", is_flag=True, help="Save memory too (the default for a running VM).")
@click.option("--disk-only", "disk_only", is_flag=True, help="Running VM: a crash-consistent disk snapshot, without saving memory.")
@click.option("--description", "-d", metavar="TEXT", help="Free text kept with the snapshot.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def snapshot_create(app: App, name, snap, memory, disk_only, description, as_json):
    """Take snapshot SNAP of VM NAME (default name: snap-DATE-TIME).

    A stopped VM gets a disk snapshot; a running one by default a consistent snapshot of disks and
    memory (revert resumes it exactly there); --disk-only skips memory.
    """
    from vmctl.core import snapshots

    if memory and disk_only:
        raise UsageError("--memory and --disk-only exclude each other")
    mode = "memory" if memory else "disk-only" if disk_only else None
    row = snapshots.create(app.session, name, snap, mode=mode, description=description)
    if as_json or app.json:
        emit_json(row)
    else:
        click.echo(row["name"])


def _rows_table(rows, tree: bool):
    from vmctl.core.snapshots import tree as as_tree

    ordered = as_tree(rows) if tree else [(0, r) for r in rows]
    table(
        [(("  " * depth + ("└ " if depth else "")) + r["name"], r["created"], r["kind"],
          human_size(r["size"]), r["parent"] or "", "*" if r["current"] else "", r["description"])
         for depth, r in ordered],
        ["NAME", "CREATED", "KIND", "SIZE", "PARENT", "CURRENT", "DESCRIPTION"],
    )


@click.command(name="ls")
@click.argument("name", shell_complete=complete_vms)
@click.option("--tree", is_flag=True, help="Show parents and children as a tree.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def snapshot_ls(app: App, name, tree, as_json):
    """List VM NAME's snapshots: name, time, kind, size (saved memory), parent, current."""
    from vmctl.core import snapshots

    rows = snapshots.listing(app.session, name)
    if as_json or app.json:
        if tree:
            emit_json([{**r, "depth": depth} for depth, r in snapshots.tree(rows)])
        else:
            emit_json(rows)
        return
    _rows_table(rows, tree)


@click.command(name="revert")
@click.argument("name", shell_complete=complete_vms)
@click.argument("snap", shell_complete=complete_snapshots)
@click.option("--force", is_flag=True, help="Let libvirt restart QEMU if the VM's definition changed incompatibly since.")
@pass_app
def snapshot_revert(app: App, name, snap, force):
    """Return VM NAME to snapshot SNAP: disks (and memory), running or stopped as it was then."""
    from vmctl.core import snapshots

    state = snapshots.revert(app.session, name, snap, force=force)
    click.echo(f"{name}: reverted to {snap} ({state})")


@click.command(name="rm")
@click.argument("name", shell_complete=complete_vms)
@click.argument("snaps", nargs=-1, required=True, shell_complete=complete_snapshots)
@pass_app
def snapshot_rm(app: App, name, snaps):
    """Delete snapshots of VM NAME (their children, the VM and the image stay intact)."""
    from vmctl.core import snapshots

    for snap in snaps:
        snapshots.remove(app.session, name, snap)
        click.echo(snap)


@click.command(name="inspect")
@click.argument("name", shell_complete=complete_vms)
@click.argument("snaps", nargs=-1, required=True, shell_complete=complete_snapshots)
@pass_app
def snapshot_inspect(app: App, name, snaps):
    """Show snapshots' details as JSON."""
    from vmctl.core import snapshots

    emit_json([snapshots.inspect(app.session, name, s) for s in snaps])


@click.command(name="commit")
@click.argument("name", shell_complete=complete_vms)
@click.argument("ref", metavar="IMAGE[:TAG]")
@click.option("--snapshot", "-s", "snap", metavar="SNAP", help="Commit this snapshot instead of the current disk.")
@click.option("--squash", is_flag=True, help="One self-contained layer instead of a layer on the parent image.")
@click.option("--message", "-m", default="", metavar="TEXT", help="Recorded in the image's history.")
@click.option("--checkpoint", is_flag=True,
              help="Also save the running machine (memory and devices): VMs run from the image start "
                   "where it was, in about a second, each with its own identity (warm start).")
@pass_app
def commit(app: App, name, ref, snap, squash, message, checkpoint):
    """Turn VM NAME's disk (or one of its snapshots) into image IMAGE[:TAG]; the VM keeps running."""
    if checkpoint:
        if app.session.host is not None:
            raise UsageError(f"--checkpoint: warm starts run on this machine's store, not on host {app.session.host.name}")
        if snap or squash:
            raise UsageError("--checkpoint saves the running machine: it takes neither --snapshot nor --squash")
        from vmctl.core.checkpoint import checkpoint as do_checkpoint

        image = do_checkpoint(app.session, name, ref, message=message)
        click.echo(image.id)
        return
    from vmctl.core.commit import commit as do_commit

    image = do_commit(app.session, name, ref, snapshot=snap, squash=squash, message=message)
    click.echo(image.id)


@click.command(name="history")
@click.argument("ref", shell_complete=complete_images)
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-trunc", is_flag=True, help="Full digests.")
@pass_app
def image_history(app: App, ref, as_json, no_trunc):
    """Show an image's layers, newest first, with sizes and where each came from."""
    from vmctl.core.commit import history

    rows = history(app.session, ref)
    if as_json or app.json:
        emit_json(rows)
        return

    def short(digest):
        if digest is None:
            return "<missing>"
        return digest if no_trunc else digest.split(":", 1)[-1][:12]

    table(
        [(short(r["image"]), short(r["layer"]), r["created"], r["created_by"], human_size(r["size"]),
          r["comment"]) for r in rows],
        ["IMAGE", "LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
    )


def register(group: click.Group) -> None:
    for command in (snapshot_create, snapshot_ls, snapshot_revert, snapshot_rm, snapshot_inspect):
        snapshot_group.add_command(command)
    group.add_command(snapshot_group)
    group.add_command(commit)
    group.commands["image"].add_command(image_history)
