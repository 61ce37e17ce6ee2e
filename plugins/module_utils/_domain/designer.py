# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: turn a guest's typed spec into a domain definition.

All policy lives here, none in the model: an hvm guest of the resolved virt type, virtio disks and
NICs, deterministic MAC addresses, disk names per bus, a serial console logged to the instance
directory, host-model CPU on KVM, BIOS or OVMF firmware, user NICs on QEMU's own user networking
(isolated, on PCI slots of their own) unless passt is asked for. The spec (``_domain.xml_spec.DomainXmlSpec``)
is already validated against the choice constants of ``_domain.spec``. ``design_domain`` is pure: what
it needs from the hypervisor (virt type, canonical machine name, firmware paths) comes in
``HostFacts``, which ``resolve_host_facts`` reads through the ``Hypervisor`` wrapper.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import user_net
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DEFAULT_MEMORY_SLOTS
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DiskSpec, DomainXmlSpec, NicSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import LibvirtError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import libvirt_error_text
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.virt_probe import resolve_virt_type

MAC_PREFIX = "52:54:00"
GUEST_TYPE = "hvm"
GUEST_ARCH = "x86_64"
ITCO_MIN_LIBVIRT = 9001000  # libvirt 9.1.0 added <watchdog model='itco'/>
FIRMWARE_DESCRIPTOR_DIRS = ("/etc/qemu/firmware", "/usr/share/qemu/firmware")
# A user NIC's backend when the spec says auto: QEMU's own user networking works with every libvirt (Debian
# 12's has no passt); passt only where libvirt was built with it, so only when asked for.
AUTO_NIC_BACKEND = "qemu"
# PCI slots of the root bus for user NICs on QEMU's command line, the first NIC first. libvirt does not know
# these devices, so they take slots its automatic addressing (upwards from slot 1-3) does not reach and no
# chipset device holds: on i440fx 0x1f down; on q35 0x1c down, past 0x1f (ICH9 LPC, SATA, SMBus), 0x1e (where
# libvirt puts a DMI-to-PCI bridge), 0x1d and 0x1a (where it puts ICH9 USB2 controllers).
USER_NIC_SLOTS = {"pci.0": (0x1f, 0x1e, 0x1d, 0x1c), "pcie.0": (0x1c, 0x1b, 0x19, 0x18)}
MAX_USER_NICS = 4
USER_NETDEV_ID = "vfnet%d"    # by the NIC's index in nics


@dataclass
class HostFacts:
    """What the design needs to know about the hypervisor."""

    virt_type: str = "qemu"
    machine: str = "pc"
    loader: Optional[str] = None            # OVMF code path for uefi
    nvram_template: Optional[str] = None
    secure_boot: bool = False
    libvirt_version: Optional[int] = None   # 1000000 * major + 1000 * minor + micro; None when not known
    host_cpus: Optional[int] = None         # what headroom is capped by (read only when headroom is asked for)
    host_memory_kib: Optional[int] = None


def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


# -------------------------------------------------------------------------------------------- policy

def derive_mac(name: str, index: int) -> str:
    """A stable, locally administered MAC for NIC ``index`` of guest ``name`` (qemu's 52:54:00 prefix)."""
    digest = hashlib.sha256(("%s:%d" % (name, index)).encode("utf-8")).digest()
    return MAC_PREFIX + "".join(":%02x" % b for b in digest[:3])


def is_q35(machine: str) -> bool:
    return machine == "q35" or machine.startswith("pc-q35")


def _dev_names(prefix: str, start: int = 0) -> List[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = [prefix + c for c in letters] + [prefix + a + b for a in letters for b in letters]
    return names[start:]


def assign_disk_names(disks: Sequence[DiskSpec], machine: str) -> List[Tuple[str, str]]:
    """(bus, target dev) per disk: explicit names are kept, others take the next free name of their bus.

    Cdroms default to ide on i440fx (present without extra drivers in the guest) and to scsi on q35,
    which has no ide; the test guest kernel has no AHCI, so sata is never picked by default.
    """
    q35 = is_q35(machine)
    used = {d.dev for d in disks if d.dev}
    result: List[Tuple[str, str]] = []
    for index, disk in enumerate(disks):
        bus = disk.bus
        if bus is None:
            if disk.dev:
                bus = {"vd": "virtio", "sd": "scsi", "hd": "ide"}[disk.dev[:2]]
            elif disk.device == "cdrom":
                bus = "scsi" if q35 else "ide"
            else:
                bus = "virtio"
        if bus == "ide" and q35:
            _fail("disks[%d]: machine %s (q35) has no IDE bus; use bus scsi or sata" % (index, machine))
        if bus == "virtio" and disk.device == "cdrom":
            _fail("disks[%d]: a cdrom cannot be on the virtio bus; use scsi, sata or ide" % index)
        prefix = {"virtio": "vd", "ide": "hd"}.get(bus, "sd")
        dev = disk.dev
        if dev:
            if not dev.startswith(prefix):
                _fail("disks[%d]: dev %s does not fit bus %s (use %s*)" % (index, dev, bus, prefix))
        else:
            candidates = _dev_names(prefix)
            if bus == "ide":
                candidates = (["hdc", "hdd", "hda", "hdb"] if disk.device == "cdrom"
                              else ["hda", "hdb", "hdc", "hdd"])
            dev = next((c for c in candidates if c not in used), None)
            if dev is None:
                _fail("disks[%d]: no free device name left on bus %s" % (index, bus))
        if dev in {d for _b, d in result}:
            _fail("disks[%d]: dev %s is used twice" % (index, dev))
        used.add(dev)
        result.append((bus, dev))
    return result


def design_domain(spec: DomainXmlSpec, facts: HostFacts, layout: GuestLayout,
                  previous: Optional[model.Domain] = None) -> model.Domain:
    """The domain for a validated ``spec`` on a host described by ``facts``, its files placed by ``layout``.

    ``previous`` is the definition written before (the existing ``domain.xml``), when there is one: with
    headroom its maxima are kept while they cover the flavor, and memory hot-plugged into it by a live
    resize keeps its place (see ``flavor_layout``), so that a resized guest's definition stays as it is.
    """
    dom = model.Domain(type=facts.virt_type, name=spec.name, uuid=spec.uuid, title=spec.title,
                       description=spec.description)
    meta = spec.metadata
    dom.metadata = model.Metadata(flavor=meta.flavor, image=meta.image, owned_files=list(meta.owned_files))
    if spec.fw_cfg:
        dom.sysinfo.append(model.Sysinfo(type="fwcfg", entries=list(spec.fw_cfg)))
    dom.os = _design_os(spec, facts, layout)
    dom.features = model.Features(flags=["acpi", "apic"])
    if spec.secure_boot:
        dom.features.smm = True
    dom.cpu = _design_cpu(spec, facts)
    dom.clock = model.Clock(offset="utc")
    dom.on_poweroff, dom.on_reboot, dom.on_crash = "destroy", "restart", "destroy"
    dom.devices = [device for design in DEVICE_DESIGNERS for device in design(spec, facts, layout)]
    apply_flavor(dom, flavor_layout(spec, facts, previous))
    dom.qemu_commandline = _user_nic_commandline(spec, facts)
    return dom


# ---- vCPUs, memory and hot-plug headroom: one policy for domain_xml and vm_resize

HEADROOM_FACTOR = 2          # a guest may grow live to twice its flavor (capped by the host)
DIMM_BLOCK_KIB = 128 * 1024  # hot-plugged DIMMs are whole 128 MiB blocks (the guest's memory block size)


@dataclass(frozen=True)
class FlavorLayout:
    """A guest's vCPUs and memory as its definition holds them, with its hot-plug headroom.

    ``dimms_kib`` are DIMMs hot-plugged by a live resize; they are part of ``memory_kib`` (the boot memory in
    the NUMA cell is the rest). ``current_memory_kib`` is a balloon target below ``memory_kib`` (None: all of it).
    """

    vcpus: int
    max_vcpus: Optional[int]
    memory_kib: int
    max_memory_kib: Optional[int]
    memory_slots: Optional[int]
    dimms_kib: Tuple[int, ...] = ()
    current_memory_kib: Optional[int] = None


def headroom_maximum(value: int, given: Optional[int], existing: Optional[int], host_cap: Optional[int],
                     headroom: bool) -> Optional[int]:
    """The maximum (vCPUs, or KiB of memory) a guest of ``value`` is defined with; None for no headroom.

    A ``given`` maximum wins. With ``headroom`` an ``existing`` maximum that still covers ``value`` is kept (a
    maximum changes only with a restart, so a guest grown live keeps it), else it is ``HEADROOM_FACTOR`` times
    ``value``, at most ``host_cap`` (what the host has); a maximum that leaves no room is none.
    """
    if given is not None:
        return given
    if not headroom:
        return None
    if existing is not None and existing >= value:
        return existing
    maximum = value * HEADROOM_FACTOR
    if host_cap is not None:
        maximum = min(maximum, host_cap)
    return maximum if maximum > value else None


def dimm_size_kib(device: model.Device) -> Optional[int]:
    """The size of a DIMM on NUMA node 0 (as a live resize plugs them); None for any other device."""
    if not isinstance(device, model.RawDevice) or device.tag != "memory" or device.element.get("model") != "dimm":
        return None
    size, node = device.element.find("target/size"), device.element.findtext("target/node")
    if size is None or (node or "0").strip() != "0":
        return None
    try:
        return model.memory_to_kib(size.text or "", size.get("unit"), "dimm size")
    except model.ModelError:
        return None


def is_dimm(device: model.Device) -> bool:
    return isinstance(device, model.RawDevice) and device.tag == "memory" and device.element.get("model") == "dimm"


def dimm_device(size_kib: int) -> model.Device:
    """The ``<memory model='dimm'>`` device of ``size_kib`` on NUMA node 0 (attached live, and in the XML)."""
    memory = model.etree.Element("memory", {"model": "dimm"})
    target = model.etree.SubElement(memory, "target")
    model.etree.SubElement(target, "size", {"unit": "KiB"}).text = str(size_kib)
    model.etree.SubElement(target, "node").text = "0"
    return model.parse_device(memory)


def numa_cell_memory_kib(dom: model.Domain) -> Optional[int]:
    """The memory of the single NUMA cell the designer gives guests with memory headroom (None otherwise)."""
    cells = [cell for numa in (dom.cpu.extra if dom.cpu is not None else []) if numa.tag == "numa"
             for cell in numa]
    if len(cells) != 1 or cells[0].tag != "cell":
        return None
    try:
        return model.memory_to_kib(cells[0].get("memory") or "", cells[0].get("unit"), "numa cell memory")
    except model.ModelError:
        return None


def kept_dimms(previous: Optional[model.Domain], memory_kib: int, max_memory_kib: Optional[int]) -> Tuple[int, ...]:
    """The DIMMs of ``previous`` when its boot memory and DIMMs add up to ``memory_kib`` under the same maximum
    (a live resize grew it to this flavor); otherwise none, and all memory is boot memory."""
    if previous is None or max_memory_kib is None or previous.max_memory_kib != max_memory_kib:
        return ()
    sizes = [dimm_size_kib(d) for d in previous.devices if is_dimm(d)]
    base = numa_cell_memory_kib(previous)
    if not sizes or None in sizes or base is None or base + sum(sizes) != memory_kib:
        return ()
    return tuple(sizes)


def flavor_layout(spec: DomainXmlSpec, facts: HostFacts, previous: Optional[model.Domain]) -> FlavorLayout:
    """What ``spec`` asks for, with headroom (see ``headroom_maximum``) and the memory layout ``previous`` keeps."""
    # A guest grown live to its vCPU maximum shows no headroom in <vcpu>; its <maxMemory> still does.
    had_headroom = previous is not None and (previous.vcpu_current is not None or previous.max_memory_kib is not None)
    max_vcpus = headroom_maximum(spec.vcpus, spec.max_vcpus, previous.vcpus if had_headroom else None,
                                 facts.host_cpus, spec.headroom)
    max_memory = headroom_maximum(spec.memory_kib, spec.max_memory_kib,
                                  previous.max_memory_kib if previous is not None else None,
                                  facts.host_memory_kib, spec.headroom)
    slots = None
    if max_memory is not None:
        slots = spec.max_memory_slots or (previous.max_memory_slots if previous is not None and
                                          previous.max_memory_kib == max_memory else None) or DEFAULT_MEMORY_SLOTS
    return FlavorLayout(vcpus=spec.vcpus, max_vcpus=max_vcpus, memory_kib=spec.memory_kib, max_memory_kib=max_memory,
                        memory_slots=slots, dimms_kib=kept_dimms(previous, spec.memory_kib, max_memory))


def apply_flavor(dom: model.Domain, flavor: FlavorLayout) -> None:
    """Give ``dom`` the vCPUs and memory of ``flavor``, with its headroom: ``<vcpu current>`` below the maximum,
    ``<maxMemory slots>`` with one NUMA cell holding all vCPUs and the boot memory (memory hot-plug needs a NUMA
    topology), and the hot-plugged DIMMs last among the devices."""
    if flavor.max_memory_kib is not None:
        dom.max_memory_kib, dom.max_memory_slots = flavor.max_memory_kib, flavor.memory_slots
    else:
        dom.max_memory_kib = dom.max_memory_slots = None
    dom.memory_kib = flavor.memory_kib
    dom.current_memory_kib = flavor.memory_kib if flavor.current_memory_kib is None else flavor.current_memory_kib
    dom.vcpu_placement = "static"
    if flavor.max_vcpus is not None and flavor.max_vcpus != flavor.vcpus:
        dom.vcpus, dom.vcpu_current = flavor.max_vcpus, flavor.vcpus
    else:
        dom.vcpus, dom.vcpu_current = flavor.vcpus, None
    if dom.cpu is not None:
        dom.cpu.extra = [element for element in dom.cpu.extra if element.tag != "numa"]
    if flavor.max_memory_kib is not None:
        dom.cpu = dom.cpu or model.Cpu()
        dom.cpu.extra.append(_single_numa_cell(dom.vcpus, flavor.memory_kib - sum(flavor.dimms_kib)))
    elif dom.cpu is not None:
        bare = dom.cpu.to_element()
        if not bare.attrib and not len(bare):
            dom.cpu = None
    dom.devices = [device for device in dom.devices if not is_dimm(device)] + \
        [dimm_device(size) for size in flavor.dimms_kib]


def _design_os(spec: DomainXmlSpec, facts: HostFacts, layout: GuestLayout) -> model.Os:
    os_ = model.Os(type=GUEST_TYPE, arch=GUEST_ARCH, machine=facts.machine)
    if spec.firmware == "uefi":
        if not facts.loader:
            _fail("firmware uefi: no OVMF firmware for machine %s found in libvirt's domain capabilities; "
                  "install the ovmf package" % facts.machine)
        os_.loader = model.Loader(path=facts.loader, readonly=True, type="pflash",
                                  secure=True if spec.secure_boot else None)
        os_.nvram = model.Nvram(path=layout.nvram, template=facts.nvram_template)
    if spec.kernel:
        os_.kernel, os_.initrd, os_.cmdline = spec.kernel, spec.initrd, spec.cmdline
    uses_boot_order = any(d.boot_order for d in spec.disks) or any(n.boot_order for n in spec.nics)
    if not uses_boot_order and not spec.kernel:
        os_.boot_devs = ["hd"]
    return os_


def _design_cpu(spec: DomainXmlSpec, facts: HostFacts) -> Optional[model.Cpu]:
    mode = spec.cpu_mode
    if mode is None:
        # TCG cannot emulate the host's CPU model; libvirt's default (qemu64) is what works there.
        mode = "host-model" if facts.virt_type == "kvm" else None
    if mode is None and spec.cpu_model:
        mode = "custom"
    if mode is None:
        return None
    cpu = model.Cpu(mode=mode)
    if mode == "custom":
        cpu.match, cpu.model, cpu.model_fallback = "exact", spec.cpu_model, "allow"
    return cpu


def _single_numa_cell(vcpus: int, memory: int):
    numa = model.etree.Element("numa")
    cpus = "0" if vcpus == 1 else "0-%d" % (vcpus - 1)
    model.etree.SubElement(numa, "cell", {"id": "0", "cpus": cpus, "memory": str(memory), "unit": "KiB"})
    return numa


# ---- devices, one designer per kind, in libvirt's order of device kinds

def _disks(spec: DomainXmlSpec, facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    devices: List[model.Device] = []
    names = assign_disk_names(spec.disks, facts.machine)
    for disk, (bus, dev) in zip(spec.disks, names):
        item = model.Disk(type="file", device=disk.device, driver_name="qemu", driver_type=disk.format,
                          driver_cache=disk.cache, driver_io=disk.io, driver_discard=disk.discard,
                          target_dev=dev, target_bus=bus, readonly=disk.readonly, serial=disk.serial,
                          boot_order=disk.boot_order)
        if disk.path:
            item.source_file = disk.path
        devices.append(item)
    if any(bus == "scsi" for bus, _dev in names):
        devices.append(model.Controller(type="scsi", index=0, model="virtio-scsi"))
    return devices


NIC_SOURCE_ATTRIBUTE = {"network": "network", "bridge": "bridge", "direct": "dev"}


def assign_macs(spec: DomainXmlSpec) -> List[str]:
    """The MAC of each NIC, in order: as given, else derived from the guest name and the NIC's index."""
    macs: List[str] = []
    for index, nic in enumerate(spec.nics):
        mac = nic.mac or derive_mac(spec.name, index)
        if mac in macs:
            first = macs.index(mac)
            _fail("nics[%d] and nics[%d] both have MAC %s%s; each NIC of a guest needs its own" % (
                first, index, mac, "" if nic.mac and spec.nics[first].mac else
                " (one of them derived from the guest name and NIC index)"))
        macs.append(mac)
    return macs


def nic_backend(nic: NicSpec) -> Optional[str]:
    """How a user NIC is made (qemu or passt); None for other NICs."""
    if nic.type != "user":
        return None
    return AUTO_NIC_BACKEND if nic.backend == "auto" else nic.backend


def _nics(spec: DomainXmlSpec, _facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    devices: List[model.Device] = []
    for nic, mac in zip(spec.nics, assign_macs(spec)):
        if nic_backend(nic) == "qemu":
            continue  # on QEMU's command line (_user_nic_commandline), not an <interface>
        source = {NIC_SOURCE_ATTRIBUTE[nic.type]: nic.source} if nic.type in NIC_SOURCE_ATTRIBUTE else {}
        if nic.type == "direct":
            source["mode"] = nic.mode
        devices.append(model.Interface(type=nic.type, mac=mac, source=source, model=nic.model,
                                       boot_order=nic.boot_order, extra=_passt_networking(nic)))
    return devices


def _passt_networking(nic: NicSpec) -> List:
    """For a user NIC on passt: the backend (libvirt runs it; the guest gets the host's addresses by DHCP) and its
    port forwards, each host address:port to the guest's port."""
    if nic.type != "user":
        return []
    elements = [model.etree.Element("backend", {"type": "passt"})]
    for forward in nic.port_forwards:
        element = model.etree.Element("portForward", {"proto": forward.proto, "address": forward.address})
        model.etree.SubElement(element, "range", {"start": str(forward.host_port), "to": str(forward.guest_port)})
        elements.append(element)
    return elements


def _root_bus(machine: str) -> Optional[str]:
    """QEMU's name of the PCI root bus of an x86 ``machine`` (pc-* other than q35 is i440fx); None for others."""
    if is_q35(machine):
        return "pcie.0"
    return "pci.0" if machine == "pc" or machine.startswith("pc-") else None


def _user_nic_commandline(spec: DomainXmlSpec, facts: HostFacts) -> Optional[model.QemuCommandline]:
    """The QEMU arguments of the user NICs on QEMU's own user networking (isolated: restrict=on); None without."""
    chosen = [(index, nic, mac) for index, (nic, mac) in enumerate(zip(spec.nics, assign_macs(spec)))
              if nic_backend(nic) == "qemu"]
    if not chosen:
        return None
    if len(chosen) > MAX_USER_NICS:
        _fail("nics: %d user NICs with backend qemu; at most %d fit the PCI slots kept for them (use one NIC with "
              "several port_forwards)" % (len(chosen), MAX_USER_NICS))
    bus = _root_bus(facts.machine)
    if bus is None:
        _fail("nics: a user NIC with backend qemu needs machine pc (i440fx) or q35, whose PCI root bus it is "
              "placed on; machine %s is neither" % facts.machine)
    args: List[str] = []
    for slot, (index, nic, mac) in zip(USER_NIC_SLOTS[bus], chosen):
        what = "nics[%d]" % index
        if nic.boot_order is not None:
            _fail("%s: boot_order needs a NIC libvirt knows; a user NIC with backend qemu is on QEMU's command line "
                  "(give it backend passt, or boot from a disk)" % what)
        for number, forward in enumerate(nic.port_forwards):
            if ":" in forward.address:
                _fail("%s.port_forwards[%d].address %s: QEMU's user networking forwards IPv4 host addresses only "
                      "(use 127.0.0.1, or backend passt)" % (what, number, forward.address))
        forwards = tuple(user_net.Forward(proto=f.proto, address=f.address, host_port=f.host_port,
                                          guest_port=f.guest_port) for f in nic.port_forwards)
        args += user_net.nic_arguments(user_net.UserNic(netdev_id=USER_NETDEV_ID % index, mac=mac, model=nic.model,
                                                        bus=bus, slot=slot, forwards=forwards), what)
    return model.QemuCommandline(args=args)


def _consoles(spec: DomainXmlSpec, _facts: HostFacts, layout: GuestLayout) -> List[model.Device]:
    devices: List[model.Device] = [model.Serial(type="pty", log_file=layout.console_log, log_append=True),
                                   model.Console(type="pty", target_type="serial", target_port=0)]
    if spec.guest_agent:
        devices.append(model.Channel(type="unix", target_type="virtio", target_name=model.GUEST_AGENT_CHANNEL))
    return devices


def _tpm(spec: DomainXmlSpec, _facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    if not spec.tpm:
        return []
    return [model.Tpm(model=spec.tpm_model, backend_type="emulator", backend_version="2.0")]


def _graphics(spec: DomainXmlSpec, _facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    if spec.graphics == "none":
        return []
    return [model.Graphics(type=spec.graphics, autoport=True, listen=spec.graphics_listen, listen_element=True),
            model.Video(model="vga" if spec.graphics == "vnc" else "qxl")]


def _watchdog(spec: DomainXmlSpec, facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    if spec.watchdog == "none":
        return []
    if spec.watchdog == "itco" and not is_q35(facts.machine):
        _fail("watchdog itco is the q35 chipset's own watchdog; machine %s has none: use machine q35 or "
              "watchdog i6300esb" % facts.machine)
    if spec.watchdog == "itco" and facts.libvirt_version is not None and facts.libvirt_version < ITCO_MIN_LIBVIRT:
        _fail("watchdog itco needs libvirt 9.1 or later; this host runs libvirt %s: use watchdog i6300esb"
              % _version_text(facts.libvirt_version))
    return [model.Watchdog(model=spec.watchdog, action=spec.watchdog_action)]


def _memballoon(spec: DomainXmlSpec, _facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    # With memballoon true nothing is written: libvirt adds its virtio balloon, as it always did here.
    return [] if spec.memballoon else [model.MemBalloon(model="none")]


def _rng(spec: DomainXmlSpec, _facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    return [model.Rng(model="virtio", backend_model="random", backend_path="/dev/urandom")] if spec.rng else []


def _extra_devices(spec: DomainXmlSpec, _facts: HostFacts, _layout: GuestLayout) -> List[model.Device]:
    return [model.parse_device(element) for element in spec.extra_devices]


DEVICE_DESIGNERS = (_disks, _nics, _consoles, _tpm, _graphics, _watchdog, _memballoon, _rng, _extra_devices)


def _version_text(version: int) -> str:
    return "%d.%d.%d" % (version // 1000000, version // 1000 % 1000, version % 1000)


# ------------------------------------------------------------------------------------ host discovery

def _firmware_descriptors() -> List[Dict[str, Any]]:
    """qemu firmware descriptors (JSON), later directories overridden by earlier ones as qemu does."""
    seen: Dict[str, str] = {}
    for directory in reversed(FIRMWARE_DESCRIPTOR_DIRS):
        for path in glob.glob(os.path.join(directory, "*.json")):
            seen[os.path.basename(path)] = path
    result = []
    for base in sorted(seen):
        try:
            with open(seen[base], encoding="utf-8") as handle:
                result.append(json.load(handle))
        except (OSError, ValueError):
            continue
    return result


def choose_ovmf(loaders: List[str], secure_boot: bool, q35: bool,
                descriptors: Optional[List[Dict[str, Any]]] = None) -> Tuple[Optional[str], Optional[str]]:
    """(code, vars template) among the loaders libvirt offers, preferring the firmware descriptors' pairing."""
    descriptors = _firmware_descriptors() if descriptors is None else descriptors
    for desc in descriptors:
        mapping = desc.get("mapping") or {}
        if mapping.get("device") != "flash" or "uefi" not in (desc.get("interface-types") or []):
            continue
        features = desc.get("features") or []
        if ("secure-boot" in features) != secure_boot or ("enrolled-keys" in features):
            continue
        if "requires-smm" in features and not q35:
            continue
        code = (mapping.get("executable") or {}).get("filename")
        template = (mapping.get("nvram-template") or {}).get("filename")
        if code and code in loaders:
            return code, template
    for code in loaders:
        base = os.path.basename(code)
        if ("secboot" in base) != secure_boot or ".ms." in base or (secure_boot and not q35):
            continue  # Secure Boot builds need SMM, which only q35 offers
        template = os.path.join(os.path.dirname(code), base.replace("CODE", "VARS").replace(".secboot", ""))
        return code, template if os.path.exists(template) else None
    return None, None


def domain_capabilities(hypervisor, machine: str, virt_type: str) -> str:
    """libvirt's domain capabilities for ``machine`` and ``virt_type``; a refusal says what is not offered."""
    try:
        return hypervisor.domain_capabilities(machine, virt_type, GUEST_ARCH)
    except LibvirtError as exc:
        raise VirtfleetError("libvirt does not offer machine type %r with virt type %s on %s: %s"
                             % (machine, virt_type, GUEST_ARCH, libvirt_error_text(exc)))


def host_limits(hypervisor) -> Tuple[Optional[int], Optional[int]]:
    """(logical CPUs, memory KiB) of the host, which headroom is capped by; (None, None) when libvirt does not say."""
    try:
        return hypervisor.host_resources()
    except LibvirtError:
        return None, None


def resolve_host_facts(hypervisor, spec: DomainXmlSpec, virt_type: Optional[str] = None,
                       caps_xml: Optional[str] = None,
                       limits: Optional[Tuple[Optional[int], Optional[int]]] = None) -> HostFacts:
    """Virt type, canonical machine name and firmware paths, as this hypervisor's libvirt sees them.

    ``virt_type`` and ``caps_xml`` (the resolved type and its domain capabilities) may be passed when
    already fetched from libvirt for ``spec``; they are then used instead of asking again. So may the
    host's ``limits`` (``host_limits``), which are read only when the spec asks for headroom.
    """
    if virt_type is None or caps_xml is None:
        virt_type = resolve_virt_type(hypervisor, spec.virt_type)
        caps_xml = domain_capabilities(hypervisor, spec.machine, virt_type)
    caps = model.parse_element(caps_xml)
    machine = (caps.findtext("machine") or spec.machine).strip()
    facts = HostFacts(virt_type=virt_type, machine=machine, secure_boot=spec.secure_boot)
    if spec.headroom:
        facts.host_cpus, facts.host_memory_kib = limits if limits is not None else host_limits(hypervisor)
    if spec.watchdog == "itco":
        try:
            facts.libvirt_version = hypervisor.lib_version()
        except LibvirtError:
            facts.libvirt_version = None  # unknown: libvirt itself refuses the model at define if too old
    if spec.secure_boot and not is_q35(machine):
        _fail("secure_boot needs machine q35 (Secure Boot firmware requires SMM); machine %s is not q35" % machine)
    if spec.firmware == "uefi":
        loaders = [v.text.strip() for v in caps.findall("os/loader/value") if v.text]
        facts.loader, facts.nvram_template = choose_ovmf(loaders, spec.secure_boot, is_q35(machine))
        if facts.loader is None:
            _fail("firmware uefi%s: libvirt offers no suitable OVMF loader for machine %s (offered: %s); install "
                  "the ovmf package" % (" with secure_boot" if spec.secure_boot else "", machine,
                                        ", ".join(loaders) or "none"))
    return facts
