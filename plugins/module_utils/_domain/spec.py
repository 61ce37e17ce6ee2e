# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the options of the domain layer's modules, declared once, and their typed specs.

``domain_xml``, ``domain`` and ``domain_info`` import their ``*_MODULE_SPEC`` from here; the choice lists
are the constants below, which the designer uses too. ``DomainXmlSpec``, ``DomainSpec`` and
``DomainInfoSpec`` are what the cores work with: built by ``from_params`` from a module's parameters
(or from a plain dict: every value is checked, types included, because cores are also called
without Ansible's argument parsing) and raising ``VirtfleetError`` only.

This file is read on the re-run fast paths: it imports neither lxml nor the domain model (a device
fragment in ``extra_devices`` is parsed only when there is one).
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, INSTANCES, ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import (
    CPU_MODEL, DISK_TARGET, FW_CFG_NAME, HOST_INTERFACE, MAC, MACHINE, NETWORK_NAME,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import (
    GuestLayout, absolute_path, guest_layout, validate_guest_name,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.virt_probe import VIRT_TYPES

# ------------------------------------------------------------------------------------------ choices

DISK_FORMATS = ("raw", "qcow2")
DISK_DEVICES = ("disk", "cdrom")
DISK_BUSES = ("virtio", "scsi", "sata", "ide", "usb")
DISK_CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe", "default")
DISK_IO_MODES = ("native", "threads", "io_uring")
DISK_DISCARD = ("unmap", "ignore")
NIC_TYPES = ("network", "bridge", "direct")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
DIRECT_MODES = ("bridge", "vepa", "private", "passthrough")
CPU_MODES = ("host-model", "host-passthrough", "maximum", "custom")
FIRMWARES = ("bios", "uefi")
GRAPHICS = ("none", "vnc", "spice")
TPM_MODELS = ("tpm-tis", "tpm-crb")
WATCHDOG_MODELS = ("none", "i6300esb", "itco")
WATCHDOG_ACTIONS = ("reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi")
WANTED_STATES = ("running", "paused", "shutdown", "defined", "absent")
APPLY_MODES = ("none", "restart")

DEFAULT_NIC_TYPE = "network"
DEFAULT_NETWORK = "default"
DEFAULT_DIRECT_MODE = "bridge"
DEFAULT_MEMORY_SLOTS = 16
MAX_VCPUS = 4096
MAX_MEMORY_SLOTS = 255
MAX_BOOT_ORDER = 1024
MAX_TIMEOUT = 86400
_DISK_SERIAL = re.compile(r"[A-Za-z0-9_.+-]{1,20}")
# XML 1.0 allows these characters only; lxml refuses the rest with a ValueError.
_XML_BAD_CHARS = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# --------------------------------------------------------------------------------- argument specs

DISK_OPTIONS = ArgumentSpec({
    "path": {"type": "path"},
    "format": {"type": "str", "default": "raw", "choices": list(DISK_FORMATS)},
    "device": {"type": "str", "default": "disk", "choices": list(DISK_DEVICES)},
    "bus": {"type": "str", "choices": list(DISK_BUSES)},
    "dev": {"type": "str"},
    "readonly": {"type": "bool"},
    "boot_order": {"type": "int"},
    "cache": {"type": "str", "choices": list(DISK_CACHE_MODES)},
    "io": {"type": "str", "choices": list(DISK_IO_MODES)},
    "discard": {"type": "str", "choices": list(DISK_DISCARD)},
    "serial": {"type": "str"},
})

# ``type`` and ``mode`` have no Ansible default: a shorthand (network/bridge/direct) must not meet a filled-in
# type, and a mode given to a non-direct NIC is refused rather than ignored. from_params applies the defaults.
NIC_OPTIONS = ArgumentSpec({
    "type": {"type": "str", "choices": list(NIC_TYPES)},
    "source": {"type": "str"},
    "network": {"type": "str"},
    "bridge": {"type": "str"},
    "direct": {"type": "str"},
    "mode": {"type": "str", "choices": list(DIRECT_MODES)},
    "mac": {"type": "str"},
    "model": {"type": "str", "default": "virtio", "choices": list(NIC_MODELS)},
    "boot_order": {"type": "int"},
})

METADATA_OPTIONS = ArgumentSpec({
    "flavor": {"type": "str"},
    "image": {"type": "str"},
    "owned_files": {"type": "list", "elements": "path"},
})

DOMAIN_XML_ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str", "required": True},
    "path": {"type": "path"},
    "instance_dir": {"type": "path"},
    "uuid": {"type": "str"},
    "title": {"type": "str"},
    "description": {"type": "str"},
    "vcpus": {"type": "int", "default": 1},
    "max_vcpus": {"type": "int"},
    "memory": {"type": "raw", "default": "512M"},
    "max_memory": {"type": "raw"},
    "max_memory_slots": {"type": "int"},
    "virt_type": {"type": "str", "default": "auto", "choices": list(VIRT_TYPES)},
    "machine": {"type": "str", "default": "pc"},
    "cpu_mode": {"type": "str", "choices": list(CPU_MODES)},
    "cpu_model": {"type": "str"},
    "firmware": {"type": "str", "default": "bios", "choices": list(FIRMWARES)},
    "secure_boot": {"type": "bool", "default": False},
    "graphics": {"type": "str", "default": "none", "choices": list(GRAPHICS)},
    "graphics_listen": {"type": "str", "default": "127.0.0.1"},
    "guest_agent": {"type": "bool", "default": False},
    "rng": {"type": "bool", "default": True},
    "tpm": {"type": "bool", "default": False},
    "tpm_model": {"type": "str", "default": "tpm-tis", "choices": list(TPM_MODELS)},
    "watchdog": {"type": "str", "default": "none", "choices": list(WATCHDOG_MODELS)},
    "watchdog_action": {"type": "str", "default": "reset", "choices": list(WATCHDOG_ACTIONS)},
    "memballoon": {"type": "bool", "default": True},
    "kernel": {"type": "path"},
    "initrd": {"type": "path"},
    "cmdline": {"type": "str"},
    "fw_cfg": {"type": "dict"},
    "disks": DISK_OPTIONS.as_list_option(),
    "nics": NIC_OPTIONS.as_list_option(),
    "extra_devices": {"type": "list", "elements": "str"},
    "metadata": {"type": "dict", "options": METADATA_OPTIONS.argument_spec},
})
DOMAIN_XML_MODULE_SPEC = CONNECTION.merge(INSTANCES, DOMAIN_XML_ITEM_SPEC)

DOMAIN_ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "running", "choices": list(WANTED_STATES)},
    "xml": {"type": "str"},
    "xml_file": {"type": "path"},
    "autostart": {"type": "bool"},
    "apply": {"type": "str", "default": "none", "choices": list(APPLY_MODES)},
    "shutdown_timeout": {"type": "int", "default": 120},
    "start_timeout": {"type": "int", "default": 60},
    "force_off": {"type": "bool", "default": False},
    "remove_storage": {"type": "bool", "default": False},
    "wait_for_address": {"type": "bool", "default": False},
    "address_timeout": {"type": "int", "default": 300},
}, mutually_exclusive=[("xml", "xml_file")])
DOMAIN_MODULE_SPEC = CONNECTION.merge(INSTANCES, DOMAIN_ITEM_SPEC)

DOMAIN_INFO_ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str"},
    "include_xml": {"type": "bool", "default": False},
})
DOMAIN_INFO_MODULE_SPEC = CONNECTION.merge(DOMAIN_INFO_ITEM_SPEC)

DISK_KEYS = tuple(DISK_OPTIONS.argument_spec)
NIC_KEYS = tuple(NIC_OPTIONS.argument_spec)
METADATA_KEYS = tuple(METADATA_OPTIONS.argument_spec)


# ------------------------------------------------------------------------------------- validators

def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


def option_value(params: Dict[str, Any], spec: ArgumentSpec, key: str) -> Any:
    """The value of option ``key``: as given, else its declared default (a plain dict may leave it out)."""
    return params[key] if key in params else spec.argument_spec[key].get("default")


def text_value(value: Any, what: str, allow_empty: bool = True, max_len: int = 65536) -> str:
    """A string safe to place in XML text or attributes (lxml escapes markup; we refuse control chars)."""
    if not isinstance(value, str):
        _fail("%s must be a string, got %s" % (what, type(value).__name__))
    if not allow_empty and not value:
        _fail("%s must not be empty" % what)
    if _XML_BAD_CHARS.search(value):
        _fail("%s contains characters that XML cannot hold (control characters)" % what)
    if len(value) > max_len:
        _fail("%s is longer than %d characters" % (what, max_len))
    return value


def _abs_path(value: Any, what: str) -> str:
    return absolute_path(text_value(value, what, allow_empty=False, max_len=4096), what)


def int_value(value: Any, what: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool):
        _fail("%s must be an integer, got a boolean" % what)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        _fail("%s must be an integer, got %r" % (what, value))
    if not minimum <= value <= maximum:
        _fail("%s must be between %d and %d, got %d" % (what, minimum, maximum, value))
    return value


def bool_value(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        _fail("%s must be a boolean, got %r" % (what, value))
    return value


def choice_value(value: Any, choices: Tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail("%s must be one of %s, got %r" % (what, ", ".join(choices), value))
    return value


def _optional(value: Any, check, *args) -> Any:
    return None if value is None else check(value, *args)


def memory_kib(value: Any, what: str = "memory") -> int:
    """KiB for a memory size: a size string such as ``160M`` or ``2G`` (binary), or an integer in MiB."""
    if isinstance(value, bool) or value is None:
        _fail("%s: expected a size such as 512M or 2G, or an integer number of MiB, got %r" % (what, value))
    if isinstance(value, int):
        size = value * (1 << 20)
    elif isinstance(value, str):
        text = value.strip()
        try:
            size = int(text) * (1 << 20) if text.isdigit() else parse_size(text, what)
        except SizeError as exc:
            raise VirtfleetError(str(exc))
    else:
        _fail("%s: expected a size string or an integer number of MiB, got %s" % (what, type(value).__name__))
    if size < (1 << 20):
        _fail("%s must be at least 1 MiB, got %r" % (what, value))
    if size > (1 << 50):
        _fail("%s is larger than 1 PiB: %r" % (what, value))
    if size % (1 << 20):
        # QEMU rounds guest RAM to whole MiB at start; refusing odd sizes keeps the file equal to the guest.
        _fail("%s must be a whole number of MiB, got %r" % (what, value))
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


def timeout_value(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIMEOUT:
        _fail("%s must be a number of seconds from 0 to %d, got %r" % (what, MAX_TIMEOUT, value))
    return value


# --------------------------------------------------------------------------------------- domain_xml

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
            path=_optional(disk.get("path"), _abs_path, what + ".path"),
            format=choice_value(option_value(disk, DISK_OPTIONS, "format"), DISK_FORMATS, what + ".format"),
            device=device,
            bus=_optional(disk.get("bus"), choice_value, DISK_BUSES, what + ".bus"),
            dev=DISK_TARGET.check_optional(disk.get("dev"), what + ".dev"),
            readonly=bool_value(disk.get("readonly", device == "cdrom"), what + ".readonly"),
            boot_order=_optional(disk.get("boot_order"), int_value, what + ".boot_order", 1, MAX_BOOT_ORDER),
            cache=_optional(disk.get("cache"), choice_value, DISK_CACHE_MODES, what + ".cache"),
            io=_optional(disk.get("io"), choice_value, DISK_IO_MODES, what + ".io"),
            discard=_optional(disk.get("discard"), choice_value, DISK_DISCARD, what + ".discard"),
            serial=serial)


@dataclass(frozen=True)
class NicSpec:
    """One entry of ``nics``: its kind, where it attaches, and how the guest sees it."""

    type: str
    mac: Optional[str]            # None: the designer derives one
    source: str
    mode: Optional[str]           # direct (macvtap) NICs only
    model: str
    boot_order: Optional[int]

    @classmethod
    def from_params(cls, value: Any, index: int) -> "NicSpec":
        what, nic = _entry(value, "nics", index, NIC_KEYS)
        shorthand = [k for k in NIC_TYPES if k in nic]
        if len(shorthand) > 1 or (shorthand and ("type" in nic or "source" in nic)):
            _fail("%s: give either type and source, or exactly one of network, bridge, direct" % what)
        if shorthand:
            nic_type, source = shorthand[0], nic[shorthand[0]]
        else:
            nic_type = choice_value(nic.get("type", DEFAULT_NIC_TYPE), NIC_TYPES, what + ".type")
            source = nic.get("source", DEFAULT_NETWORK if nic_type == "network" else None)
        if source is None:
            _fail("%s: a %s interface needs a source (the %s)"
                  % (what, nic_type, "bridge" if nic_type == "bridge" else "host interface"))
        rule = NETWORK_NAME if nic_type == "network" else HOST_INTERFACE
        if not rule.matches(source):
            _fail("%s: invalid %s name %r: %s" % (what, nic_type, source, rule.looks_like))
        if "mode" in nic and nic_type != "direct":
            _fail("%s: mode applies to direct interfaces only" % what)
        mac = nic.get("mac")
        if mac is not None:
            MAC.check(mac, what + ".mac")
            if int(mac[:2], 16) & 1:
                _fail("%s.mac %s is a multicast address" % (what, mac))
            mac = mac.lower()
        return cls(
            type=nic_type, source=source, mac=mac,
            model=choice_value(option_value(nic, NIC_OPTIONS, "model"), NIC_MODELS, what + ".model"),
            mode=choice_value(nic.get("mode", DEFAULT_DIRECT_MODE), DIRECT_MODES, what + ".mode")
            if nic_type == "direct" else None,
            boot_order=_optional(nic.get("boot_order"), int_value, what + ".boot_order", 1, MAX_BOOT_ORDER))


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
            flavor=_optional(meta.get("flavor"), text_value, "metadata.flavor", True, 256),
            image=_optional(meta.get("image"), text_value, "metadata.image", True, 4096),
            owned_files=tuple(_abs_path(p, "metadata.owned_files[%d]" % i)
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
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model as model

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
        max_vcpus = _optional(get("max_vcpus"), int_value, "max_vcpus", 1, MAX_VCPUS)
        if max_vcpus is not None and max_vcpus < vcpus:
            _fail("max_vcpus (%d) must not be smaller than vcpus (%d)" % (max_vcpus, vcpus))
        memory = memory_kib(get("memory"), "memory")
        max_memory = _optional(get("max_memory"), memory_kib, "max_memory")
        if max_memory is not None and max_memory < memory:
            _fail("max_memory must not be smaller than memory")
        slots = _optional(get("max_memory_slots"), int_value, "max_memory_slots", 1, MAX_MEMORY_SLOTS)
        if slots is not None and max_memory is None:
            _fail("max_memory_slots applies with max_memory only (the slots take memory hot-plugged up to it)")
        if max_memory is not None and slots is None:
            slots = DEFAULT_MEMORY_SLOTS
        uuid = get("uuid")
        if uuid is not None:
            try:
                uuid = str(uuidlib.UUID(text_value(uuid, "uuid", allow_empty=False, max_len=64)))
            except ValueError:
                _fail("uuid %r is not a UUID" % (uuid,))
        title = _optional(get("title"), text_value, "title")
        if title is not None and ("\n" in title or "\r" in title):
            _fail("title must be a single line (libvirt refuses line breaks there)")
        cpu_mode = _optional(get("cpu_mode"), choice_value, CPU_MODES, "cpu_mode")
        cpu_model = CPU_MODEL.check_optional(get("cpu_model"), "cpu_model")
        if cpu_mode == "custom" and not cpu_model:
            _fail("cpu_mode custom needs cpu_model")
        firmware = choice_value(get("firmware"), FIRMWARES, "firmware")
        secure_boot = bool_value(get("secure_boot"), "secure_boot")
        if secure_boot and firmware != "uefi":
            _fail("secure_boot needs firmware uefi")
        kernel = _optional(get("kernel"), _abs_path, "kernel")
        initrd = _optional(get("initrd"), _abs_path, "initrd")
        cmdline = _optional(get("cmdline"), text_value, "cmdline", True, 4096)
        if (initrd or cmdline) and not kernel:
            _fail("initrd and cmdline need kernel")
        layout = guest_layout(_optional(params.get("instances_path"), text_value, "instances_path"), name,
                              _optional(params.get("instance_dir") or None, _abs_path, "instance_dir"))
        spec = cls(
            name=name, layout=layout, uuid=uuid, title=title,
            path=_abs_path(get("path"), "path") if get("path") else layout.domain_xml,
            uri=text_value(params.get("uri") or CONNECTION.argument_spec["uri"]["default"], "uri"),
            description=_optional(get("description"), text_value, "description"),
            vcpus=vcpus, max_vcpus=max_vcpus, memory_kib=memory, max_memory_kib=max_memory,
            max_memory_slots=slots,
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


# ------------------------------------------------------------------------------------------- domain

@dataclass(frozen=True)
class DomainSpec:
    """One domain and the state it should be in. ``xml`` is the desired definition once known (given, or
    read from ``xml_file`` or the guest's ``domain.xml`` by the lifecycle); ``xml_source`` says where from."""

    name: str
    state: str
    layout: GuestLayout
    uri: str
    xml: Optional[str]
    xml_file: Optional[str]
    xml_source: Optional[str]
    autostart: Optional[bool]
    apply: str
    shutdown_timeout: int
    start_timeout: int
    force_off: bool
    remove_storage: bool
    wait_for_address: bool
    address_timeout: int

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "DomainSpec":
        """Reject what libvirt or the file system would choke on, before anything is looked up."""
        if not isinstance(params, dict):
            _fail("parameters must be a dictionary")

        def get(key: str) -> Any:
            return option_value(params, DOMAIN_ITEM_SPEC, key)

        name = get("name")
        if not isinstance(name, str) or not name.strip():
            _fail("name must be a non-empty string, got %r" % (name,))
        validate_guest_name(name)
        state = get("state")
        if state not in WANTED_STATES:
            _fail("state must be one of %s, got %r" % (", ".join(WANTED_STATES), state))
        wait = bool_value(get("wait_for_address"), "wait_for_address")
        if wait and state != "running":
            _fail("wait_for_address needs state=running (a guest that does not run gets no address), got state=%s"
                  % state)
        xml, xml_file = get("xml"), get("xml_file")
        if xml is not None and xml_file is not None:
            _fail("xml and xml_file are mutually exclusive; give one of them")
        return cls(
            name=name, state=state, wait_for_address=wait,
            layout=guest_layout(_optional(params.get("instances_path"), text_value, "instances_path"), name),
            uri=text_value(params.get("uri") or CONNECTION.argument_spec["uri"]["default"], "uri"),
            xml=xml, xml_source="the xml option" if xml is not None else None,
            xml_file=_optional(xml_file, _abs_path, "xml_file"),
            autostart=_optional(get("autostart"), bool_value, "autostart"),
            apply=choice_value(get("apply"), APPLY_MODES, "apply"),
            shutdown_timeout=timeout_value(get("shutdown_timeout"), "shutdown_timeout"),
            start_timeout=timeout_value(get("start_timeout"), "start_timeout"),
            address_timeout=timeout_value(get("address_timeout"), "address_timeout"),
            force_off=bool_value(get("force_off"), "force_off"),
            remove_storage=bool_value(get("remove_storage"), "remove_storage"))

    @property
    def desired_file(self) -> str:
        """Where the desired XML is read from when ``xml`` is not given."""
        return self.xml_file or self.layout.domain_xml


# -------------------------------------------------------------------------------------- domain_info

@dataclass(frozen=True)
class DomainInfoSpec:
    """Which domains ``domain_info`` reports, and how much of each."""

    uri: str
    name: Optional[str]
    include_xml: bool

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "DomainInfoSpec":
        name = params.get("name")
        if name is not None and (not isinstance(name, str) or not name or _XML_BAD_CHARS.search(name)):
            _fail("name must be a domain name, got %r" % (name,))
        return cls(uri=text_value(params.get("uri") or CONNECTION.argument_spec["uri"]["default"], "uri"),
                   name=name,
                   include_xml=bool_value(option_value(params, DOMAIN_INFO_ITEM_SPEC, "include_xml"), "include_xml"))

