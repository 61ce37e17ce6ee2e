"""The sandbox every module test of this directory runs its examples in (see tests/support/module_fuzz.py)."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor
from tests.support.libvirt_errors import libvirt_error
from tests.support.module_fuzz import Sandbox

# What this host's libvirt answers for the two machine families (libvirt's test driver has no domain capabilities).
MACHINES = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2", "pc-i440fx-7.2": "pc-i440fx-7.2", "pc-q35-7.2": "pc-q35-7.2"}
LOADERS = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(str(tmp_path))


@pytest.fixture
def domain_capabilities(monkeypatch):
    """Hypervisor.domain_capabilities answering as this host's libvirt does for qemu on x86_64 (and refusing other
    machines as libvirt does), for modules that design a domain on libvirt's test driver."""
    def answer(_hypervisor, machine, virt_type, arch="x86_64"):
        if machine not in MACHINES or virt_type != "qemu" or arch != "x86_64":
            raise libvirt_error("unsupported configuration: Emulator does not support machine type '%s'" % machine)
        return ("<domainCapabilities><machine>%s</machine><os supported='yes'><loader supported='yes'>%s"
                "</loader></os></domainCapabilities>"
                % (MACHINES[machine], "".join("<value>%s</value>" % path for path in LOADERS)))
    monkeypatch.setattr(Hypervisor, "domain_capabilities", answer)
