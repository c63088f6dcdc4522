"""``vmctl update``: a VM's resource limits, memory and vCPUs, live."""

from __future__ import annotations

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json
from vmctl.cli.vms import _limit_options, limits_from_options
from vmctl.cli.complete import complete_vms


def _with_limit_options(f):
    for option in reversed(_limit_options()):
        f = option(f)
    return f


@click.command()
@click.argument("name", shell_complete=complete_vms)
@_with_limit_options
@click.option("--memory", "-m", metavar="SIZE", help="Memory the guest has (the balloon), up to what it was created with.")
@click.option("--cpus", type=int, help="vCPUs online (hot-plugged), up to the VM's --max-cpus.")
@pass_app
def update(app: App, name, memory, cpus, **limit_opts):
    """Change a VM's limits, memory or vCPUs: live when it runs, and for its next boots."""
    from vmctl.core.update import UpdateRequest, update as core_update
    from vmctl.units import parse_size

    request = UpdateRequest(
        limits=limits_from_options(**limit_opts),
        memory_bytes=parse_size(memory, "memory", default_unit="m", maximum=16 << 40) if memory else None,
        cpus=cpus,
    )
    result = core_update(app.session, name, request)
    if app.json:
        emit_json(result)
    else:
        click.echo(name)


def register(group: click.Group) -> None:
    group.add_command(update)
