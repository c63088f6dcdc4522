"""VM commands: create/run, lifecycle, listing, logs and console, reaching the guest."""

from __future__ import annotations

import shlex
import subprocess
import sys

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.listing_view import show_listing
from vmctl.cli.stackfile import short_name
from vmctl.cli.output import emit_json
from vmctl.cli.complete import complete_images, complete_vms
from vmctl.errors import UsageError, VmctlError

WAIT_CHOICES = ("ssh", "cloud-init")  # vmctl.core.reach.WAITS, kept here so --help imports no core


def _limit_options() -> list:
    """The resource limits of `create`, `run` and `update`."""
    return [
        click.option("--cpu-shares", type=int, help="CPU weight against other VMs (cgroup; default 1024)."),
        click.option("--cpu-quota", "cpu_quota_percent", type=int, metavar="PERCENT", help="Most host CPU the whole VM may use, in percent of one CPU (150 = 1.5 CPUs)."),
        click.option("--memory-limit", metavar="SIZE", help="Hard limit of the QEMU process's memory (cgroup), e.g. 1G."),
        click.option("--io-weight", type=int, help="Block I/O weight 100-1000 (cgroup)."),
        click.option("--io-read-bps", metavar="SIZE/s", help="Read throttle of the VM's disk, e.g. 20M/s."),
        click.option("--io-write-bps", metavar="SIZE/s", help="Write throttle of the VM's disk, e.g. 20M/s."),
    ]


def limits_from_options(cpu_shares, cpu_quota_percent, memory_limit, io_weight, io_read_bps, io_write_bps):
    """The Limits the limit options name (sizes and rates parsed by the core)."""
    from vmctl.core.limits import parse_limits

    return parse_limits(cpu_shares, cpu_quota_percent, memory_limit, io_weight, io_read_bps, io_write_bps)


def _create_options(f):
    options = [
        click.option("--image", "-i", "image", required=True, metavar="REF", shell_complete=complete_images, help="Image reference (NAME[:TAG], NAME@sha256:..., ID prefix)."),
        click.option("--cpus", type=int, help="Virtual CPUs (default: the image's)."),
        click.option("--memory", "-m", metavar="SIZE", help="Memory, e.g. 512M or 2G (default: the image's)."),
        click.option("--disk", metavar="SIZE", help="Grow the disk to SIZE (the image's size by default)."),
        click.option("--port", "-p", "ports", multiple=True, metavar="[127.0.0.1:]HOST:GUEST[/udp]", help="Forward a host port on 127.0.0.1 to the guest (repeatable)."),
        click.option("--volume", "-v", "volumes", multiple=True, metavar="HOST_DIR:GUEST_DIR[:ro]", help="Share a host directory with the guest, mounted at boot (repeatable)."),
        click.option("--mount", "mounts", multiple=True, metavar="type=bind,source=DIR,target=DIR[,readonly]", help="Share a host directory, Docker's long form (repeatable)."),
        click.option("--max-cpus", type=int, help="Most vCPUs 'vmctl update --cpus' may hot-plug (default: --cpus)."),
        *_limit_options(),
        click.option("--ssh-key", "ssh_keys", multiple=True, type=click.Path(exists=True, dir_okay=False), help="Also authorise this public key file (repeatable)."),
        click.option("--user-data", type=click.Path(exists=True, dir_okay=False), help="cloud-init user-data (#cloud-config or a script)."),
        click.option("--network", metavar="NET", help="Attach to this libvirt network (system mode)."),
        click.option("--bridge", metavar="BR", help="Attach to this host bridge (system mode)."),
        click.option("--profile", metavar="P", help="Machine profile (templates/profiles, or your own)."),
        click.option("--restrict-network/--no-restrict-network", "restrict", default=None, help="User-mode networking: the guest reaches nothing outside (forwarded ports still work)."),
        click.option("--user", "-u", "user", metavar="USER", help="Log in as USER, made by the seed (default: the image's user, else 'vmctl')."),
        click.option("--firmware", type=click.Choice(["bios", "uefi"]), help="Boot firmware, among what the image supports (default: the image's)."),
        click.option("--secure-boot", is_flag=True, help="UEFI secure boot (keys enrolled)."),
        click.option("--tpm", is_flag=True, help="An emulated TPM 2.0 (swtpm)."),
        click.option("--ip", metavar="ADDR/PREFIX", help="Static address through the seed's network-config (libvirt network or bridge)."),
        click.option("--gateway", metavar="ADDR", help="Default route with --ip."),
        click.option("--dns", multiple=True, metavar="ADDR", help="Name server with --ip (repeatable)."),
        click.option("--cold", is_flag=True, help="Boot the image even when it carries a checkpoint (default: restore it, a warm start)."),
        click.option("--uuid", hidden=True),
        click.option("--ssh-port", type=click.IntRange(1, 65535), hidden=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _request(name, image, memory, disk, ports, ssh_keys, user_data, dns, volumes, mounts, cpu_shares,
             cpu_quota_percent, memory_limit, io_weight, io_read_bps, io_write_bps, **plain):
    """The CreateRequest of `create`/`run`: files read, sizes and ports parsed here; the other
    options (`plain`, named as the request's fields) are passed as they are, checked by the plan."""
    from vmctl.core.create import CreateRequest
    from vmctl.core.ports import parse_port
    from vmctl.core.volumes import parse_mount, parse_volume
    from vmctl.units import parse_size
    from vmctl.userfiles import read_text

    keys = []
    for path in ssh_keys:
        text = read_text(path, "public key file").strip()
        if not text or "PRIVATE KEY" in text:
            raise UsageError(f"{path} is not a public key (give the .pub file)")
        keys.extend(line.strip() for line in text.splitlines() if line.strip())
    return CreateRequest(
        name=name,
        image=image,
        memory_bytes=parse_size(memory, "memory", default_unit="m", maximum=16 << 40) if memory else None,
        disk_bytes=parse_size(disk, "disk size", default_unit="g", maximum=64 << 40) if disk else None,
        ports=tuple(parse_port(p) for p in ports),
        ssh_keys=tuple(keys),
        user_data=read_text(user_data, "user-data file") if user_data else None,
        dns=tuple(dns),
        volumes=tuple(parse_volume(v) for v in volumes) + tuple(parse_mount(m) for m in mounts),
        limits=limits_from_options(cpu_shares, cpu_quota_percent, memory_limit, io_weight, io_read_bps, io_write_bps),
        **plain,
    )


@click.command()
@click.argument("name")
@_create_options
@click.option("--print-xml", is_flag=True, help="Print the domain XML that would be defined, and touch nothing.")
@pass_app
def create(app: App, name, print_xml, **opts):
    """Create a VM from an image (a copy-on-write disk, a cloud-init seed, a libvirt domain)."""
    from vmctl.core import create as core

    request = _request(name, **opts)
    session = _placed(app, request)
    if print_xml:
        click.echo(core.print_xml(session, request), nl=False)
        return
    inst = core.create(session, request)
    click.echo(inst.name)


@click.command()
@click.argument("name")
@_create_options
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds to wait.")
@click.option("--wait", "wait_for", type=click.Choice(WAIT_CHOICES), default="ssh", show_default=True,
              help="ssh: until SSH lets vmctl in; cloud-init: also until cloud-init has finished (its errors reported).")
@click.option("--no-wait", is_flag=True, help="Return once started.")
@pass_app
def run(app: App, name, timeout, wait_for, no_wait, **opts):
    """Create, start and wait for a VM: the common one-liner."""
    from vmctl.core import create as core

    request = _request(name, **opts)
    inst = core.run(_placed(app, request), request, wait=None if no_wait else wait_for, timeout=timeout)
    click.echo(inst.name)


def _placed(app: App, request):
    """The session to create on: with ``--host auto``, the host placement picks (said on stderr)."""
    if app.session.settings.host != "auto":
        return app.session
    from vmctl.core.placement import place
    from vmctl.units import mib

    image = app.store.resolve(request.image)
    memory = mib(request.memory_bytes) if request.memory_bytes else (
        image.config.get("defaults", {}).get("memory_mib") or 256)
    chosen = place(app.session, memory_mib=memory, layers=tuple(image.layer_digests))
    app.say(f"{request.name}: placed on {chosen.host.name} ({chosen.reason})")
    app.session = app.session.for_host(chosen.host)
    return app.session


def _command_argv(command: tuple[str, ...]) -> list[str]:
    """COMMAND words after NAME; a leading ``--`` (which click keeps here) only ends options."""
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    return argv


def _each(app: App, names, action) -> None:
    """Apply `action` to every name; report failures one line each and exit with the last code."""
    failed: VmctlError | None = None
    for name in names:
        try:
            action(short_name(name))
        except VmctlError as exc:
            if len(names) == 1:
                raise
            click.echo(f"vmctl: error: {exc.message}", err=True)
            failed = exc
    if failed is not None:
        sys.exit(failed.exit_code)


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@pass_app
def start(app: App, names):
    """Start one or more VMs."""
    from vmctl.core import lifecycle

    _each(app, names, lambda n: (lifecycle.start(app.session, n), click.echo(n)))


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@click.option("--timeout", "-t", type=float, default=60, show_default=True, help="Seconds to wait after the ACPI power button before forcing power off.")
@pass_app
def stop(app: App, names, timeout):
    """Shut VMs down gracefully (ACPI power button), forcing power off after the timeout."""
    from vmctl.core import lifecycle

    def one(n):
        how = lifecycle.stop(app.session, n, timeout)
        if how == "forced":
            click.echo(f"vmctl: warning: {n} did not shut down within {timeout:g} s; powered off", err=True)
        click.echo(n)

    _each(app, names, one)


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@pass_app
def kill(app: App, names):
    """Power VMs off at once."""
    from vmctl.core import lifecycle

    _each(app, names, lambda n: (lifecycle.kill(app.session, n), click.echo(n)))


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@click.option("--timeout", "-t", type=float, default=60, show_default=True)
@pass_app
def restart(app: App, names, timeout):
    """Stop and start VMs again."""
    from vmctl.core import lifecycle

    _each(app, names, lambda n: (lifecycle.restart(app.session, n, timeout), click.echo(n)))


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@pass_app
def pause(app: App, names):
    """Freeze VMs' CPUs (memory stays allocated)."""
    from vmctl.core import lifecycle

    _each(app, names, lambda n: (lifecycle.pause(app.session, n), click.echo(n)))


@click.command(name="resume")
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@pass_app
def resume(app: App, names):
    """Unfreeze paused VMs."""
    from vmctl.core import lifecycle

    _each(app, names, lambda n: (lifecycle.resume(app.session, n), click.echo(n)))


@click.command(name="rm")
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@click.option("--force", "-f", is_flag=True, help="Power off running VMs first.")
@pass_app
def rm(app: App, names, force):
    """Remove VMs: domain, disk, seed, snapshots' metadata, pinned host key. Nothing is left."""
    from vmctl.core import remove

    _each(app, names, lambda n: (remove.remove(app.session, n, force=force), click.echo(n)))


@click.command(name="ls")
@click.option("--all", "-a", "show_all", is_flag=True, help="Show stopped VMs too.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="Names only.")
@click.option("--all-hosts", is_flag=True, help="This machine's VMs and every host's (vmctl host ls), with a HOST column.")
@pass_app
def ls(app: App, show_all, as_json, quiet, all_hosts):
    """List VMs (running ones; -a for all)."""
    show_listing(app, show_all=show_all, as_json=as_json, quiet=quiet, all_hosts=all_hosts)


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@click.option("--json", "as_json", is_flag=True, help="(default: inspect always prints JSON)")
@pass_app
def inspect(app: App, names, as_json):
    """Show VMs' details as JSON: image, state, addresses, ports, disk usage, profile."""
    from vmctl.core import listing

    emit_json([listing.inspect(app.session, short_name(n)) for n in names])


@click.command()
@click.argument("name", shell_complete=complete_vms)
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the console writes.")
@click.option("--tail", "-n", type=int, help="Only the last N lines.")
@pass_app
def logs(app: App, name, follow, tail):
    """Print a VM's serial console log."""
    name = short_name(name)
    from vmctl.core import listing

    listing.logs(app.session, name, follow=follow, tail=tail, out=sys.stdout.buffer)


@click.command()
@click.argument("name", shell_complete=complete_vms)
@pass_app
def console(app: App, name):
    """Attach to a VM's serial console (detach with Ctrl-])."""
    name = short_name(name)
    from vmctl.core import listing

    sys.exit(subprocess.call(listing.console_command(app.session, name)))


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vms)
@click.option("--timeout", type=float, default=300, show_default=True)
@click.option("--wait", "wait_for", type=click.Choice(WAIT_CHOICES), default="ssh", show_default=True,
              help="ssh: until SSH lets vmctl in; cloud-init: also until cloud-init has finished.")
@pass_app
def wait(app: App, names, timeout, wait_for):
    """Wait until VMs answer on SSH with their pinned host key and accept vmctl's key."""
    from vmctl.core import reach

    _each(app, names, lambda n: (reach.wait(app.session, n, timeout, until=wait_for), click.echo(n)))


@click.command()
@click.argument("name", shell_complete=complete_vms)
@pass_app
def ip(app: App, name):
    """Print the address vmctl reaches the VM's SSH server on (HOST or HOST:PORT)."""
    name = short_name(name)
    from vmctl.core import reach

    host, port = reach.address(app.session, name)
    click.echo(host if port == 22 else f"{host}:{port}")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name", shell_complete=complete_vms)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--print-command", is_flag=True, help="Print an equivalent OpenSSH command line instead.")
@pass_app
def ssh(app: App, name, command, print_command):
    """Open a shell in the VM, or run COMMAND (after --)."""
    name = short_name(name)
    from vmctl.core import reach

    if print_command:
        click.echo(shlex.join(reach.ssh_command(app.session, name)))
        return
    code = reach.ssh(app.session, name, _command_argv(command), stdin=sys.stdin.buffer, stdout=sys.stdout.buffer,
                     stderr=sys.stderr.buffer, terminal=sys.stdin.isatty())
    sys.exit(code)


@click.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name", shell_complete=complete_vms)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--root", is_flag=True, help="Run COMMAND as root (through sudo when the login user is not root).")
@pass_app
def exec_(app: App, name, command, root):
    """Run COMMAND in the VM as its login user; its exit status, stdout and stderr are passed through."""
    name = short_name(name)
    from vmctl.core import reach

    argv = _command_argv(command)
    if not argv:
        raise UsageError("exec needs a command: vmctl exec NAME -- COMMAND [ARG...]")
    sys.exit(reach.exec_(app.session, name, argv, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer, root=root))


@click.command()
@click.argument("src")
@click.argument("dst")
@pass_app
def cp(app: App, src, dst):
    """Copy files between the host and a VM: one side is NAME:PATH."""
    from vmctl.core import reach

    report = reach.copy(app.session, src, dst)
    for line in report.warnings() if report else ():
        click.echo(f"vmctl: warning: {line}", err=True)


def register(group: click.Group) -> None:
    for command in (create, run, start, stop, kill, restart, pause, resume, rm, ls, inspect, logs,
                    console, wait, ip, ssh, exec_, cp):
        group.add_command(command)
    group.add_command(resume, name="unpause")
