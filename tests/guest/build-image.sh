#!/usr/bin/env bash
# Build the virtfleet test guest: a ~20 MiB BIOS-bootable disk image (partitionless FAT +
# syslinux) holding the Debian cloud kernel and a busybox initramfs whose /init reports what
# the guest sees on its serial console (see tests/guest/init). No loop devices, no mounts,
# nothing installed on the host beyond setup-host.sh's packages: the kernel package is
# fetched with `apt-get download` and unpacked with `dpkg -x`.
#
# Usage: build-image.sh OUTDIR   -> OUTDIR/virtfleet-test-guest.img, vmlinuz, initrd.img
# Rebuilds only when this script, the init or the kernel version changed (OUTDIR/build.stamp).
set -euo pipefail

OUT=${1:?usage: build-image.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
MODULES="virtio_pci virtio_blk virtio_scsi virtio_net virtio_balloon virtio_mem virtio_console sd_mod sr_mod
ata_piix isofs qemu_fw_cfg button evdev"
IMAGE_KIB=20480

need() { command -v "$1" >/dev/null || { echo "build-image: $1 is missing; run scripts/setup-host.sh" >&2; exit 1; }; }
for tool in busybox mkfs.fat mcopy syslinux cpio gzip apt-get dpkg ldd; do need $tool; done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
kernel_package() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
KPKG=$(kernel_package)
[ -n "$KPKG" ] || { apt-get update -qq >/dev/null 2>&1 || true; KPKG=$(kernel_package); }
[ -n "$KPKG" ] || { echo "build-image: cannot resolve the Debian cloud kernel package (apt-get update?)" >&2; exit 1; }
QGA_VERSION=$(apt-cache show --no-all-versions qemu-guest-agent 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$QGA_VERSION" ] || { echo "build-image: cannot resolve the qemu-guest-agent package (apt-get update?)" >&2; exit 1; }
STAMP=$(cat "$0" "$HERE/init" | sha256sum | cut -d' ' -f1)-$KPKG-qga$QGA_VERSION
if [ -f "$OUT/build.stamp" ] && [ "$(cat "$OUT/build.stamp")" = "$STAMP" ] \
   && [ -f "$OUT/virtfleet-test-guest.img" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
    echo "build-image: up to date ($OUT)"
    exit 0
fi

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT/debs"
if ! ls "$OUT/debs/$KPKG"_*.deb >/dev/null 2>&1; then
    (cd "$WORK" && { apt-get download -q "$KPKG" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true; })
    mv "$WORK/$KPKG"_*.deb "$OUT/debs/" 2>/dev/null || {
        echo "build-image: apt-get download $KPKG failed" >&2; exit 1; }
fi
QGA_DEBS="$OUT/debs/qemu-guest-agent-${QGA_VERSION//:/_}"
if ! ls "$QGA_DEBS"/qemu-guest-agent_*.deb >/dev/null 2>&1; then
    mkdir -p "$QGA_DEBS"
    (cd "$QGA_DEBS" && { apt-get download -q "qemu-guest-agent=$QGA_VERSION" 2>&1 \
        | grep -v '^W: Download is performed unsandboxed' || true; })
    ls "$QGA_DEBS"/qemu-guest-agent_*.deb >/dev/null 2>&1 || {
        echo "build-image: apt-get download qemu-guest-agent=$QGA_VERSION failed" >&2; exit 1; }
fi
dpkg -x "$OUT/debs/$KPKG"_*.deb "$WORK/kernel"
dpkg -x "$QGA_DEBS"/qemu-guest-agent_*.deb "$WORK/qga"
KVER=$(ls "$WORK/kernel/lib/modules")
busybox depmod -b "$WORK/kernel" "$KVER"

# The initramfs: busybox, the modules we need with their dependencies, the init.
ROOT="$WORK/initramfs"
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/lib/modules/$KVER"
cp "$(command -v busybox)" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
# qemu-ga from Debian's package with the shared libraries it links (the host's copies, which
# qemu-system-x86 pulls in), at the paths the dynamic loader searches.
cp "$WORK/qga/usr/sbin/qemu-ga" "$ROOT/bin/qemu-ga"
if ldd "$ROOT/bin/qemu-ga" | grep -q 'not found'; then
    echo "build-image: qemu-ga needs libraries this host lacks:" >&2
    ldd "$ROOT/bin/qemu-ga" | grep 'not found' >&2; exit 1
fi
for lib in $(ldd "$ROOT/bin/qemu-ga" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
cp "$HERE/init" "$ROOT/init"
chmod 755 "$ROOT/init"
DEP="$WORK/kernel/lib/modules/$KVER/modules.dep"
: > "$ROOT/etc/vf-modules"
for mod in $MODULES; do
    line=$(grep -E "(^|/)${mod}\.ko(\.[a-z]+)?:" "$DEP" || true)
    if [ -z "$line" ]; then
        grep -qE "/${mod}\.ko" "$WORK/kernel/lib/modules/$KVER/modules.builtin" && continue
        echo "build-image: module $mod is neither in $KPKG nor built in" >&2; exit 1
    fi
    echo "$mod" >> "$ROOT/etc/vf-modules"
    for f in ${line%%:*} ${line#*:}; do
        mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$f")"
        cp "$WORK/kernel/lib/modules/$KVER/$f" "$ROOT/lib/modules/$KVER/$f"
    done
done
cp "$WORK/kernel/lib/modules/$KVER/modules.builtin" "$ROOT/lib/modules/$KVER/"
busybox depmod -b "$ROOT" "$KVER"
(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) > "$WORK/initrd.img"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

# The disk: a partitionless FAT filesystem that syslinux boots (SeaBIOS reads its boot sector).
# no_timer_check: under TCG on a busy host the kernel's IO-APIC timer check can time out and panic
# ("IO-APIC + timer doesn't work!"); virtual machines do not need that check.
cat > "$WORK/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT virtfleet
PROMPT 0
TIMEOUT 0
LABEL virtfleet
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0,115200 quiet loglevel=1 no_timer_check memhp_default_state=online
CFG
IMG="$WORK/virtfleet-test-guest.img"
mkfs.fat -C -n VFGUEST "$IMG" "$IMAGE_KIB" >/dev/null
mcopy -i "$IMG" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
syslinux --install "$IMG"

for f in virtfleet-test-guest.img vmlinuz initrd.img; do
    chmod 644 "$WORK/$f"
    mv -f "$WORK/$f" "$OUT/$f"
done
echo "$STAMP" > "$OUT/build.stamp"
echo "build-image: built $OUT/virtfleet-test-guest.img ($(stat -c %s "$OUT/virtfleet-test-guest.img") bytes, kernel $KVER)"
