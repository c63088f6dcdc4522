"""The `vmctl` command group: global options, error reporting and exit codes."""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback

import click

from vmctl.errors import ResourceError, UsageError, VmctlError

# `vmctl --help` imports this module, click and vmctl.errors only: the session, the settings and
# the commands' modules load when a command runs (what a command needs is imported in `cli`).
MODES = ("hosted", "system")   # vmctl.config.MODES (a test keeps them equal)

# Every command, the module of vmctl.cli that defines it, and the line `vmctl --help` shows for
# it. The modules are imported only when one of their commands runs (the help needs none of them:
# `vmctl --help` stays fast); tests/cli/test_cli_frame.py checks that this table is what the
# commands themselves say.
COMMANDS: dict[str, tuple[str, str]] = {
    'build': ('buildfile', 'Build an image from a Vmfile: every RUN/COPY step a cached layer (a rebuild reruns only'),
    'commit': ('snapshots', "Turn VM NAME's disk (or one of its snapshots) into image IMAGE[:TAG]; the VM keeps running."),
    'completion': ('complete', 'Print the shell completion script: eval "$(vmctl completion bash)" (or zsh, fish).'),
    'config': ('config_cmd', "Show vmctl's settings."),
    'console': ('vms', "Attach to a VM's serial console (detach with Ctrl-])."),
    'cp': ('vms', 'Copy files between the host and a VM: one side is NAME:PATH.'),
    'create': ('vms', 'Create a VM from an image (a copy-on-write disk, a cloud-init seed, a libvirt domain).'),
    'df': ('images', 'Show disk space used by images, VMs and snapshots.'),
    'down': ('stack', "Remove the stack's VMs (disks, seeds) and networks; images are kept."),
    'doctor': ('system', 'Find leftovers of killed vmctl processes (half-made VMs, stale holds), here or on --host HOST.'),
    'events': ('monitor', "Print VMs' lifecycle events (started, stopped, paused, ...) as they happen, until Ctrl-C."),
    'exec': ('vms', 'Run COMMAND in the VM as its login user; its exit status, stdout and stderr are passed through.'),
    'image': ('images', 'Manage images: read-only templates that VMs are created from.'),
    'host': ('hosts', 'Manage the libvirt hosts vmctl works on (vmctl --host NAME ...), and move VMs between them.'),
    'images': ('images', 'List images.'),
    'info': ('system', 'Show libvirt and QEMU versions, mode, URI, whether KVM is verified usable, store paths.'),
    'inspect': ('vms', "Show VMs' details as JSON: image, state, addresses, ports, disk usage, profile."),
    'ip': ('vms', "Print the address vmctl reaches the VM's SSH server on (HOST or HOST:PORT)."),
    'kill': ('vms', 'Power VMs off at once.'),
    'migrate': ('hosts', "Move VM NAME to another host with libvirt's migration (--live: it keeps running)."),
    'load': ('registry', 'Load images from an OCI image-layout archive, verifying every digest.'),
    'login': ('registry', 'Log in to REGISTRY (HOST[:PORT]); the credentials are checked, then stored (0600).'),
    'logout': ('registry', "Forget vmctl's credentials for REGISTRY (Docker's and podman's files are never changed)."),
    'logs': ('vms', "Print a VM's serial console log."),
    'ls': ('vms', 'List VMs (running ones; -a for all).'),
    'pause': ('vms', "Freeze VMs' CPUs (memory stays allocated)."),
    'ps': ('stack', "List the stack's VMs (in a stack's directory or with -f); elsewhere, VMs as ls does."),
    'pull': ('registry', 'Pull an image: HOST[:PORT]/REPO[:TAG|@sha256:…] from a registry (vmctl images and KubeVirt'),
    'push': ('registry', 'Push image REF to a registry: to DEST (HOST[:PORT]/REPO[:TAG]), or to REF itself when'),
    'restart': ('vms', 'Stop and start VMs again.'),
    'resume': ('vms', 'Unfreeze paused VMs.'),
    'rm': ('vms', "Remove VMs: domain, disk, seed, snapshots' metadata, pinned host key. Nothing is left."),
    'rmi': ('images', 'Remove images (refused while a VM or another image uses one).'),
    'run': ('vms', 'Create, start and wait for a VM: the common one-liner.'),
    'save': ('registry', 'Save images to an OCI image-layout archive (tar), streaming: memory stays flat.'),
    'search': ('registry', 'Find images whose name contains TERM: in the cloud image catalog, or in a registry.'),
    'snapshot': ('snapshots', "Save a VM's disks (and memory) and go back to them later."),
    'ssh': ('vms', 'Open a shell in the VM, or run COMMAND (after --).'),
    'start': ('vms', 'Start one or more VMs.'),
    'stats': ('monitor', "Show VMs' CPU, memory, network and block I/O use, refreshed every second (Ctrl-C ends)."),
    'stop': ('vms', 'Shut VMs down gracefully (ACPI power button), forcing power off after the timeout.'),
    'tag': ('images', 'Give image SOURCE the name TARGET (NAME[:TAG]).'),
    'unpause': ('vms', 'Unfreeze paused VMs.'),
    'update': ('update', "Change a VM's limits, memory or vCPUs: live when it runs, and for its next boots."),
    'version': ('system', "Show vmctl's version and its bindings'."),
    'up': ('stack', "Create and start the stack's VMs (and networks) in dependency order; idempotent."),
    'wait': ('vms', "Wait until VMs answer on SSH with their pinned host key and accept vmctl's key."),
}


class VmctlGroup(click.Group):
    """A click group that turns vmctl errors into one line and their exit code, and imports a
    command's module only when that command runs (see `COMMANDS`).

    Handling errors here (not in `main`) keeps click's CliRunner and the installed script identical.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def _load(self, module: str) -> None:
        if module in self._loaded:
            return
        self._loaded.add(module)
        if module == "snapshots":
            self._load("images")  # it adds `image history` to the image group
        importlib.import_module(f"vmctl.cli.{module}").register(self)

    def list_commands(self, ctx) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in COMMANDS:
            self._load(COMMANDS[name][0])
            if name == "image":
                self._load("snapshots")
        return self.commands.get(name)

    def format_commands(self, ctx, formatter) -> None:
        limit = formatter.width - 6 - max(len(n) for n in COMMANDS)
        rows = [(name, click.utils.make_default_short_help(text, limit)) for name, (_m, text) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
            app = ctx.obj
            if app is not None:
                app.end_progress()
            if app is not None and app.debug:
                traceback.print_exc()
            click.echo(f"vmctl: error: {exc.message}", err=True)
            details = getattr(exc, "details", None)
            if details:
                click.echo(details.rstrip("\n"), err=True)
            ctx.exit(exc.exit_code)
        finally:
            if ctx.obj is not None:
                ctx.obj.close()


@click.group(cls=VmctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--connect", "-c", "uri", metavar="URI", help="libvirt URI (default by mode).")
@click.option("--mode", type=click.Choice(MODES), help="hosted (qemu:///session, user networking) or system (qemu:///system, KVM, bridges).")
@click.option("--root", type=click.Path(file_okay=False), help="Data root (default: XDG data dir or /var/lib/vmctl; env VMCTL_ROOT).")
@click.option("--host", "-H", "host", metavar="NAME", help="Work on this host (vmctl host ls; 'local': this machine; env VMCTL_HOST).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--quiet", "-q", "quiet", is_flag=True, help="No progress output.")
@click.version_option(package_name="vmctl", prog_name="vmctl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, uri, mode, root, host, as_json, debug, quiet):
    """vmctl: images, instances, snapshots and registries for KVM/QEMU virtual machines."""
    from vmctl.cli.context import App  # lazy: not needed for --help
    from vmctl.cli.progress_view import ProgressView  # lazy: as above
    from vmctl.config import load_settings  # lazy: as above
    from vmctl.core.session import Session  # lazy: as above

    try:
        settings = load_settings(mode=mode, uri=uri, root=root, host=host)
        chosen = _host(ctx, settings, explicit_uri=bool(uri or os.environ.get("VMCTL_CONNECT")))
    except VmctlError as exc:
        click.echo(f"vmctl: error: {exc.message}", err=True)
        ctx.exit(exc.exit_code)
    view = None if (as_json or quiet) else ProgressView()
    session = Session(settings=settings,
                      progress=view.phase if view else (lambda *_: None),
                      warn=lambda line: click.echo(f"vmctl: warning: {line}", err=True)).for_host(chosen)
    ctx.obj = App(session=session, json=as_json, debug=debug, quiet=quiet, view=view)


# Commands that act on this machine alone (the image store, registries, the host table itself):
# a default host does not redirect them, and they need no libvirt of a host.
_LOCAL_ONLY = {"build", "completion", "config", "host", "image", "images", "load", "login", "logout",
               "pull", "push", "rmi", "save", "search", "tag", "version", "df"}


def _host(ctx: click.Context, settings, *, explicit_uri: bool):
    """The `Host` this command works on, or None for this machine's store: --host / VMCTL_HOST /
    the config file's `host`, else the host table's default (for the commands that act on VMs)."""
    from vmctl.hosts import AUTO, LOCAL, HostTable, hosts_file  # lazy: not needed for --help

    name = settings.host
    command = ctx.invoked_subcommand
    if name == AUTO:
        if command not in ("run", "create", None):
            raise UsageError("--host auto picks a host for a new VM: only with run and create")
        return None
    if name is None and (explicit_uri or command in _LOCAL_ONLY):
        return None
    if name == LOCAL or (name is None and not hosts_file().exists()):
        return None
    table = HostTable.read(hosts_file())
    name = name or table.default
    if name is None:
        return None
    if explicit_uri:
        raise UsageError("--connect and --host exclude each other (a host has its own URI)")
    return table.get(name)


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="vmctl")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("vmctl: interrupted", err=True)
        sys.exit(130)


__all__ = ["cli", "main", "UsageError"]
