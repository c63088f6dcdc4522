"""Undo stacks: a multi-step change either completes or is undone in reverse order."""

from __future__ import annotations

from typing import Callable


class Transaction:
    """Collect undo actions as steps succeed; on an exception run them newest first.

    Usage::

        with Transaction(warn=session.warn) as tx:
            make_dir(); tx.on_undo(lambda: remove_dir())
            ...

    An undo action that itself fails is reported through `warn` (one line; the session's
    warning sink) and the rest still run, so one stuck step never leaves the others behind.
    """

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._warn = warn or (lambda _line: None)

    def on_undo(self, action: Callable[[], None], label: str = "") -> None:
        self._undo.append((label, action))

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.rollback()
        return False

    def rollback(self) -> None:
        while self._undo:
            label, action = self._undo.pop()
            try:
                action()
            except Exception as err:  # noqa: BLE001 - keep undoing the rest
                self._warn(f"undo {label or action!r} failed: {err}")
