"""A guest to resize without a hypervisor: libvirt faked at its own API (virConnect/virDomain), so that the
real ``Hypervisor``/``Guest`` wrappers, plans, steps, records and files are what the tests exercise.

The instance tree is real (a tmp dir): raw disk files qemu-img really grows, ``disk.info.json`` written as
guest_disk writes it, ``domain.xml`` designed by the designer with headroom, as the boot role makes it.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Dict, List, Optional

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import guest as guest_mod
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import guest_layout

libvirt = pytest.importorskip("libvirt")  # the error class the wrappers catch; a requirement of the test venv

MIB = 1 << 20
FACTS = designer.HostFacts(virt_type="qemu", machine="pc-i440fx-7.2", host_cpus=8, host_memory_kib=16 << 20)
RUNNING, SHUTOFF, PAUSED = 1, 5, 3


def libvirt_error(text: str, code: int = 1):
    exc = libvirt.libvirtError(text)
    exc.err = (code, 0, text, 2, None, None, None, 0, 0)
    return exc


class FakeDomain:
    """A virDomain: a persistent definition, a live one while it runs, and the calls vm_resize makes."""

    def __init__(self, conn: "FakeConn", xml: str, state: int = RUNNING) -> None:
        self.conn = conn
        self.inactive = model.Domain.from_xml(xml)
        self.live: Optional[model.Domain] = self.inactive.copy() if state != SHUTOFF else None
        self.state_code = state
        self.sizes: Dict[str, int] = {}
        self.calls: List[str] = []
        self.ignore_acpi = False
        self.fail: Dict[str, str] = {}   # call name -> libvirt error text

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if call in self.fail:
            raise libvirt_error(self.fail[call])

    # identity and state
    def name(self):
        return self.inactive.name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self.inactive.uuid

    def state(self):
        return [self.state_code, 1]

    def isPersistent(self):  # noqa: N802
        return 1

    def XMLDesc(self, flags=0):  # noqa: N802
        if flags & 2 or self.live is None:
            return self.inactive.to_string()
        live = self.live.copy()
        live.id = "7"
        return live.to_string()

    # lifecycle
    def createWithFlags(self, flags=0):  # noqa: N802
        self._maybe_fail("create")
        self.live = self.inactive.copy()
        self.state_code = PAUSED if flags & 1 else RUNNING

    def shutdown(self):
        self._maybe_fail("shutdown")
        if not self.ignore_acpi:
            self.live, self.state_code = None, SHUTOFF

    def destroy(self):
        self._maybe_fail("destroy")
        self.live, self.state_code = None, SHUTOFF

    def resume(self):
        self.state_code = RUNNING

    # resize calls
    def _both(self, flags):
        return [d for d, bit in ((self.live, 1), (self.inactive, 2)) if flags & bit and d is not None]

    def setVcpusFlags(self, count, flags):  # noqa: N802
        self._maybe_fail("setVcpus")
        for dom in self._both(flags):
            dom.vcpu_current = None if count == dom.vcpus else count

    def setMemoryFlags(self, kib, flags):  # noqa: N802
        self._maybe_fail("setMemory")
        for dom in self._both(flags):
            dom.current_memory_kib = kib

    def memoryStats(self):  # noqa: N802
        return {"actual": self.live.current_memory_kib} if self.live is not None else {}

    def attachDeviceFlags(self, xml, flags):  # noqa: N802
        self._maybe_fail("attach")
        device = model.parse_device(model.parse_element(xml))
        size = designer.dimm_size_kib(device)
        for dom in self._both(flags):
            dom.devices.append(model.parse_device(model.parse_element(xml)))
            dom.memory_kib += size
            dom.current_memory_kib = dom.memory_kib

    def setMetadata(self, kind, xml, key, uri, flags):  # noqa: N802
        self._maybe_fail("setMetadata")
        flavor = model.parse_element(xml).findtext("flavor")
        for dom in self._both(flags):
            dom.metadata = dom.metadata or model.Metadata()
            dom.metadata.flavor = flavor

    def blockInfo(self, target):  # noqa: N802
        return [self.sizes[target], self.sizes[target], self.sizes[target]]

    def blockResize(self, target, size, flags):  # noqa: N802
        self._maybe_fail("blockResize")
        self.sizes[target] = size


class FakeConn:
    """A virConnect holding FakeDomains."""

    def __init__(self) -> None:
        self.domains: Dict[str, FakeDomain] = {}
        self.defined: List[str] = []
        self.fail_define: Optional[str] = None

    def lookupByName(self, name):  # noqa: N802
        if name not in self.domains:
            raise libvirt_error("no domain %s" % name, 42)
        return self.domains[name]

    def defineXML(self, xml):  # noqa: N802
        if self.fail_define:
            raise libvirt_error(self.fail_define)
        parsed = model.Domain.from_xml(xml)
        self.defined.append(xml)
        dom = self.domains.get(parsed.name)
        if dom is None:
            dom = self.domains[parsed.name] = FakeDomain(self, xml, SHUTOFF)
        else:
            dom.inactive = parsed
        return dom

    def getInfo(self):  # noqa: N802
        return ["x86_64", 16384, 8, 2000, 1, 1, 8, 1]

    def getDomainCapabilities(self, *args):  # noqa: N802
        return "<domainCapabilities><machine>pc-i440fx-7.2</machine><vcpu max='255'/></domainCapabilities>"

    def listAllDomains(self, flags=0):  # noqa: N802
        return list(self.domains.values())


class GuestBox:
    """One guest: its fake domain, a real instance directory, its domain.xml and disks."""

    def __init__(self, root: str, name: str = "g1", vcpus: int = 1, memory: str = "256M", headroom: bool = True,
                 state: int = RUNNING, bus: str = "virtio", **xml_options) -> None:
        self.instances = os.path.join(root, "instances")
        self.layout = guest_layout(self.instances, name)
        os.makedirs(self.layout.instance_dir, exist_ok=True)
        self.root_disk, self.data_disk = self.layout.disk("root"), self.layout.disk("blank")
        for path, size in ((self.root_disk, 64 * MIB), (self.data_disk, 64 * MIB)):
            with open(path, "wb") as handle:
                handle.truncate(size)
                handle.seek(48 * MIB)
                handle.write(b"data the guest wrote " + path.encode())
        records = {"disk": {"format": "raw", "kind": "root", "virtual_size": 64 * MIB},
                   "disk.blank": {"format": "raw", "kind": "blank", "virtual_size": 64 * MIB}}
        with open(self.layout.disk_info, "w") as handle:
            json.dump(records, handle)
        self.xml_params = dict(name=name, vcpus=vcpus, memory=memory, headroom=headroom, virt_type="qemu",
                               instances_path=self.instances, uuid="6f1c3f3e-98a2-4f3b-9d3e-0f6a8e3c2b11",
                               disks=[{"path": self.root_disk, "format": "raw", "boot_order": 1},
                                      {"path": self.data_disk, "format": "raw", "bus": bus}], **xml_options)
        text = self.design()
        with open(self.layout.domain_xml, "w") as handle:
            handle.write(text)
        self.conn = FakeConn()
        self.dom = FakeDomain(self.conn, text, state)
        self.conn.domains[name] = self.dom
        devs = [d.target_dev for d in self.dom.inactive.devices_of(model.Disk)]
        self.dom.sizes = {devs[0]: 64 * MIB, devs[1]: 64 * MIB}
        self.hypervisor = guest_mod.Hypervisor(self.conn)
        self.name = name

    def design(self, **changes) -> str:
        """What domain_xml renders for these options (changed), given the domain.xml written before."""
        params = dict(self.xml_params, **changes)
        previous = None
        if os.path.exists(self.layout.domain_xml):
            with open(self.layout.domain_xml) as handle:
                previous = model.Domain.from_xml(handle.read())
        spec = DomainXmlSpec.from_params(params)
        return designer.design_domain(spec, FACTS, self.layout, previous).to_string()

    def params(self, **args):
        return dict(name=self.name, instances_path=self.instances, **args)

    def file_text(self, path=None) -> str:
        with open(path or self.layout.domain_xml) as handle:
            return handle.read()

    def disk_bytes(self, path) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(48 * MIB)
            return handle.read(64)


def qemu_img_size(path: str) -> int:
    return int(json.loads(subprocess.run(["qemu-img", "info", "-f", "raw", "--output=json", path], check=True,
                                         capture_output=True, text=True).stdout)["virtual-size"])


@pytest.fixture
def box(tmp_path):
    def make(**options):
        return GuestBox(str(tmp_path), **options)
    return make
