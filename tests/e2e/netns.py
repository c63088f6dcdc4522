"""A private ``qemu:///system`` for end-to-end tests: a second libvirtd inside a network namespace.

The machine already runs its own libvirtd (hosted-mode tests and other users share it). System mode
needs things that must never appear in the machine's own namespace: a libvirt NAT network with its
bridge, dnsmasq and iptables rules. So `PrivateLibvirt` builds, and later removes, a sandbox:

- a network namespace ``vmctl-e2e-<random>`` with only ``lo`` up (``ip netns add``); the NAT
  network's bridge, dnsmasq and firewall rules live there and nothing there has a route out;
- a private mount namespace (``nsenter --net=<netns> unshare -m --propagation private``) with a
  sysfs of the network namespace on /sys (libvirt configures its bridge through /sys/class/net)
  carrying the machine's cgroup mounts over (libvirt's cpu/memory/blkio tuning needs them; a bare
  ``ip netns exec`` would drop them), and temp dirs bind-mounted over ``/run/libvirt``
  (``/var/run`` is a symlink to ``/run`` on Debian), ``/var/lib/libvirt``, ``/var/cache/libvirt``,
  ``/var/log/libvirt`` and a copy of ``/etc/libvirt`` *without* the machine's domain and network
  definitions (and so without the ``default`` network or its autostart link): the second daemon
  neither sees nor touches the machine's VMs, networks, sockets, leases or logs;
- ``virtlogd`` and ``libvirtd`` started there, both in the foreground as children of this process
  (their PIDs are known: nothing is ever killed by name; they get SIGTERM if this process dies);
  QEMU's cgroups are named after the domain (``machine/qemu-N-NAME...``), so test domains must not
  share a name with a running domain of the machine's daemon;
- vmctl connects to ``qemu+unix:///system?socket=<tmp>/run/libvirt-sock``, the outside path of the
  daemon's socket in the bind-mounted ``/run/libvirt``.

`stop()` undoes everything in reverse and is safe to call after any partial `start()`: domains
destroyed and undefined, networks destroyed, the daemons stopped (SIGTERM, then SIGKILL), any
process still left in the namespace (dnsmasq, QEMU) killed by the PIDs ``ip netns pids`` lists,
the namespace deleted (the private mount namespace and its bind mounts vanish with its last
process), and the temp dirs removed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BIND_DIRS = {  # inside path -> name of the temp dir bind-mounted over it
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
    "/etc/libvirt": "etc",
}


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def network_xml(name: str, bridge: str, third_octet: int) -> str:
    """A libvirt NAT network 192.168.<third_octet>.0/24 with DHCP on .100-.199."""
    from lxml import etree

    net = etree.Element("network")
    etree.SubElement(net, "name").text = name
    etree.SubElement(net, "forward", mode="nat")
    etree.SubElement(net, "bridge", name=bridge, stp="on", delay="0")
    ip = etree.SubElement(net, "ip", address=f"192.168.{third_octet}.1", netmask="255.255.255.0")
    dhcp = etree.SubElement(ip, "dhcp")
    etree.SubElement(dhcp, "range", start=f"192.168.{third_octet}.100", end=f"192.168.{third_octet}.199")
    return etree.tostring(net, encoding="unicode")


class PrivateLibvirt:
    """A libvirtd (+ virtlogd) of its own in a fresh network and mount namespace; see module doc."""

    def __init__(self, base: Path | None = None):
        self.ns = f"vmctl-e2e-{secrets.token_hex(3)}"
        self.tmp = Path(tempfile.mkdtemp(prefix="vmctl-e2e-libvirt-", dir=str(base or "/var/tmp")))
        self.socket = self.tmp / "run" / "libvirt-sock"
        # The daemon's unix socket, reachable from this (the machine's) namespace; `virsh()` and the
        # start-up check use it. `uri` is what clients are given: the same here, a subclass may
        # point it elsewhere (tests/e2e/fleet_lab.py: qemu+tcp:// inside a lab's network).
        self.socket_uri = f"qemu+unix:///system?socket={self.socket}"
        self.uri = self.socket_uri
        self.virtlogd: subprocess.Popen | None = None
        self.libvirtd: subprocess.Popen | None = None
        self.ns_created = False
        self.networks: list[str] = []

    # ---- setup --------------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        for inside, name in BIND_DIRS.items():
            d = self.tmp / name
            if name == "etc":
                shutil.copytree(inside, d, symlinks=True)
                # The machine's persistent domains, networks (with the autostarted "default" NAT
                # network) and storage pools stay the machine's: this daemon starts with none.
                for sub in ("qemu", "storage", "secrets"):
                    shutil.rmtree(d / sub, ignore_errors=True)
                (d / "qemu" / "networks" / "autostart").mkdir(parents=True)
                (d / "qemu" / "autostart").mkdir()
            else:
                d.mkdir()
            os.chmod(d, 0o755)
        # A copy of QEMU's capability cache saves the new daemon a probe of the binary (libvirt
        # checks the binary's and its own timestamps and re-probes when they differ).
        caps = Path("/var/cache/libvirt/qemu/capabilities")
        if caps.is_dir():
            shutil.copytree(caps, self.tmp / "cache" / "qemu" / "capabilities")
        (self.tmp / "logs").mkdir()
        (self.tmp / "cgroup").mkdir()

    def _script(self) -> str:
        """Shell run in the new mount namespace (already in the network namespace) before exec.

        A sysfs mounted from inside the network namespace shows that namespace's devices in
        /sys/class/net (libvirt configures its bridge there), as ``ip netns exec`` does; unlike
        ``ip netns exec``, the machine's cgroup mounts are carried over onto the fresh /sys
        (libvirt needs the cpu, memory and blkio controllers for the profiles' tuning).
        """
        cg = self.tmp / "cgroup"
        lines = ["set -e", f"mount --rbind /sys/fs/cgroup {cg}", "mount -t sysfs sysfs /sys",
                 f"mount --rbind {cg} /sys/fs/cgroup", f"umount -l {cg}"]
        lines += [f"mount --bind {self.tmp / name} {inside}" for inside, name in BIND_DIRS.items()]
        return "\n".join(lines) + "\n"

    def _in_ns(self, script: str, daemon: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}", "unshare", "-m", "--propagation", "private",
                "sh", "-c", script + 'exec "$@"', "sh", *daemon]

    def start(self, timeout: float = 60) -> "PrivateLibvirt":
        _run("ip", "netns", "add", self.ns)
        self.ns_created = True
        _run("ip", "-n", self.ns, "link", "set", "lo", "up")
        self._configure_netns()
        self._prepare_dirs()
        # virtlogd and libvirtd must share the bind mounts (libvirtd finds virtlogd's socket under
        # /run/libvirt), so both run in one mount namespace: libvirtd is started by nsenter into
        # the namespace that virtlogd's unshare created.
        logs = self.tmp / "logs"
        self.virtlogd = subprocess.Popen(
            self._in_ns(self._script(), self._virtlogd_argv()),
            stdout=open(logs / "virtlogd.out", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        self._wait_for(self.tmp / "run" / "virtlogd-sock", timeout, self.virtlogd, "virtlogd")
        self._start_libvirtd(timeout, "wb")
        return self

    def _configure_netns(self) -> None:
        """Hook: set up the network namespace (``lo`` is up) before the daemons start; none here."""

    def _virtlogd_argv(self) -> list[str]:
        """Hook: virtlogd's command line, run by the mount namespace's set-up script."""
        return ["virtlogd", "--pid-file", "/run/libvirt/e2e-virtlogd.pid"]

    def _libvirtd_argv(self) -> list[str]:
        """Hook: the daemon's command line inside the namespaces."""
        return ["libvirtd", "--pid-file", "/run/libvirt/e2e-libvirtd.pid"]

    def _start_libvirtd(self, timeout: float, log_mode: str) -> None:
        logs = self.tmp / "logs"
        self.libvirtd = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", f"--mount=/proc/{self.virtlogd.pid}/ns/mnt",
             *self._libvirtd_argv()],
            stdout=open(logs / "libvirtd.out", log_mode), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        self._wait_for(self.socket, timeout, self.libvirtd, "libvirtd")
        deadline = time.monotonic() + timeout
        while _run("virsh", "-c", self.socket_uri, "version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.libvirtd.poll() is not None:
                raise RuntimeError(f"libvirtd in {self.ns} does not answer: {self.log_tail()}")
            time.sleep(0.2)

    def restart_libvirtd(self, timeout: float = 60) -> None:
        """Stop this libvirtd (SIGTERM: its guests keep running, as on a package upgrade) and start
        it again in the same namespaces; returns once it answers."""
        _terminate(self.libvirtd)
        self.socket.unlink(missing_ok=True)
        self._start_libvirtd(timeout, "ab")

    def _wait_for(self, path: Path, timeout: float, proc: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start in {self.ns}: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for f in sorted((self.tmp / "logs").glob("*")) + sorted((self.tmp / "log").rglob("*.log")):
            try:
                text = f.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {f.name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("virsh", "-c", self.socket_uri, *args, check=check, timeout=120)

    def add_nat_network(self, name: str, bridge: str, third_octet: int) -> None:
        """Define and start a NAT network with DHCP; it lives in the namespace only."""
        xml = self.tmp / f"net-{name}.xml"
        xml.write_text(network_xml(name, bridge, third_octet))
        self.virsh("net-define", str(xml))
        self.networks.append(name)
        self.virsh("net-start", name)

    def ns_cmd(self, *argv: str) -> list[str]:
        """`argv` run in the network namespace (and the machine's mount namespace)."""
        return ["ip", "netns", "exec", self.ns, *argv]

    # ---- teardown -----------------------------------------------------------------------------
    def destroy_domains(self) -> None:
        """Power off and undefine every domain of this daemon (only its own exist); never raises."""
        if self.libvirtd is None or self.libvirtd.poll() is not None:
            return
        try:
            for dom in self.virsh("list", "--all", "--name", check=False).stdout.split():
                self.virsh("destroy", dom, check=False)
                self.virsh("undefine", dom, "--nvram", "--snapshots-metadata", check=False)
        except (OSError, subprocess.SubprocessError):
            pass

    def stop(self) -> None:
        """Undo `start` (whatever part of it happened); never raises."""
        self.destroy_domains()
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            try:
                for net in self.virsh("net-list", "--all", "--name", check=False).stdout.split():
                    self.virsh("net-destroy", net, check=False)
                    self.virsh("net-undefine", net, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
        for proc in (self.libvirtd, self.virtlogd):
            _terminate(proc)
        if self.ns_created:
            # dnsmasq and QEMU that libvirtd left (it does not kill its guests on exit)
            for _ in range(3):
                pids = [int(p) for p in _run("ip", "netns", "pids", self.ns, check=False).stdout.split()]
                if not pids:
                    break
                for pid in pids:
                    _kill(pid, signal.SIGKILL)
                time.sleep(0.3)
            _run("ip", "netns", "del", self.ns, check=False)
            self.ns_created = False
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "PrivateLibvirt":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (no orphan daemons).

    The setting survives the execs of nsenter/unshare/sh into the daemon. Guests and dnsmasq that
    such a daemon leaves would then stay in the namespace: `stop()` is still the real cleanup.
    """
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _terminate(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
