#!/usr/bin/env bash
# The main job: build the tiny image from Debian packages, boot a VM from it under libvirt, run a
# command in it over SSH (pinned host key), then remove the VM. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")"
VMCTL=${VMCTL:-.venv/bin/vmctl}
NAME=${DEMO_NAME:-demo-$$}
trap '$VMCTL rm -f "$NAME" >/dev/null 2>&1 || true' EXIT

$VMCTL info
$VMCTL image build tiny
$VMCTL images
$VMCTL run "$NAME" --image tiny --restrict-network
$VMCTL ls
echo "--- inside $NAME:"
$VMCTL exec "$NAME" -- sh -c 'echo "hostname: $(hostname)"; uname -sr; cat /proc/cpuinfo | grep -m1 "model name"'
$VMCTL stop "$NAME"
$VMCTL rm "$NAME"
trap - EXIT
