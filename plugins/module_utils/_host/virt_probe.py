# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: choose the libvirt domain type (kvm or qemu/TCG) that really works.

A host can offer /dev/kvm and still be unable to run ordinary guests under it: a KVM built on
something other than VT-x/AMD-V (e.g. the paging-based ``kvm_pvm``, which needs specially built
guest kernels) accepts the domain, then pauses it with an "emulation failure" inside the boot
loader. ``auto`` therefore picks ``kvm`` only when the CPU advertises hardware virtualisation,
a hardware KVM module is loaded, /dev/kvm is usable and libvirt offers the kvm domain type.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple, Union

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

VIRT_TYPES = ("kvm", "qemu", "auto")
HARDWARE_KVM_MODULES = ("kvm_intel", "kvm_amd")


def _cpu_flags(cpuinfo: str) -> set:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def kvm_usability(root: str = "/", libvirt_offers_kvm: Union[None, bool, Callable[[], Optional[bool]]] = None
                  ) -> Tuple[bool, str]:
    """Whether KVM can run ordinary guests here, and why not when it cannot.

    ``libvirt_offers_kvm`` may be a callable: libvirt is asked only when the host checks pass.
    """
    def path(*parts: str) -> str:
        return os.path.join(root, *parts)

    if not os.path.exists(path("dev", "kvm")):
        return False, "/dev/kvm does not exist"
    if not os.access(path("dev", "kvm"), os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable"
    try:
        with open(path("proc", "cpuinfo"), encoding="utf-8", errors="replace") as handle:
            flags = _cpu_flags(handle.read())
    except OSError as exc:
        return False, "cannot read /proc/cpuinfo (%s)" % exc
    if not flags & {"vmx", "svm"}:
        return False, "the CPU advertises no hardware virtualisation (no vmx/svm flag)"
    loaded = [m for m in HARDWARE_KVM_MODULES if os.path.isdir(path("sys", "module", m))]
    if not loaded:
        others = sorted(m for m in os.listdir(path("sys", "module")) if m.startswith("kvm_")) \
            if os.path.isdir(path("sys", "module")) else []
        return False, "no hardware KVM module (kvm_intel/kvm_amd) is loaded%s" % (
            " (found %s)" % ", ".join(others) if others else "")
    if callable(libvirt_offers_kvm):
        libvirt_offers_kvm = libvirt_offers_kvm()
    if libvirt_offers_kvm is False:
        return False, "libvirt does not offer the kvm domain type"
    return True, "hardware KVM via %s" % loaded[0]


def _libvirt_offers_kvm(hypervisor) -> Optional[bool]:
    """Whether the host capabilities of ``hypervisor`` (a ``_host.guest.Hypervisor``) list the kvm type."""
    if hypervisor is None:
        return None
    try:
        return "type='kvm'" in hypervisor.capabilities().replace('"', "'")
    except Exception:  # pylint: disable=broad-except
        # a capability query failing must not decide anything
        return None


def resolve_virt_type(hypervisor, requested: str) -> str:
    """The concrete domain type for ``requested`` (``kvm``, ``qemu`` or ``auto``) on ``hypervisor``."""
    if requested not in VIRT_TYPES:
        raise VirtfleetError("virt_type must be one of %s, not %r" % (", ".join(VIRT_TYPES), requested))
    if requested == "qemu":
        return "qemu"
    usable, reason = kvm_usability(libvirt_offers_kvm=lambda: _libvirt_offers_kvm(hypervisor))
    if requested == "kvm" and not usable:
        raise VirtfleetError("virt_type kvm was asked for, but KVM cannot run guests on this host: %s. "
                             "Use virt_type: qemu (software emulation) or auto." % reason)
    return "kvm" if usable else "qemu"
