"""Shell completion (click's, for bash, zsh and fish): the names a command's arguments take.

Each completer reads vmctl's own records on disk -- instance directories, the image index,
snapshot sidecars, stored registry credentials -- and never libvirt, so a TAB stays instant and
works with the daemon down. A completer never raises: a damaged store completes nothing.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class


def _settings(ctx: click.Context):
    from vmctl.config import load_settings

    root = ctx.find_root().params
    return load_settings(mode=root.get("mode"), uri=root.get("uri"), root=root.get("root"))


def _items(names, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in sorted(set(names)) if n.startswith(incomplete)]


def complete_vms(ctx, _param, incomplete: str) -> list[CompletionItem]:
    """VM names of this store."""
    try:
        from vmctl.core.records import list_records

        return _items((r.name for r in list_records(_settings(ctx).paths.instances)), incomplete)
    except Exception:  # noqa: BLE001 - a completion never fails the shell
        return []


def complete_images(ctx, _param, incomplete: str) -> list[CompletionItem]:
    """Image references (NAME:TAG) of this store."""
    try:
        from vmctl.storage.store import ImageStore

        store = ImageStore(_settings(ctx).root)
        return _items((tag for image in store.images() for tag in image.repo_tags), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_snapshots(ctx, _param, incomplete: str) -> list[CompletionItem]:
    """Snapshot names of the VM named earlier on the command line."""
    try:
        from vmctl.core.snapshot_records import load_sidecar_file

        vm = ctx.params.get("name")
        if not vm:
            return []
        return _items(load_sidecar_file(_settings(ctx).paths.instance_dir(vm)), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_hosts(ctx, _param, incomplete: str) -> list[CompletionItem]:
    """Registry hosts: those logged in to, and those the config gives mirrors for."""
    try:
        from vmctl.registry.auth import AuthStore

        settings = _settings(ctx)
        hosts = list(AuthStore().hosts()) + [host for host, _ in settings.registry_mirrors]
        return _items(hosts, incomplete)
    except Exception:  # noqa: BLE001
        return []


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str):
    """Print the shell completion script: eval "$(vmctl completion bash)" (or zsh, fish)."""
    cls = get_completion_class(shell)
    click.echo(cls(ctx.find_root().command, {}, "vmctl", "_VMCTL_COMPLETE").source())


def register(group: click.Group) -> None:
    group.add_command(completion)
