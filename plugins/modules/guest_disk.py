#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: guest_disk
short_description: Create, grow and remove the disk files of a libvirt guest (root, ephemeral, swap, blank, config drive)
version_added: 0.1.0
description:
  - Manages one disk file in a guest's instance directory (C(<instances_path>/<guest>/)), by O(kind).
  - O(kind=root) builds the root disk from a cached base image (see M(virtfleet.libvirt.image_cache)),
    either as a qcow2 overlay that names its backing file and backing format explicitly, or as a flat
    copy; it is then grown to O(size). Shrinking is refused, because it destroys data, and so is a base
    larger than O(size).
  - O(kind=ephemeral) makes a data disk of O(size) formatted with O(fs_type) and labelled O(label);
    O(kind=swap) makes O(size) of swap space with a swap signature. Like Nova, the formatted blank
    images are cached once per (size, filesystem, label) in C(<instances_path>/_base/)
    (C(ephemeral_<size>_<fs>_<label>), C(swap_<size>)), and each guest gets a qcow2 overlay on the cached
    one (or a flat copy with O(format=raw)). The mkfs tools format a plain file; no loop device is used.
  - O(kind=blank) makes an unformatted disk of O(size).
  - O(kind=config_drive) writes an ISO9660 volume in Python (pycdlib), in the OpenStack layout
    (O(format=config-2), label C(config-2)) or the NoCloud layout (O(format=nocloud), label C(cidata)).
    It is rebuilt only when its content changes (a digest of the content is kept in
    C(<file_name>.digest.json), mode 0600), or when the file was damaged.
  - Every disk file is created mode 0600 (0660 when O(group) is given) and owned by root unless O(mode),
    O(owner) and O(group) say otherwise; libvirt (with its default C(dynamic_ownership)) hands it to the qemu
    user while the guest runs. A warning says so when C(dynamic_ownership) is off.
  - The format of every disk is recorded once in C(disk.info.json) in the instance directory, with how it was
    made and its virtual size; all later qemu-img calls use the recorded format and never probe a file a guest
    has written to. The record is changed only under the guest's lock (C(<instances_path>/locks/)), so disks of
    one guest may be built at once.
  - The virtual size of an existing disk is read from the file itself in its recorded format (a raw file's
    length, a qcow2 header's size field), so a run with nothing to do starts no process; qemu-img runs to make
    or grow a disk, and to read a qcow2 header that is anything but ordinary.
  - A re-run notices a disk that no longer matches its record (a qcow2 file cut short or without its header, a
    virtual size other than the recorded one) and fails saying so, without touching it; a damaged config drive
    is rebuilt. O(adopt=true) records such a file, or one that has no record, as it is.
  - A disk is built under a temporary name, recorded, then renamed into place. A full filesystem or a file
    larger than the filesystem takes ends in a message naming the file and the space it needs, with nothing
    half-made under the disk's name. A disk made on a cached base holds the base's lock (shared) while it is
    made, so M(virtfleet.libvirt.image_cache) does not remove the base meanwhile. qemu-img and mkfs die with
    the module; what a killed run left behind is removed by the next one.
  - Growing a disk (root or blank) that a running guest holds is refused with a message (qemu's image lock);
    live growth belongs to M(virtfleet.libvirt.vm_resize). An ephemeral or swap disk is never resized or
    reformatted in place.
  - O(state=absent) removes the file and its record, but refuses while a defined libvirt domain still
    uses the file (as a disk or in a disk's backing chain), unless O(force=true).
  - Options that do not apply to the O(kind) (such as O(admin_pass) for a root disk or O(size) for a config
    drive) are refused rather than ignored.
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
  - virtfleet.libvirt.items.guest_disk
options:
  guest:
    description:
      - Name of the guest; its files live in C(<instances_path>/<guest>/).
      - Required, unless O(items) lists the disks.
    type: str
  kind:
    description: What the disk is for.
    type: str
    default: root
    choices: [root, ephemeral, swap, blank, config_drive]
  state:
    description:
      - C(present) creates the disk (or grows it, or rebuilds a config drive whose content changed).
      - C(absent) removes the file and its record; see O(force).
    type: str
    default: present
    choices: [present, absent]
  force:
    description: With O(state=absent), remove the file even when a defined libvirt domain references it.
    type: bool
    default: false
  adopt:
    description:
      - Record an existing disk file that has no record in C(disk.info.json) (the record was lost), or whose
        record it no longer matches, as it is now, instead of refusing it.
      - The format is taken from O(format), which is then required (a config drive is raw); it is never guessed
        from the file. A qcow2 file is adopted only when the backing file its header names, if any, is O(base)
        (root) or the cached formatted base (ephemeral, swap), with its format named.
      - Nothing is written when the disk already matches its record.
    type: bool
    default: false
  instance_dir:
    description: The guest's directory, when it is not C(<instances_path>/<guest>).
    type: path
  file_name:
    description:
      - File name inside the instance directory. Defaults by O(kind) to C(disk), C(disk.local), C(disk.swap),
        C(disk.blank) or C(disk.config).
    type: str
  format:
    description:
      - Format of the disk file, C(qcow2) (the default) or C(raw). An overlay is always C(qcow2).
      - For O(kind=config_drive), the layout instead, C(config-2) (the default) or C(nocloud); the file is a raw ISO.
      - For an existing disk the recorded format is used.
    type: str
    choices: [qcow2, raw, config-2, nocloud]
  size:
    description:
      - Virtual size of the disk, such as C(10G) or C(512M) or a number of bytes. Units are binary (C(G) and
        C(GiB) are 1024^3 bytes), except C(KB), C(MB), C(GB), C(TB) which are decimal.
      - Required for O(kind=ephemeral), O(kind=swap) and O(kind=blank). For O(kind=root) it defaults to the
        virtual size of the base. A size smaller than the current disk or than the base is refused.
    type: str
  preallocation:
    description:
      - Preallocation of a new disk (qemu-img's C(preallocation) option). C(off) keeps files sparse.
      - Preallocating a qcow2 overlay makes it with C(extended_l2=on), as qemu requires.
    type: str
    choices: ['off', metadata, falloc, full]
  base:
    description: For O(kind=root), the base image on the hypervisor (RV(virtfleet.libvirt.image_cache#module:path)).
    type: path
  base_format:
    description:
      - Format of O(base), as returned by M(virtfleet.libvirt.image_cache). When not given it is read from
        the cache's record next to the base (C(<base>.info.json)); it is never guessed.
    type: str
    choices: [raw, qcow2]
  backing:
    description:
      - C(overlay) makes a qcow2 file backed by the base (fast, shares the base); C(flat) copies the base.
      - Defaults to C(overlay) for O(kind=root); for ephemeral and swap disks to C(overlay) with
        O(format=qcow2) and C(flat) with O(format=raw).
    type: str
    choices: [overlay, flat]
  fs_type:
    description:
      - Filesystem of an ephemeral disk, C(ext4) when not given. The matching mkfs tool must be installed on the
        hypervisor.
    type: str
    choices: [ext4, ext3, ext2, xfs, vfat]
  label:
    description:
      - Filesystem label of an ephemeral disk (default C(ephemeral0)) or swap label of a swap disk (default none).
      - Letters, digits, C(.), C(_) and C(-); at most 16 characters (12 for xfs, 11 for vfat).
    type: str
  mode:
    description:
      - Permissions of the disk file, an octal string such as C('0640') (quote it in YAML).
      - A number is taken as the mode only when it reads as one (a YAML C(0640) arrives as 416); a plain C(640),
        which YAML makes the number 640 (octal 1200), is refused.
      - When not given, a new file gets C(0600) (C(0660) when O(group) is given), and an existing file is left as
        it is.
    type: raw
  owner:
    description:
      - Owner of the disk file (name or uid, at most 4294967294). When not given, new files belong to root and
        existing files keep their owner (libvirt changes it to the qemu user while a guest runs).
    type: str
  group:
    description: Group of the disk file (name or gid), like O(owner).
    type: str
  hostname:
    description: Config drive; the guest's host name. Defaults to O(guest).
    type: str
  instance_uuid:
    description:
      - Config drive; the instance UUID (C(uuid) / C(instance-id)), in the 8-4-4-4-12 hex form (not the nil
        UUID). Defaults to a UUID derived from O(guest), stable across runs; pass the domain's UUID to have both
        agree.
    type: str
  public_keys:
    description:
      - Config drive; SSH public keys, a dict of name to key, or a list of keys. Public keys are not secret and
        are not hidden from the output.
    type: raw
  user_data:
    description: Config drive; user data (such as a C(#cloud-config) document), written as given.
    type: str
  admin_pass:
    description: Config drive (config-2 only); C(admin_pass) in C(meta_data.json).
    type: str
  network_data:
    description: Config drive; C(network_data.json) (config-2) or C(network-config) (nocloud).
    type: dict
  vendor_data:
    description:
      - Config drive; C(vendor_data.json) (config-2) or C(vendor-data) (nocloud).
      - Not treated as a secret (Ansible would mask each of its values wherever it appears, paths included); put
        secrets in O(user_data) or O(admin_pass).
    type: dict
  metadata:
    description: Config drive; user metadata (C(meta) in C(meta_data.json)).
    type: dict
  files:
    description:
      - Config drive (config-2 only); files to inject into the guest, stored as C(openstack/content/NNNN)
        and listed in C(meta_data.json).
    type: list
    elements: dict
    suboptions:
      path:
        description: Path of the file in the guest.
        type: str
        required: true
      content:
        description: Content of the file.
        type: str
        required: true
  extra_files:
    description:
      - Config drive; more files on the drive, a dict of relative path on the drive to content.
      - Not treated as a secret (its short values, such as C("1"), would be masked everywhere in the output,
        paths included); the content is never returned, and the drive is mode 0600.
    type: dict
notes:
  - O(user_data), O(admin_pass) and the content of O(files) are secrets (no_log); no file content is ever
    returned, only paths and sizes.
requirements:
  - qemu-img
  - pycdlib (for O(kind=config_drive))
  - mkfs.ext4, mkfs.xfs, mkfs.vfat or mkswap (for O(kind=ephemeral) and O(kind=swap)), found in C(PATH)
"""

EXAMPLES = r"""
- name: Cache the image
  virtfleet.libvirt.image_cache:
    url: https://images.example.com/debian-12.qcow2
    checksum: sha256:0c2f4e...
  register: image

- name: Root disk of 20 GiB as an overlay on the cached image
  virtfleet.libvirt.guest_disk:
    guest: web1
    kind: root
    base: "{{ image.path }}"
    base_format: "{{ image.format }}"
    size: 20G
  register: root_disk

- name: Flat raw root disk
  virtfleet.libvirt.guest_disk:
    guest: db1
    base: "{{ image.path }}"
    base_format: "{{ image.format }}"
    backing: flat
    format: raw
    size: 40G

- name: Ephemeral disk, ext4 labelled ephemeral0, as an overlay on a cached formatted base
  virtfleet.libvirt.guest_disk:
    guest: web1
    kind: ephemeral
    size: 10G
    fs_type: ext4
  register: ephemeral_disk

- name: Swap
  virtfleet.libvirt.guest_disk:
    guest: web1
    kind: swap
    size: 1G
  register: swap_disk

- name: Config drive in the OpenStack layout
  virtfleet.libvirt.guest_disk:
    guest: web1
    kind: config_drive
    format: config-2
    hostname: web1.example.com
    public_keys:
      admin: "{{ lookup('file', 'id_ed25519.pub') }}"
    user_data: |
      #cloud-config
      packages: [nginx]
  register: config_drive

- name: Attach them all
  virtfleet.libvirt.domain_xml:
    name: web1
    disks:
      - "{{ root_disk.xml_disk | combine({'boot_order': 1}) }}"
      - "{{ ephemeral_disk.xml_disk }}"
      - "{{ swap_disk.xml_disk }}"
      - "{{ config_drive.xml_disk | combine({'bus': 'sata'}) }}"

- name: Remove a scratch disk (refused while a defined domain uses it)
  virtfleet.libvirt.guest_disk:
    guest: web1
    kind: blank
    file_name: scratch.qcow2
    state: absent
"""

RETURN = r"""
results:
  description:
    - With O(items), one result per element, in order, with the keys below plus C(item) (the element's
      O(guest)), C(failed) and, for a failed element, C(msg).
  returned: with O(items)
  type: list
  elements: dict
kind:
  description: The kind of disk.
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: root
path:
  description: Path of the disk file.
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: /var/lib/virtfleet/instances/web1/disk
format:
  description: Format of the disk file, as recorded in C(disk.info.json) (C(raw) for a config drive).
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: qcow2
virtual_size:
  description: Virtual size of the disk in bytes after the task (for a config drive, the ISO's size; not known in check mode before it exists).
  returned: when O(state=present)
  type: int
  sample: 21474836480
actions:
  description:
    - What was done (or would be done in check mode), among C(create_base) (a cached formatted base was made),
      C(create), C(grow), C(rebuild) (config drive content changed, or the drive was damaged), C(chmod),
      C(chown), C(remove), C(forget) (a stale record was dropped), C(adopt) (an existing file was recorded, see
      O(adopt)).
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: str
  sample: [create]
xml_disk:
  description:
    - The disk as an element of M(virtfleet.libvirt.domain_xml)'s O(virtfleet.libvirt.domain_xml#module:disks)
      (C(path), C(format), C(device) C(disk) or C(cdrom), C(readonly)).
  returned: when O(state=present)
  type: dict
  sample: {path: /var/lib/virtfleet/instances/web1/disk.config, format: raw, device: cdrom, readonly: true}
owned_files:
  description: Files that belong to this disk (for C(metadata.owned_files) of M(virtfleet.libvirt.domain_xml)).
  returned: when O(state=present)
  type: list
  elements: str
backing_file:
  description: The base a qcow2 overlay is backed by.
  returned: for overlays
  type: str
  sample: /var/lib/virtfleet/instances/_base/ephemeral_10G_ext4_ephemeral0
base:
  description: The cached formatted base of an ephemeral or swap disk.
  returned: for O(kind=ephemeral) and O(kind=swap)
  type: str
fs_type:
  description: Filesystem of an ephemeral disk (C(swap) for a swap disk).
  returned: for O(kind=ephemeral) and O(kind=swap)
  type: str
label:
  description: Filesystem or swap label, or the config drive's volume label.
  returned: for O(kind=ephemeral), O(kind=swap) and O(kind=config_drive)
  type: str
  sample: ephemeral0
drive_format:
  description: Layout of the config drive.
  returned: for O(kind=config_drive)
  type: str
  sample: config-2
files:
  description: Paths of the files on the config drive (never their content).
  returned: for O(kind=config_drive)
  type: list
  elements: str
  sample: [openstack/latest/meta_data.json, openstack/latest/user_data]
referenced_by:
  description: Defined libvirt domains that name the disk (with O(state=absent)).
  returned: when O(state=absent)
  type: list
  elements: str
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.core import ensure_disks
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import MODULE_SPEC


def main():
    run_core(MODULE_SPEC, ensure_disks)


if __name__ == "__main__":
    main()
