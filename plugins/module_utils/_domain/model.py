# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: typed model of a libvirt domain definition.

Each class maps one part of libvirt's domain XML to plain attributes and back (``from_element`` /
``to_element``). The model states XML facts only, and its defaults are "not said" (None): choices
such as "virtio disks", "a logged serial console" or "an hvm guest" belong to the designer. Whatever
the model does not know (elements, attributes) is kept verbatim (``extra`` / ``extra_attrs``) so a
parse → render round trip never drops what a user wrote. Rendering is deterministic: known
attributes and children in a fixed order, then the unknown ones in their original order.

What libvirt adds when it defines or starts a domain, which a comparison must ignore, is the
business of ``_domain.normalize``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Type

try:
    from lxml import etree
except ImportError:  # pragma: no cover - modules report it through missing_required_lib
    etree = None

VIRTFLEET_NS = "https://virtfleet.dev/xmlns/libvirt/1"
VIRTFLEET_PREFIX = "virtfleet"
# libvirt's QEMU namespace: arguments handed to QEMU as written (<qemu:commandline>).
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
QEMU_PREFIX = "qemu"
# The virtio serial port the QEMU guest agent talks on.
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

Element = "etree._Element"  # for annotations only; lxml may be missing at import time


class ModelError(ValueError):
    """XML that is not a domain definition this model can represent."""


# --------------------------------------------------------------------------------------------- helpers

def _parser():
    return etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True, huge_tree=False)


def parse_element(text) -> Element:
    """An element from XML text, refusing entities and network access (user-supplied XML)."""
    if etree is None:
        raise ModelError("the lxml Python library is required")
    if isinstance(text, str):
        text = text.encode("utf-8")
    try:
        root = etree.fromstring(text, _parser())
    except etree.XMLSyntaxError as exc:
        raise ModelError("not well-formed XML: %s" % exc)
    _strip_comments(root)
    return root


def _strip_comments(root) -> None:
    for node in list(root.iter(etree.Comment, etree.ProcessingInstruction)):
        parent = node.getparent()
        if parent is not None:
            if node.tail:
                prev = node.getprevious()
                if prev is not None:
                    prev.tail = (prev.tail or "") + node.tail
                else:
                    parent.text = (parent.text or "") + node.tail
            parent.remove(node)


def _copy(elements: Sequence) -> List:
    return [copy.deepcopy(e) for e in elements]


def _sub(parent, tag: str, attrs: Optional[Sequence[Tuple[str, Optional[str]]]] = None,
         text: Optional[str] = None):
    """Append ``<tag>`` with the attributes whose value is not None, in the given order."""
    child = etree.SubElement(parent, tag)
    for key, value in attrs or ():
        if value is not None:
            child.set(key, str(value))
    if text is not None:
        child.text = str(text)
    return child


def _set_attrs(element, known: Sequence[Tuple[str, Optional[str]]], extra: Dict[str, str]) -> None:
    for key, value in known:
        if value is not None:
            element.set(key, str(value))
    for key in sorted(extra):
        element.set(key, extra[key])


def _take_attrs(element, known: Sequence[str]) -> Tuple[Dict[str, Optional[str]], Dict[str, str]]:
    """(known attributes, the others) of ``element``."""
    attrs = dict(element.attrib)
    return {k: attrs.pop(k, None) for k in known}, attrs


def _yes(value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    return value in ("yes", "on")


def _yesno(value: Optional[bool]) -> Optional[str]:
    return None if value is None else ("yes" if value else "no")


def _onoff(value: Optional[bool]) -> Optional[str]:
    return None if value is None else ("on" if value else "off")


def _int(value: Optional[str], what: str) -> Optional[int]:
    if value is None:
        return None
    try:
        return int(value.strip(), 0) if value.strip().lower().startswith("0x") else int(value.strip())
    except ValueError:
        raise ModelError("%s: expected an integer, got %r" % (what, value))


def _append(parent, elements: Sequence) -> None:
    for element in elements:
        parent.append(copy.deepcopy(element))


# libvirt's memory units, to KiB (binary and decimal as in libvirt's virScaleInteger).
_UNIT_BYTES = {
    "b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024 ** 2, "mib": 1024 ** 2, "mb": 1000 ** 2,
    "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3, "t": 1024 ** 4, "tib": 1024 ** 4, "tb": 1000 ** 4,
    "p": 1024 ** 5, "pib": 1024 ** 5, "pb": 1000 ** 5, "e": 1024 ** 6, "eib": 1024 ** 6, "eb": 1000 ** 6,
}


def memory_to_kib(value: str, unit: Optional[str], what: str = "memory") -> int:
    """KiB for a libvirt memory value with its ``unit`` attribute (default KiB), rounded up as libvirt does."""
    factor = _UNIT_BYTES.get((unit or "KiB").lower())
    if factor is None:
        raise ModelError("%s: unknown unit %r" % (what, unit))
    number = _int(value, what)
    if number is None or number < 0:
        raise ModelError("%s: expected a non-negative integer, got %r" % (what, value))
    total = number * factor
    return (total + 1023) // 1024


# ------------------------------------------------------------------------------------------ metadata

@dataclass
class Metadata:
    """``<metadata>``: our own record (flavor, image, owned files) plus anybody else's, kept verbatim."""

    flavor: Optional[str] = None
    image: Optional[str] = None
    owned_files: List[str] = field(default_factory=list)
    extra: List = field(default_factory=list)       # other applications' metadata elements
    own_extra: List = field(default_factory=list)   # unknown children of our own element

    def has_own(self) -> bool:
        return bool(self.flavor is not None or self.image is not None or self.owned_files or self.own_extra)

    def is_empty(self) -> bool:
        return not self.has_own() and not self.extra

    @classmethod
    def from_element(cls, element) -> "Metadata":
        meta = cls()
        for child in element:
            own = cls() if child.tag == "{%s}instance" % VIRTFLEET_NS and not meta.has_own() else None
            if own is not None:
                own._read_own(child)
            if own is not None and own.has_own() and _lossless(own._own_element(), child):
                meta.flavor, meta.image, meta.owned_files, meta.own_extra = \
                    own.flavor, own.image, own.owned_files, own.own_extra
            else:
                meta.extra.append(copy.deepcopy(child))  # another application's, or ours in a shape we do not type
        return meta

    def _read_own(self, element) -> None:
        for item in element:
            local = etree.QName(item).localname if str(item.tag).startswith("{%s}" % VIRTFLEET_NS) else None
            if local == "flavor" and self.flavor is None:
                self.flavor = item.text or ""
            elif local == "image" and self.image is None:
                self.image = item.text or ""
            elif local == "owned-files" and not self.owned_files:
                self.owned_files = [f.text or "" for f in item if f.tag == "{%s}file" % VIRTFLEET_NS]
            else:
                self.own_extra.append(copy.deepcopy(item))

    def _own_element(self):
        own = etree.Element("{%s}instance" % VIRTFLEET_NS, nsmap={VIRTFLEET_PREFIX: VIRTFLEET_NS})
        if self.flavor is not None:
            etree.SubElement(own, "{%s}flavor" % VIRTFLEET_NS).text = self.flavor
        if self.image is not None:
            etree.SubElement(own, "{%s}image" % VIRTFLEET_NS).text = self.image
        if self.owned_files:
            files = etree.SubElement(own, "{%s}owned-files" % VIRTFLEET_NS)
            for path in self.owned_files:
                etree.SubElement(files, "{%s}file" % VIRTFLEET_NS).text = path
        _append(own, self.own_extra)
        return own

    def to_element(self):
        element = etree.Element("metadata")
        if self.has_own():
            element.append(self._own_element())
        _append(element, self.extra)
        return element


# -------------------------------------------------------------------------------------- cpu, os, ...

@dataclass
class CpuFeature:
    name: str
    policy: Optional[str] = None


@dataclass
class Cpu:
    """``<cpu>``: mode (host-model, host-passthrough, custom, maximum), model and topology."""

    mode: Optional[str] = None
    match: Optional[str] = None
    check: Optional[str] = None
    migratable: Optional[str] = None
    model: Optional[str] = None
    model_fallback: Optional[str] = None
    vendor: Optional[str] = None
    sockets: Optional[int] = None
    dies: Optional[int] = None
    cores: Optional[int] = None
    threads: Optional[int] = None
    features: List[CpuFeature] = field(default_factory=list)
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Cpu":
        known, extra_attrs = _take_attrs(element, ("mode", "match", "check", "migratable"))
        cpu = cls(extra_attrs=extra_attrs, **known)
        for child in element:
            if child.tag == "model" and not set(child.attrib) - {"fallback"} and child.text and not len(child) \
                    and cpu.model is None:
                cpu.model, cpu.model_fallback = child.text, child.get("fallback")
            elif child.tag == "vendor" and not child.attrib and child.text and cpu.vendor is None:
                cpu.vendor = child.text
            elif child.tag == "topology" and not set(child.attrib) - {"sockets", "dies", "cores", "threads"}:
                for key in ("sockets", "dies", "cores", "threads"):
                    setattr(cpu, key, _int(child.get(key), "cpu topology " + key))
            elif child.tag == "feature" and child.get("name") and not set(child.attrib) - {"name", "policy"}:
                cpu.features.append(CpuFeature(child.get("name"), child.get("policy")))
            else:
                cpu.extra.append(copy.deepcopy(child))
        return cpu

    def to_element(self):
        element = etree.Element("cpu")
        _set_attrs(element, [("mode", self.mode), ("match", self.match), ("check", self.check),
                             ("migratable", self.migratable)], self.extra_attrs)
        if self.model is not None:
            _sub(element, "model", [("fallback", self.model_fallback)], self.model)
        if self.vendor is not None:
            _sub(element, "vendor", text=self.vendor)
        if any(v is not None for v in (self.sockets, self.dies, self.cores, self.threads)):
            _sub(element, "topology", [("sockets", self.sockets), ("dies", self.dies), ("cores", self.cores),
                                       ("threads", self.threads)])
        for feature in self.features:
            _sub(element, "feature", [("policy", feature.policy), ("name", feature.name)])
        _append(element, self.extra)
        return element


@dataclass
class Loader:
    path: Optional[str] = None
    readonly: Optional[bool] = None
    type: Optional[str] = None
    secure: Optional[bool] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)


@dataclass
class Nvram:
    path: Optional[str] = None
    template: Optional[str] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)


@dataclass
class Os:
    """``<os>``: guest type, machine, firmware, boot order and direct kernel boot."""

    type: Optional[str] = None
    arch: Optional[str] = None
    machine: Optional[str] = None
    firmware: Optional[str] = None
    boot_devs: List[str] = field(default_factory=list)
    loader: Optional[Loader] = None
    nvram: Optional[Nvram] = None
    kernel: Optional[str] = None
    initrd: Optional[str] = None
    cmdline: Optional[str] = None
    has_type: bool = False                                        # whether there is a <type> at all
    type_extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Os":
        known, extra_attrs = _take_attrs(element, ("firmware",))
        os_ = cls(firmware=known["firmware"], extra_attrs=extra_attrs)
        for child in element:
            if child.tag == "type" and not os_.has_type and not len(child):
                known, os_.type_extra_attrs = _take_attrs(child, ("arch", "machine"))
                os_.type, os_.arch, os_.machine = (child.text or "").strip() or None, known["arch"], known["machine"]
                os_.has_type = True
            elif child.tag == "boot" and list(child.attrib) == ["dev"]:
                os_.boot_devs.append(child.get("dev"))
            elif child.tag == "loader" and os_.loader is None and not len(child):
                known, extra = _take_attrs(child, ("readonly", "type", "secure"))
                os_.loader = Loader(child.text, _yes(known["readonly"]), known["type"], _yes(known["secure"]), extra)
            elif child.tag == "nvram" and os_.nvram is None and not len(child):
                known, extra = _take_attrs(child, ("template",))
                os_.nvram = Nvram(child.text, known["template"], extra)
            elif child.tag in ("kernel", "initrd", "cmdline") and not child.attrib and not len(child) \
                    and getattr(os_, child.tag) is None:
                setattr(os_, child.tag, child.text or "")
            else:
                os_.extra.append(copy.deepcopy(child))
        return os_

    def to_element(self):
        element = etree.Element("os")
        _set_attrs(element, [("firmware", self.firmware)], self.extra_attrs)
        if self.has_type or self.type is not None or self.arch is not None or self.machine is not None:
            kind = _sub(element, "type", [("arch", self.arch), ("machine", self.machine)], self.type)
            _set_attrs(kind, [], self.type_extra_attrs)
        if self.loader is not None:
            loader = _sub(element, "loader", [("readonly", _yesno(self.loader.readonly)), ("secure",
                          _yesno(self.loader.secure)), ("type", self.loader.type)], self.loader.path)
            _set_attrs(loader, [], self.loader.extra_attrs)
        if self.nvram is not None:
            nvram = _sub(element, "nvram", [("template", self.nvram.template)], self.nvram.path)
            _set_attrs(nvram, [], self.nvram.extra_attrs)
        for tag in ("kernel", "initrd", "cmdline"):
            if getattr(self, tag) is not None:
                _sub(element, tag, text=getattr(self, tag))
        for dev in self.boot_devs:
            _sub(element, "boot", [("dev", dev)])
        _append(element, self.extra)
        return element


@dataclass
class Features:
    """``<features>``: the simple on/off hypervisor features by name; anything richer kept raw."""

    flags: List[str] = field(default_factory=list)          # e.g. acpi, apic, pae (present = on)
    smm: Optional[bool] = None
    extra: List = field(default_factory=list)

    SIMPLE = ("acpi", "apic", "pae", "hap", "viridian", "privnet", "pvspinlock", "vmport", "vmcoreinfo", "htm")

    @classmethod
    def from_element(cls, element) -> "Features":
        features = cls()
        for child in element:
            if child.tag in cls.SIMPLE and not child.attrib and not len(child) and child.tag not in features.flags:
                features.flags.append(child.tag)
            elif child.tag == "smm" and list(child.attrib) == ["state"] and not len(child) and features.smm is None:
                features.smm = child.get("state", "on") == "on"
            else:
                features.extra.append(copy.deepcopy(child))
        return features

    def to_element(self):
        element = etree.Element("features")
        for flag in self.flags:
            _sub(element, flag)
        if self.smm is not None:
            _sub(element, "smm", [("state", _onoff(self.smm))])
        _append(element, self.extra)
        return element


@dataclass
class Clock:
    offset: Optional[str] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)   # timers and anything else, verbatim

    @classmethod
    def from_element(cls, element) -> "Clock":
        known, extra_attrs = _take_attrs(element, ("offset",))
        return cls(known["offset"], extra_attrs, _copy(element))

    def to_element(self):
        element = etree.Element("clock")
        _set_attrs(element, [("offset", self.offset)], self.extra_attrs)
        _append(element, self.extra)
        return element


@dataclass
class Sysinfo:
    """``<sysinfo>``; for type fwcfg the entries are (name, value) pairs exposed to the guest by fw_cfg."""

    type: Optional[str] = None
    entries: List[Tuple[str, str]] = field(default_factory=list)
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Sysinfo":
        known, extra_attrs = _take_attrs(element, ("type",))
        info = cls(known["type"], [], extra_attrs, [])
        for child in element:
            if info.type == "fwcfg" and child.tag == "entry" and list(child.attrib) == ["name"] and not len(child):
                info.entries.append((child.get("name"), child.text or ""))
            else:
                info.extra.append(copy.deepcopy(child))
        return info

    def to_element(self):
        element = etree.Element("sysinfo")
        _set_attrs(element, [("type", self.type)], self.extra_attrs)
        for name, value in self.entries:
            _sub(element, "entry", [("name", name)], value)
        _append(element, self.extra)
        return element


@dataclass
class QemuCommandline:
    """``<qemu:commandline>``: arguments libvirt appends to QEMU's command line, in order; ``<qemu:env>`` and
    anything else inside kept verbatim. libvirt marks a domain that has them tainted (custom-argv)."""

    TAG = "{%s}commandline" % QEMU_NS
    ARG_TAG = "{%s}arg" % QEMU_NS
    args: List[str] = field(default_factory=list)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "QemuCommandline":
        if element.attrib:
            raise ModelError("unsupported attributes on <qemu:commandline>")
        part = cls()
        for child in element:
            if child.tag == cls.ARG_TAG and list(child.attrib) == ["value"] and not len(child) \
                    and not (child.text or "").strip():
                part.args.append(child.get("value"))
            else:
                part.extra.append(copy.deepcopy(child))
        return part

    def to_element(self, parent=None):
        """The element, made inside ``parent`` when given (so it uses the prefix declared there)."""
        element = etree.Element(self.TAG, nsmap={QEMU_PREFIX: QEMU_NS}) if parent is None else \
            etree.SubElement(parent, self.TAG)
        for value in self.args:
            etree.SubElement(element, self.ARG_TAG).set("value", value)
        _append(element, self.extra)
        return element


# -------------------------------------------------------------------------------------------- devices

class Device:
    """A device under ``<devices>``; subclasses know one tag."""

    TAG = ""

    @classmethod
    def from_element(cls, element) -> "Device":
        raise NotImplementedError

    def to_element(self):
        raise NotImplementedError


@dataclass
class RawDevice(Device):
    """A device the model does not type (hostdev, sound, filesystem, ...): kept exactly as written."""

    element: object = None

    @property
    def tag(self) -> str:
        return self.element.tag

    @classmethod
    def from_element(cls, element) -> "RawDevice":
        return cls(copy.deepcopy(element))

    def to_element(self):
        return copy.deepcopy(self.element)


def _boot_order(child) -> Optional[int]:
    if child.tag == "boot" and list(child.attrib) == ["order"]:
        return _int(child.get("order"), "boot order")
    return None


@dataclass
class Disk(Device):
    """``<disk>``: a file, block device or network volume as disk, cdrom or floppy."""

    TAG = "disk"
    type: Optional[str] = None
    device: Optional[str] = None
    driver_name: Optional[str] = None
    driver_type: Optional[str] = None
    driver_cache: Optional[str] = None
    driver_io: Optional[str] = None
    driver_discard: Optional[str] = None
    driver_extra_attrs: Dict[str, str] = field(default_factory=dict)
    driver_extra: List = field(default_factory=list)
    source: Dict[str, str] = field(default_factory=dict)    # file=..., dev=..., pool/volume, ...
    source_extra: List = field(default_factory=list)
    has_source: bool = False
    target_dev: Optional[str] = None
    target_bus: Optional[str] = None
    target_extra_attrs: Dict[str, str] = field(default_factory=dict)
    readonly: bool = False
    shareable: bool = False
    serial: Optional[str] = None
    boot_order: Optional[int] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @property
    def source_file(self) -> Optional[str]:
        return self.source.get("file")

    @source_file.setter
    def source_file(self, path: Optional[str]) -> None:
        if path is None:
            self.source.pop("file", None)
        else:
            self.source["file"] = path
            self.has_source = True

    @classmethod
    def from_element(cls, element) -> "Disk":
        known, extra_attrs = _take_attrs(element, ("type", "device"))
        disk = cls(type=known["type"], device=known["device"], extra_attrs=extra_attrs)
        for child in element:
            if child.tag == "driver" and not disk.driver_name and not disk.driver_type:
                drv, disk.driver_extra_attrs = _take_attrs(child, ("name", "type", "cache", "io", "discard"))
                disk.driver_name, disk.driver_type = drv["name"], drv["type"]
                disk.driver_cache, disk.driver_io, disk.driver_discard = drv["cache"], drv["io"], drv["discard"]
                disk.driver_extra = _copy(child)
            elif child.tag == "source" and not disk.has_source:
                disk.has_source = True
                disk.source = dict(child.attrib)
                disk.source_extra = _copy(child)
            elif child.tag == "target" and disk.target_dev is None:
                tgt, disk.target_extra_attrs = _take_attrs(child, ("dev", "bus"))
                disk.target_dev, disk.target_bus = tgt["dev"], tgt["bus"]
                if len(child):
                    disk.extra.append(copy.deepcopy(child))  # unusual; keep the whole thing verbatim
                    disk.target_dev = disk.target_bus = None
                    disk.target_extra_attrs = {}
            elif child.tag == "readonly" and not child.attrib and not len(child):
                disk.readonly = True
            elif child.tag == "shareable" and not child.attrib and not len(child):
                disk.shareable = True
            elif child.tag == "serial" and not child.attrib and not len(child) and disk.serial is None:
                disk.serial = child.text or ""
            elif _boot_order(child) is not None and disk.boot_order is None:
                disk.boot_order = _boot_order(child)
            else:
                disk.extra.append(copy.deepcopy(child))
        return disk

    def to_element(self):
        element = etree.Element("disk")
        _set_attrs(element, [("type", self.type), ("device", self.device)], self.extra_attrs)
        if any(v is not None for v in (self.driver_name, self.driver_type, self.driver_cache, self.driver_io,
                                       self.driver_discard)) or self.driver_extra_attrs or self.driver_extra:
            driver = _sub(element, "driver", [("name", self.driver_name), ("type", self.driver_type),
                                              ("cache", self.driver_cache), ("io", self.driver_io),
                                              ("discard", self.driver_discard)])
            _set_attrs(driver, [], self.driver_extra_attrs)
            _append(driver, self.driver_extra)
        if self.has_source or self.source or self.source_extra:
            source = _sub(element, "source")
            for key in ("file", "dev", "dir", "protocol", "name", "pool", "volume", "mode"):
                if key in self.source:
                    source.set(key, self.source[key])
            _set_attrs(source, [], {k: v for k, v in self.source.items() if k not in source.attrib})
            _append(source, self.source_extra)
        if self.target_dev is not None or self.target_bus is not None or self.target_extra_attrs:
            target = _sub(element, "target", [("dev", self.target_dev), ("bus", self.target_bus)])
            _set_attrs(target, [], self.target_extra_attrs)
        if self.boot_order is not None:
            _sub(element, "boot", [("order", self.boot_order)])
        if self.readonly:
            _sub(element, "readonly")
        if self.shareable:
            _sub(element, "shareable")
        if self.serial is not None:
            _sub(element, "serial", text=self.serial)
        _append(element, self.extra)
        return element


@dataclass
class Controller(Device):
    TAG = "controller"
    type: Optional[str] = None
    index: Optional[int] = None
    model: Optional[str] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Controller":
        known, extra_attrs = _take_attrs(element, ("type", "index", "model"))
        return cls(known["type"], _int(known["index"], "controller index"), known["model"], extra_attrs,
                   _copy(element))

    def to_element(self):
        element = etree.Element("controller")
        _set_attrs(element, [("type", self.type), ("index", self.index), ("model", self.model)], self.extra_attrs)
        _append(element, self.extra)
        return element


@dataclass
class Interface(Device):
    """``<interface>``: network, bridge or direct (macvtap) attachment."""

    TAG = "interface"
    type: Optional[str] = None
    mac: Optional[str] = None
    source: Dict[str, str] = field(default_factory=dict)   # network=, bridge=, dev= + mode=
    source_extra: List = field(default_factory=list)
    model: Optional[str] = None
    target_dev: Optional[str] = None
    boot_order: Optional[int] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Interface":
        known, extra_attrs = _take_attrs(element, ("type",))
        nic = cls(type=known["type"], extra_attrs=extra_attrs)
        for child in element:
            if child.tag == "mac" and list(child.attrib) == ["address"] and nic.mac is None:
                nic.mac = child.get("address")
            elif child.tag == "source" and not nic.source and not nic.source_extra:
                nic.source, nic.source_extra = dict(child.attrib), _copy(child)
            elif child.tag == "model" and list(child.attrib) == ["type"] and nic.model is None:
                nic.model = child.get("type")
            elif child.tag == "target" and list(child.attrib) == ["dev"] and nic.target_dev is None:
                nic.target_dev = child.get("dev")
            elif _boot_order(child) is not None and nic.boot_order is None:
                nic.boot_order = _boot_order(child)
            else:
                nic.extra.append(copy.deepcopy(child))
        return nic

    def to_element(self):
        element = etree.Element("interface")
        _set_attrs(element, [("type", self.type)], self.extra_attrs)
        if self.mac is not None:
            _sub(element, "mac", [("address", self.mac)])
        if self.source or self.source_extra:
            source = _sub(element, "source")
            for key in ("network", "bridge", "dev", "mode"):
                if key in self.source:
                    source.set(key, self.source[key])
            _set_attrs(source, [], {k: v for k, v in self.source.items() if k not in source.attrib})
            _append(source, self.source_extra)
        if self.target_dev is not None:
            _sub(element, "target", [("dev", self.target_dev)])
        if self.model is not None:
            _sub(element, "model", [("type", self.model)])
        if self.boot_order is not None:
            _sub(element, "boot", [("order", self.boot_order)])
        _append(element, self.extra)
        return element


@dataclass
class CharDevice(Device):
    """``<serial>``, ``<console>`` or ``<channel>``: a character device, optionally logged to a file."""

    TAG = ""
    type: Optional[str] = None
    source: Dict[str, str] = field(default_factory=dict)
    target_type: Optional[str] = None
    target_port: Optional[int] = None
    target_name: Optional[str] = None
    target_extra_attrs: Dict[str, str] = field(default_factory=dict)
    target_extra: List = field(default_factory=list)
    has_target: bool = False
    log_file: Optional[str] = None
    log_append: Optional[bool] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "CharDevice":
        known, extra_attrs = _take_attrs(element, ("type",))
        dev = cls(type=known["type"], extra_attrs=extra_attrs)
        have_source = False
        for child in element:
            if child.tag == "source" and not have_source and not len(child):
                dev.source, have_source = dict(child.attrib), True
            elif child.tag == "target" and not dev.has_target:
                tgt, dev.target_extra_attrs = _take_attrs(child, ("type", "port", "name"))
                dev.has_target = True
                dev.target_type, dev.target_name = tgt["type"], tgt["name"]
                dev.target_port = _int(tgt["port"], "%s target port" % cls.TAG)
                dev.target_extra = _copy(child)
            elif child.tag == "log" and dev.log_file is None and not set(child.attrib) - {"file", "append"}:
                dev.log_file, dev.log_append = child.get("file"), _yes(child.get("append"))
            else:
                dev.extra.append(copy.deepcopy(child))
        return dev

    def to_element(self):
        element = etree.Element(self.TAG)
        _set_attrs(element, [("type", self.type)], self.extra_attrs)
        if self.source:
            source = _sub(element, "source")
            _set_attrs(source, [("mode", self.source.get("mode")), ("path", self.source.get("path"))],
                       {k: v for k, v in self.source.items() if k not in ("mode", "path")})
        if self.has_target or self.target_type or self.target_port is not None or self.target_name:
            target = _sub(element, "target", [("type", self.target_type), ("port", self.target_port),
                                              ("name", self.target_name)])
            _set_attrs(target, [], self.target_extra_attrs)
            _append(target, self.target_extra)
        if self.log_file is not None:
            _sub(element, "log", [("file", self.log_file), ("append", _onoff(self.log_append))])
        _append(element, self.extra)
        return element


@dataclass
class Serial(CharDevice):
    TAG = "serial"


@dataclass
class Console(CharDevice):
    TAG = "console"


@dataclass
class Channel(CharDevice):
    TAG = "channel"


@dataclass
class Graphics(Device):
    """``<graphics>``: vnc or spice, listening on an address (attribute and/or ``<listen>`` child)."""

    TAG = "graphics"
    type: Optional[str] = None
    port: Optional[int] = None
    autoport: Optional[bool] = None
    listen: Optional[str] = None
    listen_element: bool = False          # a <listen type='address'> child naming the same address
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Graphics":
        known, extra_attrs = _take_attrs(element, ("type", "port", "autoport", "listen"))
        gfx = cls(known["type"], _int(known["port"], "graphics port"), _yes(known["autoport"]),
                  known["listen"], False, extra_attrs, [])
        for child in element:
            if (child.tag == "listen" and child.get("type") == "address" and not gfx.listen_element
                    and not set(child.attrib) - {"type", "address"} and not len(child)
                    and child.get("address") is not None
                    and (gfx.listen is None or gfx.listen == child.get("address"))):
                gfx.listen, gfx.listen_element = child.get("address"), True
            else:
                gfx.extra.append(copy.deepcopy(child))
        return gfx

    def to_element(self):
        element = etree.Element("graphics")
        _set_attrs(element, [("type", self.type), ("port", self.port), ("autoport", _yesno(self.autoport)),
                             ("listen", self.listen)], self.extra_attrs)
        if self.listen_element and self.listen is not None:
            _sub(element, "listen", [("type", "address"), ("address", self.listen)])
        _append(element, self.extra)
        return element


@dataclass
class Video(Device):
    TAG = "video"
    model: Optional[str] = None
    model_attrs: Dict[str, str] = field(default_factory=dict)   # vram, heads, primary, ...
    model_extra: List = field(default_factory=list)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Video":
        if element.attrib:
            raise ModelError("unsupported attributes on <video>")
        video = cls()
        for child in element:
            if child.tag == "model" and video.model is None:
                known, video.model_attrs = _take_attrs(child, ("type",))
                video.model, video.model_extra = known["type"], _copy(child)
                if video.model is None:
                    raise ModelError("video model without type")
            else:
                video.extra.append(copy.deepcopy(child))
        return video

    def to_element(self):
        element = etree.Element("video")
        if self.model is not None:
            model = _sub(element, "model", [("type", self.model)])
            _set_attrs(model, [], self.model_attrs)
            _append(model, self.model_extra)
        _append(element, self.extra)
        return element


@dataclass
class Rng(Device):
    TAG = "rng"
    model: Optional[str] = None
    backend_model: Optional[str] = None
    backend_path: Optional[str] = None
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Rng":
        known, extra_attrs = _take_attrs(element, ("model",))
        if extra_attrs:
            raise ModelError("unsupported attributes on <rng>")
        rng = cls(known["model"], None, None, [])
        for child in element:
            if (child.tag == "backend" and rng.backend_model is None and list(child.attrib) == ["model"]
                    and not len(child)):
                rng.backend_model, rng.backend_path = child.get("model"), child.text
            else:
                rng.extra.append(copy.deepcopy(child))
        return rng

    def to_element(self):
        element = etree.Element("rng")
        _set_attrs(element, [("model", self.model)], {})
        if self.backend_model is not None:
            _sub(element, "backend", [("model", self.backend_model)], self.backend_path)
        _append(element, self.extra)
        return element


@dataclass
class MemBalloon(Device):
    TAG = "memballoon"
    model: Optional[str] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "MemBalloon":
        known, extra_attrs = _take_attrs(element, ("model",))
        return cls(known["model"], extra_attrs, _copy(element))

    def to_element(self):
        element = etree.Element("memballoon")
        _set_attrs(element, [("model", self.model)], self.extra_attrs)
        _append(element, self.extra)
        return element


@dataclass
class Tpm(Device):
    TAG = "tpm"
    model: Optional[str] = None
    backend_type: Optional[str] = None
    backend_version: Optional[str] = None
    backend_extra_attrs: Dict[str, str] = field(default_factory=dict)
    backend_extra: List = field(default_factory=list)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Tpm":
        known, extra_attrs = _take_attrs(element, ("model",))
        if extra_attrs:
            raise ModelError("unsupported attributes on <tpm>")
        tpm = cls(model=known["model"], backend_type=None)
        seen_backend = False
        for child in element:
            if child.tag == "backend" and not seen_backend:
                seen_backend = True
                backend, tpm.backend_extra_attrs = _take_attrs(child, ("type", "version"))
                tpm.backend_type, tpm.backend_version = backend["type"], backend["version"]
                tpm.backend_extra = _copy(child)
            else:
                tpm.extra.append(copy.deepcopy(child))
        return tpm

    def to_element(self):
        element = etree.Element("tpm")
        _set_attrs(element, [("model", self.model)], {})
        if self.backend_type is not None or self.backend_extra_attrs or self.backend_extra:
            backend = _sub(element, "backend", [("type", self.backend_type), ("version", self.backend_version)])
            _set_attrs(backend, [], self.backend_extra_attrs)
            _append(backend, self.backend_extra)
        _append(element, self.extra)
        return element


@dataclass
class Watchdog(Device):
    TAG = "watchdog"
    model: Optional[str] = None
    action: Optional[str] = None
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Watchdog":
        known, extra_attrs = _take_attrs(element, ("model", "action"))
        if extra_attrs:
            raise ModelError("unsupported attributes on <watchdog>")
        return cls(known["model"], known["action"], _copy(element))

    def to_element(self):
        element = etree.Element("watchdog")
        _set_attrs(element, [("model", self.model), ("action", self.action)], {})
        _append(element, self.extra)
        return element


@dataclass
class Input(Device):
    TAG = "input"
    type: Optional[str] = None
    bus: Optional[str] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)

    @classmethod
    def from_element(cls, element) -> "Input":
        known, extra_attrs = _take_attrs(element, ("type", "bus"))
        return cls(known["type"], known["bus"], extra_attrs, _copy(element))

    def to_element(self):
        element = etree.Element("input")
        _set_attrs(element, [("type", self.type), ("bus", self.bus)], self.extra_attrs)
        _append(element, self.extra)
        return element


DEVICE_CLASSES: Dict[str, Type[Device]] = {
    cls.TAG: cls for cls in (Disk, Controller, Interface, Serial, Console, Channel, Graphics, Video, Rng,
                             MemBalloon, Tpm, Watchdog, Input)
}

# libvirt's order of device kinds in its own XML (virDomainDefFormatInternal).
DEVICE_ORDER = ("emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard", "serial",
                "parallel", "console", "channel", "input", "tpm", "graphics", "sound", "audio", "video", "hostdev",
                "redirdev", "redirfilter", "hub", "watchdog", "memballoon", "rng", "panic", "shmem", "memory",
                "iommu", "vsock", "crypto")


def device_tag(device: Device) -> str:
    return device.tag if isinstance(device, RawDevice) else device.TAG


def parse_device(element) -> Device:
    """The typed device for ``element``; a shape the typed class cannot hold is kept raw instead."""
    cls = DEVICE_CLASSES.get(element.tag) if isinstance(element.tag, str) else None
    if cls is None:
        return RawDevice.from_element(element)
    try:
        device = cls.from_element(element)
    except ModelError:
        return RawDevice.from_element(element)
    if not _lossless(device.to_element(), element):
        return RawDevice.from_element(element)  # lossy for this shape: keep what was written
    return device


def canonical(element) -> tuple:
    """Fingerprint of an element: its tag, attributes (in any order), stripped text and children, the
    children grouped by tag with the order among those of one tag kept (``<boot dev>`` order counts,
    the order of different kinds of children carries no meaning for libvirt)."""
    text = (element.text or "").strip()
    children = [canonical(child) for child in element if isinstance(child.tag, str)]
    children.sort(key=lambda child: child[0])  # stable: same-tag order kept
    return (str(element.tag), tuple(sorted(element.attrib.items())), text, tuple(children))


def _lossless(rendered, element) -> bool:
    """Whether ``rendered`` (what a typed part renders) says everything ``element`` says."""
    return canonical(rendered) == canonical(element)


# --------------------------------------------------------------------------------------------- domain

# Domain-level parts typed by a class: tag -> (class, attribute of Domain).
TYPED_PARTS = {"metadata": (Metadata, "metadata"), "cpu": (Cpu, "cpu"), "os": (Os, "os"),
               "features": (Features, "features"), "clock": (Clock, "clock"), "sysinfo": (Sysinfo, "sysinfo"),
               QemuCommandline.TAG: (QemuCommandline, "qemu_commandline")}
MEMORY_TAGS = {"memory": "memory_kib", "currentMemory": "current_memory_kib", "maxMemory": "max_memory_kib"}

_TOP_KNOWN = ("name", "uuid", "title", "description", "metadata", "memory", "currentMemory", "maxMemory", "vcpu",
              "cpu", "os", "features", "clock", "on_poweroff", "on_reboot", "on_crash", "sysinfo", "devices",
              QemuCommandline.TAG)


@dataclass
class Domain:
    """A libvirt domain definition."""

    type: Optional[str] = None
    name: str = ""
    uuid: Optional[str] = None
    id: Optional[str] = None
    title: Optional[str] = None
    description: Optional[str] = None
    metadata: Optional[Metadata] = None
    memory_kib: Optional[int] = None
    memory_extra_attrs: Dict[str, str] = field(default_factory=dict)
    current_memory_kib: Optional[int] = None
    max_memory_kib: Optional[int] = None
    max_memory_slots: Optional[int] = None
    vcpus: Optional[int] = None
    vcpu_current: Optional[int] = None
    vcpu_placement: Optional[str] = None
    vcpu_extra_attrs: Dict[str, str] = field(default_factory=dict)
    cpu: Optional[Cpu] = None
    os: Optional[Os] = None
    features: Optional[Features] = None
    clock: Optional[Clock] = None
    on_poweroff: Optional[str] = None
    on_reboot: Optional[str] = None
    on_crash: Optional[str] = None
    sysinfo: List[Sysinfo] = field(default_factory=list)
    devices: List[Device] = field(default_factory=list)
    devices_present: bool = True
    qemu_commandline: Optional[QemuCommandline] = None
    extra_attrs: Dict[str, str] = field(default_factory=dict)
    extra: List = field(default_factory=list)   # unknown top-level elements, verbatim and in order
    # {tag: (KiB, text, unit)} of the memory elements as read: rendered alike while the size is unchanged
    written_memory: Dict[str, Tuple[int, str, Optional[str]]] = field(default_factory=dict, repr=False,
                                                                      compare=False)

    # ---- parsing

    @classmethod
    def from_xml(cls, text) -> "Domain":
        return cls.from_element(parse_element(text))

    @classmethod
    def from_element(cls, root) -> "Domain":
        if root.tag != "domain":
            raise ModelError("expected a <domain> element, got <%s>" % root.tag)
        known, extra_attrs = _take_attrs(root, ("type", "id"))
        dom = cls(type=known["type"], id=known["id"], extra_attrs=extra_attrs, devices_present=False)
        seen = set()
        for child in root:
            tag = child.tag
            once = tag in _TOP_KNOWN and tag != "sysinfo"
            if once and tag in seen:
                dom.extra.append(copy.deepcopy(child))
                continue
            seen.add(tag)
            handled = dom._parse_top(child)
            if not handled:
                dom.extra.append(copy.deepcopy(child))
        return dom

    def _parse_top(self, child) -> bool:
        """Type ``child`` when that is lossless; False leaves it to be kept verbatim."""
        tag = child.tag
        simple_text = not child.attrib and not len(child)
        if tag in ("name", "uuid", "title", "description", "on_poweroff", "on_reboot", "on_crash") and simple_text:
            value = child.text or ""
            setattr(self, tag, value.strip() if tag in ("name", "uuid", "on_poweroff", "on_reboot", "on_crash")
                    else value)
        elif tag in MEMORY_TAGS and not len(child):
            return self._parse_memory(child)
        elif tag == "vcpu" and not len(child):
            if not re.fullmatch(r"\s*[0-9]+\s*", child.text or ""):
                _int(child.text or "", "vcpu")  # not a number: refused; another way of writing one: kept raw
                return False
            known, self.vcpu_extra_attrs = _take_attrs(child, ("current", "placement"))
            if known["current"] is not None and not re.fullmatch(r"[0-9]+", known["current"]):
                return False
            self.vcpus = _int(child.text or "", "vcpu")
            self.vcpu_current = _int(known["current"], "vcpu current")
            self.vcpu_placement = known["placement"]
        elif tag in TYPED_PARTS and not (tag in ("metadata", "features") and child.attrib):
            cls, attribute = TYPED_PARTS[tag]
            try:
                part = cls.from_element(child)
            except ModelError:
                return False
            if not _lossless(part.to_element(), child):
                return False  # a shape the typed part cannot hold: kept as written
            if attribute == "sysinfo":
                self.sysinfo.append(part)
            else:
                setattr(self, attribute, part)
        elif tag == "devices" and not child.attrib:
            self.devices_present = True
            self.devices = [parse_device(dev) for dev in child if isinstance(dev.tag, str)]
        else:
            return False
        return True

    # ---- convenience

    def _parse_memory(self, child) -> bool:
        """``<memory>``, ``<currentMemory>``, ``<maxMemory>``: the size in KiB, and how it was written."""
        attribute = MEMORY_TAGS[child.tag]
        known, extra = _take_attrs(child, ("unit", "slots") if child.tag == "maxMemory" else ("unit",))
        if extra and child.tag != "memory":
            return False
        if known.get("slots") is not None and not re.fullmatch(r"[0-9]+", known["slots"]):
            return False
        kib = memory_to_kib(child.text or "", known["unit"], child.tag)
        setattr(self, attribute, kib)
        self.written_memory[child.tag] = (kib, (child.text or "").strip(), known["unit"])
        if child.tag == "memory":
            self.memory_extra_attrs = extra
        if child.tag == "maxMemory":
            self.max_memory_slots = _int(known["slots"], "maxMemory slots")
        return True

    def _memory_element(self, root, tag: str, kib: int, attrs: Sequence[Tuple[str, Optional[str]]] = ()):
        """The memory element ``tag``, in the unit it was written in while its size is unchanged."""
        kib_written, text, unit = self.written_memory.get(tag, (None, None, None))
        if kib_written != kib:
            text, unit = str(kib), "KiB"
        return _sub(root, tag, list(attrs) + [("unit", unit)], text)

    def devices_of(self, cls: Type[Device]) -> List[Device]:
        return [d for d in self.devices if isinstance(d, cls)]

    @property
    def emulator(self) -> Optional[str]:
        for dev in self.devices:
            if isinstance(dev, RawDevice) and dev.tag == "emulator":
                return dev.element.text
        return None

    # ---- rendering

    def to_element(self):
        # libvirt declares its QEMU namespace on the root, as here, when the domain uses it.
        root = etree.Element("domain", nsmap={QEMU_PREFIX: QEMU_NS} if self.qemu_commandline is not None else None)
        _set_attrs(root, [("type", self.type), ("id", self.id)], self.extra_attrs)
        _sub(root, "name", text=self.name)
        if self.uuid is not None:
            _sub(root, "uuid", text=self.uuid)
        if self.title is not None:
            _sub(root, "title", text=self.title)
        if self.description is not None:
            _sub(root, "description", text=self.description)
        if self.metadata is not None and not self.metadata.is_empty():
            root.append(self.metadata.to_element())
        if self.max_memory_kib is not None:
            self._memory_element(root, "maxMemory", self.max_memory_kib, [("slots", self.max_memory_slots)])
        if self.memory_kib is not None:
            memory = self._memory_element(root, "memory", self.memory_kib)
            _set_attrs(memory, [], self.memory_extra_attrs)
        if self.current_memory_kib is not None:
            self._memory_element(root, "currentMemory", self.current_memory_kib)
        if self.vcpus is not None:
            vcpu = _sub(root, "vcpu", [("placement", self.vcpu_placement), ("current", self.vcpu_current)],
                        self.vcpus)
            _set_attrs(vcpu, [], self.vcpu_extra_attrs)
        for info in self.sysinfo:
            root.append(info.to_element())
        if self.os is not None:
            root.append(self.os.to_element())
        if self.features is not None:
            root.append(self.features.to_element())
        if self.cpu is not None:
            root.append(self.cpu.to_element())
        if self.clock is not None:
            root.append(self.clock.to_element())
        for tag in ("on_poweroff", "on_reboot", "on_crash"):
            if getattr(self, tag) is not None:
                _sub(root, tag, text=getattr(self, tag))
        _append(root, [e for e in self.extra if e.tag != "seclabel"])
        if self.devices_present or self.devices:
            devices = _sub(root, "devices")
            for device in self.devices:
                devices.append(device.to_element())
        _append(root, [e for e in self.extra if e.tag == "seclabel"])
        if self.qemu_commandline is not None:
            self.qemu_commandline.to_element(root)  # last, where libvirt prints it
        return root

    def to_string(self) -> str:
        """Pretty-printed XML, identical for equal models."""
        return etree.tostring(self.to_element(), pretty_print=True, encoding="unicode")

    to_xml = to_string

    def copy(self) -> "Domain":
        return Domain.from_element(self.to_element())
