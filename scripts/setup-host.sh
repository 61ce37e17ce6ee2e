#!/usr/bin/env bash
# Idempotent host setup for a Debian 12 hypervisor / CI machine:
#   distro packages, /dev/kvm permissions, virtlogd + libvirtd running,
#   the Python virtualenv (.venv) and the collection linked where Ansible finds it.
# Safe to run any number of times; a second run does nothing but check.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VIRTFLEET_VENV:-$repo/.venv}
log() { printf '[setup-host] %s\n' "$*" >&2; }

# The last two lines: ansible-test's shellcheck sanity test; the Debian test guest (tests/guest-debian) and
# molecule's SSH keys.
packages=(
  libvirt-daemon-system libvirt-clients libxml2-utils qemu-system-x86 qemu-utils ovmf
  libvirt-dev pkg-config gcc python3-dev python3-venv
  dosfstools mtools e2fsprogs xfsprogs util-linux iproute2 cpio xz-utils zstd bzip2 gzip
  busybox-static syslinux syslinux-common genisoimage curl ca-certificates
  dnsmasq-base swtpm swtpm-tools
  shellcheck
  mmdebstrap uidmap fdisk openssh-client
  # a hypervisor's own Python with what the modules need (the qemu:///session test runs them as another user)
  python3-libvirt python3-lxml python3-pycdlib
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing distro packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# /dev/kvm: the distro setting (group kvm, 0660). With 0600 root libvirt re-probes
# QEMU on every domain start (~4 s each).
if [ -e /dev/kvm ]; then
  getent group kvm >/dev/null || groupadd -r kvm
  if ! { chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; }; then log "could not set /dev/kvm permissions"; fi
fi

# swtpm: libvirt runs swtpm_setup as qemu.conf's swtpm_user (default tss), which must own the local CA
# state and its per-guest logs. Files left by a run as root (libvirtd started before swtpm-tools created
# tss) make every later TPM guest fail to start ("Need read/write rights on .lock.swtpm-localca").
swtpm_user=$(sed -n 's/^[[:space:]]*swtpm_user[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
  /etc/libvirt/qemu.conf 2>/dev/null | tail -n 1)
swtpm_user=${swtpm_user:-tss}
if getent passwd "$swtpm_user" >/dev/null; then
  for d in /var/lib/swtpm-localca /var/log/swtpm/libvirt/qemu; do
    [ -d "$d" ] || continue
    if [ -n "$(find "$d" ! -user "$swtpm_user" -print -quit)" ]; then
      log "giving $d to the swtpm user $swtpm_user"
      find "$d" ! -user "$swtpm_user" -exec chown "$swtpm_user" {} +
    fi
  done
fi

# Daemons: systemd where it is PID 1, else start them by hand.
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl start virtlogd libvirtd
else
  pgrep -x virtlogd >/dev/null || { log "starting virtlogd"; virtlogd -d; }
  pgrep -x libvirtd >/dev/null || { log "starting libvirtd"; libvirtd -d; }
fi
for _ in $(seq 1 50); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -q -c qemu:///system version >/dev/null || { log "libvirtd does not answer on qemu:///system"; exit 1; }

# Python virtualenv with the pinned requirements.
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$repo/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python requirements"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -r "$repo/requirements.txt"
  echo "$want" > "$stamp"
fi

# Ansible finds the collection through ansible.cfg (collections_path = .build/collections).
link="$repo/.build/collections/ansible_collections/virtfleet/libvirt"
mkdir -p "$(dirname "$link")"
[ -L "$link" ] || ln -sfn ../../../.. "$link"

# Instance tree traversable by the qemu user.
install -d -m 0755 /var/lib/virtfleet /var/lib/virtfleet/instances
log "ready: $(virsh -q -c qemu:///system version | head -1 | tr -s ' ')"
