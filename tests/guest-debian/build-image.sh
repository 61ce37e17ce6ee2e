#!/usr/bin/env bash
# Build the Debian test guest: a minimal Debian 12 (bookworm) disk image with sshd and python3 that
# Ansible can manage. On every boot a small unit (virtfleet-firstboot.service) takes the hostname and the SSH
# keys from the config drive (OpenStack config-2: openstack/latest/meta_data.json), so molecule
# scenarios and tests reach it over SSH. See tests/guest-debian/README.md.
#
# No loop devices and no mounts on the host: mmdebstrap builds the root filesystem in its own user and
# mount namespace (--mode=unshare) and packs it as a tarball, unpacked into a directory here;
# `mkfs.ext4 -d` makes the root filesystem from that directory, `mkfs.fat` + `mcopy` + `syslinux` the
# boot partition, `sfdisk` writes the partition table into a plain file, `dd` puts the pieces in place
# and `qemu-img convert` makes the compressed qcow2.
#
# Usage: build-image.sh OUTDIR   -> OUTDIR/virtfleet-debian-guest.qcow2 (and build.stamp)
# Rebuilds only when this script, a hook, a file it copies into the guest, or the kernel package changed.
set -euo pipefail

OUT=${1:?usage: build-image.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=bookworm
BOOT_MIB=40
ROOT_HEADROOM_MIB=384
IMAGE=virtfleet-debian-guest.qcow2
# Guest packages beyond the minbase variant: init and udev, the network (systemd-networkd is part of
# systemd), sshd, python3 for Ansible, sudo for the unprivileged user, and the cloud kernel. dbus, because
# systemd-logind (which powers the guest off on ACPI's power button, as libvirt's shutdown asks) needs it: without
# it the guest ignores a shutdown request and a cold resize times out.
PACKAGES=systemd-sysv,udev,kmod,dbus,openssh-server,python3,sudo,linux-image-cloud-amd64,initramfs-tools,zstd

need() { command -v "$1" >/dev/null || { echo "build-image: $1 is missing; run scripts/setup-host.sh" >&2; exit 1; }; }
for tool in mmdebstrap mkfs.ext4 mkfs.fat mcopy syslinux sfdisk qemu-img tar dd apt-cache; do need "$tool"; done
MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR" ] || { echo "build-image: $MBR is missing (package syslinux-common)" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The cloud kernel metapackage's version moves with every kernel update: part of the stamp, so a new kernel
# (security fixes) means a new image.
kernel_version() { apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null | sed -n 's/^Version: //p'; }
KERNEL_VERSION=$(kernel_version)
if [ -z "$KERNEL_VERSION" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    KERNEL_VERSION=$(kernel_version)
fi
[ -n "$KERNEL_VERSION" ] || { echo "build-image: linux-image-cloud-amd64 is unknown to apt (apt-get update?)" >&2; exit 1; }
INPUTS=("$0" "$HERE"/hooks/* "$HERE/virtfleet_firstboot.py" "$HERE/virtfleet-firstboot.service" "$HERE/ssh-ready.conf")
STAMP=$(cat "${INPUTS[@]}" | sha256sum | cut -d' ' -f1)-kernel-$KERNEL_VERSION
if [ -f "$OUT/build.stamp" ] && [ "$(cat "$OUT/build.stamp")" = "$STAMP" ] && [ -f "$OUT/$IMAGE" ]; then
    echo "build-image: up to date ($OUT)"
    exit 0
fi

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The root filesystem's UUID follows from the stamp: the same inputs give the same kernel command line.
ROOT_UUID=$(printf '%s' "$STAMP" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
APPEND="console=ttyS0,115200 root=UUID=$ROOT_UUID rw quiet loglevel=3 no_timer_check net.ifnames=0"

# Debian's mirror (VIRTFLEET_DEBIAN_MIRROR names another one, e.g. a local proxy).
SOURCES="$WORK/sources.list"
if [ -n "${VIRTFLEET_DEBIAN_MIRROR:-}" ]; then
    echo "deb $VIRTFLEET_DEBIAN_MIRROR $SUITE main" > "$SOURCES"
else
    echo "deb http://deb.debian.org/debian $SUITE main" > "$SOURCES"
    echo "deb http://deb.debian.org/debian-security $SUITE-security main" >> "$SOURCES"
fi

# mmdebstrap in its own namespaces; hooks/ configures the guest before it is packed (see the hooks).
export VIRTFLEET_GUEST_FILES="$HERE" VIRTFLEET_ROOT_UUID="$ROOT_UUID"
mmdebstrap --mode=unshare --variant=minbase --format=tar --include="$PACKAGES" --hook-directory="$HERE/hooks" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$WORK/rootfs.tar" "$SOURCES"

# Unpack as root with the owners the tarball records; the kernel and initrd go to the boot partition.
mkdir "$WORK/root"
tar --numeric-owner -xpf "$WORK/rootfs.tar" -C "$WORK/root"
rm -f "$WORK/rootfs.tar"
KERNEL=$(find "$WORK/root/boot" -name 'vmlinuz-*' | head -n 1)
INITRD=$(find "$WORK/root/boot" -name 'initrd.img-*' | head -n 1)

# Boot partition: FAT with syslinux (it finds its files through the partition offset, the "hidden
# sectors" of the boot sector).
cat > "$WORK/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND $APPEND
CFG
cp "$KERNEL" "$WORK/vmlinuz"
cp "$INITRD" "$WORK/initrd.img"
BOOT_START=2048                                   # sectors of 512 bytes: 1 MiB alignment
BOOT_SECTORS=$((BOOT_MIB * 2048))
mkfs.fat -C -F 16 -h "$BOOT_START" -n VFBOOT "$WORK/boot.img" $((BOOT_MIB * 1024)) >/dev/null
mcopy -i "$WORK/boot.img" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
syslinux --install "$WORK/boot.img"

# Root partition: ext4 made from the directory, sized to its content plus headroom.
USED_MIB=$(du -sm --apparent-size "$WORK/root" | cut -f1)
ROOT_MIB=$(( (USED_MIB * 12 / 10 + ROOT_HEADROOM_MIB + 63) / 64 * 64 ))
mkfs.ext4 -q -F -L vfroot -U "$ROOT_UUID" -E lazy_itable_init=0,lazy_journal_init=0 \
    -d "$WORK/root" "$WORK/root.img" "${ROOT_MIB}M" >/dev/null
rm -rf "$WORK/root"

# The disk: an MBR with syslinux's boot code, the bootable FAT partition, then the root partition.
ROOT_START=$((BOOT_START + BOOT_SECTORS))
ROOT_SECTORS=$((ROOT_MIB * 2048))
DISK="$WORK/disk.raw"
truncate -s $(( (ROOT_START + ROOT_SECTORS) * 512 )) "$DISK"
sfdisk --quiet --no-reread --no-tell-kernel "$DISK" <<EOF
label: dos
unit: sectors
start=$BOOT_START, size=$BOOT_SECTORS, type=e, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
EOF
dd if="$MBR" of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.img" of="$DISK" bs=1M seek=$((BOOT_START / 2048)) conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$DISK" bs=1M seek=$((ROOT_START / 2048)) conv=notrunc,sparse status=none
qemu-img convert -q -f raw -O qcow2 -c "$DISK" "$WORK/$IMAGE"

chmod 644 "$WORK/$IMAGE"
mv -f "$WORK/$IMAGE" "$OUT/$IMAGE"
echo "$STAMP" > "$OUT/build.stamp"
echo "build-image: built $OUT/$IMAGE ($(stat -c %s "$OUT/$IMAGE") bytes, virtual $(( (ROOT_START + ROOT_SECTORS) / 2048 )) MiB, kernel ${KERNEL##*/vmlinuz-})"
