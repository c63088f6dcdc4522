"""Sharing images, Docker-style: login, logout, push, pull, search, save, load.

Progress bars go to stderr on a terminal only; stdout carries one result line per command (or JSON
with ``--json``), so scripts can use it.
"""

from __future__ import annotations

import sys

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json, human_size, table
from vmctl.cli.complete import complete_hosts, complete_images
from vmctl.errors import UsageError


def _tls_options(f):
    f = click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                     help="Verify the registry's TLS certificate with this CA bundle.")(f)
    f = click.option("--insecure", is_flag=True,
                     help="Allow plain HTTP and unverified TLS for this registry (also: insecure_registries in the config).")(f)
    return f


@click.command()
@click.argument("registry", shell_complete=complete_hosts)
@click.option("--username", "-u", help="User name (prompted for on a terminal).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_tls_options
@pass_app
def login(app: App, registry, username, password_stdin, insecure, ca_file):
    """Log in to REGISTRY (HOST[:PORT]); the credentials are checked, then stored (0600)."""
    from vmctl.core import distribution

    tty = sys.stdin.isatty()
    if not username:
        if password_stdin or not tty:
            raise UsageError("give the user name with -u USER (there is no terminal to ask on)")
        username = click.prompt("Username")
    if password_stdin:
        password = sys.stdin.read()
        if password.endswith("\n"):
            password = password[:-1]
        if password.endswith("\r"):
            password = password[:-1]
    elif tty:
        password = click.prompt("Password", hide_input=True)
    else:
        raise UsageError("no terminal to ask for the password on: use --password-stdin")
    if not password:
        raise UsageError("the password is empty")
    creds = distribution.login(app.session, registry, username, password, insecure=insecure, ca_file=ca_file)
    click.echo(f"Login Succeeded (credentials stored in {creds.source})")


@click.command()
@click.argument("registry", shell_complete=complete_hosts)
@pass_app
def logout(app: App, registry):
    """Forget vmctl's credentials for REGISTRY (Docker's and podman's files are never changed)."""
    from vmctl.core import distribution
    from vmctl.registry.refs import normalize_host

    host = normalize_host(registry)
    if distribution.logout(app.session, host):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host}", err=True)


@click.command()
@click.argument("ref", shell_complete=complete_images)
@click.argument("dest", required=False)
@click.option("--containerdisk", is_flag=True,
              help="Push the squashed disk as a KubeVirt containerDisk (a plain container image).")
@click.option("--json", "as_json", is_flag=True)
@_tls_options
@pass_app
def push(app: App, ref, dest, containerdisk, as_json, insecure, ca_file):
    """Push image REF to a registry: to DEST (HOST[:PORT]/REPO[:TAG]), or to REF itself when
    it names a registry. Layers the registry has already are not sent again."""
    from vmctl.core import distribution

    out = distribution.push(app.session, ref, dest, containerdisk=containerdisk, insecure=insecure,
                            ca_file=ca_file, progress=app.byte_progress(as_json))
    if as_json or app.json:
        emit_json({"reference": out.reference, "digest": out.digest, "image_id": out.image_id,
                   "bytes_uploaded": out.bytes_uploaded, "containerdisk": out.containerdisk,
                   "blobs": [{"kind": k, "digest": d, "status": s} for k, d, s in out.blobs]})
        return
    for kind, digest, status in out.blobs:
        verb = {"exists": "Layer already exists", "mounted": "Mounted", "uploaded": "Pushed"}.get(status, status)
        click.echo(f"{digest.split(':', 1)[1][:12]}: {verb} ({kind})", err=True)
    click.echo(f"{out.reference}: digest: {out.digest} uploaded: {human_size(out.bytes_uploaded)}")


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.option("--verbose", "-v", is_flag=True,
              help="Say on stderr which host (a mirror or the registry) served the manifest and each blob.")
@_tls_options
@pass_app
def pull(app: App, ref, as_json, verbose, insecure, ca_file):
    """Pull an image: HOST[:PORT]/REPO[:TAG|@sha256:…] from a registry (vmctl images and KubeVirt
    containerDisks), or a cloud image from the catalog (ubuntu:24.04, debian:12, …; see search).
    A registry's configured mirrors are asked first (see `vmctl info`)."""
    from vmctl.core import distribution

    def trace(line: str) -> None:
        app.say(line)   # above the live progress rows, if any

    out = distribution.pull(app.session, ref, insecure=insecure, ca_file=ca_file,
                            progress=app.byte_progress(as_json), trace=trace if verbose else None)
    if as_json or app.json:
        emit_json({"source": out.source, "reference": out.reference, "name": out.name, "id": out.image.id,
                   "digest": out.digest, "bytes_downloaded": out.bytes_downloaded,
                   "layers_downloaded": out.layers_downloaded, "layers_present": out.layers_present,
                   **({"served_by": [{"kind": k, "digest": d, "host": h, "role": r} for k, d, h, r in out.served]}
                      if out.source != "catalog" else {}),
                   **out.details})
        return
    if out.source == "registry":
        click.echo(f"{out.layers_downloaded} layer(s) downloaded, {out.layers_present} already present, "
                   f"{human_size(out.bytes_downloaded)}; digest: {out.digest}", err=True)
    else:
        click.echo(f"{out.source}: {human_size(out.bytes_downloaded)} downloaded; digest: {out.digest}", err=True)
    click.echo(out.name or out.image.id)


@click.command()
@click.argument("term", default="")
@click.option("--registry", "-r", metavar="HOST[:PORT]", help="Search this registry's catalog (default: the built-in cloud image catalog).")
@click.option("--json", "as_json", is_flag=True)
@_tls_options
@pass_app
def search(app: App, term, registry, as_json, insecure, ca_file):
    """Find images whose name contains TERM: in the cloud image catalog, or in a registry."""
    from vmctl.core import distribution

    rows = distribution.search(app.session, term, registry=registry, insecure=insecure, ca_file=ca_file)
    if as_json or app.json:
        emit_json([{"name": r.name, "tags": list(r.tags), "source": r.source, "description": r.description}
                   for r in rows])
        return
    if registry is None:
        table([(r.name, ", ".join(r.tags), r.description) for r in rows], ["NAME", "VERSIONS", "DESCRIPTION"])
    else:
        table([(r.name, ", ".join(r.tags)) for r in rows], ["NAME", "TAGS"])


@click.command()
@click.argument("refs", nargs=-1, required=True, shell_complete=complete_images)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Archive to write (an OCI image-layout tar).")
@pass_app
def save(app: App, refs, output):
    """Save images to an OCI image-layout archive (tar), streaming: memory stays flat."""
    from vmctl.archive import save as save_archive

    result = save_archive(app.store, list(refs), output, progress=app.byte_progress())
    click.echo(f"{output}: {len(result.images)} image(s), {human_size(result.size)}", err=True)


@click.command()
@click.option("--input", "-i", "input_", required=True, type=click.Path(exists=True, dir_okay=False), help="Archive to read.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def load(app: App, input_, as_json):
    """Load images from an OCI image-layout archive, verifying every digest."""
    from vmctl.archive import load as load_archive

    result = load_archive(app.store, input_, progress=app.byte_progress(as_json))
    for name, old in result.retagged:
        # as `docker load` says when a name moves: the old image keeps its other names, or none
        click.echo(f"vmctl: note: {name} named image {old[7:19]} before; it now names the loaded one", err=True)
    if as_json or app.json:
        retagged = dict(result.retagged)
        emit_json([{"id": im.id, "names": list(names),
                    "replaced": {n: retagged[n] for n in names if n in retagged}} for im, names in result.images])
        return
    for im, names in result.images:
        if names:
            for name in names:
                click.echo(f"Loaded image: {name}")
        else:
            click.echo(f"Loaded image ID: {im.id}")


def register(group: click.Group) -> None:
    for command in (login, logout, push, pull, search, save, load):
        group.add_command(command)
