# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what libvirt adds to a definition, which a comparison must ignore.

``normalize_for_compare`` removes or canonicalises what libvirt adds when it defines or starts a
domain (addresses, aliases, implicit controllers and devices, defaults it writes out), and the
``domain`` module's re-run memo, so that a desired definition and libvirt's copy of it compare equal
exactly when they mean the same. Each device type has its own normaliser (``DEVICE_NORMALIZERS``,
keyed by model class); the domain-level parts have one function each.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple, Type

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.memo import MEMO_NS

# Controllers libvirt adds on its own.
IMPLICIT_CONTROLLERS = frozenset({"pci", "ide", "fdc", "sata", "virtio-serial", "usb", "scsi"})
DEFAULT_X86_CPU_MODEL = "qemu64"
X86_ARCHES = ("x86_64", "i686")
DEFAULT_LIFECYCLE_ACTIONS = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy"}
BUS_BY_TARGET_PREFIX = (("vd", "virtio"), ("sd", "scsi"), ("hd", "ide"), ("fd", "fdc"), ("xvd", "xen"))
# Elements libvirt generates per definition or per run anywhere inside a device.
RUNTIME_DEVICE_TAGS = ("address", "alias", "backingStore", "seclabel")
# What of a custom-mode CPU a guest starts with as written (libvirt 9.0, QEMU 7.2): with match exact or strict the
# mode, match, model, vendor, topology, NUMA cells and the features named with these policies. The live XML shows
# check full and fallback forbid whatever was written, a required feature the host lacks as disabled, an optional
# one as required or disabled, and features libvirt added; with match minimum the guest gets the host's model.
MODEL_KEEPING_MATCHES = ("exact", "strict")
KEPT_FEATURE_POLICIES = ("disable", "forbid", "force")

Normalizer = Callable[[model.Device], Optional[model.Device]]
DEVICE_NORMALIZERS: Dict[Type[model.Device], Normalizer] = {}


def normalizes(cls: Type[model.Device]) -> Callable[[Normalizer], Normalizer]:
    """Register the function as the normaliser of devices of ``cls`` (and its subclasses without their own)."""
    def register(func: Normalizer) -> Normalizer:
        DEVICE_NORMALIZERS[cls] = func
        return func
    return register


def normalize_device(dev: model.Device) -> Optional[model.Device]:
    """The canonical form of ``dev`` (changed in place), or None when libvirt would add it anyway."""
    for cls in type(dev).__mro__:
        func = DEVICE_NORMALIZERS.get(cls)
        if func is not None:
            return func(dev)
    return dev


# ------------------------------------------------------------------------------------------ devices

@normalizes(model.RawDevice)
def _raw(dev: model.RawDevice) -> Optional[model.Device]:
    if dev.tag == "emulator":
        return None  # libvirt names the host's emulator
    if dev.tag == "audio" and dev.element.get("type") in ("none", "spice"):
        return None  # libvirt 9 writes the audio backend it picked
    return dev


@normalizes(model.Controller)
def _controller(dev: model.Controller) -> Optional[model.Device]:
    if dev.type in IMPLICIT_CONTROLLERS:
        if dev.type == "usb" and dev.model != "none":
            return None
        if dev.type == "scsi" and dev.model in (None, "lsilogic") and not dev.extra:
            return None
        if dev.type not in ("usb", "scsi"):
            return None
    if dev.type == "scsi" and dev.index is None:
        dev.index = 0
    return dev


@normalizes(model.Input)
def _input(dev: model.Input) -> Optional[model.Device]:
    if dev.bus == "ps2" and dev.type in ("mouse", "keyboard") and not dev.extra:
        return None
    if dev.bus is None and dev.type == "tablet":
        dev.bus = "usb"
    return dev


@normalizes(model.MemBalloon)
def _memballoon(dev: model.MemBalloon) -> Optional[model.Device]:
    if dev.model == "virtio" and not dev.extra and not dev.extra_attrs:
        return None  # the balloon libvirt adds when none is named
    return dev


@normalizes(model.Disk)
def _disk(dev: model.Disk) -> Optional[model.Device]:
    dev.device = dev.device or "disk"
    dev.type = dev.type or "file"
    if dev.target_bus is None and dev.target_dev:
        dev.target_bus = next((bus for prefix, bus in BUS_BY_TARGET_PREFIX if dev.target_dev.startswith(prefix)),
                              None)
    if not dev.source and not dev.source_extra:
        dev.has_source = False
    return dev


@normalizes(model.Interface)
def _interface(dev: model.Interface) -> Optional[model.Device]:
    if dev.mac:
        dev.mac = dev.mac.lower()
    if dev.type == "network":
        dev.source.pop("portid", None)
        dev.source.pop("bridge", None)
    if dev.type == "direct":
        dev.source.setdefault("mode", "vepa")
    if dev.target_dev and dev.target_dev.startswith(("vnet", "macvtap")):
        dev.target_dev = None  # generated at start
    return dev


def _char_device(dev: model.CharDevice) -> model.CharDevice:
    if dev.type == "pty":
        dev.source = {}  # the pty libvirt allocated
    dev.extra_attrs.pop("tty", None)
    return dev


@normalizes(model.Serial)
def _serial(dev: model.Serial) -> Optional[model.Device]:
    _char_device(dev)
    if dev.target_type in (None, "isa-serial") and dev.target_port in (None, 0) and not dev.target_name and \
            all(e.tag == "model" and e.get("name") == "isa-serial" for e in dev.target_extra):
        dev.has_target, dev.target_type, dev.target_port, dev.target_extra = False, None, None, []
        dev.target_extra_attrs = {}
    return dev


@normalizes(model.Console)
def _console(dev: model.Console) -> Optional[model.Device]:
    return _char_device(dev)


@normalizes(model.Channel)
def _channel(dev: model.Channel) -> Optional[model.Device]:
    _char_device(dev)
    dev.target_extra_attrs.pop("state", None)  # the agent connected or not
    if dev.type == "unix" and set(dev.source) <= {"mode", "path"}:
        dev.source = {}  # libvirt picks the socket path under its own runtime dir
    return dev


@normalizes(model.Graphics)
def _graphics(dev: model.Graphics) -> Optional[model.Device]:
    if dev.autoport or dev.port in (None, -1):
        dev.port, dev.autoport = None, None  # the port is chosen at start
    dev.listen_element = dev.listen is not None  # libvirt mirrors the listen attribute as a child
    return dev


@normalizes(model.Video)
def _video(dev: model.Video) -> Optional[model.Device]:
    for key in ("vram", "vgamem", "ram", "vram64"):
        dev.model_attrs.pop(key, None)
    if dev.model_attrs.get("heads") == "1":
        dev.model_attrs.pop("heads")
    if dev.model_attrs.get("primary") == "yes":
        dev.model_attrs.pop("primary")
    return dev


@normalizes(model.Rng)
def _rng(dev: model.Rng) -> Optional[model.Device]:
    if dev.backend_model == "random" and dev.backend_path is None:
        dev.backend_path = "/dev/urandom"
    return dev


@normalizes(model.Tpm)
def _tpm(dev: model.Tpm) -> Optional[model.Device]:
    if dev.backend_type == "emulator" and dev.backend_version is None:
        dev.backend_version = "2.0"
    if dev.model is None:
        dev.model = "tpm-tis"
    return dev


@normalizes(model.Watchdog)
def _watchdog(dev: model.Watchdog) -> Optional[model.Device]:
    if dev.action is None:
        dev.action = "reset"
    return dev


def _strip_runtime(devices) -> None:
    """Remove what libvirt generates per definition or per run anywhere in the devices."""
    for tag in RUNTIME_DEVICE_TAGS:
        for node in list(devices.iter(tag)):
            node.getparent().remove(node)
    for node in devices.iter("source"):
        node.attrib.pop("index", None)


def _device_sort_key(indexed: Tuple[int, model.Device]) -> Tuple[int, int]:
    index, dev = indexed
    tag = model.device_tag(dev)
    rank = model.DEVICE_ORDER.index(tag) if tag in model.DEVICE_ORDER else len(model.DEVICE_ORDER)
    return rank, index


def _mirrored_console(dev: model.Device) -> bool:
    """libvirt mirrors the first serial port as a serial console; comparing the serial is enough."""
    return isinstance(dev, model.Console) and dev.target_type in (None, "serial") and \
        dev.target_port in (None, 0) and not dev.extra and dev.type == "pty"


def _implicit_itco(dev: model.Device) -> bool:
    """libvirt 9.1+ shows the q35 chipset's own watchdog on every q35 domain: one that only resets is none."""
    return isinstance(dev, model.Watchdog) and dev.model == "itco" and dev.action == "reset" and not dev.extra


def _normalize_devices(norm: model.Domain) -> bool:
    """Normalise the devices in place and into libvirt's order; whether any device has a boot order."""
    devices: List[model.Device] = [d for d in (normalize_device(dev) for dev in norm.devices) if d is not None]
    if any(isinstance(d, model.Serial) for d in devices):
        devices = [d for d in devices if not _mirrored_console(d)]
    if norm.os is not None and "q35" in (norm.os.machine or ""):
        devices = [d for d in devices if not _implicit_itco(d)]
    norm.devices = [d for _i, d in sorted(enumerate(devices), key=_device_sort_key)]
    return any(getattr(d, "boot_order", None) is not None for d in devices)


# ---------------------------------------------------------------------------------- domain-level parts

def keeps_its_model(cpu: Optional[model.Cpu]) -> bool:
    """Whether a guest started from ``cpu`` runs with the model it names: a custom-mode CPU (mode custom, or a
    model without a mode, which libvirt takes as custom) matched exactly or strictly."""
    return cpu is not None and cpu.model is not None and cpu.mode in (None, "custom") and \
        (cpu.match or "exact") in MODEL_KEEPING_MATCHES


def runtime_cpu(cpu: Optional[model.Cpu], named: Optional[model.Cpu] = None) -> Optional[model.Cpu]:
    """The part of a CPU definition that survives libvirt's expansion at start: topology and NUMA cells.

    With ``named``, the desired CPU of a guest that keeps its model (``keeps_its_model``), also the mode, match,
    model, the vendor when ``named`` gives one, and the features ``named`` lists with a policy libvirt keeps
    (``KEPT_FEATURE_POLICIES``). ``cpu`` is either side of the comparison, so both are reduced alike."""
    if cpu is None:
        return None
    kept = model.Cpu(sockets=cpu.sockets, dies=cpu.dies, cores=cpu.cores, threads=cpu.threads,
                     extra=[copy.deepcopy(e) for e in cpu.extra if e.tag == "numa"])
    if named is not None:
        kept.mode, kept.match, kept.model = cpu.mode, cpu.match, cpu.model
        kept.vendor = cpu.vendor if named.vendor is not None else None
        compared = {f.name for f in named.features if f.policy in KEPT_FEATURE_POLICIES}
        kept.features = sorted((model.CpuFeature(f.name, f.policy) for f in cpu.features if f.name in compared),
                               key=lambda feature: feature.name)
    if kept.extra or kept.mode or kept.model or kept.features or \
            any(v is not None for v in (kept.sockets, kept.dies, kept.cores, kept.threads)):
        return kept
    return None


def _strip_top_level(root) -> None:
    """Remove what libvirt adds at the top level: security labels, the default partition, the genid."""
    for tag in ("seclabel", "resource", "genid"):
        for node in root.findall(tag):
            if tag == "resource":
                partition = node.find("partition")
                if not (len(node) == 1 and partition is not None and partition.text == "/machine"):
                    continue
            root.remove(node)


def _normalize_memory_and_vcpus(norm: model.Domain) -> None:
    if norm.current_memory_kib is None:
        norm.current_memory_kib = norm.memory_kib
    if norm.vcpus is not None:
        norm.vcpu_placement = norm.vcpu_placement or "static"
        if norm.vcpu_current == norm.vcpus:
            norm.vcpu_current = None


def _normalize_os(norm: model.Domain) -> None:
    if norm.os is None:
        return
    os_ = norm.os
    if os_.type == "hvm" and os_.arch is None:
        os_.arch = "x86_64"
    if os_.loader is not None and os_.loader.type == "pflash" and os_.loader.readonly is None:
        os_.loader.readonly = True
    if os_.nvram is not None:
        os_.nvram.template = None  # libvirt fills it in from the firmware descriptors
    if os_.firmware is not None and os_.loader is not None:
        os_.firmware = None        # libvirt 9 resolved autoselection into an explicit loader


def _normalize_cpu(norm: model.Domain) -> None:
    cpu = norm.cpu
    if cpu is None:
        return
    arch = norm.os.arch if norm.os is not None else None
    if cpu.mode in ("host-model", "host-passthrough", "maximum"):
        cpu.check = None
        if cpu.mode != "host-model":
            cpu.migratable = None if cpu.migratable == "on" else cpu.migratable
        if cpu.mode == "host-model":
            cpu.model_fallback = None
    else:
        cpu.mode = cpu.mode or "custom"
        cpu.check = None
        if cpu.model is None and arch in X86_ARCHES and cpu.mode == "custom":
            cpu.model, cpu.model_fallback = DEFAULT_X86_CPU_MODEL, "forbid"  # what libvirt fills in
        if cpu.model is not None:
            cpu.match = cpu.match or "exact"
            cpu.model_fallback = cpu.model_fallback or "allow"
    for feature in cpu.features:
        feature.policy = feature.policy or "require"
    plain = not cpu.features and not cpu.extra and not cpu.extra_attrs and cpu.vendor is None and all(
        v is None for v in (cpu.sockets, cpu.dies, cpu.cores, cpu.threads))
    # No <cpu> at all means libvirt's default x86 CPU, which it then writes out as qemu64.
    if plain and cpu.mode == "custom" and cpu.model in (None, DEFAULT_X86_CPU_MODEL) and \
            cpu.model_fallback == "forbid" and arch in X86_ARCHES:
        norm.cpu = None


def _normalize_metadata(norm: model.Domain) -> None:
    if norm.metadata is not None:
        norm.metadata.extra = [e for e in norm.metadata.extra if not is_memo(e)]
        if norm.metadata.is_empty():
            norm.metadata = None


def _normalize_features(norm: model.Domain) -> None:
    """``<smm/>`` is ``<smm state='on'/>``, as libvirt writes it."""
    features = norm.features
    if features is None:
        return
    for element in list(features.extra):
        if element.tag == "smm" and not element.attrib and not len(element) and features.smm is None:
            features.extra.remove(element)
            features.smm = True


def is_memo(element) -> bool:
    """Whether a metadata element is the ``domain`` module's re-run memo: a cache about the definition,
    not part of it, so comparisons never see it."""
    return isinstance(element.tag, str) and element.tag.startswith("{%s}" % MEMO_NS)


def normalize_for_compare(domain: model.Domain, runtime: bool = False,
                          named_cpu: Optional[model.Cpu] = None) -> model.Domain:
    """A copy of ``domain`` without what libvirt adds on define or start, with defaults made explicit.

    ``normalize_for_compare(desired) == normalize_for_compare(libvirt's inactive XML)`` exactly when
    defining ``desired`` would change nothing. Machine aliases (``pc``) are not resolved here (that needs
    the hypervisor); the designer writes canonical machine names.

    A running guest's XML (it has an ``id``) shows the CPU QEMU really got (host-model expanded to a
    model plus features), from which the defined CPU cannot be recovered; only its topology and NUMA
    cells are compared. Pass ``runtime=True`` for both the definition and the live XML compared with it
    so both sides are reduced alike; with ``named_cpu``, the desired CPU when the running guest must show
    its model (``keeps_its_model``, and a model the hypervisor runs under its own name), what survives of
    that custom CPU is compared too (``runtime_cpu``).
    """
    root = domain.to_element()
    _strip_top_level(root)
    devices = root.find("devices")
    if devices is not None:
        _strip_runtime(devices)
    norm = model.Domain.from_element(root)
    running = norm.id is not None
    norm.id = None
    if runtime or (running and norm.cpu is not None and norm.cpu.check == "full"):
        norm.cpu = runtime_cpu(norm.cpu, named_cpu if runtime else None)
    if runtime or running:
        # A running guest's XML lists each vCPU's hot-plug state (<vcpus>) once a vCPU was plugged; the count in
        # <vcpu current> says what matters.
        norm.extra = [element for element in norm.extra if element.tag != "vcpus"]
    if norm.uuid:
        norm.uuid = norm.uuid.lower()
    _normalize_memory_and_vcpus(norm)
    for tag, default in DEFAULT_LIFECYCLE_ACTIONS.items():
        if getattr(norm, tag) is None:
            setattr(norm, tag, default)
    _normalize_os(norm)
    if norm.clock is None:
        norm.clock = model.Clock(offset="utc")
    _normalize_cpu(norm)
    has_device_boot = _normalize_devices(norm)
    if norm.os is not None and norm.os.type == "hvm" and not norm.os.boot_devs and not has_device_boot:
        norm.os.boot_devs = ["hd"]
    _normalize_metadata(norm)
    _normalize_features(norm)
    norm.written_memory = {}  # sizes in KiB, however they were written
    return model.Domain.from_element(norm.to_element())
