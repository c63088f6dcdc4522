#!/bin/sh
# nocloud.sh: the parts of cloud-init's NoCloud datasource a vmctl guest honours.
#
#   nocloud.sh apply         find the cidata volume, set the hostname, install SSH keys, write
#                            files, prepare runcmd and user scripts (per instance, like cloud-init)
#   nocloud.sh run-scripts   run this instance's user scripts and runcmd once
#   nocloud.sh fingerprints  print cloud-init's host key fingerprint block
#
# Values read from the seed only ever become file contents or arguments; never shell code, except
# runcmd and user scripts, whose purpose is to be run.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
LIB=/usr/lib/vmctl
RUN=/run/vmctl
CLOUD=/var/lib/cloud
SEED_WAIT_TENTHS=${SEED_WAIT_TENTHS:-50}

log() { echo "vmctl-guest: $*" >/dev/console; }

# Under TCG every fork+exec costs tens of milliseconds, and apply runs before sshd can start: small
# reads and tests use shell builtins, not $(cat ...), head, grep, ls or awk.
NL='
'
# REPLY=the text of file $1 without its trailing newlines, like $(cat "$1") ('' if unreadable).
slurp() {
    REPLY=
    [ -f "$1" ] && [ -r "$1" ] || return 0
    while IFS= read -r _l || [ -n "$_l" ]; do REPLY="$REPLY$_l$NL"; done <"$1"
    while [ "${REPLY%"$NL"}" != "$REPLY" ]; do REPLY=${REPLY%"$NL"}; done
    return 0
}

# True when at least one dropbear host key exists.
have_host_key() {
    for _k in /etc/dropbear/dropbear_*_host_key; do
        [ -e "$_k" ] && return 0
    done
    return 1
}

# True when file $2 has a line that is exactly $1 (grep -qxF).
has_line() {
    while IFS= read -r _l || [ -n "$_l" ]; do
        [ "$_l" = "$1" ] && return 0
    done <"$2"
    return 1
}

valid_hostname() {
    case "$1" in
        ""|-*|*[!A-Za-z0-9.-]*) return 1 ;;
    esac
    [ ${#1} -le 253 ]
}

# The ISO9660 volume label of a block device (primary volume descriptor, offset 32808 = 8 * 4101).
iso_label() {
    dd if="$1" bs=8 skip=4101 count=4 2>/dev/null | tr -d ' \000'
}

# Copy the seed files off the cidata volume (ISO9660, label cidata or CIDATA) into $RUN/seed.
# The cdrom appears asynchronously after the SATA scan: poll for up to SEED_WAIT_TENTHS/10 s.
fetch_seed() {
    mkdir -p "$RUN/seed" "$RUN/seed-mnt"
    i=0
    while :; do
        for dev in /dev/sr* /dev/vd[b-z] /dev/sd[a-z]; do
            [ -b "$dev" ] || continue
            case "$(iso_label "$dev")" in cidata|CIDATA) ;; *) continue ;; esac
            mount -t iso9660 -o ro "$dev" "$RUN/seed-mnt" 2>/dev/null || continue
            set --
            for f in meta-data user-data vendor-data network-config; do
                [ -f "$RUN/seed-mnt/$f" ] && set -- "$@" "$RUN/seed-mnt/$f"
            done
            [ $# -gt 0 ] && cp "$@" "$RUN/seed/"
            umount "$RUN/seed-mnt"
            [ -f "$RUN/seed/meta-data" ] && return 0
        done
        i=$((i + 1))
        [ $i -ge "$SEED_WAIT_TENTHS" ] && return 1
        usleep 100000
    done
}

# Split user-data into $RUN/parts/NNN.{type,body} (decoded), one part unless MIME multipart.
split_user_data() {
    ud=$RUN/seed/user-data
    parts=$RUN/parts
    rm -rf "$parts"; mkdir -p "$parts"
    [ -s "$ud" ] || return 0
    first=; IFS= read -r first <"$ud"
    if case "$first" in "#"*) false ;; esac && head -c 4096 "$ud" | grep -qi '^content-type:[[:space:]]*multipart/'; then
        awk -v out="$parts" -f "$LIB/mime.awk" "$ud" || { log "unreadable multipart user-data"; return 0; }
        for t in "$parts"/*.type; do
            [ -f "$t" ] || continue
            n=${t%.type}
            slurp "$n.encoding"
            case "$REPLY" in
                base64) base64 -d <"$n.body" >"$n.dec" 2>/dev/null && mv "$n.dec" "$n.body" ;;
                quoted-printable) log "quoted-printable part ignored"; echo ignored >"$t" ;;
            esac
        done
    else
        cp "$ud" "$parts/001.body"
        case "$first" in
            "#cloud-config"*) echo text/cloud-config ;;
            "#!"*) echo text/x-shellscript ;;
            *) echo text/unknown ;;
        esac >"$parts/001.type"
    fi
}

# Append the command items of key $3 (runcmd, bootcmd) of a parsed cloud-config ($1) to script
# ($2), as cloud-init does: a string is a shell line, a list is an argv that gets quoted.
add_commands() {
    i=0
    while :; do
        if [ -f "$1/$3.$i" ]; then
            cat "$1/$3.$i" >>"$2"; echo >>"$2"
        elif [ -f "$1/$3.$i.0" ]; then
            j=0; line=
            while [ -f "$1/$3.$i.$j" ]; do
                q=$(sed -e "s/'/'\\\\''/g" "$1/$3.$i.$j"; echo x); q=${q%x}
                line="$line${line:+ }'$q'"
                j=$((j + 1))
            done
            printf '%s\n' "$line" >>"$2"
        else
            break
        fi
        i=$((i + 1))
    done
}

add_authorized_keys() {
    mkdir -p /root/.ssh; chmod 700 /root/.ssh
    : >>/root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys
    i=0
    while [ -f "$1/ssh_authorized_keys.$i" ]; do
        key=; IFS= read -r key <"$1/ssh_authorized_keys.$i"
        if [ -n "$key" ] && ! has_line "$key" /root/.ssh/authorized_keys; then
            printf '%s\n' "$key" >>/root/.ssh/authorized_keys
        fi
        i=$((i + 1))
    done
}

install_host_keys() {
    for t in ed25519 ecdsa rsa; do
        [ -f "$1/ssh_keys.${t}_private" ] || continue
        tmp=$RUN/hostkey.$t
        if dropbearconvert openssh dropbear "$1/ssh_keys.${t}_private" "$tmp" >/dev/null 2>&1; then
            mv "$tmp" "/etc/dropbear/dropbear_${t}_host_key"; chmod 600 "/etc/dropbear/dropbear_${t}_host_key"
            GOT_HOST_KEY=1
        else
            rm -f "$tmp"; log "ssh_keys: cannot convert the $t host key"
        fi
    done
}

write_files() {
    i=0
    while [ -f "$1/write_files.$i.path" ]; do
        p="$1/write_files.$i"
        dest=$(cat "$p.path")
        case "$dest" in /*) ;; *) log "write_files: relative path ignored"; i=$((i + 1)); continue ;; esac
        mkdir -p "$(dirname "$dest")"
        enc=$(cat "$p.encoding" 2>/dev/null)
        src=$p.content; [ -f "$src" ] || src=/dev/null
        mode='>'; [ "$(cat "$p.append" 2>/dev/null)" = true ] && mode='>>'
        case "$enc" in
            b64|base64) base64 -d <"$src" ;;
            gz|gzip) gunzip -c <"$src" ;;
            gz+b64|gz+base64|gzip+b64|gzip+base64) base64 -d <"$src" | gunzip -c ;;
            *) cat "$src" ;;
        esac >"$RUN/wf.tmp"
        if [ "$mode" = '>>' ]; then cat "$RUN/wf.tmp" >>"$dest"; else cat "$RUN/wf.tmp" >"$dest"; fi
        rm -f "$RUN/wf.tmp"
        perm=$(cat "$p.permissions" 2>/dev/null); chmod "${perm:-0644}" "$dest" 2>/dev/null
        [ -f "$p.owner" ] && chown "$(cat "$p.owner")" "$dest" 2>/dev/null
        i=$((i + 1))
    done
}

set_hostname() {
    valid_hostname "$1" || { log "invalid hostname ignored"; return; }
    short=${1%%.*}
    hostname "$short"
    echo "$short" >/etc/hostname
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s %s\n::1\tlocalhost ip6-localhost\n' "$1" "$short" >/etc/hosts
}

generate_host_key() {
    mkdir -p /etc/dropbear
    dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
}

apply() {
    mkdir -p "$RUN" "$CLOUD/data" /etc/dropbear
    if ! fetch_seed; then
        log "no NoCloud seed (label cidata) found"
        have_host_key || generate_host_key
        return 0
    fi
    md=$RUN/md; rm -rf "$md"; mkdir -p "$md"
    awk -v out="$md" -f "$LIB/yaml2files.awk" "$RUN/seed/meta-data"
    slurp "$md/instance-id"; iid=${REPLY:-iid-nocloud}
    case "$iid" in *[!A-Za-z0-9._:-]*) iid=$(echo "$iid" | sha256sum | cut -c1-32) ;; esac
    slurp "$CLOUD/data/instance-id"; prev=$REPLY
    new_instance=0; [ "$iid" != "$prev" ] && new_instance=1

    slurp "$md/local-hostname"; name=$REPLY
    split_user_data
    inst=$CLOUD/instances/$iid
    if [ $new_instance = 1 ]; then
        rm -rf "$inst"; mkdir -p "$inst/scripts"
        : >"$inst/scripts/runcmd"
    fi
    GOT_HOST_KEY=0
    : >"$RUN/bootcmd"
    for t in "$RUN"/parts/*.type; do
        [ -f "$t" ] || continue
        n=${t%.type}; slurp "$t"; type=$REPLY
        case "$type" in
            text/cloud-config)
                cc=$n.cc; mkdir -p "$cc"
                awk -v out="$cc" -f "$LIB/yaml2files.awk" "$n.body"
                [ -f "$cc/hostname" ] && slurp "$cc/hostname" && name=$REPLY
                [ -f "$cc/fqdn" ] && slurp "$cc/fqdn" && name=$REPLY
                add_commands "$cc" "$RUN/bootcmd" bootcmd
                if [ $new_instance = 1 ]; then
                    add_authorized_keys "$cc"
                    install_host_keys "$cc"
                    write_files "$cc"
                    add_commands "$cc" "$inst/scripts/runcmd" runcmd
                fi
                ;;
            text/x-shellscript)
                if [ $new_instance = 1 ]; then
                    s="$inst/scripts/part-$(basename "$n")"
                    cp "$n.body" "$s"; chmod 700 "$s"
                fi
                ;;
            *) log "user-data part of type $type ignored" ;;
        esac
    done
    [ -n "$name" ] && set_hostname "$name"
    # bootcmd runs at every boot, before the instance's first-boot steps (as cloud-init's does);
    # vmctl's seed mounts the VM's volumes with it.
    if [ -s "$RUN/bootcmd" ]; then
        (cd / && HOME=/root sh "$RUN/bootcmd") </dev/null >>/var/log/cloud-init-output.log 2>&1 \
            || log "bootcmd exited with status $?"
    fi
    if [ $new_instance = 1 ]; then
        if [ $GOT_HOST_KEY = 0 ]; then
            # cloud-init deletes a previous instance's host keys and makes new ones.
            rm -f /etc/dropbear/dropbear_*_host_key
            generate_host_key
        fi
        [ -s "$inst/scripts/runcmd" ] || rm -f "$inst/scripts/runcmd"
        ln -sfn "$inst" "$CLOUD/instance"
        echo "$iid" >"$CLOUD/data/instance-id"
    fi
    have_host_key || generate_host_key
    sync
    return 0
}

# User scripts first, then runcmd (the order cloud-init's scripts-user runs them), once per instance.
run_scripts() {
    inst=$CLOUD/instance
    [ -d "$inst/scripts" ] || return 0
    [ -e "$inst/sem-scripts-user" ] && return 0
    : >"$inst/sem-scripts-user"; sync
    for s in "$inst"/scripts/part-* "$inst/scripts/runcmd"; do
        [ -f "$s" ] || continue
        case "$s" in */runcmd) set -- sh "$s" ;; *) set -- "$s" ;; esac
        (cd / && HOME=/root "$@") </dev/null >>/var/log/cloud-init-output.log 2>&1 \
            || log "user script $(basename "$s") exited with status $?"
    done
    sync
}

fingerprints() {
    host=; read -r host </proc/sys/kernel/hostname
    echo "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
    for k in /etc/dropbear/dropbear_*_host_key; do
        [ -f "$k" ] || continue
        out=$(dropbearkey -y -f "$k" 2>/dev/null) || continue
        # pub: its first "ssh-*"/"ecdsa-*" line; fp: the SHA256:... of its first "Fingerprint:" line.
        pub= fp= seen_fp=
        while IFS= read -r l; do
            case "$l" in
                ssh-*|ecdsa-*) [ -n "$pub" ] || pub=$l ;;
                Fingerprint:*)
                    [ -n "$seen_fp" ] && continue
                    f=${l#Fingerprint:}
                    while [ "${f# }" != "$f" ]; do f=${f# }; done
                    case "$f" in SHA256:*) seen_fp=1; f=${f#SHA256:}; fp=SHA256:${f%%[!A-Za-z0-9+/]*} ;; esac
                    ;;
            esac
        done <<EOF
$out
EOF
        [ -n "$fp" ] || fp="SHA256:$(echo "$pub" | cut -d' ' -f2 | base64 -d | sha256sum | cut -d' ' -f1 \
            | sed 's/../\\x&/g' | xargs -0 printf '%b' | base64 | tr -d '=\n')"
        case "$pub" in
            ssh-ed25519*) bits=256 type=ED25519 ;;
            ecdsa-sha2-nistp256*) bits=256 type=ECDSA ;;
            ecdsa-sha2-nistp384*) bits=384 type=ECDSA ;;
            ecdsa-sha2-nistp521*) bits=521 type=ECDSA ;;
            ssh-rsa*) type=RSA
                bits=$(echo "$pub" | cut -d' ' -f2 | base64 -d | od -An -tx1 -v | awk -f "$LIB/rsabits.awk") ;;
            *) continue ;;
        esac
        echo "$bits $fp root@$host ($type)"
    done
    echo "-----END SSH HOST KEY FINGERPRINTS-----"
}

case "$1" in
    apply) apply ;;
    run-scripts) run_scripts ;;
    fingerprints) fingerprints ;;
    runcmd-script) add_commands "$2" "$3" runcmd ;;   # for tests: parsed cloud-config dir -> script
    *) echo "usage: $0 apply|run-scripts|fingerprints|runcmd-script DIR OUT" >&2; exit 2 ;;
esac
