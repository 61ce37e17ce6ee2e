# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of virtfleet.libvirt options and attributes."""

from __future__ import annotations


class ModuleDocFragment:
    CONNECTION = r"""
options:
  uri:
    description:
      - libvirt connection URI on the hypervisor the module runs on.
    type: str
    default: qemu:///system
requirements:
  - libvirt-python
"""

    INSTANCES = r"""
options:
  instances_path:
    description:
      - Root of the instance tree. The image cache lives in C(<instances_path>/_base/), each guest's
        files in C(<instances_path>/<guest>/).
      - Every directory above an image must be traversable by the qemu user (C(libvirt-qemu) on Debian).
    type: path
    default: /var/lib/virtfleet/instances
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  idempotent:
    description: A second run with the same options reports no change and writes nothing.
    support: full
  action_group:
    description: Use C(group/virtfleet.libvirt.libvirt) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - virtfleet.libvirt.libvirt
"""
