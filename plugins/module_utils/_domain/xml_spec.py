# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: ``DomainXmlSpec``, the typed spec ``domain_xml`` designs a guest from.

Built by ``DomainXmlSpec.from_params`` from the module's parameters (its options and choices are
declared once, in ``_domain.spec``) and validated there: every value, types included, because the
core is also called without Ansible's argument parsing. Only a run that renders loads this file;
the re-run fast path takes its answer from the file's record without it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import (
    CPU_MODEL, DISK_TARGET, FW_CFG_NAME, HOST_INTERFACE, MAC, MACHINE, NETWORK_NAME,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout, guest_layout, \
    validate_guest_name
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import (
    CPU_MODES, DEFAULT_DIRECT_MODE, DEFAULT_FORWARD_ADDRESS, DEFAULT_MEMORY_SLOTS, DEFAULT_NETWORK,
    DEFAULT_NIC_BACKEND, DEFAULT_NIC_TYPE, DIRECT_MODES, DISK_BUSES, DISK_CACHE_MODES, DISK_DEVICES, DISK_DISCARD,
    DISK_FORMATS, DISK_IO_MODES, DISK_KEYS, DISK_OPTIONS, DOMAIN_XML_ITEM_SPEC, FIRMWARES, GRAPHICS, MAX_BOOT_ORDER,
    MAX_MEMORY_SLOTS, MAX_VCPUS, METADATA_KEYS, NIC_BACKENDS, NIC_KEYS, NIC_MODELS, NIC_OPTIONS, NIC_SHORTHANDS,
    NIC_TYPES, PORT_PROTOCOLS, TPM_MODELS, VIRT_TYPES, WATCHDOG_ACTIONS, WATCHDOG_MODELS, bool_value, choice_value,
    int_value, option_value, optional, path_value, text_value,
)

_DISK_SERIAL = re.compile(r"[A-Za-z0-9_.+-]{1,20}")


def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


UNIT_RULE = "a number without a unit is bytes, as for every size here; K, M, G, T are binary (512M, 2G, 1536MiB)"


def memory_kib(value: Any, what: str = "memory") -> int:
    """KiB for a memory size such as ``160M``, ``2G`` or ``1536MiB``; a bare number (string or integer) is bytes,
    like every other size of the collection (``_sizes``)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        _fail("%s: expected a size such as 512M or 2G, got %r (%s)" % (what, value, UNIT_RULE))
    try:
        size = parse_size(value, what)
    except SizeError as exc:
        raise VirtfleetError("%s (%s)" % (exc, UNIT_RULE))
    bare = isinstance(value, int) or value.strip().isdigit()
    if size < (1 << 20):
        hint = "; for %s MiB write %sM" % (str(value).strip(), str(value).strip()) if bare else ""
        _fail("%s must be at least 1 MiB, got %r, which is %d bytes (%s)%s" % (what, value, size, UNIT_RULE, hint))
    if size > (1 << 50):
        _fail("%s is larger than 1 PiB: %r" % (what, value))
    if size % (1 << 20):
        # QEMU rounds guest RAM to whole MiB at start; refusing odd sizes keeps the file equal to the guest.
        _fail("%s must be a whole number of MiB, got %r (%s)" % (what, value, UNIT_RULE))
    return size // 1024


def _dict(value: Any, what: str, allowed: Tuple[str, ...]) -> Dict[str, Any]:
    if not isinstance(value, dict):
        _fail("%s must be a dictionary, got %s" % (what, type(value).__name__))
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        _fail("%s: unknown key(s) %s; known: %s" % (what, ", ".join(unknown), ", ".join(allowed)))
    return {k: v for k, v in value.items() if v is not None}


def _entry(value: Any, option: str, index: int, keys: Tuple[str, ...]) -> Tuple[str, Dict[str, Any]]:
    """(``option[index]``, the entry's given values) of one dict in a list option."""
    what = "%s[%d]" % (option, index)
    return what, _dict(value, what, keys)


def _list(value: Any, what: str) -> List[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail("%s must be a list, got %s" % (what, type(value).__name__))
    return value


@dataclass(frozen=True)
class DiskSpec:
    """One entry of ``disks``."""

    path: Optional[str]
    format: str
    device: str
    bus: Optional[str]
    dev: Optional[str]
    readonly: bool
    boot_order: Optional[int]
    cache: Optional[str]
    io: Optional[str]
    discard: Optional[str]
    serial: Optional[str]

    @classmethod
    def from_params(cls, value: Any, index: int) -> "DiskSpec":
        what, disk = _entry(value, "disks", index, DISK_KEYS)
        device = choice_value(option_value(disk, DISK_OPTIONS, "device"), DISK_DEVICES, what + ".device")
        if "path" not in disk and device != "cdrom":
            _fail("%s: missing 'path' (the disk image on the hypervisor)" % what)
        serial = disk.get("serial")
        if serial is not None and (not isinstance(serial, str) or not _DISK_SERIAL.fullmatch(serial)):
            _fail("%s.serial: 1-20 letters, digits, '_', '.', '+' or '-', got %r" % (what, serial))
        return cls(
            path=optional(disk.get("path"), path_value, what + ".path"),
            format=choice_value(option_value(disk, DISK_OPTIONS, "format"), DISK_FORMATS, what + ".format"),
            device=device,
            bus=optional(disk.get("bus"), choice_value, DISK_BUSES, what + ".bus"),
            dev=DISK_TARGET.check_optional(disk.get("dev"), what + ".dev"),
            readonly=bool_value(disk.get("readonly", device == "cdrom"), what + ".readonly"),
            boot_order=optional(disk.get("boot_order"), int_value, what + ".boot_order", 1, MAX_BOOT_ORDER),
            cache=optional(disk.get("cache"), choice_value, DISK_CACHE_MODES, what + ".cache"),
            io=optional(disk.get("io"), choice_value, DISK_IO_MODES, what + ".io"),
            discard=optional(disk.get("discard"), choice_value, DISK_DISCARD, what + ".discard"),
            serial=serial)


@dataclass(frozen=True)
class PortForward:
    """One forwarded port of a user-mode NIC: host ``address:host_port`` reaches the guest's ``guest_port``."""

    host_port: int
    guest_port: int
    address: str
    proto: str

    @classmethod
    def from_params(cls, value: Any, what: str) -> "PortForward":
        forward = _dict(value, what, ("host_port", "guest_port", "address", "proto"))
        if "host_port" not in forward:
            _fail("%s: host_port is required" % what)
        host_port = int_value(forward["host_port"], what + ".host_port", 1, 65535)
        address = forward.get("address", DEFAULT_FORWARD_ADDRESS)
        try:
            address = str(ipaddress.ip_address(address if isinstance(address, str) else ""))
        except ValueError:
            _fail("%s.address must be an IP address of the host, such as 127.0.0.1, got %r" % (what, address))
        return cls(host_port=host_port, address=address,
                   guest_port=int_value(forward.get("guest_port", host_port), what + ".guest_port", 1, 65535),
                   proto=choice_value(forward.get("proto", "tcp"), PORT_PROTOCOLS, what + ".proto"))


@dataclass(frozen=True)
class NicSpec:
    """One entry of ``nics``: its kind, where it attaches, and how the guest sees it."""

    type: str
    mac: Optional[str]            # None: the designer derives one
    source: str
    mode: Optional[str]           # direct (macvtap) NICs only
    model: str
    boot_order: Optional[int]
    port_forwards: Tuple[PortForward, ...] = ()
    backend: Optional[str] = None  # user NICs only: auto, qemu or passt (the designer decides what auto is)

    @classmethod
    def from_params(cls, value: Any, index: int) -> "NicSpec":
        what, nic = _entry(value, "nics", index, NIC_KEYS)
        shorthand = [k for k in NIC_SHORTHANDS if k in nic]
        if len(shorthand) > 1 or (shorthand and ("type" in nic or "source" in nic)):
            _fail("%s: give either type and source, or exactly one of network, bridge, direct" % what)
        if shorthand:
            nic_type, source = shorthand[0], nic[shorthand[0]]
        else:
            nic_type = choice_value(nic.get("type", DEFAULT_NIC_TYPE), NIC_TYPES, what + ".type")
            source = nic.get("source", DEFAULT_NETWORK if nic_type == "network" else None)
        forwards = _list(nic.get("port_forwards"), what + ".port_forwards")
        if nic_type == "user":
            if source is not None:
                _fail("%s: a user interface has no source (user-mode networking is the guest's own, with no host "
                      "network or bridge)" % what)
            source = ""
        elif forwards:
            _fail("%s: port_forwards apply to user interfaces only (type: user)" % what)
        elif "backend" in nic:
            _fail("%s: backend applies to user interfaces only (type: user)" % what)
        if source is None:
            _fail("%s: a %s interface needs a source (the %s)"
                  % (what, nic_type, "bridge" if nic_type == "bridge" else "host interface"))
        rule = NETWORK_NAME if nic_type == "network" else HOST_INTERFACE
        if nic_type != "user" and not rule.matches(source):
            _fail("%s: invalid %s name %r: %s" % (what, nic_type, source, rule.looks_like))
        if "mode" in nic and nic_type != "direct":
            _fail("%s: mode applies to direct interfaces only" % what)
        mac = nic.get("mac")
        if mac is not None:
            MAC.check(mac, what + ".mac")
            if int(mac[:2], 16) & 1:
                _fail("%s.mac %s is a multicast address" % (what, mac))
            if int(mac.replace(":", ""), 16) == 0:
                _fail("%s.mac %s is the all-zero address, which no NIC may have" % (what, mac))
            mac = mac.lower()
        return cls(
            type=nic_type, source=source, mac=mac,
            model=choice_value(option_value(nic, NIC_OPTIONS, "model"), NIC_MODELS, what + ".model"),
            mode=choice_value(nic.get("mode", DEFAULT_DIRECT_MODE), DIRECT_MODES, what + ".mode")
            if nic_type == "direct" else None,
            boot_order=optional(nic.get("boot_order"), int_value, what + ".boot_order", 1, MAX_BOOT_ORDER),
            port_forwards=_port_forwards(forwards, what),
            backend=choice_value(nic.get("backend", DEFAULT_NIC_BACKEND), NIC_BACKENDS, what + ".backend")
            if nic_type == "user" else None)


def _port_forwards(values: List[Any], what: str) -> Tuple[PortForward, ...]:
    forwards = tuple(PortForward.from_params(v, "%s.port_forwards[%d]" % (what, i)) for i, v in enumerate(values))
    seen: Dict[Tuple[str, str, int], int] = {}
    for index, forward in enumerate(forwards):
        key = (forward.proto, forward.address, forward.host_port)
        if key in seen:
            _fail("%s.port_forwards[%d] and [%d] both forward %s %s:%d" % (what, seen[key], index, *key))
        seen[key] = index
    return forwards


@dataclass(frozen=True)
class MetadataSpec:
    """Facts recorded in the domain's virtfleet metadata."""

    flavor: Optional[str] = None
    image: Optional[str] = None
    owned_files: Tuple[str, ...] = ()

    @classmethod
    def from_params(cls, value: Any) -> "MetadataSpec":
        if value is None:
            return cls()
        meta = _dict(value, "metadata", METADATA_KEYS)
        return cls(
            flavor=optional(meta.get("flavor"), text_value, "metadata.flavor", True, 256),
            image=optional(meta.get("image"), text_value, "metadata.image", True, 4096),
            owned_files=tuple(path_value(p, "metadata.owned_files[%d]" % i)
                              for i, p in enumerate(_list(meta.get("owned_files"), "metadata.owned_files"))))


def _fw_cfg(value: Any) -> Tuple[Tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        _fail("fw_cfg must be a dictionary of name: value")
    entries = []
    for name in sorted(value, key=str):
        FW_CFG_NAME.check(name, "fw_cfg name")
        entry = value[name]
        if isinstance(entry, bool) or not isinstance(entry, (str, int)):
            _fail("fw_cfg %s: the value must be a string" % name)
        entries.append((name, text_value(str(entry), "fw_cfg %s" % name, max_len=65536)))
    return tuple(entries)


def _fragment(value: Any, index: int):
    """A device element of ``extra_devices`` (parsed with the domain model, which loads lxml)."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model

    what = "extra_devices[%d]" % index
    text = text_value(value, what, allow_empty=False)
    try:
        element = model.parse_element(text)
    except model.ModelError as exc:
        raise VirtfleetError("%s is not a device XML fragment: %s" % (what, exc))
    if element.tag in ("domain", "devices") or not isinstance(element.tag, str) or "}" in element.tag:
        _fail("%s must be one device element such as <rng>, <hostdev> or <watchdog>, got <%s>"
              % (what, element.tag))
    return element


@dataclass(frozen=True)
class DomainXmlSpec:
    """Everything ``domain_xml`` designs a guest from, validated."""

    name: str
    layout: GuestLayout
    path: str                     # the file written
    uri: str
    uuid: Optional[str]
    title: Optional[str]
    description: Optional[str]
    vcpus: int
    max_vcpus: Optional[int]
    memory_kib: int
    max_memory_kib: Optional[int]
    max_memory_slots: Optional[int]
    headroom: bool
    virt_type: str
    machine: str
    cpu_mode: Optional[str]
    cpu_model: Optional[str]
    firmware: str
    secure_boot: bool
    graphics: str
    graphics_listen: str
    guest_agent: bool
    rng: bool
    tpm: bool
    tpm_model: str
    watchdog: str
    watchdog_action: str
    memballoon: bool
    kernel: Optional[str]
    initrd: Optional[str]
    cmdline: Optional[str]
    fw_cfg: Tuple[Tuple[str, str], ...]
    disks: Tuple[DiskSpec, ...]
    nics: Tuple[NicSpec, ...]
    extra_devices: Tuple[Any, ...]   # lxml elements, one device each
    metadata: MetadataSpec

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "DomainXmlSpec":
        """A validated spec; anything wrong raises ``VirtfleetError`` with the reason."""
        if not isinstance(params, dict):
            _fail("parameters must be a dictionary")
        name = params.get("name")
        if not isinstance(name, str):
            _fail("name is required and must be a string")
        validate_guest_name(name)

        def get(key: str) -> Any:
            return option_value(params, DOMAIN_XML_ITEM_SPEC, key)

        vcpus = int_value(get("vcpus"), "vcpus", 1, MAX_VCPUS)
        max_vcpus = optional(get("max_vcpus"), int_value, "max_vcpus", 1, MAX_VCPUS)
        if max_vcpus is not None and max_vcpus < vcpus:
            _fail("max_vcpus (%d) must not be smaller than vcpus (%d)" % (max_vcpus, vcpus))
        memory = memory_kib(get("memory"), "memory")
        max_memory = optional(get("max_memory"), memory_kib, "max_memory")
        if max_memory is not None and max_memory < memory:
            _fail("max_memory must not be smaller than memory")
        slots = optional(get("max_memory_slots"), int_value, "max_memory_slots", 1, MAX_MEMORY_SLOTS)
        headroom = bool_value(get("headroom"), "headroom")
        if slots is not None and max_memory is None and not headroom:
            _fail("max_memory_slots applies with max_memory only, or with headroom (the slots take memory "
                  "hot-plugged up to the maximum)")
        if max_memory is not None and slots is None:
            slots = DEFAULT_MEMORY_SLOTS
        uuid = get("uuid")
        if uuid is not None:
            try:
                uuid = str(uuidlib.UUID(text_value(uuid, "uuid", allow_empty=False, max_len=64)))
            except ValueError:
                _fail("uuid %r is not a UUID" % (uuid,))
            if uuidlib.UUID(uuid).int == 0:
                _fail("uuid %s is the nil UUID, which names no domain; leave uuid out to keep or make one" % uuid)
        title = optional(get("title"), text_value, "title")
        if title is not None and ("\n" in title or "\r" in title):
            _fail("title must be a single line (libvirt refuses line breaks there)")
        cpu_mode = optional(get("cpu_mode"), choice_value, CPU_MODES, "cpu_mode")
        cpu_model = CPU_MODEL.check_optional(get("cpu_model"), "cpu_model")
        if cpu_mode == "custom" and not cpu_model:
            _fail("cpu_mode custom needs cpu_model")
        firmware = choice_value(get("firmware"), FIRMWARES, "firmware")
        secure_boot = bool_value(get("secure_boot"), "secure_boot")
        if secure_boot and firmware != "uefi":
            _fail("secure_boot needs firmware uefi")
        kernel = optional(get("kernel"), path_value, "kernel")
        initrd = optional(get("initrd"), path_value, "initrd")
        cmdline = optional(get("cmdline"), text_value, "cmdline", True, 4096)
        if (initrd or cmdline) and not kernel:
            _fail("initrd and cmdline need kernel")
        layout = guest_layout(optional(params.get("instances_path"), text_value, "instances_path"), name,
                              optional(params.get("instance_dir") or None, path_value, "instance_dir"))
        spec = cls(
            name=name, layout=layout, uuid=uuid, title=title,
            path=path_value(get("path"), "path") if get("path") else layout.domain_xml,
            uri=text_value(params.get("uri") or CONNECTION.argument_spec["uri"]["default"], "uri"),
            description=optional(get("description"), text_value, "description"),
            vcpus=vcpus, max_vcpus=max_vcpus, memory_kib=memory, max_memory_kib=max_memory,
            max_memory_slots=slots, headroom=headroom,
            virt_type=choice_value(get("virt_type"), VIRT_TYPES, "virt_type"),
            machine=MACHINE.check(get("machine"), "machine"),
            cpu_mode=cpu_mode, cpu_model=cpu_model, firmware=firmware, secure_boot=secure_boot,
            graphics=choice_value(get("graphics"), GRAPHICS, "graphics"),
            graphics_listen=text_value(get("graphics_listen"), "graphics_listen", allow_empty=False, max_len=64),
            guest_agent=bool_value(get("guest_agent"), "guest_agent"),
            rng=bool_value(get("rng"), "rng"),
            tpm=bool_value(get("tpm"), "tpm"),
            tpm_model=choice_value(get("tpm_model"), TPM_MODELS, "tpm_model"),
            watchdog=choice_value(get("watchdog"), WATCHDOG_MODELS, "watchdog"),
            watchdog_action=choice_value(get("watchdog_action"), WATCHDOG_ACTIONS, "watchdog_action"),
            memballoon=bool_value(get("memballoon"), "memballoon"),
            kernel=kernel, initrd=initrd, cmdline=cmdline,
            fw_cfg=_fw_cfg(get("fw_cfg")),
            disks=tuple(DiskSpec.from_params(d, i) for i, d in enumerate(_list(get("disks"), "disks"))),
            nics=tuple(NicSpec.from_params(n, i) for i, n in enumerate(_list(get("nics"), "nics"))),
            extra_devices=tuple(_fragment(x, i) for i, x in enumerate(_list(get("extra_devices"), "extra_devices"))),
            metadata=MetadataSpec.from_params(get("metadata")))
        spec.refuse_duplicate_devices()
        return spec

    def refuse_duplicate_devices(self) -> None:
        """An option that adds a device and a raw fragment of the same kind would give libvirt two of them."""
        chosen = {"tpm": self.tpm, "watchdog": self.watchdog != "none", "memballoon": not self.memballoon}
        for index, element in enumerate(self.extra_devices):
            if chosen.get(element.tag):
                option = "memballoon: false" if element.tag == "memballoon" else element.tag
                _fail("extra_devices[%d] is a <%s> and %s sets one too; use one or the other"
                      % (index, element.tag, option))
