"""The one place vmctl runs ``qemu-img``.

Rules kept here so no caller can forget them:

- the format of every image opened is given explicitly (``-f`` for the image, ``-F`` for a backing
  file): qemu-img never probes, so a raw guest disk that starts with a qcow2 header can never be
  reinterpreted as one (the classic backing-file escape);
- arguments are lists handed to ``execve``, never a shell string;
- every image path reaches qemu-img as an absolute local path (:func:`local`): qemu-img reads
  ``json:{...}``, ``nbd:...``, ``file:...`` and any other ``PROTOCOL:`` prefix as a protocol, so a
  user's file named ``json:{"driver":...}`` must never be passed as it is. A backing file name is
  either such a path or a plain sibling name without ``:`` (the store's relative layer names);
- machine output (``--output json``) is parsed, human output is not;
- a failure raises :class:`~vmctl.errors.ExternalToolError` carrying qemu-img's own message;
- the child gets ``PR_SET_PDEATHSIG`` so a killed vmctl does not leave a qemu-img writing on.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from vmctl.errors import ExternalToolError, ResourceError

TOOL = "qemu-img"
FORMATS = ("qcow2", "raw")
_PR_SET_PDEATHSIG = 1
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

PercentFn = Callable[[float], None]


def _binary() -> str:
    path = shutil.which(TOOL)
    if path is None:
        raise ExternalToolError(TOOL, "not installed (Debian package 'qemu-utils')")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    return env


def _message(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln[len("qemu-img: "):] if ln.startswith("qemu-img: ") else ln for ln in lines]
    return "; ".join(lines) or f"exit status {returncode}"


def local(path: Path | str) -> str:
    """`path` as an absolute local file path, which qemu-img never parses as a protocol (it looks
    for a ``PROTOCOL:`` prefix only before the first ``/``)."""
    text = os.fspath(path)
    if not text or "\0" in text:
        raise ValueError(f"bad image path {text!r}")
    return os.path.abspath(text)


def _backing(backing: Path | str) -> str:
    """A backing file for ``-b``/``-B``: an absolute path, or a plain name relative to the image."""
    text = os.fspath(backing)
    if isinstance(backing, Path) or text.startswith("/"):
        return local(backing)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text) or text in (".", ".."):
        raise ValueError(f"bad relative backing file name {text!r}")
    return text


def _failure(stderr: str, returncode: int) -> Exception:
    """qemu-img's failure as a vmctl error: a full disk is a resource problem, not a tool's."""
    message = _message(stderr, returncode)
    if "No space left on device" in message or "Disk quota exceeded" in message:
        return ResourceError(f"{TOOL}: {message}")
    return ExternalToolError(TOOL, message)


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}")
    return fmt


def run(args: Sequence[str], *, ok_codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
    """Run ``qemu-img ARGS``; raise ExternalToolError unless its exit status is in `ok_codes`."""
    cmd = [_binary(), *[str(a) for a in args]]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    if proc.returncode not in ok_codes:
        raise _failure(proc.stderr, proc.returncode)
    return proc


def _json(proc: subprocess.CompletedProcess):
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ExternalToolError(TOOL, f"unreadable JSON output ({exc})") from None


def no_backing_spec(path: Path, fmt: str = "qcow2") -> str:
    """A ``json:`` image spec opening `path` as `fmt` *without* its backing file.

    Used to check a layer that sits in a temporary directory where its relative backing name does
    not resolve. The path is JSON-encoded, so no character in it can inject options.
    """
    spec = {"driver": _fmt(fmt), "file": {"driver": "file", "filename": local(path)}}
    if fmt == "qcow2":
        spec["backing"] = None
    return "json:" + json.dumps(spec, separators=(",", ":"))


def _spec(text: Path | str) -> str:
    text = os.fspath(text)
    if not text.startswith("json:"):
        raise ValueError("an image spec must be a json: spec")
    return text


def snapshot_spec(path: Path, fmt: str = "qcow2") -> str:
    """A ``json:`` spec opening `path` as `fmt` with its backing chain (for ``qemu-img snapshot``,
    which has no ``-f``: the spec names the driver, so nothing is probed)."""
    return "json:" + json.dumps({"driver": _fmt(fmt), "file": {"driver": "file", "filename": local(path)}},
                                separators=(",", ":"))


def snapshot_table(path: Path) -> dict[str, dict]:
    """The internal snapshot table of qcow2 `path` (name -> qemu-img's entry), read with
    force-share so a running VM's disk can be read; {} when the file does not exist."""
    if not Path(path).exists():
        return {}
    data = info(path, "qcow2", force_share=True)
    return {s["name"]: s for s in data.get("snapshots") or []}


def delete_snapshot(path: Path, name: str) -> None:
    """``qemu-img snapshot -d`` on a stopped VM's disk (no -f exists: the json: spec names the
    driver, so nothing is probed)."""
    run(["snapshot", "-d", name, snapshot_spec(path)])


def create_snapshot(path: Path, name: str) -> None:
    """``qemu-img snapshot -c`` on a stopped VM's disk."""
    run(["snapshot", "-c", name, snapshot_spec(path)])


def dd_head(path: Path, fmt: str, out: Path, block: int, count: int) -> None:
    """Write the first `count` blocks of `block` bytes of image `path` (`fmt`) to the raw file `out`."""
    run(["dd", "-f", _fmt(fmt), "-O", "raw", f"bs={int(block)}", f"count={int(count)}",
         f"if={local(path)}", f"of={local(out)}"])


def version() -> str:
    out = run(["--version"]).stdout
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else out.strip()


def info(path: Path, fmt: str, *, backing_chain: bool = False, force_share: bool = False):
    """``qemu-img info -f FMT --output json``: a dict, or a list of dicts (top first) with a chain."""
    args = ["info", "-f", _fmt(fmt), "--output", "json"]
    if backing_chain:
        args.append("--backing-chain")
    if force_share:
        args.append("-U")
    return _json(run([*args, local(path)]))


def create(
    path: Path, size: int | None = None, *, fmt: str = "qcow2", backing: str | Path | None = None,
    backing_fmt: str | None = None, options: dict[str, str] | None = None, unsafe_size: bool = False,
) -> None:
    """``qemu-img create``; an overlay always names its backing format (``-F``).

    With a backing file and no `size`, qemu-img opens the backing file to learn its size (so a
    relative backing name must resolve from `path`'s directory).
    """
    args = ["create", "-q", "-f", _fmt(fmt)]
    if backing is not None:
        if backing_fmt is None:
            raise ValueError("an overlay needs an explicit backing format")
        args += ["-b", _backing(backing), "-F", _fmt(backing_fmt)]
        if unsafe_size:
            args.append("-u")
    opts = dict(options or {})
    if opts:
        args += ["-o", _options(opts)]
    args.append(local(path))
    if size is not None:
        args.append(str(int(size)))
    run(args)


def _options(opts: dict[str, str]) -> str:
    parts = []
    for key, value in opts.items():
        value = str(value)
        if not re.fullmatch(r"[a-z0-9_.-]+", key) or "," in value:
            raise ValueError(f"bad qemu-img option {key}={value!r}")
        parts.append(f"{key}={value}")
    return ",".join(parts)


def convert(
    src: Path | str, dst: Path, *, src_fmt: str, dst_fmt: str = "qcow2",
    options: dict[str, str] | None = None, backing: str | Path | None = None,
    backing_fmt: str | None = None, compress: bool = False,
    progress: PercentFn | None = None, src_spec: bool = False,
) -> None:
    """``qemu-img convert -f SRC_FMT -O DST_FMT``, reporting percent done to `progress`.

    With `backing`, the output is an overlay of it (``-B``/``-F``) holding only what the source's
    top layer holds. `src_spec` passes `src` through as a ``json:`` spec (no ``-f``; the spec names
    its driver).
    """
    args = ["convert", "-p", "-O", _fmt(dst_fmt)]
    if not src_spec:
        args += ["-f", _fmt(src_fmt)]
    if backing is not None:
        if backing_fmt is None:
            raise ValueError("an overlay needs an explicit backing format")
        args += ["-B", _backing(backing), "-F", _fmt(backing_fmt)]
    if compress:
        args.append("-c")
    if options:
        args += ["-o", _options(options)]
    args += [_spec(src) if src_spec else local(src), local(dst)]
    _run_with_progress(args, progress)


def _run_with_progress(args: list[str], progress: PercentFn | None) -> None:
    cmd = [_binary(), *args]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=_env(),
            preexec_fn=_die_with_parent,
        )
        try:
            buf = b""
            last = -1.0
            while True:
                chunk = proc.stdout.read1(4096)
                if not chunk:
                    break
                buf += chunk
                *done, buf = re.split(rb"[\r\n]", buf)
                for piece in done:
                    match = _PROGRESS.search(piece)
                    if match and progress is not None:
                        pct = float(match.group(1))
                        if pct != last:
                            last = pct
                            progress(pct)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if rc != 0:
        raise _failure(stderr, rc)


def check(path: Path | str, fmt: str = "qcow2", *, spec: bool = False, force_share: bool = False) -> dict:
    """``qemu-img check --output json``; returns its report (see :func:`is_clean`).

    Exit status 2 (corruptions) and 3 (leaked clusters) still produce a report and are returned;
    status 1 (could not check) and anything else raise.
    """
    args = ["check", "--output", "json"]
    if not spec:
        args += ["-f", _fmt(fmt)]
    if force_share:
        args.append("-U")
    proc = run([*args, _spec(path) if spec else local(path)], ok_codes=(0, 2, 3))
    report = _json(proc)
    report["exit-status"] = proc.returncode
    return report


def is_clean(report: dict) -> bool:
    return (
        report.get("exit-status", 0) == 0 and not report.get("check-errors")
        and not report.get("corruptions") and not report.get("leaks")
    )


def rebase(path: Path, backing: str | Path, backing_fmt: str | None, *, unsafe: bool = False,
           fmt: str = "qcow2") -> None:
    """``qemu-img rebase -f FMT [-u] -b BACKING -F BACKING_FMT``; ``backing=""`` drops the backing file."""
    args = ["rebase", "-q", "-f", _fmt(fmt)]
    if unsafe:
        args.append("-u")
    args += ["-b", _backing(backing) if str(backing) else ""]
    if str(backing):
        if backing_fmt is None:
            raise ValueError("a backing file needs an explicit backing format")
        args += ["-F", _fmt(backing_fmt)]
    args.append(local(path))
    run(args)


def resize(path: Path, size: int, *, fmt: str = "qcow2", shrink: bool = False) -> None:
    args = ["resize", "-q", "-f", _fmt(fmt)]
    if shrink:
        args.append("--shrink")
    run([*args, local(path), str(int(size))])


def measure(src: Path, src_fmt: str, *, out_fmt: str = "qcow2",
            options: dict[str, str] | None = None) -> dict:
    """``qemu-img measure``: ``{"required": bytes, "fully-allocated": bytes}`` for a conversion."""
    args = ["measure", "--output", "json", "-f", _fmt(src_fmt), "-O", _fmt(out_fmt)]
    if options:
        args += ["-o", _options(options)]
    return _json(run([*args, local(src)]))


def commit(path: Path, *, fmt: str = "qcow2", base: Path | None = None, drop: bool = False) -> None:
    """``qemu-img commit``: write `path`'s data into its backing file (or `base`)."""
    args = ["commit", "-q", "-f", _fmt(fmt)]
    if base is not None:
        args += ["-b", local(base)]
    if drop:
        args.append("-d")
    run([*args, local(path)])
