"""A fleet of libvirt hosts on one machine, for end-to-end tests: several `PrivateLibvirt` daemons
reached over ``qemu+tcp://`` from a client network namespace.

Topology: one layer-2 segment, 10.77.0.0/24, as the hosts of a rack share a VLAN (everything lives
in network namespaces this module creates; nothing in the machine's)::

    client ns vmctl-fc-<hex>: bridge lab0 10.77.0.1/24 (the tests run vmctl here: `lab.client_cmd`)
      |-- h1 ==veth== uplink -- bridge br0 10.77.0.2/24 in h1's ns (libvirtd on 10.77.0.2:16509)
      |-- h2 ==veth== uplink -- bridge br0 10.77.0.3/24 in h2's ns (libvirtd on 10.77.0.3:16509)
      ...

- each host is a `FleetHost`, a `PrivateLibvirt` (its own network namespace and mount namespace
  with private ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``...) with a bridge ``br0``
  holding its address and its link to the segment: guests attached to ``br0`` (``--bridge br0``)
  are on the segment too, and keep their address when they migrate to another host; hosts reach
  each other directly (migration, NBD). No address of the segment routes anywhere else;
- each libvirtd listens on TCP ``<address>:16509`` with ``auth_tcp = "none"`` and no TLS (started
  with ``--listen``), besides its unix socket (`host.virsh` and the start-up check use that);
  ``host.uri`` is ``qemu+tcp://<address>/system``, usable only from the client namespace (and from
  the hosts): the machine's namespace has no route to the lab (its default route leads elsewhere);
- each host has a unique ``host_uuid`` (libvirt refuses a migration between two daemons with the
  same host UUID, and every daemon of a machine with SMBIOS reads the same one; without SMBIOS, as
  in a Firecracker VM, each daemon makes up a random one anyway);
- each host has a data directory only its own mount namespace sees: a per-host temp dir (0755)
  bind-mounted over ``/mnt``. ``host.root`` is the data root inside (``/mnt/vmctl`` unless told
  otherwise; it is not created), ``host.outside_root`` the same directory as the test process sees
  it (to check that files exist or are gone); ``host.outside(path)`` maps any path under ``/mnt``.

The cgroups. Every daemon on the machine shares ``/sys/fs/cgroup`` and names a guest's cgroup
``machine/qemu-<id>-<name>.libvirt-qemu``, ids counting from 1 in each daemon: the same name with
the same id on two hosts (a migration's source and destination: same name, and often the same id)
would put both QEMUs in one cgroup -- one's memory hard limit or CPU quota set on the other, CPU
time reported as the sum of both, and the first to stop retrying (~0.6 s) to remove a busy
cgroup ("Failed to remove cgroup for NAME"). So each host gets cgroups of its own: in every cgroup
hierarchy a directory ``/sys/fs/cgroup/<hierarchy>/<host netns name>`` is made, bind-mounted over
``/sys/fs/cgroup/<hierarchy>`` in the host's mount namespace, and both daemons join it and run in a
cgroup namespace rooted there (``unshare --cgroup``). libvirt then sees a machine of its own: its
``/machine/qemu-1-NAME.libvirt-qemu`` is ``/sys/fs/cgroup/<hierarchy>/<host ns>/machine/...`` on
the machine (`FleetHost.cgroup_dir`), the cgroup features work as on the machine's daemon
(memory and CPU tuning, CPU stats), and a restarted daemon finds its guests' cgroups again (paths
in /proc/PID/cgroup are read relative to the namespace). `stop()` removes these directories (a
test process killed by SIGKILL leaves them behind, empty). This needs cgroup v1 or a hybrid layout
(here: v1 controllers, cgroup2 without controllers on /sys/fs/cgroup/unified); where a
cgroup2 hierarchy has controllers enabled (a pure v2 machine), its no-internal-processes rule would
need the daemons in a leaf below the namespace root, which is not done: the hosts then share the
machine's cgroups as above (``host.cgroups == "shared"``).

Shared storage: ``FleetLab(shares={3: 1})`` gives h3 the same ``/mnt`` directory as h1 (both
mount namespaces bind the one directory), as two hosts that mount one NFS export: each daemon sees
the other's files, libvirt still takes it for a local file system.

`FleetLab.stop()` is safe after any partial `start()` and never raises: the hosts are stopped (their
domains destroyed, daemons stopped, namespaces deleted, temp dirs removed), then the client
namespace is deleted.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path, PurePosixPath

from .netns import PrivateLibvirt, _die_with_parent, _kill, _run, _terminate

LIBVIRT_TCP_PORT = 16509
CLIENT_BRIDGE = "lab0"   # in the client namespace: the segment every host's uplink joins
HOST_BRIDGE = "br0"      # in each host's namespace: its address, its uplink and its guests' taps
SEGMENT = "10.77.0"      # /24; .1 the client, .2.. the hosts (guests: pick from .100 up)


def lab_mac(role: int, index: int) -> str:
    """A fixed, locally administered MAC for a lab link: role 0 the bridges (lab0 is index 0, host
    i's br0 index i), 1 a host's veth end on lab0, 2 its uplink. Fixed, not left to the kernel or a
    udev policy: no two links of the segment can share one, and a bridge whose address is set keeps
    it when a guest's tap joins (a bridge otherwise takes its ports' lowest MAC)."""
    return f"02:77:00:00:{role:02x}:{index:02x}"
MNT = PurePosixPath("/mnt")


class FleetHost(PrivateLibvirt):
    """One libvirt host of a `FleetLab`: libvirtd on TCP at ``10.77.0.<index + 1>``; see module doc."""

    # Give the daemons cgroups of their own (see module doc); False: share the machine's.
    PRIVATE_CGROUPS = True
    # cgroup_controllers for this daemon's qemu.conf; None keeps the machine's setting (all).
    CGROUP_CONTROLLERS: list[str] | None = None

    def __init__(self, client_ns: str, index: int, root: str = "/mnt/vmctl", base: Path | None = None):
        if not 1 <= index <= 254:
            raise ValueError(f"host index {index} is not in 1..254")
        inside = PurePosixPath(root)
        if inside.parent == inside or MNT not in inside.parents:
            raise ValueError(f"a host's data root must be under /mnt, not {root!r}")
        super().__init__(base)
        self.ns = f"vmctl-fh{index}-{secrets.token_hex(3)}"
        self.client_ns = client_ns
        self.index = index
        self.name = f"h{index}"
        self.address = f"10.77.0.{index + 1}"
        self.gateway = "10.77.0.1"                  # the client namespace's address on the segment
        self.uri = f"qemu+tcp://{self.address}/system"
        self.host_uuid = str(uuid.uuid4())
        self.mnt = self.tmp / "mnt"                 # bind-mounted over /mnt in the mount namespace
        self.root = str(inside)
        self.outside_root = self.outside(self.root)
        mounts = _cgroup_mounts()
        self.cgroups = "private" if self.PRIVATE_CGROUPS and _private_cgroups_possible(mounts) else "shared"
        self._cgroup_mounts = mounts if self.cgroups == "private" else []
        self._cgroup_dirs: list[Path] = []   # made by start(), removed by stop()
        self.sshd: subprocess.Popen | None = None   # start_sshd()
        self.host_key_line: str | None = None       # its sshd's host key, as the test recorded it

    def cgroup_dir(self, hierarchy: str = "memory") -> Path:
        """Where this host's ``/sys/fs/cgroup/<hierarchy>`` is on the machine: a guest's cgroup is
        ``cgroup_dir(h) / "machine" / f"qemu-{id}-{name}.libvirt-qemu"``."""
        mount = Path("/sys/fs/cgroup") / hierarchy
        return mount / self.ns if self.cgroups == "private" else mount

    def outside(self, path: str) -> Path:
        """The path, as the test process sees it, of `path` under /mnt inside this host."""
        p = PurePosixPath(path)
        if p != MNT and MNT not in p.parents:
            raise ValueError(f"{path} is not under /mnt")
        return self.mnt / p.relative_to(MNT)

    # ---- PrivateLibvirt hooks -----------------------------------------------------------------
    def _configure_netns(self) -> None:
        veth = f"h{self.index}"
        c, h = ("ip", "-n", self.client_ns), ("ip", "-n", self.ns)
        _run(*c, "link", "add", veth, "address", lab_mac(1, self.index), "type", "veth",
             "peer", "name", "uplink", "address", lab_mac(2, self.index), "netns", self.ns)
        _run(*c, "link", "set", veth, "master", CLIENT_BRIDGE)
        _run(*c, "link", "set", veth, "up")
        _run(*h, "link", "add", HOST_BRIDGE, "address", lab_mac(0, self.index), "type", "bridge",
             "stp_state", "0", "forward_delay", "0")
        _run(*h, "link", "set", "uplink", "master", HOST_BRIDGE)
        _run(*h, "addr", "add", f"{self.address}/24", "dev", HOST_BRIDGE)
        _run(*h, "link", "set", "uplink", "up")
        _run(*h, "link", "set", HOST_BRIDGE, "up")

    def _prepare_dirs(self) -> None:
        super()._prepare_dirs()
        for mount in self._cgroup_mounts:
            d = Path(mount) / self.ns
            d.mkdir()
            self._cgroup_dirs.append(d)
            for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset takes no task until set
                if (d / name).exists():
                    (d / name).write_text((Path(mount) / name).read_text())
        self.mnt.mkdir(mode=0o755, exist_ok=True)   # exists: another host's, shared (FleetLab shares)
        self.mnt.chmod(0o755)
        with open(self.tmp / "etc" / "libvirtd.conf", "a") as conf:
            conf.write(f'\n# fleet_lab host {self.name}\nlisten_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n'
                       f'listen_addr = "{self.address}"\ntcp_port = "{LIBVIRT_TCP_PORT}"\n'
                       f'host_uuid = "{self.host_uuid}"\n')
        if self.CGROUP_CONTROLLERS is not None:
            with open(self.tmp / "etc" / "qemu.conf", "a") as conf:
                listed = ", ".join(f'"{c}"' for c in self.CGROUP_CONTROLLERS)
                conf.write(f"\n# fleet_lab host {self.name}\ncgroup_controllers = [ {listed} ]\n")

    def _script(self) -> str:
        lines = [f"mount --bind {self.mnt} {MNT}"]
        lines += [f"mount --bind {d} {d.parent}" for d in self._cgroup_dirs]
        return super()._script() + "\n".join(lines + [self._join_cgroups()]) + "\n"

    def _join_cgroups(self) -> str:
        """Shell (in the mount namespace): move this shell into the host's cgroups."""
        return "".join(f"echo $$ > {d.parent}/cgroup.procs; " for d in self._cgroup_dirs) or ":"

    def _virtlogd_argv(self) -> list[str]:
        cgroupns = ["unshare", "--cgroup"] if self._cgroup_dirs else []
        return [*cgroupns, *super()._virtlogd_argv()]

    def _libvirtd_argv(self) -> list[str]:
        argv = [*super()._libvirtd_argv(), "--listen"]
        if not self._cgroup_dirs:
            return argv
        return ["sh", "-c", self._join_cgroups() + f'exec nsenter --cgroup=/proc/{self.virtlogd.pid}/ns/cgroup "$@"',
                "sh", *argv]

    def start_sshd(self, authorized: str) -> str:
        """An OpenSSH server on ``<address>:22`` in this host's network namespace, as a host's own
        sshd that vmctl jumps through to reach guests on the host's private networks: root logs
        in with the key of public line `authorized` only, may open TCP forwards and run nothing
        (``ForceCommand /bin/false``). Its files are in the host's temp dir; /run/sshd (OpenSSH's
        privilege separation directory) is a tmpfs of the server's own mount namespace. Returns
        the server's host key (public line) for the client's known_hosts."""
        d = self.tmp / "sshd"
        d.mkdir(mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fleet-lab-{self.name}", "-f", str(d / "host_key"))
        (d / "authorized_keys").write_text(authorized.strip() + "\n")
        (d / "sshd_config").write_text("".join(f"{line}\n" for line in (
            f"ListenAddress {self.address}:22", f"HostKey {d / 'host_key'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "AllowTcpForwarding local",
            "PermitTTY no", "ForceCommand /bin/false", "UsePAM no", "PidFile none")))
        script = (f"mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && "
                  f"exec /usr/sbin/sshd -D -e -f {d / 'sshd_config'}")
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=open(self.tmp / "logs" / "sshd.out", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 20
        while f"{self.address}:22 " not in _run("ip", "netns", "exec", self.ns, "ss", "-ltnH").stdout:
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start on {self.name}: {self.log_tail()}")
            time.sleep(0.1)
        return (d / "host_key.pub").read_text().strip()

    def stop(self) -> None:
        if self.sshd is not None:
            _terminate(self.sshd)
            self.sshd = None
        super().stop()
        _remove_cgroups(self._cgroup_dirs)
        self._cgroup_dirs = []


def _cgroup_mounts() -> list[str]:
    """The cgroup hierarchies mounted on /sys/fs/cgroup/* (each mount point once)."""
    out: list[str] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and mount.startswith("/sys/fs/cgroup/") and mount not in out:
            out.append(mount)
    return out


def _private_cgroups_possible(mounts: list[str]) -> bool:
    """No cgroup2 hierarchy with controllers enabled (see the module doc), and some hierarchy."""
    if not mounts:
        return False
    for mount in mounts:
        control = Path(mount) / "cgroup.subtree_control"
        if control.exists() and control.read_text().strip():
            return False
    return True


def _remove_cgroups(dirs: list[Path], timeout: float = 5) -> None:
    """rmdir the cgroup trees, leaves first, retrying while their last tasks exit; never raises."""
    deadline = time.monotonic() + timeout
    for top in dirs:
        while top.exists():
            try:
                for path, subdirs, _files in os.walk(top, topdown=False):
                    for sub in subdirs:
                        os.rmdir(os.path.join(path, sub))
                os.rmdir(top)
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)


class FleetLab:
    """A client network namespace and `n` `FleetHost`s h1..hn on one segment; see module doc.

    `roots` gives each host's data root inside its mount namespace (default ``/mnt/vmctl`` for all).
    """

    def __init__(self, n: int = 2, roots: list[str] | None = None, base: Path | None = None,
                 shares: dict[int, int] | None = None):
        if roots is not None and len(roots) != n:
            raise ValueError(f"{len(roots)} roots for {n} hosts")
        if any(not 1 <= j < i <= n for i, j in (shares or {}).items()):
            raise ValueError(f"shares {shares}: host i may share the /mnt of an earlier host j only")
        self.client_ns = f"vmctl-fc-{secrets.token_hex(3)}"
        self.client_created = False
        self.hosts: list[FleetHost] = []
        self._n, self._roots, self._base = n, roots or ["/mnt/vmctl"] * n, base
        self._shares = dict(shares or {})

    def host(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    def client_cmd(self, *argv: str) -> list[str]:
        """`argv` run in the client network namespace (and the machine's mount namespace)."""
        return ["ip", "netns", "exec", self.client_ns, *argv]

    def client_run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run(*self.client_cmd(*argv), check=check, timeout=timeout)

    def remote_virsh(self, host: FleetHost, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """virsh against `host` over qemu+tcp, from the client namespace (as vmctl would connect)."""
        return self.client_run("virsh", "-c", host.uri, *args, check=check)

    def start(self, timeout: float = 60) -> "FleetLab":
        _run("ip", "netns", "add", self.client_ns)
        self.client_created = True
        c = ("ip", "-n", self.client_ns)
        _run(*c, "link", "set", "lo", "up")
        _run(*c, "link", "add", CLIENT_BRIDGE, "address", lab_mac(0, 0), "type", "bridge",
             "stp_state", "0", "forward_delay", "0")
        _run(*c, "addr", "add", f"{SEGMENT}.1/24", "dev", CLIENT_BRIDGE)
        _run(*c, "link", "set", CLIENT_BRIDGE, "up")
        for i, root in enumerate(self._roots, start=1):
            host = FleetHost(self.client_ns, i, root, self._base)
            if i in self._shares:   # one storage seen by two hosts, as an NFS export mounted on both
                host.mnt = self.hosts[self._shares[i] - 1].mnt
            self.hosts.append(host)
            host.start(timeout)
        deadline = time.monotonic() + timeout
        for host in self.hosts:  # the daemon answered on its unix socket; now over TCP from here
            while (r := self.remote_virsh(host, "version", check=False)).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{host.uri} does not answer from {self.client_ns}: {r.stderr}"
                                       f"{host.log_tail()}")
                time.sleep(0.1)
        # Hosts talk to each other directly in a live migration (QEMU's stream and NBD): check every
        # pair now, from inside the hosts, so a broken segment fails here in one line, not as a
        # migration's two-minute connect timeout.
        for a in self.hosts:
            for b in self.hosts:
                if a is not b and (r := _run("ip", "netns", "exec", a.ns, "virsh", "-c", b.uri, "version",
                                             check=False)).returncode != 0:
                    raise RuntimeError(f"{a.name} cannot reach {b.uri}: {r.stderr.strip()}\n"
                                       f"{self.network_report()}")
        return self

    def network_report(self) -> str:
        """Links, neighbours, bridge forwarding tables and TCP sockets of the client and every
        host namespace: what a failure in the lab's network needs to be understood."""
        out = []
        for name, ns in [("client", self.client_ns)] + [(h.name, h.ns) for h in self.hosts]:
            out.append(f"--- network of {name} ({ns}) ---")
            for argv in (("ip", "-n", ns, "-br", "link"), ("ip", "-n", ns, "-br", "addr"),
                         ("ip", "-n", ns, "neigh"), ("bridge", "-n", ns, "fdb", "show", "dynamic"),
                         ("ip", "netns", "exec", ns, "ss", "-tan")):
                r = _run(*argv, check=False)
                out.append(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}".rstrip())
        return "\n".join(out)

    def stop(self) -> None:
        """Undo `start` (whatever part of it happened); never raises."""
        for host in reversed(self.hosts):
            try:
                host.stop()
            except Exception:  # noqa: BLE001 - stop the rest whatever happens
                pass
        self.hosts = []
        if self.client_created:
            try:
                for _ in range(3):
                    pids = [int(p) for p in _run("ip", "netns", "pids", self.client_ns, check=False).stdout.split()]
                    if not pids:
                        break
                    for pid in pids:
                        _kill(pid, 9)
                    time.sleep(0.3)
                _run("ip", "netns", "del", self.client_ns, check=False)
            except Exception:  # noqa: BLE001
                pass
            self.client_created = False

    def __enter__(self) -> "FleetLab":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
