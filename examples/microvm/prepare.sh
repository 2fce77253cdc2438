#!/usr/bin/env bash
# Prepares what examples/microvm runs: the guest's initramfs (a static busybox and
# guest/init) and the jail's rootfs (empty directories and mount points; the binds are
# paddock's). Usage: prepare.sh DIR; prints the kernel it found. See README.md.
#
#   DIR/initrd.gz       the guest's initramfs (newc cpio, gzip), with the kernel's virtio
#                       network modules (for run.sh --net) when /lib/modules has them
#   DIR/rootfs/         the jail's root: empty mount points for /usr, /etc/ld.so.cache,
#                       /guest/vmlinuz, /guest/initrd.gz, /proc, /dev, and the
#                       merged-/usr symbolic links (/lib -> usr/lib, ...) the host has
#
# Environment: KERNEL (default: the newest /boot/vmlinuz-*-cloud-amd64, as vm/run-tests),
# BUSYBOX (default: busybox on PATH, else /bin/busybox; must be static).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "examples/microvm/prepare.sh: $*" >&2; exit 1; }

(($# == 1)) || die "usage: prepare.sh DIR"
dir=$1
kernel=${KERNEL:-$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1 || true)}
[[ -n $kernel && -r $kernel ]] ||
    die "no kernel: install linux-image-cloud-amd64 (vm/install-deps) or set KERNEL"
busybox=${BUSYBOX:-$(type -P busybox || echo /bin/busybox)}
[[ -x $busybox ]] || die "no busybox: install busybox-static (vm/install-deps) or set BUSYBOX"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install busybox-static or set BUSYBOX"
fi
for t in cpio gzip; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install $t)"
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# The initramfs: /init, /bin/busybox, and the directories init mounts on.
tree=$(mktemp -d "$dir/initrd-tree.XXXXXX")
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,dev,proc,sys,tmp,modules}
cp "$busybox" "$tree/bin/busybox"
# virtio-pci and virtio-net, modules in Debian's cloud kernel (run.sh --net), in the order
# init loads them (dependencies first). Without them the guest boots, without a network.
kver=$(basename "$kernel"); kver=${kver#vmlinuz-}
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
    ko=$(find "/lib/modules/$kver/kernel" -name "$m.ko*" -print -quit 2>/dev/null || true)
    [[ -n $ko ]] || continue
    case $ko in
        *.ko) cp "$ko" "$tree/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$ko" >"$tree/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$ko" >"$tree/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$ko" >"$tree/modules/$m.ko" ;;
    esac
done
cp "$here/guest/init" "$tree/init"
chmod 755 "$tree/init" "$tree/bin/busybox"
(cd "$tree" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --quiet -R 0:0) | gzip -1 >"$dir/initrd.gz.tmp"
mv "$dir/initrd.gz.tmp" "$dir/initrd.gz"
chmod 644 "$dir/initrd.gz"

# The rootfs: nothing in it but mount points. paddock's jail binds /usr, the loader cache,
# the kernel and the initramfs read-only onto them, mounts /proc (pid namespace) and a
# minimal /dev; the rest of the host is not there.
root=$dir/rootfs
mkdir -p "$root"/{usr,etc,guest,proc,dev}
chmod 755 "$root" "$root"/{usr,etc,guest,proc,dev}
for f in etc/ld.so.cache guest/vmlinuz guest/initrd.gz; do
    [[ -e $root/$f ]] || : >"$root/$f"
done
# /bin, /lib, /lib64: the same symbolic links as the host's merged /usr (the ELF
# interpreter is /lib64/ld-linux-x86-64.so.2); on a host without merged /usr they are
# directories, which run.sh binds read-only instead.
for l in bin lib lib64 sbin; do
    if [[ -L /$l ]]; then
        [[ -L $root/$l ]] || ln -s "$(readlink "/$l")" "$root/$l"
    elif [[ -d /$l ]]; then
        mkdir -p "$root/$l"
    fi
done
echo "$kernel"
