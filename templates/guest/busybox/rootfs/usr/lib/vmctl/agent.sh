#!/bin/sh
# agent.sh: vmctl's guest agent for warm starts (vmctl/checkpoint/FORMAT.md, "the agent").
#
#   agent.sh arm     run by `vmctl commit --checkpoint` over SSH, with vmctl connected to the
#                    port: load virtio_console, start `serve` in the background, return
#   agent.sh serve   on the virtio-serial port org.vmctl.agent.0: say "armed", then wait. The
#                    machine is saved while it waits; each clone restored from the save wakes it
#                    here and is told its identity before its network link comes up.
#
# Nothing runs until vmctl arms it: a booted guest pays nothing for the agent. Values from the
# host only ever become file contents or arguments, each checked against its shape first.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
NAME=org.vmctl.agent.0
NL='
'

log() { echo "vmctl-agent: $*" >/dev/console; }

find_port() {
    for d in /sys/class/virtio-ports/*; do
        [ -r "$d/name" ] || continue
        n=; read -r n <"$d/name"
        [ "$n" = "$NAME" ] && [ -c "/dev/${d##*/}" ] && { PORT=/dev/${d##*/}; return 0; }
    done
    return 1
}

arm() {
    read -r kver </proc/sys/kernel/osrelease
    while read -r m; do
        [ -n "$m" ] && [ ! -d "/sys/module/$m" ] && insmod "/lib/modules/$kver/$m.ko" 2>/dev/null
    done </etc/vmctl/modules.agent
    i=0
    until find_port; do
        i=$((i + 1)); [ $i -ge 40 ] && { echo "no virtio-serial port $NAME" >&2; exit 3; }
        usleep 50000
    done
    # one agent on the port: a previous arm's (a checkpoint that failed) goes
    for c in /proc/[0-9]*/cmdline; do
        read -r cmd <"$c" 2>/dev/null || continue
        case "$cmd" in *agent.sh*serve*) p=${c#/proc/}; kill "${p%/cmdline}" 2>/dev/null ;; esac
    done
    setsid /usr/lib/vmctl/agent.sh serve </dev/null >/dev/null 2>&1 &
    exit 0
}

say() { printf 'vmctl-agent: %s\n' "$*" >&3; }

valid_hostname() {
    case "$1" in ""|-*|*[!A-Za-z0-9.-]*) return 1 ;; esac
    [ ${#1} -le 253 ]
}

# REPLY=the next line from the host. The port reads end-of-file while no host is connected (right
# after a restore, before vmctl connects): wait and retry, at most ~60 s in all.
EOFS=0
next_line() {
    while :; do
        if IFS= read -r REPLY <&3; then
            REPLY=${REPLY%"$(printf '\r')"}
            return 0
        fi
        EOFS=$((EOFS + 1))
        [ $EOFS -ge 1200 ] && { log "no host on $NAME; giving up"; exit 1; }
        usleep 50000
    done
}

apply() {
    hostname=; iid=; hostkey=; mac=; mid=; random=; now=; auth=
    while next_line; do
        key=${REPLY%% *}; val=${REPLY#* }
        case "$key" in
            hostname) hostname=$val ;;
            instance-id) iid=$val ;;
            hostkey) hostkey=$val ;;
            authkey) auth="$auth$val$NL" ;;
            mac) mac=$val ;;
            machine-id) mid=$val ;;
            random) random=$val ;;
            time) now=$val ;;
            apply) break ;;
            *) say "error unknown field"; return 1 ;;
        esac
    done
    # The first bytes the kernel's RNG gives after the restore, before the host's bytes are mixed
    # in: kept for `vmctl` tests and for anyone who wants to see that clones differ.
    set -- $(od -An -N16 -tx1 /dev/urandom)
    IFS=; echo "$*" >/run/vmctl/urandom-after-restore; unset IFS
    valid_hostname "$hostname" || { say "error hostname"; return 1; }
    case "$mac" in [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) ;;
        *) say "error mac"; return 1 ;; esac
    case "$mid" in *[!0-9a-f]*|"") say "error machine-id"; return 1 ;; esac
    case "$random" in *[!0-9a-f]*|"") say "error random"; return 1 ;; esac
    case "$iid" in *[!A-Za-z0-9._:-]*|"") say "error instance-id"; return 1 ;; esac
    case "$hostkey" in *[!A-Za-z0-9+/=]*|"") say "error hostkey"; return 1 ;; esac
    case "$now" in *[!0-9:\ -]*|"") say "error time"; return 1 ;; esac

    # Under TCG a restored guest translates every program it runs afresh (~0.1 s an exec): shell
    # builtins wherever one will do.
    umask 077
    # The host key vmctl pinned for this clone (dropbear's own format), alone; then every SSH
    # server and session of the checkpoint goes, and /etc/vmctl/sshd starts dropbear again with
    # the new key while the rest is applied.
    printf '%s' "$hostkey" | base64 -d >/etc/dropbear/dropbear_ed25519_host_key 2>/dev/null \
        || { say "error hostkey"; return 1; }
    for k in /etc/dropbear/dropbear_*_host_key; do
        [ "$k" = /etc/dropbear/dropbear_ed25519_host_key ] || rm -f "$k"
    done
    for c in /proc/[0-9]*/comm; do
        read -r comm <"$c" 2>/dev/null && [ "$comm" = dropbear ] && { p=${c#/proc/}; kill "${p%/comm}" 2>/dev/null; }
    done
    [ -d /root/.ssh ] || mkdir -m 700 /root/.ssh
    printf '%s' "$auth" >/root/.ssh/authorized_keys
    umask 022
    # The kernel's random pool: the VM generation ID device already made the kernel reseed when
    # the machine was restored; the host's bytes are mixed in as well.
    printf '%s' "$random" >/dev/urandom
    date -u -s "$now" >/dev/null 2>&1 || log "could not set the clock"
    short=${hostname%%.*}
    echo "$short" >/proc/sys/kernel/hostname
    echo "$short" >/etc/hostname
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s %s\n::1\tlocalhost ip6-localhost\n' "$hostname" "$short" >/etc/hosts
    echo "$mid" >/etc/machine-id
    [ -d /var/lib/cloud/data ] || mkdir -p /var/lib/cloud/data
    echo "$iid" >/var/lib/cloud/data/instance-id
    ip link set eth0 address "$mac" 2>/dev/null || log "could not set the MAC address"
    sync &
    say "applied"
    return 0
}

# A socket listening on port 22 (see /etc/vmctl/ready), with builtins only.
listening_22() {
    for f in /proc/net/tcp /proc/net/tcp6; do
        [ -r "$f" ] || continue
        while read -r sl local remote st rest; do
            case "$local/$remote/$st" in *:0016/*:0000/0A) return 0 ;; esac
        done <"$f"
    done
    return 1
}

# $1 "renew": a new DHCP lease for the new MAC address (a libvirt network's DHCP server leases
# by MAC); "keep": the address stays (user-mode networking: QEMU's DHCP server is the clone's
# alone, and it leases the address its forwarded ports point at to the MAC it saw first).
network() {
    if [ "$1" = renew ]; then
        if [ -r /run/udhcpc.pid ]; then
            read -r pid </run/udhcpc.pid && kill "$pid" 2>/dev/null
        fi
        rm -f /run/vmctl/ipv4
        if [ -e /sys/class/net/eth0 ]; then
            udhcpc -f -i eth0 -s /etc/vmctl/udhcpc.script -t 20 -T 1 -A 5 -p /run/udhcpc.pid -S \
                </dev/null >/dev/null 2>&1 &
        fi
    fi
    # waits are reads on the port with a timeout: the host sends nothing until "ready", and a
    # builtin costs no exec (usleep would)
    i=0
    while [ $i -lt 200 ]; do listening_22 && break; read -r -t 0.02 _ <&3; i=$((i + 1)); done
    i=0
    while [ $i -lt 400 ] && [ -e /sys/class/net/eth0 ] && [ ! -s /run/vmctl/ipv4 ]; do
        read -r -t 0.02 _ <&3; i=$((i + 1))
    done
    read -r up _ </proc/uptime
    { echo "vmctl-guest: up $up s"; echo "vmctl-guest: ready"; } >/dev/console
    # Last: a write to the port blocks once the host has gone, so nothing may follow it.
    say "ready"
}

serve() {
    find_port || exit 3
    exec 3<>"$PORT"
    say "armed"
    while next_line; do
        case "$REPLY" in
            keep) say "kept"; exit 0 ;;          # the machine the checkpoint was taken of goes on
            identity) apply || exit 1 ;;
            "network renew"|"network keep") network "${REPLY#network }"; exit 0 ;;
            "") ;;
            *) say "error unknown request"; exit 1 ;;
        esac
    done
}

case "$1" in
    arm) arm ;;
    serve) serve ;;
    *) echo "usage: $0 arm|serve" >&2; exit 2 ;;
esac
