"""Image commands (filled by the image store work)."""

import click


def register(group: click.Group) -> None:
    pass
