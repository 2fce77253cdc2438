#!/usr/bin/env bash
# Boots a QEMU microVM (examples/microvm) in a jailed paddock sandbox, by hand.
#
#   run.sh [--kvm] [--dir DIR] run   foreground: `paddock run` with the console on this
#                                    terminal; Ctrl-C stops the VM (SIGTERM to QEMU)
#   run.sh [--kvm] [--dir DIR] api   through a daemon's API with curl: create, wait for the
#                                    boot marker in the log, stop, show the stop report,
#                                    delete. Needs `paddock serve` (its --uid-range gives
#                                    the dynamic user); PADDOCK_SOCKET names its socket
#   run.sh [--kvm] [--dir DIR] spec ID
#                                    print the API's sandbox spec (what `api` posts; the
#                                    test crates/paddock/tests/microvm.rs posts it too)
#   run.sh qemu-args                 print QEMU's command line (to try it without paddock)
#
# --kvm: -accel kvm and /dev/kvm in the jail (default TCG; see README.md for why).
# --net: a network: the sandbox gets paddock's veth network with a tap, tap0, whose own
#        address is 172.31.0.1/30 and whose owner is the VMM's user; QEMU attaches to it
#        (-netdev tap, /dev/net/tun in the jail), the guest takes 172.31.0.2 and pings the
#        tap's side, printing PADDOCK-MICROVM-PING ok (needs the daemon's veth networking,
#        see docs/network.md).
# Environment: PADDOCK (the binary; default `paddock` on PATH, else this repository's
# target/release or target/debug build), PADDOCK_SOCKET (default /run/paddock/paddock.sock),
# KERNEL, BUSYBOX (see prepare.sh), BOOT_TIMEOUT (api: seconds to wait for the marker, 120).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "examples/microvm/run.sh: $*" >&2; exit 1; }

accel=tcg
net=no
dir=${TMPDIR:-/tmp}/paddock-microvm
while (($#)); do
    case $1 in
        --kvm) accel=kvm; shift ;;
        --net) net=yes; shift ;;
        --dir) dir=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
    esac
done
mode=${1:-run}

marker=PADDOCK-MICROVM-BOOTED
# The tap's address in the sandbox's namespace, and the guest's, on one /30.
tap_address=172.31.0.1/30
guest_address=172.31.0.2/30
append="console=ttyS0 loglevel=2 edd=off panic=-1"
[[ $net == yes ]] && append+=" paddock.ip=$guest_address paddock.peer=${tap_address%/*}"
# The guest's console is the microvm's ISA serial port (ttyS0), on QEMU's stdout. No
# firmware ROMs, devices, network, disk, monitor or user config; the kernel and initramfs
# are the jail's read-only binds. acpi=off: under TCG the guest's clock never ticks with
# microvm's ACPI tables (see README.md); -no-reboot + panic=-1: a guest panic ends QEMU.
qemu=(/usr/bin/qemu-system-x86_64
    -M microvm,acpi=off -m 256 -smp 1
    -nodefaults -no-user-config -nographic -serial stdio -no-reboot
    -kernel /guest/vmlinuz -initrd /guest/initrd.gz
    -append "$append")
# virtio-net on the sandbox's tap0 (made by paddock, owned by the VMM's user: QEMU only
# attaches to it). A `pc` machine with virtio-net-pci, not microvm's virtio-mmio: Debian's
# cloud kernel has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so with acpi=off (which TCG
# needs, above) the guest could not find a virtio-mmio device; SeaBIOS comes from /usr.
if [[ $net == yes ]]; then
    qemu[2]=pc
    qemu+=(-netdev tap,id=n0,ifname=tap0,script=no,downscript=no
        -device virtio-net-pci,netdev=n0,romfile=)
fi
if [[ $accel == kvm ]]; then qemu+=(-accel kvm -cpu host); else qemu+=(-accel tcg); fi
if [[ $mode == qemu-args ]]; then printf '%q ' "${qemu[@]}"; echo; exit 0; fi

command -v qemu-system-x86_64 >/dev/null || die "no qemu-system-x86_64 (vm/install-deps)"

kernel=$("$here/prepare.sh" "$dir")
root=$dir/rootfs

# The jail, as flags. Dynamic users need the daemon, so the foreground run uses nobody's
# uid and gid (65534) instead; the API call below asks for a dynamic user.
binds=(--ro-bind /usr:/usr --ro-bind /etc/ld.so.cache:/etc/ld.so.cache
    --ro-bind "$kernel:/guest/vmlinuz" --ro-bind "$dir/initrd.gz:/guest/initrd.gz")
for l in bin lib lib64 sbin; do
    [[ -d /$l && ! -L /$l ]] && binds+=(--ro-bind "/$l:/$l")
done
devices=()
kvm_gid=""
if [[ $accel == kvm ]]; then
    [[ -c /dev/kvm ]] || die "--kvm: no /dev/kvm on this host"
    kvm_gid=$(stat -c %g /dev/kvm)
    devices=(--device /dev/kvm --group-add "$kvm_gid")
fi
network=()
if [[ $net == yes ]]; then
    [[ -c /dev/net/tun ]] || die "--net: no /dev/net/tun on this host (modprobe tun)"
    devices+=(--device /dev/net/tun)
    network=(--net veth --tap "tap0:65534:65534@$tap_address")
fi

find_paddock() {
    paddock=${PADDOCK:-$(type -P paddock || true)}
    if [[ -z $paddock ]]; then
        for p in "$repo/target/release/paddock" "$repo/target/debug/paddock"; do
            [[ -x $p ]] && { paddock=$p; break; }
        done
    fi
    [[ -n $paddock ]] || die "no paddock binary: cargo build --release -p paddock, or set PADDOCK"
}

# The API's spec: the same jail, with a dynamic user (the daemon's --uid-range).
spec() {
    local id=$1 mounts argv l
    command -v jq >/dev/null || die "jq not found"
    mounts=$(jq -n --arg k "$kernel" --arg i "$dir/initrd.gz" '[
        {type: "bind", source: "/usr", target: "/usr", readonly: true},
        {type: "bind", source: "/etc/ld.so.cache", target: "/etc/ld.so.cache", readonly: true},
        {type: "bind", source: $k, target: "/guest/vmlinuz", readonly: true},
        {type: "bind", source: $i, target: "/guest/initrd.gz", readonly: true}]')
    for l in bin lib lib64 sbin; do
        [[ -d /$l && ! -L /$l ]] && mounts=$(jq --arg p "/$l" \
            '. + [{type: "bind", source: $p, target: $p, readonly: true}]' <<<"$mounts")
    done
    argv=$(printf '%s\n' "${qemu[@]}" | jq -R . | jq -s .)
    jq -n --arg id "$id" --arg root "$root" --argjson mounts "$mounts" \
        --arg kvm "$kvm_gid" --argjson argv "$argv" --arg net "$net" --arg tap "$tap_address" '{
        id: $id, command: $argv[0], args: $argv[1:],
        stop: {grace_period_ms: 10000, kill_timeout_ms: 5000},
        jail: {
            user: ({dynamic: true} + (if $kvm == "" then {} else {groups: [($kvm | tonumber)]} end)),
            namespaces: ["pid", "mount"],
            seccomp: "default",
            filesystem: ({rootfs: $root, readonly: true, mounts: $mounts}
                + ([(if $kvm == "" then empty else "/dev/kvm" end),
                    (if $net == "yes" then "/dev/net/tun" else empty end)]
                   | if length == 0 then {} else {devices: .} end))
        } }
        + (if $net == "yes" then {network: {veth: {taps: [{name: "tap0", address: $tap}]}}} else {} end)'
}

case $mode in
spec)
    (($# == 2)) || die "usage: run.sh [--kvm] [--dir DIR] spec ID"
    spec "$2"
    ;;
run)
    find_paddock
    echo "booting; the guest prints $marker; Ctrl-C stops it" >&2
    exec "$paddock" run --name microvm --summary --stop-timeout 10s \
        --user 65534:65534 --rootfs "$root" --read-only "${binds[@]}" "${devices[@]}" \
        --unshare pid,mount --seccomp default "${network[@]}" \
        -- "${qemu[@]}"
    ;;
api)
    sock=${PADDOCK_SOCKET:-/run/paddock/paddock.sock}
    [[ -S $sock ]] || die "no daemon socket at $sock: start \`paddock serve\` or set PADDOCK_SOCKET"
    command -v curl >/dev/null || die "curl not found"
    api() { curl -sS --unix-socket "$sock" -H 'content-type: application/json' "$@"; }
    id=microvm-$$
    spec=$(spec "$id")
    echo "POST /v1/sandboxes" >&2
    out=$(api -X POST --data-binary "$spec" -w '\n%{http_code}' http://paddock/v1/sandboxes)
    [[ ${out##*$'\n'} == 201 ]] || die "create: HTTP ${out##*$'\n'}: ${out%$'\n'*}"
    jq '{id, state, pid, jail}' <<<"${out%$'\n'*}"
    start=$SECONDS
    # (The log is read whole before grep: with pipefail, grep -q closing the pipe early
    # would fail the pipeline on curl's SIGPIPE.)
    until log=$(api "http://paddock/v1/sandboxes/$id/logs") && [[ $log == *"$marker"* ]]; do
        if ((SECONDS - start > ${BOOT_TIMEOUT:-120})); then
            api "http://paddock/v1/sandboxes/$id/logs" >&2 || true
            api -X POST "http://paddock/v1/sandboxes/$id/kill" >/dev/null || true
            api -X DELETE "http://paddock/v1/sandboxes/$id" >/dev/null || true
            die "no $marker after ${BOOT_TIMEOUT:-120} s"
        fi
        sleep 0.5
    done
    echo "booted after ~$((SECONDS - start)) s; the sandbox log:" >&2
    tr -d '\r' <<<"$log"
    echo "POST /v1/sandboxes/$id/stop" >&2
    api -X POST "http://paddock/v1/sandboxes/$id/stop?timeout=10s" |
        jq '{reason, signalled, killed_after_grace, stuck, total_ms}'
    api "http://paddock/v1/sandboxes/$id" | jq '{state, main_exit}'
    api -X DELETE "http://paddock/v1/sandboxes/$id"
    ;;
*) die "unknown mode $mode (run, api, spec, qemu-args)" ;;
esac
