"""Parsing a Vmfile into steps: Dockerfile syntax, checked line by line, every error naming its line.

Syntax: one instruction per line (keywords in any case), ``#`` comment lines, a trailing ``\\``
continues a line. Instructions: ``FROM ref``; ``ARG name[=default]`` (before or after FROM);
``RUN [--root] command`` (shell form, or an exec form ``["argv", ...]``); ``COPY [--chown=U[:G]]
src... dest`` (a directory when it ends with ``/`` or there are several sources); ``ENV k=v ...`` (or ``ENV k v``); ``WORKDIR dir``; ``USER name``; ``LABEL k=v ...``;
``EXPOSE port[/tcp|/udp] ...``; ``CMD`` / ``ENTRYPOINT`` (shell or exec form: the service the image
starts at boot); ``CHECKPOINT`` (last, no arguments: boot the result once and save the running
machine into the image, so VMs of it start warm — vmctl.core.checkpoint). ``${NAME}`` and ``$NAME`` of ARGs and ENVs are substituted in every instruction but
RUN, whose shell gets them as its environment (as Docker does).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field

from vmctl.errors import UsageError

MAX_BYTES = 1 << 20
KEYWORDS = ("FROM", "ARG", "RUN", "COPY", "ENV", "WORKDIR", "USER", "LABEL", "EXPOSE", "CMD", "ENTRYPOINT",
            "CHECKPOINT")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class VmfileError(UsageError):
    """A Vmfile that cannot be built: ``FILE:LINE: what``."""


@dataclass(frozen=True)
class Step:
    """One instruction, with ARG/ENV substitution done (RUN: the shell's environment instead)."""
    line: int
    keyword: str
    text: str                       # the instruction as written (continuations joined)
    args: tuple = ()                # per keyword: see `parse`
    env: tuple[tuple[str, str], ...] = ()    # ARGs and ENVs in effect (RUN, COPY, CMD)
    user: str | None = None         # USER in effect
    workdir: str = "/"


@dataclass
class Vmfile:
    base: str                       # FROM, substituted
    steps: list[Step] = field(default_factory=list)
    path: str = "Vmfile"


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue   # a comment inside a continued instruction, as Docker allows
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1].rstrip() + " "
            continue
        out.append((start, (buf + stripped).strip()))
        buf = ""
    if buf:
        out.append((start, buf.strip()))
    return out


class _Parser:
    def __init__(self, path: str, build_args: dict[str, str]):
        self.path, self.build_args = path, dict(build_args)
        self.args: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.user: str | None = None
        self.workdir = "/"
        self.used_args: set[str] = set()

    def fail(self, line: int, message: str) -> VmfileError:
        return VmfileError(f"{self.path}:{line}: {message}")

    def subst(self, line: int, text: str) -> str:
        scope = {**self.args, **self.env}

        def one(m: re.Match) -> str:
            name = m.group(1) or m.group(3)
            if m.group(2) is not None and not scope.get(name):
                return m.group(2)   # ${NAME:-default}: unset or empty, as the shell has it
            if name in scope:
                return scope[name]
            raise self.fail(line, f"${name} is not set (declare it with ARG or ENV)")
        return _VAR.sub(one, text)

    def pairs(self, line: int, rest: str, what: str) -> list[tuple[str, str]]:
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise self.fail(line, f"{what}: {exc}") from None
        if len(words) == 2 and "=" not in words[0]:
            words = [f"{words[0]}={words[1]}"]   # the legacy ENV k v form
        out = []
        for w in words:
            key, sep, value = w.partition("=")
            if not sep or not key:
                raise self.fail(line, f"{what} takes KEY=VALUE pairs, not {w!r}")
            out.append((key, self.subst(line, value)))
        return out

    def exec_or_shell(self, line: int, rest: str) -> tuple[str, ...] | str:
        if rest.startswith("["):
            try:
                argv = json.loads(rest)
            except ValueError:
                raise self.fail(line, "an exec form must be a JSON array of strings") from None
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise self.fail(line, "an exec form must be a non-empty JSON array of strings")
            return tuple(argv)
        if not rest:
            raise self.fail(line, "a command is missing")
        return rest


def parse(text: str, *, path: str = "Vmfile", build_args: dict[str, str] | None = None) -> Vmfile:
    """The steps of Vmfile `text`; VmfileError (``PATH:LINE: ...``) on the first bad line, and for
    a --build-arg no ARG declares."""
    if len(text.encode()) > MAX_BYTES:
        raise VmfileError(f"{path}: larger than {MAX_BYTES >> 10} KiB")
    p = _Parser(path, build_args or {})
    base = None
    steps: list[Step] = []
    for line, instruction in _logical_lines(text):
        keyword, _, rest = instruction.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword not in KEYWORDS:
            raise p.fail(line, f"unknown instruction {keyword!r}: one of {', '.join(KEYWORDS)}")
        if keyword == "ARG":
            name, sep, default = rest.partition("=")
            if not _NAME.fullmatch(name):
                raise p.fail(line, f"ARG needs a NAME[=default], not {rest!r}")
            if name in p.build_args:
                p.args[name] = p.build_args[name]
                p.used_args.add(name)
            elif sep:
                p.args[name] = p.subst(line, default)
            else:
                p.args[name] = ""
            continue
        if keyword == "FROM":
            if base is not None:
                raise p.fail(line, "one FROM only (multi-stage builds are not supported)")
            words = rest.split()
            if len(words) != 1:
                raise p.fail(line, "FROM takes one image reference" + (" (no AS: one stage only)" if len(words) > 1 else ""))
            base = p.subst(line, words[0])
            continue
        if base is None:
            raise p.fail(line, f"{keyword} before FROM")
        if steps and steps[-1].keyword == "CHECKPOINT":
            raise p.fail(line, "CHECKPOINT must be the last instruction (it saves the finished machine)")
        args: tuple = ()
        if keyword == "CHECKPOINT" and rest:
            raise p.fail(line, "CHECKPOINT takes no arguments")
        if keyword == "RUN":
            root = False
            if rest.startswith("--root"):
                root, rest = True, rest[len("--root"):].strip()
            elif rest.startswith("--"):
                raise p.fail(line, f"unknown RUN option {rest.split()[0]!r}: --root")
            args = (root, p.exec_or_shell(line, rest))
        elif keyword == "COPY":
            chown = None
            if rest.startswith("--chown="):
                opt, _, rest = rest.partition(" ")
                chown = p.subst(line, opt[len("--chown="):])
                owner, _, group = chown.partition(":")
                if not _USER.fullmatch(owner) or (group and not _USER.fullmatch(group)):
                    raise p.fail(line, f"--chown takes USER[:GROUP], not {chown!r}")
            elif rest.startswith("--"):
                raise p.fail(line, f"unknown COPY option {rest.split()[0]!r}: --chown")
            words = list(p.exec_or_shell(line, rest)) if rest.startswith("[") else shlex.split(rest)
            words = [p.subst(line, w) for w in words]
            if len(words) < 2:
                raise p.fail(line, "COPY needs at least one source and a destination")
            sources, dest = words[:-1], words[-1]
            for s in sources:
                norm = posixpath.normpath(s)
                if s.startswith("/") or norm == ".." or norm.startswith("../"):
                    raise p.fail(line, f"COPY source {s!r} is outside the build context")
            into_dir = dest.endswith("/") or len(sources) > 1   # Docker's rule for a directory
            dest = posixpath.normpath(posixpath.join(p.workdir, dest))
            args = (tuple(sources), dest, chown, into_dir)
        elif keyword == "ENV":
            for key, value in p.pairs(line, rest, "ENV"):
                if not _NAME.fullmatch(key):
                    raise p.fail(line, f"invalid ENV name {key!r}")
                p.env[key] = value
            args = tuple(sorted(p.env.items()))
        elif keyword == "WORKDIR":
            target = p.subst(line, rest)
            if not target:
                raise p.fail(line, "WORKDIR needs a directory")
            p.workdir = posixpath.normpath(posixpath.join(p.workdir, target))
            args = (p.workdir,)
        elif keyword == "USER":
            name = p.subst(line, rest)
            if not _USER.fullmatch(name):
                raise p.fail(line, f"USER takes a user name, not {name!r}")
            p.user = name
            args = (name,)
        elif keyword == "LABEL":
            args = tuple(p.pairs(line, rest, "LABEL"))
        elif keyword == "EXPOSE":
            ports = []
            for w in p.subst(line, rest).split():
                port, _, proto = w.partition("/")
                if not port.isdigit() or not 1 <= int(port) <= 65535 or proto not in ("", "tcp", "udp"):
                    raise p.fail(line, f"EXPOSE takes PORT[/tcp|/udp], not {w!r}")
                ports.append((int(port), proto or "tcp"))
            if not ports:
                raise p.fail(line, "EXPOSE needs a port")
            args = tuple(ports)
        elif keyword in ("CMD", "ENTRYPOINT"):
            args = (p.exec_or_shell(line, rest),)
        steps.append(Step(line, keyword, instruction, args, tuple(sorted({**p.args, **p.env}.items())),
                          p.user, p.workdir))
    if base is None:
        raise VmfileError(f"{path}: no FROM instruction")
    unused = sorted(set(p.build_args) - p.used_args)
    if unused:
        raise VmfileError(f"{path}: --build-arg {unused[0]} is declared by no ARG")
    return Vmfile(base=base, steps=steps, path=path)
