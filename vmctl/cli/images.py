"""Image commands, Docker-style: image ls/inspect/tag/rm/import/prune/build, images, tag, rmi, df."""

from __future__ import annotations

from dataclasses import asdict

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json, human_size, table
from vmctl.cli.complete import complete_images
from vmctl.cli.options import key_values
from vmctl.errors import UsageError


@click.group(name="image")
def image_group():
    """Manage images: read-only templates that VMs are created from."""


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="Only image IDs.")
@click.option("--digests", is_flag=True, help="Show full digests.")
@pass_app
def image_ls(app: App, as_json, quiet, digests):
    """List images."""
    rows = app.store.list()
    if as_json or app.json:
        emit_json([
            {"id": r.id, "short_id": r.short_id, "repository": r.repo, "tag": r.tag,
             "size": r.size, "created": r.created, "used_by": list(r.holders)}
            for r in rows
        ])
        return
    if quiet:
        seen = []
        for r in rows:
            if r.short_id not in seen:
                seen.append(r.short_id)
                click.echo(r.id if digests else r.short_id)
        return
    table(
        [(r.repo or "<none>", r.tag or "<none>", r.id if digests else r.short_id, r.created,
          human_size(r.size)) for r in rows],
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
    )


@click.command(name="inspect")
@click.argument("refs", nargs=-1, required=True, shell_complete=complete_images)
@pass_app
def image_inspect(app: App, refs):
    """Show images' manifests, configs, layers and users as JSON."""
    emit_json([app.store.inspect(ref) for ref in refs])


@click.command(name="tag")
@click.argument("source", shell_complete=complete_images)
@click.argument("target")
@pass_app
def image_tag(app: App, source, target):
    """Give image SOURCE the name TARGET (NAME[:TAG])."""
    app.store.tag(source, target)


@click.command(name="rm")
@click.argument("refs", nargs=-1, required=True, shell_complete=complete_images)
@click.option("--force", "-f", is_flag=True, help="Only untag an image that is still in use.")
@pass_app
def image_rm(app: App, refs, force):
    """Remove images (refused while a VM or another image uses one)."""
    for ref in refs:
        result = app.store.remove(ref, force=force)
        for name in result.untagged:
            click.echo(f"Untagged: {name}")
        for image_id in result.deleted:
            click.echo(f"Deleted: {image_id}")


@click.command(name="import")
@click.argument("args", nargs=-1, required=True, metavar="[FILE] NAME[:TAG]")
@click.option("--disk", type=click.Path(exists=True, dir_okay=False), help="The disk (instead of FILE).")
@click.option("--kernel", type=click.Path(exists=True, dir_okay=False), help="Kernel for direct kernel boot.")
@click.option("--initrd", type=click.Path(exists=True, dir_okay=False), help="Initrd for direct kernel boot.")
@click.option("--cmdline", help="Kernel command line for direct kernel boot.")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), help="Boot firmware (default: what the disk's boot sectors show; BIOS when it has both).")
@click.option("--format", "fmt", type=click.Choice(["auto", "qcow2", "raw"]), default="auto", show_default=True)
@click.option("--cloud-init/--no-cloud-init", default=True, show_default=True, help="Whether the guest reads a NoCloud seed.")
@click.option("--user", help="The login user vmctl makes and uses (default: vmctl's own, see 'Cloud images' in the README).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@pass_app
def image_import(app: App, args, disk, kernel, initrd, cmdline, firmware, fmt, cloud_init, user, labels):
    """Import a qcow2 or raw disk (converted to qcow2) as an image."""
    if len(args) == 2:
        if disk:
            raise UsageError("give the disk either as FILE or as --disk, not both")
        disk, ref = args
    elif len(args) == 1 and disk:
        ref = args[0]
    else:
        raise UsageError("usage: vmctl image import FILE NAME[:TAG]  (or --disk D [--kernel K ...] NAME[:TAG])")
    label_map = key_values(labels, "--label")
    image = app.store.import_image(
        disk, ref, kernel=kernel, initrd=initrd, cmdline=cmdline, firmware=firmware, fmt=fmt,
        cloud_init=cloud_init, user=user, labels=label_map, progress=app.byte_progress(),
    )
    click.echo(image.id)


@click.command(name="prune")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def image_prune(app: App, as_json):
    """Remove dangling images, unreferenced layers and leftovers of killed processes."""
    result = app.store.prune()
    if as_json or app.json:
        emit_json(asdict(result))
        return
    for image_id in result.images:
        click.echo(f"Deleted image: {image_id}")
    for digest in result.layers:
        click.echo(f"Deleted layer: {digest}")
    click.echo(f"Total reclaimed space: {human_size(result.freed)}")


@click.command(name="build")
@click.argument("recipe")
@click.option("--tag", "-t", metavar="NAME[:TAG]", help="Name of the image (default RECIPE:latest).")
@pass_app
def image_build(app: App, recipe, tag):
    """Build an image from a recipe (templates/recipes) using Debian packages."""
    from vmctl.core.images import build

    outcome = build(app.session, recipe, tag, progress=app.progress())
    tags = ", ".join(outcome.image.repo_tags)
    if outcome.cached:
        click.echo(f"{recipe}: already built as {tags} ({outcome.image.short_id})", err=True)
    click.echo(outcome.image.id)


@click.command(name="df")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def df(app: App, as_json):
    """Show disk space used by images, VMs and snapshots."""
    from vmctl.core.images import disk_usage

    usage = disk_usage(app.session)
    if as_json or app.json:
        emit_json({row.kind: asdict(row) for row in usage.rows} | {"temporary": usage.temporary})
        return
    table(
        [(row.kind.capitalize(), row.count, row.active, human_size(row.size), human_size(row.reclaimable))
         for row in usage.rows],
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
    )


def register(group: click.Group) -> None:
    for command in (image_ls, image_inspect, image_tag, image_rm, image_import, image_prune, image_build):
        image_group.add_command(command)
    group.add_command(image_group)
    group.add_command(image_ls, name="images")
    group.add_command(image_tag, name="tag")
    group.add_command(image_rm, name="rmi")
    group.add_command(df)
