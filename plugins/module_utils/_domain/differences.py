# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what differs between two domain definitions, and how a running guest takes it.

``compare(before, after)`` over two normalised definitions (``_domain.normalize``) yields one
``Difference`` per part that differs: what, its value before and after, and whether a running guest
can take it ``live`` (an API call, a hot-plug), needs a ``restart`` (the new definition applies at its
next start), or needs the domain ``recreate``d (libvirt cannot change it on a defined domain). Like
community.docker's difference tracker with its per-option "can update in place", each part knows its
own rule here. Diff output, the pending-restart report and resize plans are made from these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model

LIVE = "live"
RESTART = "restart"
RECREATE = "recreate"
APPLIES = (LIVE, RESTART, RECREATE)
# Buses whose disks libvirt can attach to and detach from a running guest.
HOTPLUG_DISK_BUSES = ("virtio", "scsi", "usb")


@dataclass(frozen=True)
class Difference:
    """One part that differs: ``before``/``after`` are plain values or XML text, None when absent."""

    what: str
    before: Any
    after: Any
    applies: str
    why: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for messages: ``vcpus: 1 -> 2 (live)``."""
        return "%s: %s -> %s (%s)" % (self.what, _short(self.before), _short(self.after), self.applies)


def _short(value: Any) -> str:
    if value is None:
        return "none"
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _xml(part: Any) -> Optional[str]:
    """The canonical text of a model part (None when absent)."""
    if part is None:
        return None
    return model.etree.tostring(part.to_element(), encoding="unicode")


# ------------------------------------------------------------------------------ domain-level parts

def _vcpus(before: model.Domain, after: model.Domain) -> List[Difference]:
    found = []
    if before.vcpus != after.vcpus:
        found.append(Difference("max_vcpus", before.vcpus, after.vcpus, RESTART,
                                "the maximum of <vcpu> is fixed while the guest runs"))
    now = before.vcpu_current if before.vcpu_current is not None else before.vcpus
    want = after.vcpu_current if after.vcpu_current is not None else after.vcpus
    if now != want:
        if now is not None and want is not None and before.vcpus is not None and now < want <= before.vcpus:
            found.append(Difference("vcpus", now, want, LIVE, "vCPUs are plugged up to the <vcpu> maximum"))
        else:
            found.append(Difference("vcpus", now, want, RESTART,
                                    "above the running maximum, or a decrease (vCPU unplug is not reliable)"))
    return found


def _memory(before: model.Domain, after: model.Domain) -> List[Difference]:
    found = []
    have_max = (before.max_memory_kib, before.max_memory_slots)
    want_max = (after.max_memory_kib, after.max_memory_slots)
    if have_max != want_max:
        found.append(Difference("max_memory", _memory_text(*have_max), _memory_text(*want_max), RESTART,
                                "<maxMemory> (hot-plug headroom) is fixed while the guest runs"))
    if before.memory_kib != after.memory_kib:
        found.append(Difference("memory", before.memory_kib, after.memory_kib, RESTART,
                                "<memory> is the boot memory; it changes at the next start"))
    if before.current_memory_kib != after.current_memory_kib:
        live = after.current_memory_kib is not None and before.memory_kib is not None and \
            after.current_memory_kib <= before.memory_kib
        found.append(Difference("current_memory", before.current_memory_kib, after.current_memory_kib,
                                LIVE if live else RESTART,
                                "the balloon sets it within <memory>" if live else "above the running <memory>"))
    return found


def _memory_text(kib: Optional[int], slots: Optional[int]) -> Optional[str]:
    return None if kib is None else "%d KiB, %s slots" % (kib, slots)


def _scalar(what: str, applies: str, why: str) -> Callable[[model.Domain, model.Domain], List[Difference]]:
    def compare_part(before: model.Domain, after: model.Domain) -> List[Difference]:
        old, new = getattr(before, what), getattr(after, what)
        return [] if old == new else [Difference(what, old, new, applies, why)]
    return compare_part


def _part(what: str, get: Callable[[model.Domain], Any], applies: str, why: str
          ) -> Callable[[model.Domain, model.Domain], List[Difference]]:
    def compare_part(before: model.Domain, after: model.Domain) -> List[Difference]:
        old, new = _xml(get(before)), _xml(get(after))
        return [] if old == new else [Difference(what, old, new, applies, why)]
    return compare_part


def _os_part(attrs: Tuple[str, ...]) -> Callable[[model.Domain], Any]:
    def get(domain: model.Domain) -> Any:
        os_ = domain.os
        return None if os_ is None else tuple(getattr(os_, a) for a in attrs)
    return get


def _plain_os_value(value: Optional[Tuple[Any, ...]]) -> Optional[Any]:
    """One attribute's value as it is, several joined by "/" (how a difference shows them)."""
    if value is None:
        return None
    return value[0] if len(value) == 1 else "/".join(str(x) for x in value)


def _os_values(what: str, attrs: Tuple[str, ...], why: str) -> Callable[[model.Domain, model.Domain], List[Difference]]:
    get = _os_part(attrs)

    def compare_part(before: model.Domain, after: model.Domain) -> List[Difference]:
        old, new = get(before), get(after)
        if old == new:
            return []
        return [Difference(what, _plain_os_value(old), _plain_os_value(new), RESTART, why)]
    return compare_part


def _firmware(domain: model.Domain) -> Optional[str]:
    os_ = domain.os
    if os_ is None:
        return None
    parts = [os_.firmware or ""]
    for part in (os_.loader, os_.nvram):
        parts.append(repr(sorted(vars(part).items())) if part is not None else "")
    return "|".join(parts) if any(parts) else None


def _firmware_difference(before: model.Domain, after: model.Domain) -> List[Difference]:
    if _firmware(before) == _firmware(after):
        return []
    return [Difference("firmware", _loader_text(before), _loader_text(after), RESTART,
                       "the firmware is loaded at start")]


def _loader_text(domain: model.Domain) -> Optional[str]:
    os_ = domain.os
    if os_ is None or (os_.loader is None and os_.firmware is None and os_.nvram is None):
        return None
    if os_.loader is not None:
        return "%s%s" % (os_.loader.path, " (secure boot)" if os_.loader.secure else "")
    return os_.firmware


def _os_rest(domain: model.Domain) -> Optional[str]:
    """What of ``<os>`` the named parts do not cover: boot order, direct kernel boot, untyped children."""
    os_ = domain.os
    if os_ is None:
        return None
    rest = (tuple(os_.boot_devs), os_.kernel, os_.initrd, os_.cmdline,
            tuple(model.etree.tostring(e, encoding="unicode") for e in os_.extra))
    return repr(rest)


def _os_boot(before: model.Domain, after: model.Domain) -> List[Difference]:
    if _os_rest(before) == _os_rest(after):
        return []
    return [Difference("os", _xml(before.os), _xml(after.os), RESTART, "boot settings apply at the next start")]


def _extra(before: model.Domain, after: model.Domain) -> List[Difference]:
    """Top-level elements the model does not type (iothreads, pm, numatune, ...), by tag."""
    def by_tag(domain: model.Domain) -> Dict[str, List[str]]:
        found: Dict[str, List[str]] = {}
        for element in domain.extra:
            found.setdefault(str(element.tag), []).append(model.etree.tostring(element, encoding="unicode"))
        return found

    old, new = by_tag(before), by_tag(after)
    found = []
    for tag in sorted(set(old) | set(new)):
        if old.get(tag) != new.get(tag):
            found.append(Difference(tag, "\n".join(old[tag]) if tag in old else None,
                                    "\n".join(new[tag]) if tag in new else None, RESTART,
                                    "untyped settings are applied at the next start"))
    return found


class _Many:
    """Several parts of one kind, rendered together (``<sysinfo>`` may appear more than once)."""

    def __init__(self, parts: List[Any]) -> None:
        self.parts = parts

    def to_element(self):
        element = model.etree.Element("parts")
        for part in self.parts:
            element.append(part.to_element())
        return element


def _sysinfo(domain: model.Domain) -> Any:
    if not domain.sysinfo:
        return None
    return domain.sysinfo[0] if len(domain.sysinfo) == 1 else _Many(domain.sysinfo)


def _attributes(domain: model.Domain) -> Optional[str]:
    """Attributes the named parts do not cover (on <domain>, <memory>, <vcpu>), as one comparable text."""
    found = (sorted(domain.extra_attrs.items()), sorted(domain.memory_extra_attrs.items()), domain.vcpu_placement,
             sorted(domain.vcpu_extra_attrs.items()), domain.devices_present)
    return repr(found)


def _attribute_difference(before: model.Domain, after: model.Domain) -> List[Difference]:
    old, new = _attributes(before), _attributes(after)
    return [] if old == new else [Difference("attributes", old, new, RESTART, "applies at the next start")]


def _metadata(domain: model.Domain) -> Any:
    return domain.metadata if domain.metadata is not None and not domain.metadata.is_empty() else None


# The parts of a domain in the order differences are reported; each knows how a running guest takes it.
DOMAIN_PARTS: List[Callable[[model.Domain, model.Domain], List[Difference]]] = [
    _scalar("name", RECREATE, "a domain is known by its name; another name is another domain"),
    _scalar("uuid", RECREATE, "libvirt cannot change a defined domain's UUID"),
    _scalar("type", RESTART, "the hypervisor type is chosen at start"),
    _scalar("title", LIVE, "libvirt sets the title of a running guest"),
    _scalar("description", LIVE, "libvirt sets the description of a running guest"),
    _part("metadata", _metadata, LIVE, "libvirt sets metadata of a running guest"),
    _memory,
    _vcpus,
    _os_values("machine", ("machine",), "the machine type is chosen at start"),
    _os_values("arch", ("type", "arch"), "the guest architecture is chosen at start"),
    _firmware_difference,
    _os_boot,
    _part("cpu", lambda d: d.cpu, RESTART, "the CPU model and topology are chosen at start"),
    _part("features", lambda d: d.features, RESTART, "hypervisor features are chosen at start"),
    _part("clock", lambda d: d.clock, RESTART, "the clock is set up at start"),
    _part("sysinfo", _sysinfo, RESTART, "SMBIOS and fw_cfg entries are read by the firmware at start"),
    _scalar("on_poweroff", RESTART, "lifecycle actions are set up at start"),
    _scalar("on_reboot", RESTART, "lifecycle actions are set up at start"),
    _scalar("on_crash", RESTART, "lifecycle actions are set up at start"),
    _part("qemu_commandline", lambda d: d.qemu_commandline, RESTART,
          "QEMU's own arguments (user-mode NICs and their port forwards) are read when QEMU starts"),
    _extra,
    _attribute_difference,
]


# ------------------------------------------------------------------------------------------ devices

def device_key(dev: model.Device, nth: int) -> str:
    """How a device is recognised in both definitions: disks by target, NICs by MAC, controllers by type and
    index, anything else by its tag and position among its kind."""
    if isinstance(dev, model.Disk) and dev.target_dev:
        return "disk %s" % dev.target_dev
    if isinstance(dev, model.Interface) and dev.mac:
        return "interface %s" % dev.mac.lower()
    if isinstance(dev, model.Controller):
        return "controller %s %s" % (dev.type, dev.index if dev.index is not None else 0)
    return "%s %d" % (model.device_tag(dev), nth)


def _keyed(devices: List[model.Device]) -> Dict[str, model.Device]:
    counts: Dict[str, int] = {}
    keyed: Dict[str, model.Device] = {}
    for dev in devices:
        tag = model.device_tag(dev)
        key = device_key(dev, counts.get(tag, 0))
        counts[tag] = counts.get(tag, 0) + 1
        keyed[key] = dev
    return keyed


def _hotpluggable(dev: model.Device) -> Tuple[bool, str]:
    if isinstance(dev, model.Interface):
        return True, "NICs are hot-plugged"
    if isinstance(dev, model.Disk):
        if dev.target_bus in HOTPLUG_DISK_BUSES:
            return True, "%s disks are hot-plugged" % dev.target_bus
        return False, "%s disks cannot be hot-plugged" % (dev.target_bus or "these")
    return False, "a %s is added or removed at the next start" % model.device_tag(dev)


def _media_change(old: model.Device, new: model.Device) -> bool:
    """A cdrom or floppy whose medium alone changes: libvirt swaps it in a running guest."""
    if not (isinstance(old, model.Disk) and isinstance(new, model.Disk)) or old.device not in ("cdrom", "floppy"):
        return False
    swapped = model.Disk.from_element(new.to_element())
    swapped.source, swapped.source_extra, swapped.has_source = old.source, old.source_extra, old.has_source
    return _xml(swapped) == _xml(old)


def _devices(before: model.Domain, after: model.Domain) -> List[Difference]:
    old, new = _keyed(before.devices), _keyed(after.devices)
    found = []
    for key in list(old) + [k for k in new if k not in old]:
        was, will = old.get(key), new.get(key)
        before_xml, after_xml = _xml(was), _xml(will)
        if before_xml == after_xml:
            continue
        if was is None or will is None:
            live, why = _hotpluggable(will if was is None else was)
        elif _media_change(was, will):
            live, why = True, "the medium is changed in the running guest"
        else:
            live, why = False, "a changed %s applies at the next start" % model.device_tag(will)
        found.append(Difference("devices.%s" % key, before_xml, after_xml, LIVE if live else RESTART, why))
    return found


def compare(before: model.Domain, after: model.Domain) -> List[Difference]:
    """The differences from ``before`` to ``after``, both normalised (``normalize_for_compare``)."""
    found: List[Difference] = []
    for part in DOMAIN_PARTS:
        found.extend(part(before, after))
    found.extend(_devices(before, after))
    if not found and before.to_string() != after.to_string():
        # A part no rule above names: still a difference, and one that waits for a restart.
        found.append(Difference("definition", before.to_string(), after.to_string(), RESTART,
                                "applies at the next start"))
    return found


def needing_restart(differences: List[Difference]) -> List[Difference]:
    """Those a running guest cannot take live."""
    return [d for d in differences if d.applies != LIVE]
