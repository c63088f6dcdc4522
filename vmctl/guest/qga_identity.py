"""A warm-started cloud guest's new identity, applied through its qemu-guest-agent (``qga-1``).

Cloud images run QEMU's guest agent, not vmctl's; it can run a program as root (``guest-exec``)
and set the clock (``guest-set-time``). `apply_identity` sends one POSIX shell script that writes
the clone's hostname, its SSH host key (the one vmctl pinned), authorised keys for the login user,
machine-id and MAC address, mixes host bytes into the RNG and restarts OpenSSH with every session
of the checkpoint ended — while the clone's link is still down. `renew_lease` asks for a DHCP
lease for the new MAC once the link is up (libvirt networks).

The agent is reached through `call(command, arguments, timeout)` (the backend's, so this room
imports no libvirt). The guest is hostile: its answers are checked field by field, its output is
read only for a one-line message, and the wait is bounded.
"""

from __future__ import annotations

import base64
import shlex
import time
from typing import Callable

from vmctl.errors import GuestNotReady
from vmctl.guest.agent import Identity

Call = Callable[..., object]
EXEC_TIMEOUT = 60.0
#: what a guest agent must allow for a clone of it to take a new identity
NEEDED = ("guest-exec", "guest-exec-status", "guest-set-time")


def script(ident: Identity, login: str) -> str:
    """The shell script that gives a restored cloud guest `ident` (every value quoted)."""
    q = shlex.quote
    short = ident.hostname.split(".", 1)[0]
    keys = "".join(f"{k.strip()}\n" for k in ident.authorized_keys)
    private = ident.host_key.private_openssh.rstrip("\n") + "\n"
    return f"""umask 077
h={q(ident.hostname)}; short={q(short)}; login={q(login)}
hostnamectl set-hostname "$h" 2>/dev/null
echo "$short" >/etc/hostname; hostname "$short"
if grep -q '^127\\.0\\.1\\.1' /etc/hosts; then
    sed -i "s/^127\\.0\\.1\\.1.*/127.0.1.1\\t$h $short/" /etc/hosts
else
    printf '127.0.1.1\\t%s %s\\n' "$h" "$short" >>/etc/hosts
fi
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
printf '%s' {q(private)} >/etc/ssh/ssh_host_ed25519_key
printf '%s\\n' {q(ident.host_key.public)} >/etc/ssh/ssh_host_ed25519_key.pub
chmod 644 /etc/ssh/ssh_host_ed25519_key.pub
echo {q(ident.machine_id)} >/etc/machine-id
printf '%s' {q(ident.random.hex())} >/dev/urandom
home=$(getent passwd "$login" | cut -d: -f6)
if [ -n "$home" ]; then
    mkdir -p "$home/.ssh"
    printf '%s' {q(keys)} >"$home/.ssh/authorized_keys"
    chown -R "$login:" "$home/.ssh"; chmod 700 "$home/.ssh"; chmod 600 "$home/.ssh/authorized_keys"
fi
for dev in /sys/class/net/*; do
    [ -e "$dev/device" ] || continue
    ip link set dev "${{dev##*/}}" address {q(ident.mac)} || echo "could not set the MAC address" >&2
    break
done
pkill -KILL -f '^sshd: ' 2>/dev/null
systemctl restart ssh 2>/dev/null || systemctl restart sshd 2>/dev/null || service ssh restart
"""


RENEW = """for dev in /sys/class/net/*; do
    [ -e "$dev/device" ] || continue
    n=${dev##*/}
    networkctl renew "$n" 2>/dev/null || { dhclient -r "$n" && dhclient "$n"; } 2>/dev/null
    break
done
exit 0
"""


def check_agent(call: Call, vm: str) -> None:
    """GuestNotReady unless the guest agent answers and allows what a clone needs."""
    info = call("guest-info", None, timeout=10)
    cmds = info.get("supported_commands") if isinstance(info, dict) else None
    enabled = {c.get("name") for c in cmds if isinstance(c, dict) and c.get("enabled")} if isinstance(cmds, list) else set()
    missing = [c for c in NEEDED if c not in enabled]
    if missing:
        raise GuestNotReady(f"{vm}: its guest agent does not allow {', '.join(missing)}, which a clone needs "
                            "to take a new identity")


def run_script(call: Call, vm: str, text: str, *, timeout: float = EXEC_TIMEOUT) -> None:
    """Run `text` with /bin/sh as root in the guest; GuestNotReady unless it exits 0 in time."""
    started = call("guest-exec", {"path": "/bin/sh", "arg": ["-c", text], "capture-output": True}, timeout=10)
    pid = started.get("pid") if isinstance(started, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise GuestNotReady(f"{vm}: its guest agent did not start the identity script")
    deadline = time.monotonic() + timeout
    while True:
        status = call("guest-exec-status", {"pid": pid}, timeout=10)
        if isinstance(status, dict) and status.get("exited") is True:
            break
        if time.monotonic() > deadline:
            raise GuestNotReady(f"{vm}: the identity script did not finish within {timeout:.0f} s")
        time.sleep(0.05)
    code = status.get("exitcode")
    if code != 0:
        err = status.get("err-data") if isinstance(status.get("err-data"), str) else ""
        try:
            text_err = base64.b64decode(err[:4096], validate=False).decode("utf-8", "replace")
        except ValueError:
            text_err = ""
        line = " ".join("".join(ch for ch in text_err if ch.isprintable() or ch == " ").split())[:200]
        raise GuestNotReady(f"{vm}: the identity script failed (exit {code!r}){': ' + line if line else ''}")


def apply_identity(call: Call, vm: str, ident: Identity, login: str) -> None:
    """Set the clock, then run the identity script (the clone's link is down meanwhile)."""
    call("guest-set-time", {"time": int(ident.now * 1e9)}, timeout=10)
    run_script(call, vm, script(ident, login))


def renew_lease(call: Call, vm: str) -> None:
    """A DHCP lease for the new MAC (after the link came up)."""
    run_script(call, vm, RENEW, timeout=30)
