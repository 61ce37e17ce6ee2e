#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: guest_disk
short_description: Create and grow the disk files of a libvirt guest
version_added: 0.1.0
description:
  - Manages one disk file in a guest's instance directory (C(<instances_path>/<guest>/)).
  - O(kind=root) builds the root disk from a cached base image (see M(virtfleet.libvirt.image_cache)),
    either as a qcow2 overlay that names its backing file and backing format explicitly, or as a flat
    copy; it is then grown to O(size). Shrinking is refused, because it destroys data.
  - The format of every disk is recorded once in C(disk.info.json) in the instance directory; all later
    qemu-img calls use the recorded format and never probe a file a guest has written to.
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
options:
  guest:
    description: Name of the guest; its files live in C(<instances_path>/<guest>/).
    type: str
    required: true
  kind:
    description: What the disk is for.
    type: str
    default: root
    choices: [root]
  state:
    description: Only C(present) is supported in this version.
    type: str
    default: present
    choices: [present]
  instance_dir:
    description: The guest's directory, when it is not C(<instances_path>/<guest>).
    type: path
  file_name:
    description: File name inside the instance directory. Defaults to C(disk) for the root disk.
    type: str
  base:
    description: Path of the base image on the hypervisor (RV(virtfleet.libvirt.image_cache#module:path)).
    type: path
  base_format:
    description:
      - Format of O(base), as returned by M(virtfleet.libvirt.image_cache). When not given it is read from
        the cache's record next to the base; it is never guessed.
    type: str
    choices: [raw, qcow2]
  backing:
    description:
      - C(overlay) makes a qcow2 file backed by O(base) (fast, shares the base); C(flat) copies the base.
    type: str
    default: overlay
    choices: [overlay, flat]
  format:
    description: Format of the disk file. An overlay is always C(qcow2).
    type: str
    default: qcow2
    choices: [qcow2, raw]
  size:
    description:
      - Virtual size of the disk, such as C(10G) or C(512M) (binary units) or a number of bytes.
      - Defaults to the virtual size of the base. A size smaller than the current disk or the base is refused.
    type: str
  mode:
    description: Permissions of a newly created disk file.
    type: str
    default: "0644"
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

- name: Flat raw root disk
  virtfleet.libvirt.guest_disk:
    guest: db1
    base: "{{ image.path }}"
    base_format: "{{ image.format }}"
    backing: flat
    format: raw
    size: 40G
"""

RETURN = r"""
path:
  description: Path of the disk file.
  returned: always
  type: str
  sample: /var/lib/virtfleet/instances/web1/disk
format:
  description: Format of the disk file, as recorded in C(disk.info.json).
  returned: always
  type: str
  sample: qcow2
virtual_size:
  description: Virtual size of the disk in bytes after the task.
  returned: always
  type: int
  sample: 21474836480
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: [create]
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import (
    INSTANCES_ARGS, build_module, merge_specs, run_module,
)

ARGUMENT_SPEC = merge_specs(INSTANCES_ARGS, {
    "guest": {"type": "str", "required": True},
    "kind": {"type": "str", "default": "root", "choices": ["root"]},
    "state": {"type": "str", "default": "present", "choices": ["present"]},
    "instance_dir": {"type": "path"},
    "file_name": {"type": "str"},
    "base": {"type": "path"},
    "base_format": {"type": "str", "choices": ["raw", "qcow2"]},
    "backing": {"type": "str", "default": "overlay", "choices": ["overlay", "flat"]},
    "format": {"type": "str", "default": "qcow2", "choices": ["qcow2", "raw"]},
    "size": {"type": "str"},
    "mode": {"type": "str", "default": "0644"},
})


def core(module):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disks import ensure_disk

    result = ensure_disk(dict(module.params), module.check_mode)
    for warning in result.pop("warnings_list", []):
        module.warn(warning)
    return result


def main():
    module = build_module(ARGUMENT_SPEC, required_if=[("kind", "root", ("base",))])
    run_module(module, core)


if __name__ == "__main__":
    main()
