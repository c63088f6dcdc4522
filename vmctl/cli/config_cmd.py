"""``vmctl config show``: the effective settings and where each came from."""

from __future__ import annotations

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json, table


def _value(v) -> object:
    if isinstance(v, tuple):
        return [_value(x) for x in v]
    return str(v) if not isinstance(v, (bool, int, str, type(None))) else v


def effective_settings(settings) -> list[dict]:
    """One row per setting: its name, value and source (a flag, an environment variable, the
    config file, a containers registries.conf, or the default)."""
    from vmctl.core.host_info import registry_mirrors

    where = f"config file ({settings.config_file})" if settings.config_file else "config file"
    rows = []
    for key, source in settings.sources:
        if key == "registries":
            continue
        value = settings.uri if key == "connect" else getattr(settings, key)
        rows.append({"setting": key, "value": _value(value),
                     "source": where if source == "config file" else source})
    rules, error = registry_mirrors(settings)
    for rule in rules:
        rows.append({"setting": f'registries."{rule["registry"]}".mirrors',
                     "value": [m["location"] for m in rule["mirrors"]], "source": rule["source"]})
    if error:
        rows.append({"setting": "registries", "value": None, "source": f"error: {error}"})
    return rows


@click.group(name="config")
def config_group():
    """Show vmctl's settings."""


@config_group.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def config_show(app: App, as_json: bool):
    """The effective settings and where each came from (flag, environment, config file, default)."""
    rows = effective_settings(app.settings)
    if as_json or app.json:
        emit_json(rows)
        return
    table([[r["setting"], ", ".join(map(str, r["value"])) if isinstance(r["value"], list) else str(r["value"]),
            r["source"]] for r in rows], ["SETTING", "VALUE", "SOURCE"])


def register(group: click.Group) -> None:
    group.add_command(config_group)
