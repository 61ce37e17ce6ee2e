# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: turn high-level guest parameters into a domain definition.

All policy lives here, none in ``_domain_model``: virtio disks and NICs, deterministic MAC
addresses, disk names per bus, a serial console logged to the instance directory, host-model CPU
on KVM, BIOS or OVMF firmware. ``validate_spec`` checks every value (types included, because the
function is also reached without Ansible's argument parsing) and raises ``VirtfleetError`` only.
``design_domain`` is pure: what it needs from the hypervisor (virt type, canonical machine name,
firmware paths) comes in ``HostFacts``, which ``resolve_host_facts`` reads from libvirt.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import validate_guest_name
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model as model

MAC_PREFIX = "52:54:00"
DISK_BUSES = ("virtio", "scsi", "sata", "ide", "usb")
DISK_FORMATS = ("raw", "qcow2")
DISK_DEVICES = ("disk", "cdrom")
DISK_CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe", "default")
DISK_DISCARD = ("unmap", "ignore")
NIC_TYPES = ("network", "bridge", "direct")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
DIRECT_MODES = ("bridge", "vepa", "private", "passthrough")
CPU_MODES = ("host-model", "host-passthrough", "maximum", "custom")
FIRMWARES = ("bios", "uefi")
GRAPHICS = ("none", "vnc", "spice")
VIRT_TYPES = ("kvm", "qemu", "auto")
TPM_MODELS = ("tpm-tis", "tpm-crb")
WATCHDOG_MODELS = ("none", "i6300esb", "itco")
WATCHDOG_ACTIONS = ("reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi")
MAX_VCPUS = 4096
CONSOLE_LOG = "console.log"
NVRAM_FILE = "nvram.fd"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
ITCO_MIN_LIBVIRT = 9001000  # libvirt 9.1.0 added <watchdog model='itco'/>
FIRMWARE_DESCRIPTOR_DIRS = ("/etc/qemu/firmware", "/usr/share/qemu/firmware")

# fw_cfg names users may set: qemu reserves everything outside opt/, and names are at most 55 bytes.
_FW_CFG_NAME_RE = re.compile(r"^opt/[A-Za-z0-9._/-]{1,51}$")
_DEV_RE = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFACE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,14}$")
_NET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MACHINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# XML 1.0 allows these characters only; lxml refuses the rest with a ValueError.
_XML_BAD_CHARS = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class HostFacts:
    """What the design needs to know about the hypervisor."""

    virt_type: str = "qemu"
    machine: str = "pc"
    loader: Optional[str] = None            # OVMF code path for uefi
    nvram_template: Optional[str] = None
    secure_boot: bool = False
    libvirt_version: Optional[int] = None   # 1000000 * major + 1000 * minor + micro; None when not known


# ---------------------------------------------------------------------------------------- validation

def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


def _text(value: Any, what: str, allow_empty: bool = True, max_len: int = 65536) -> str:
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
    path = _text(value, what, allow_empty=False, max_len=4096)
    if not os.path.isabs(path):
        _fail("%s must be an absolute path, got %r" % (what, path))
    if "\n" in path or "\r" in path:
        _fail("%s must not contain line breaks" % what)
    return os.path.normpath(path)


def _int_value(value: Any, what: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool):
        _fail("%s must be an integer, got a boolean" % what)
    if isinstance(value, str) and re.match(r"^\s*\d+\s*$", value):
        value = int(value)
    if not isinstance(value, int):
        _fail("%s must be an integer, got %r" % (what, value))
    if not minimum <= value <= maximum:
        _fail("%s must be between %d and %d, got %d" % (what, minimum, maximum, value))
    return value


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    _fail("%s must be a boolean, got %r" % (what, value))
    return False  # pragma: no cover


def _choice(value: Any, choices: Tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail("%s must be one of %s, got %r" % (what, ", ".join(choices), value))
    return value


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


def _list(value: Any, what: str) -> List[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail("%s must be a list, got %s" % (what, type(value).__name__))
    return value


DISK_KEYS = ("path", "format", "boot_order", "bus", "device", "readonly", "dev", "cache", "discard", "serial", "io")
NIC_KEYS = ("type", "source", "network", "bridge", "direct", "mode", "mac", "model", "boot_order")
METADATA_KEYS = ("flavor", "image", "owned_files")


def validate_spec(params: Dict[str, Any]) -> Dict[str, Any]:
    """A clean copy of the guest parameters; anything wrong raises ``VirtfleetError`` with the reason."""
    if not isinstance(params, dict):
        _fail("parameters must be a dictionary")
    spec: Dict[str, Any] = {}
    name = params.get("name")
    if not isinstance(name, str):
        _fail("name is required and must be a string")
    spec["name"] = validate_guest_name(name)
    spec["vcpus"] = _int_value(params.get("vcpus", 1), "vcpus", 1, MAX_VCPUS)
    max_vcpus = params.get("max_vcpus")
    spec["max_vcpus"] = None if max_vcpus is None else _int_value(max_vcpus, "max_vcpus", 1, MAX_VCPUS)
    if spec["max_vcpus"] is not None and spec["max_vcpus"] < spec["vcpus"]:
        _fail("max_vcpus (%d) must not be smaller than vcpus (%d)" % (spec["max_vcpus"], spec["vcpus"]))
    spec["memory_kib"] = memory_kib(params.get("memory", "512M"), "memory")
    max_memory = params.get("max_memory")
    spec["max_memory_kib"] = None if max_memory is None else memory_kib(max_memory, "max_memory")
    if spec["max_memory_kib"] is not None and spec["max_memory_kib"] < spec["memory_kib"]:
        _fail("max_memory must not be smaller than memory")
    spec["max_memory_slots"] = _int_value(params.get("max_memory_slots", 16), "max_memory_slots", 1, 255)
    spec["virt_type"] = _choice(params.get("virt_type", "auto"), VIRT_TYPES, "virt_type")
    machine = params.get("machine", "pc")
    if not isinstance(machine, str) or not _MACHINE_RE.match(machine):
        _fail("machine must be a machine type name such as pc or q35, got %r" % (machine,))
    spec["machine"] = machine
    spec["uuid"] = None
    if params.get("uuid") is not None:
        try:
            spec["uuid"] = str(uuidlib.UUID(_text(params["uuid"], "uuid", allow_empty=False, max_len=64)))
        except ValueError:
            _fail("uuid %r is not a UUID" % (params["uuid"],))
    for key in ("title", "description"):
        spec[key] = None if params.get(key) is None else _text(params[key], key)
    if spec["title"] is not None and ("\n" in spec["title"] or "\r" in spec["title"]):
        _fail("title must be a single line (libvirt refuses line breaks there)")
    cpu_mode = params.get("cpu_mode")
    spec["cpu_mode"] = None if cpu_mode is None else _choice(cpu_mode, CPU_MODES, "cpu_mode")
    cpu_model = params.get("cpu_model")
    if cpu_model is not None and (not isinstance(cpu_model, str) or not _CPU_MODEL_RE.match(cpu_model)):
        _fail("cpu_model must be a CPU model name such as Skylake-Client, got %r" % (cpu_model,))
    spec["cpu_model"] = cpu_model
    if spec["cpu_mode"] == "custom" and not cpu_model:
        _fail("cpu_mode custom needs cpu_model")
    spec["firmware"] = _choice(params.get("firmware", "bios"), FIRMWARES, "firmware")
    spec["secure_boot"] = _bool(params.get("secure_boot", False), "secure_boot")
    if spec["secure_boot"] and spec["firmware"] != "uefi":
        _fail("secure_boot needs firmware uefi")
    spec["graphics"] = _choice(params.get("graphics", "none"), GRAPHICS, "graphics")
    listen = params.get("graphics_listen", "127.0.0.1")
    spec["graphics_listen"] = _text(listen, "graphics_listen", allow_empty=False, max_len=64)
    spec["guest_agent"] = _bool(params.get("guest_agent", False), "guest_agent")
    spec["rng"] = _bool(params.get("rng", True), "rng")
    spec["tpm"] = _bool(params.get("tpm", False), "tpm")
    spec["tpm_model"] = _choice(params.get("tpm_model", "tpm-tis"), TPM_MODELS, "tpm_model")
    spec["watchdog"] = _choice(params.get("watchdog", "none"), WATCHDOG_MODELS, "watchdog")
    spec["watchdog_action"] = _choice(params.get("watchdog_action", "reset"), WATCHDOG_ACTIONS, "watchdog_action")
    spec["memballoon"] = _bool(params.get("memballoon", True), "memballoon")
    for key in ("kernel", "initrd"):
        spec[key] = None if params.get(key) is None else _abs_path(params[key], key)
    spec["cmdline"] = None if params.get("cmdline") is None else _text(params["cmdline"], "cmdline", max_len=4096)
    if (spec["initrd"] or spec["cmdline"]) and not spec["kernel"]:
        _fail("initrd and cmdline need kernel")
    spec["instance_dir"] = _abs_path(params["instance_dir"], "instance_dir") if params.get("instance_dir") \
        else None
    spec["fw_cfg"] = _validate_fw_cfg(params.get("fw_cfg"))
    spec["disks"] = [_validate_disk(d, i) for i, d in enumerate(_list(params.get("disks"), "disks"))]
    spec["nics"] = [_validate_nic(n, i) for i, n in enumerate(_list(params.get("nics"), "nics"))]
    spec["metadata"] = _validate_metadata(params.get("metadata"))
    spec["extra_devices"] = [_validate_fragment(x, i)
                             for i, x in enumerate(_list(params.get("extra_devices"), "extra_devices"))]
    # An option that adds a device and a raw fragment of the same kind would give libvirt two of them.
    chosen = {"tpm": spec["tpm"], "watchdog": spec["watchdog"] != "none", "memballoon": not spec["memballoon"]}
    for index, element in enumerate(spec["extra_devices"]):
        if chosen.get(element.tag):
            option = "memballoon: false" if element.tag == "memballoon" else element.tag
            _fail("extra_devices[%d] is a <%s> and %s sets one too; use one or the other"
                  % (index, element.tag, option))
    return spec


def _validate_fw_cfg(value: Any) -> List[Tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        _fail("fw_cfg must be a dictionary of name: value")
    entries = []
    for name in sorted(value, key=str):
        if not isinstance(name, str) or not _FW_CFG_NAME_RE.match(name):
            _fail("fw_cfg name %r: use opt/<reverse-domain>/<key> with letters, digits, '.', '_', '-', '/' "
                  "(at most 55 characters); qemu reserves names outside opt/" % (name,))
        entry = value[name]
        if isinstance(entry, bool) or not isinstance(entry, (str, int)):
            _fail("fw_cfg %s: the value must be a string" % name)
        entries.append((name, _text(str(entry), "fw_cfg %s" % name, max_len=65536)))
    return entries


def _validate_disk(value: Any, index: int) -> Dict[str, Any]:
    what = "disks[%d]" % index
    disk = _dict(value, what, DISK_KEYS)
    device = _choice(disk.get("device", "disk"), DISK_DEVICES, what + ".device")
    if "path" not in disk and device != "cdrom":
        _fail("%s: missing 'path' (the disk image on the hypervisor)" % what)
    clean: Dict[str, Any] = {"device": device}
    clean["path"] = _abs_path(disk["path"], what + ".path") if "path" in disk else None
    clean["format"] = _choice(disk.get("format", "raw"), DISK_FORMATS, what + ".format")
    clean["bus"] = None if "bus" not in disk else _choice(disk["bus"], DISK_BUSES, what + ".bus")
    clean["readonly"] = _bool(disk.get("readonly", device == "cdrom"), what + ".readonly")
    clean["boot_order"] = None if "boot_order" not in disk else _int_value(disk["boot_order"], what + ".boot_order",
                                                                           1, 1024)
    dev = disk.get("dev")
    if dev is not None and (not isinstance(dev, str) or not _DEV_RE.match(dev)):
        _fail("%s.dev must look like vda, sdb or hdc, got %r" % (what, dev))
    clean["dev"] = dev
    clean["cache"] = None if "cache" not in disk else _choice(disk["cache"], DISK_CACHE_MODES, what + ".cache")
    clean["discard"] = None if "discard" not in disk else _choice(disk["discard"], DISK_DISCARD, what + ".discard")
    clean["io"] = None if "io" not in disk else _choice(disk["io"], ("native", "threads", "io_uring"), what + ".io")
    serial = disk.get("serial")
    if serial is not None and (not isinstance(serial, str) or not re.match(r"^[A-Za-z0-9_.+-]{1,20}$", serial)):
        _fail("%s.serial: 1-20 letters, digits, '_', '.', '+' or '-', got %r" % (what, serial))
    clean["serial"] = serial
    return clean


def _validate_nic(value: Any, index: int) -> Dict[str, Any]:
    what = "nics[%d]" % index
    nic = _dict(value, what, NIC_KEYS)
    shorthand = [k for k in NIC_TYPES if k in nic]
    if len(shorthand) > 1 or (shorthand and ("type" in nic or "source" in nic)):
        _fail("%s: give either type and source, or exactly one of network, bridge, direct" % what)
    if shorthand:
        nic_type, source = shorthand[0], nic[shorthand[0]]
    else:
        nic_type = _choice(nic.get("type", "network"), NIC_TYPES, what + ".type")
        source = nic.get("source", "default" if nic_type == "network" else None)
    if source is None:
        _fail("%s: a %s interface needs a source (the %s)" % (what, nic_type,
                                                              "bridge" if nic_type == "bridge" else "host interface"))
    pattern = _NET_NAME_RE if nic_type == "network" else _IFACE_NAME_RE
    if not isinstance(source, str) or not pattern.match(source):
        _fail("%s: invalid %s name %r" % (what, nic_type, source))
    clean = {"type": nic_type, "source": source, "model": _choice(nic.get("model", "virtio"), NIC_MODELS,
                                                                  what + ".model")}
    if "mode" in nic and nic_type != "direct":
        _fail("%s: mode applies to direct interfaces only" % what)
    clean["mode"] = _choice(nic.get("mode", "bridge"), DIRECT_MODES, what + ".mode") if nic_type == "direct" \
        else None
    mac = nic.get("mac")
    if mac is not None:
        if not isinstance(mac, str) or not _MAC_RE.match(mac):
            _fail("%s.mac must look like 52:54:00:12:34:56, got %r" % (what, mac))
        if int(mac[:2], 16) & 1:
            _fail("%s.mac %s is a multicast address" % (what, mac))
        mac = mac.lower()
    clean["mac"] = mac
    clean["boot_order"] = None if "boot_order" not in nic else _int_value(nic["boot_order"], what + ".boot_order",
                                                                          1, 1024)
    return clean


def _validate_metadata(value: Any) -> Dict[str, Any]:
    if value is None:
        return {"flavor": None, "image": None, "owned_files": []}
    meta = _dict(value, "metadata", METADATA_KEYS)
    return {
        "flavor": None if "flavor" not in meta else _text(meta["flavor"], "metadata.flavor", max_len=256),
        "image": None if "image" not in meta else _text(meta["image"], "metadata.image", max_len=4096),
        "owned_files": [_abs_path(p, "metadata.owned_files[%d]" % i)
                        for i, p in enumerate(_list(meta.get("owned_files"), "metadata.owned_files"))],
    }


def _validate_fragment(value: Any, index: int):
    what = "extra_devices[%d]" % index
    text = _text(value, what, allow_empty=False)
    try:
        element = model.parse_element(text)
    except model.ModelError as exc:
        raise VirtfleetError("%s is not a device XML fragment: %s" % (what, exc))
    if element.tag in ("domain", "devices") or not isinstance(element.tag, str) or "}" in element.tag:
        _fail("%s must be one device element such as <rng>, <hostdev> or <watchdog>, got <%s>"
              % (what, element.tag))
    return element


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


def assign_disk_names(disks: List[Dict[str, Any]], machine: str) -> List[Tuple[str, str]]:
    """(bus, target dev) per disk: explicit names are kept, others take the next free name of their bus.

    Cdroms default to ide on i440fx (present without extra drivers in the guest) and to scsi on q35,
    which has no ide; the test guest kernel has no AHCI, so sata is never picked by default.
    """
    q35 = is_q35(machine)
    used = {d["dev"] for d in disks if d.get("dev")}
    result = []
    for index, disk in enumerate(disks):
        bus = disk.get("bus")
        if bus is None:
            if disk.get("dev"):
                bus = {"vd": "virtio", "sd": "scsi", "hd": "ide"}[disk["dev"][:2]]
            elif disk["device"] == "cdrom":
                bus = "scsi" if q35 else "ide"
            else:
                bus = "virtio"
        if bus == "ide" and q35:
            _fail("disks[%d]: machine %s (q35) has no IDE bus; use bus scsi or sata" % (index, machine))
        if bus == "virtio" and disk["device"] == "cdrom":
            _fail("disks[%d]: a cdrom cannot be on the virtio bus; use scsi, sata or ide" % index)
        prefix = {"virtio": "vd", "ide": "hd"}.get(bus, "sd")
        dev = disk.get("dev")
        if dev:
            if not dev.startswith(prefix):
                _fail("disks[%d]: dev %s does not fit bus %s (use %s*)" % (index, dev, bus, prefix))
        else:
            candidates = _dev_names(prefix)
            if bus == "ide":
                candidates = (["hdc", "hdd", "hda", "hdb"] if disk["device"] == "cdrom"
                              else ["hda", "hdb", "hdc", "hdd"])
            dev = next((c for c in candidates if c not in used), None)
            if dev is None:
                _fail("disks[%d]: no free device name left on bus %s" % (index, bus))
        if dev in {d for _b, d in result}:
            _fail("disks[%d]: dev %s is used twice" % (index, dev))
        used.add(dev)
        result.append((bus, dev))
    return result


def instance_dir_of(params: Dict[str, Any]) -> str:
    if params.get("instance_dir"):
        return _abs_path(params["instance_dir"], "instance_dir")
    base = _abs_path(params.get("instances_path") or "/var/lib/virtfleet/instances", "instances_path")
    return os.path.join(base, validate_guest_name(params["name"]))


def design_domain(spec: Dict[str, Any], facts: HostFacts, instance_dir: str) -> model.Domain:
    """The domain for a validated ``spec`` on a host described by ``facts``."""
    name = spec["name"]
    dom = model.Domain(type=facts.virt_type, name=name, uuid=spec["uuid"], title=spec["title"],
                       description=spec["description"])
    meta = spec["metadata"]
    dom.metadata = model.Metadata(flavor=meta["flavor"], image=meta["image"], owned_files=list(meta["owned_files"]))
    if spec["max_memory_kib"] is not None:
        dom.max_memory_kib, dom.max_memory_slots = spec["max_memory_kib"], spec["max_memory_slots"]
    dom.memory_kib = dom.current_memory_kib = spec["memory_kib"]
    dom.vcpu_placement = "static"
    if spec["max_vcpus"] is not None and spec["max_vcpus"] != spec["vcpus"]:
        dom.vcpus, dom.vcpu_current = spec["max_vcpus"], spec["vcpus"]
    else:
        dom.vcpus = spec["vcpus"]
    if spec["fw_cfg"]:
        dom.sysinfo.append(model.Sysinfo(type="fwcfg", entries=list(spec["fw_cfg"])))

    dom.os = model.Os(type="hvm", arch="x86_64", machine=facts.machine)
    if spec["firmware"] == "uefi":
        if not facts.loader:
            _fail("firmware uefi: no OVMF firmware for machine %s found in libvirt's domain capabilities; "
                  "install the ovmf package" % facts.machine)
        dom.os.loader = model.Loader(path=facts.loader, readonly=True, type="pflash",
                                     secure=True if spec["secure_boot"] else None)
        dom.os.nvram = model.Nvram(path=os.path.join(instance_dir, NVRAM_FILE), template=facts.nvram_template)
    if spec["kernel"]:
        dom.os.kernel, dom.os.initrd, dom.os.cmdline = spec["kernel"], spec["initrd"], spec["cmdline"]
    uses_boot_order = any(d["boot_order"] for d in spec["disks"]) or any(n["boot_order"] for n in spec["nics"])
    if not uses_boot_order and not spec["kernel"]:
        dom.os.boot_devs = ["hd"]

    dom.features = model.Features(flags=["acpi", "apic"])
    if spec["secure_boot"]:
        dom.features.smm = True
    dom.cpu = _design_cpu(spec, facts)
    if spec["max_memory_kib"] is not None:
        # Memory hot-plug needs a NUMA topology; one cell holding all CPUs and the boot memory.
        dom.cpu = dom.cpu or model.Cpu()
        dom.cpu.extra.append(_single_numa_cell(dom.vcpus, spec["memory_kib"]))
    dom.clock = model.Clock(offset="utc")
    dom.on_poweroff, dom.on_reboot, dom.on_crash = "destroy", "restart", "destroy"
    dom.devices = _design_devices(spec, facts, instance_dir)
    return dom


def _design_cpu(spec: Dict[str, Any], facts: HostFacts) -> Optional[model.Cpu]:
    mode = spec["cpu_mode"]
    if mode is None:
        # TCG cannot emulate the host's CPU model; libvirt's default (qemu64) is what works there.
        mode = "host-model" if facts.virt_type == "kvm" else None
    if mode is None and spec["cpu_model"]:
        mode = "custom"
    if mode is None:
        return None
    cpu = model.Cpu(mode=mode)
    if mode == "custom":
        cpu.match, cpu.model, cpu.model_fallback = "exact", spec["cpu_model"], "allow"
    return cpu


def _single_numa_cell(vcpus: int, memory: int):
    numa = model.etree.Element("numa")
    cpus = "0" if vcpus == 1 else "0-%d" % (vcpus - 1)
    model.etree.SubElement(numa, "cell", {"id": "0", "cpus": cpus, "memory": str(memory), "unit": "KiB"})
    return numa


def _design_devices(spec: Dict[str, Any], facts: HostFacts, instance_dir: str) -> List[model.Device]:
    devices: List[model.Device] = []
    names = assign_disk_names(spec["disks"], facts.machine)
    for disk, (bus, dev) in zip(spec["disks"], names):
        item = model.Disk(type="file", device=disk["device"], driver_name="qemu", driver_type=disk["format"],
                          driver_cache=disk["cache"], driver_io=disk["io"], driver_discard=disk["discard"],
                          target_dev=dev, target_bus=bus, readonly=disk["readonly"], serial=disk["serial"],
                          boot_order=disk["boot_order"])
        if disk["path"]:
            item.source_file = disk["path"]
        devices.append(item)
    if any(bus == "scsi" for bus, _dev in names):
        devices.append(model.Controller(type="scsi", index=0, model="virtio-scsi"))
    for index, nic in enumerate(spec["nics"]):
        source = {{"network": "network", "bridge": "bridge", "direct": "dev"}[nic["type"]]: nic["source"]}
        if nic["type"] == "direct":
            source["mode"] = nic["mode"]
        devices.append(model.Interface(type=nic["type"], mac=nic["mac"] or derive_mac(spec["name"], index),
                                       source=source, model=nic["model"], boot_order=nic["boot_order"]))
    log = os.path.join(instance_dir, CONSOLE_LOG)
    devices.append(model.Serial(type="pty", log_file=log, log_append=True))
    devices.append(model.Console(type="pty", target_type="serial", target_port=0))
    if spec["guest_agent"]:
        devices.append(model.Channel(type="unix", target_type="virtio", target_name=GUEST_AGENT_CHANNEL))
    if spec["tpm"]:
        devices.append(model.Tpm(model=spec["tpm_model"], backend_type="emulator", backend_version="2.0"))
    if spec["graphics"] != "none":
        devices.append(model.Graphics(type=spec["graphics"], autoport=True, listen=spec["graphics_listen"],
                                      listen_element=True))
        devices.append(model.Video(model="vga" if spec["graphics"] == "vnc" else "qxl"))
    if spec["watchdog"] != "none":
        if spec["watchdog"] == "itco" and not is_q35(facts.machine):
            _fail("watchdog itco is the q35 chipset's own watchdog; machine %s has none: use machine q35 or "
                  "watchdog i6300esb" % facts.machine)
        if spec["watchdog"] == "itco" and facts.libvirt_version is not None and \
                facts.libvirt_version < ITCO_MIN_LIBVIRT:
            _fail("watchdog itco needs libvirt 9.1 or later; this host runs libvirt %s: use watchdog i6300esb"
                  % _version_text(facts.libvirt_version))
        devices.append(model.Watchdog(model=spec["watchdog"], action=spec["watchdog_action"]))
    if not spec["memballoon"]:
        # With memballoon true nothing is written: libvirt adds its virtio balloon, as it always did here.
        devices.append(model.MemBalloon(model="none"))
    if spec["rng"]:
        devices.append(model.Rng(model="virtio", backend_model="random", backend_path="/dev/urandom"))
    for element in spec["extra_devices"]:
        devices.append(model.parse_device(element))
    return devices


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


def resolve_host_facts(conn, spec: Dict[str, Any], virt_type: Optional[str] = None,
                       caps_xml: Optional[str] = None) -> HostFacts:
    """Virt type, canonical machine name and firmware paths, as this hypervisor's libvirt sees them.

    ``virt_type`` and ``caps_xml`` (the resolved type and its domain capabilities) may be passed when
    already fetched from libvirt for ``spec``; they are then used instead of asking again.
    """
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import libvirt, libvirt_error_text
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.virt_probe import resolve_virt_type

    if virt_type is None or caps_xml is None:
        virt_type = resolve_virt_type(conn, spec["virt_type"])
        try:
            caps_xml = conn.getDomainCapabilities(None, "x86_64", spec["machine"], virt_type, 0)
        except libvirt.libvirtError as exc:
            raise VirtfleetError("libvirt does not offer machine type %r with virt type %s on x86_64: %s"
                                 % (spec["machine"], virt_type, libvirt_error_text(exc)))
    caps = model.parse_element(caps_xml)
    machine = (caps.findtext("machine") or spec["machine"]).strip()
    facts = HostFacts(virt_type=virt_type, machine=machine, secure_boot=spec["secure_boot"])
    if spec.get("watchdog") == "itco":
        try:
            facts.libvirt_version = conn.getLibVersion()
        except libvirt.libvirtError:
            facts.libvirt_version = None  # unknown: libvirt itself refuses the model at define if too old
    if spec["secure_boot"] and not is_q35(machine):
        _fail("secure_boot needs machine q35 (Secure Boot firmware requires SMM); machine %s is not q35" % machine)
    if spec["firmware"] == "uefi":
        loaders = [v.text.strip() for v in caps.findall("os/loader/value") if v.text]
        facts.loader, facts.nvram_template = choose_ovmf(loaders, spec["secure_boot"], is_q35(machine))
        if facts.loader is None:
            _fail("firmware uefi%s: libvirt offers no suitable OVMF loader for machine %s (offered: %s); install "
                  "the ovmf package" % (" with secure_boot" if spec["secure_boot"] else "", machine,
                                        ", ".join(loaders) or "none"))
    return facts
