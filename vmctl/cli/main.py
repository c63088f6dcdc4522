"""The `vmctl` command group: global options, error reporting and exit codes."""

from __future__ import annotations

import errno
import sys
import traceback

import click

from vmctl.cli.context import App
from vmctl.config import MODES, load_settings
from vmctl.errors import ResourceError, UsageError, VmctlError


class VmctlGroup(click.Group):
    """A click group that turns vmctl errors into one line and their exit code.

    Handling errors here (not in `main`) keeps click's CliRunner and the installed script identical.
    """

    def invoke(self, ctx: click.Context):
        try:
            try:
                return super().invoke(ctx)
            except OSError as exc:
                # A full disk anywhere (a seed, a record, a download) is the resources error;
                # every operation has undone its own steps by the time this is seen.
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    where = f" ({exc.filename})" if exc.filename else ""
                    raise ResourceError(f"no space left on the device{where}; nothing was changed") from exc
                raise
        except VmctlError as exc:
            app = ctx.obj if isinstance(ctx.obj, App) else None
            if app is not None and app.debug:
                traceback.print_exc()
            click.echo(f"vmctl: error: {exc.message}", err=True)
            details = getattr(exc, "details", None)
            if details:
                click.echo(details.rstrip("\n"), err=True)
            ctx.exit(exc.exit_code)
        finally:
            if isinstance(ctx.obj, App):
                ctx.obj.close()


@click.group(cls=VmctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--connect", "-c", "uri", metavar="URI", help="libvirt URI (default by mode).")
@click.option("--mode", type=click.Choice(MODES), help="hosted (qemu:///session, user networking) or system (qemu:///system, KVM, bridges).")
@click.option("--root", type=click.Path(file_okay=False), help="Data root (default: XDG data dir or /var/lib/vmctl; env VMCTL_ROOT).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--quiet", "-q", "quiet", is_flag=True, hidden=True)
@click.version_option(package_name="vmctl", prog_name="vmctl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, uri, mode, root, as_json, debug, quiet):
    """vmctl: images, instances, snapshots and registries for KVM/QEMU virtual machines."""
    try:
        settings = load_settings(mode=mode, uri=uri, root=root)
    except VmctlError as exc:
        click.echo(f"vmctl: error: {exc.message}", err=True)
        ctx.exit(exc.exit_code)
    from vmctl.cli.output import progress_printer
    from vmctl.core.session import Session

    draw = None if (as_json or quiet) else progress_printer()
    session = Session(settings=settings,
                      progress=draw or (lambda *_: None),
                      warn=lambda line: click.echo(f"vmctl: warning: {line}", err=True))
    ctx.obj = App(session=session, json=as_json, debug=debug, quiet=quiet)


def _register() -> None:
    from vmctl.cli import images, system, vms

    system.register(cli)
    images.register(cli)
    vms.register(cli)
    from vmctl.cli import snapshots as snapshots_cli
    snapshots_cli.register(cli)
    from vmctl.cli import registry as registry_cli
    registry_cli.register(cli)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="vmctl")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("vmctl: interrupted", err=True)
        sys.exit(130)


__all__ = ["cli", "main", "UsageError"]
