"""System-wide commands: version, info."""

from __future__ import annotations

from dataclasses import asdict

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def version(app: App, as_json: bool):
    """Show vmctl's version and its bindings'."""
    from vmctl.core.host_info import version_info

    info = version_info()
    if as_json or app.json:
        emit_json(info)
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


def _mirror_text(mirror: dict) -> str:
    notes = (["insecure"] if mirror["insecure"] else []) + ([mirror["pull"]] if mirror["pull"] != "all" else [])
    return mirror["location"] + (f" ({', '.join(notes)})" if notes else "")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--reprobe", is_flag=True, help="Run the KVM probe again instead of using its cached verdict.")
@pass_app
def info(app: App, as_json: bool, reprobe: bool):
    """Show libvirt and QEMU versions, mode, URI, whether KVM is verified usable, store paths."""
    from vmctl.core.host_info import host_info

    data, error = host_info(app.session, refresh_probe=reprobe)
    if as_json or app.json:
        emit_json(data)
    else:
        lv = data["libvirt"]
        kvm = data["kvm"]
        lines = [
            ("vmctl", data["vmctl"]),
            ("Mode", data["mode"]),
            ("URI", data["uri"]),
            ("Profile", data["profile"]),
            ("libvirt", lv.get("error") or f"{lv['libvirt_daemon']} (library {lv['libvirt_library']})"),
            ("QEMU", data["qemu"] or "not installed"),
            ("KVM", ("usable" if kvm["usable"] else "not usable") + f" ({kvm['reason']}); guests use {kvm['accelerator'].upper()}"),
            ("Data root", data["store"]["root"]),
            ("Images", data["store"]["images"]),
            ("Instances", data["store"]["instances"]),
        ]
        mirrored = [f"{r['registry']} -> {', '.join(_mirror_text(m) for m in r['mirrors'])} ({r['source']})"
                    for r in data["registry_mirrors"]]
        if data.get("registry_mirrors_error"):
            mirrored = [f"error: {data['registry_mirrors_error']}"]
        lines += [("Mirrors" if i == 0 else "", row) for i, row in enumerate(mirrored or ["none"])]
        for key, value in lines:
            click.echo(f"{(key + ':') if key else '':<11} {value}")
    if error is not None:
        raise error


@click.command()
@click.option("--fix", is_flag=True, help="Mend what can be mended safely.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def doctor(app: App, fix: bool, as_json: bool):
    """Find leftovers of killed vmctl processes (half-made VMs, stale holds), here or on --host HOST."""
    if app.session.host is not None:
        from vmctl.core.host_doctor import diagnose
    else:
        from vmctl.core.doctor import diagnose

    findings = diagnose(app.session, fix=fix)
    if as_json or app.json:
        emit_json([asdict(f) for f in findings])
        return
    if not findings:
        click.echo("nothing to mend")
    for f in findings:
        status = "fixed" if f.fixed else ("fixable with --fix" if f.fixable else "needs you")
        click.echo(f"{f.kind}: {f.subject}: {f.detail} [{status}]")


def register(group: click.Group) -> None:
    group.add_command(version)
    group.add_command(info)
    group.add_command(doctor)
