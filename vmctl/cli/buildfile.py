"""``vmctl build``: a Vmfile into a layered, cached image."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.options import key_values
from vmctl.cli.output import emit_json
from vmctl.errors import NotFoundError


@click.command()
@click.argument("context", type=click.Path(exists=True, file_okay=False))
@click.option("--file", "-f", "vmfile", type=click.Path(dir_okay=False), help="The build file (default: CONTEXT/Vmfile).")
@click.option("--tag", "-t", "ref", required=True, metavar="NAME[:TAG]", help="Name of the image built.")
@click.option("--build-arg", "build_args", multiple=True, metavar="NAME=VALUE", help="A value for an ARG (repeatable).")
@click.option("--no-cache", is_flag=True, help="Run every step, reusing no cached layer.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def build(app: App, context, vmfile, ref, build_args, no_cache, as_json):
    """Build an image from a Vmfile: every RUN/COPY step a cached layer (a rebuild reruns only
    what changed), in one VM booted from the last cached step."""
    from vmctl.storage.refs import parse_name
    from vmctl.userfiles import read_text
    from vmctl.vmfile.build import build as run_build
    from vmctl.vmfile.parse import parse

    parse_name(ref)
    path = Path(vmfile) if vmfile else Path(context) / "Vmfile"
    text = read_text(str(path), "build file")
    parsed = parse(text, path=str(path), build_args=key_values(build_args, "--build-arg"))
    try:
        app.store.resolve(parsed.base)
    except NotFoundError:
        from vmctl.core import distribution

        app.say(f"FROM {parsed.base}: pulling")
        distribution.pull(app.session, parsed.base, progress=app.byte_progress(as_json))
    quiet = app.quiet or as_json or app.json
    result = run_build(app.session, parsed, Path(context), ref, no_cache=no_cache,
                       output=sys.stderr.buffer, say=(lambda _line: None) if quiet else app.say)
    if as_json or app.json:
        emit_json(result.to_json())
    else:
        click.echo(result.image.id)


def register(group: click.Group) -> None:
    group.add_command(build)
