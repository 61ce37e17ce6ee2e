# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what a resize of one guest does, decided by reading state only.

``plan_resize`` reads libvirt (the guest's state, its live and persistent definitions), the guest's
``domain.xml``, its disk records and its disks' sizes, and returns a ``ResizePlan``: one ``Change``
per value that changes (what, from, to, how: ``live``, ``cold`` or ``offline``, and why), the steps
that carry them out (data: a later move to another hypervisor adds its own), and the definitions
after the resize, for libvirt and for ``domain.xml``, made by the designer's one policy
(``_domain.designer.apply_flavor``). Check mode returns the plan; nothing here writes.

The rules are the facts measured on libvirt 9 / QEMU 7.2 (see the module's notes): vCPUs are
plugged live up to the ``<vcpu>`` maximum (not with SMM and Secure Boot firmware, where a plugged vCPU
hangs the guest), never unplugged live; memory grows live by the balloon up to ``<memory>`` and by
DIMMs of whole 128 MiB up to ``<maxMemory>``; virtio and SCSI disks grow live, IDE and SATA guests do
not see it. Everything else, and any decrease, is cold: shutdown, change, start.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import allocated_bytes, read_bytes
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import format_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.record import read_disk_records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.virtual_size import recorded_virtual_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.designer import FlavorLayout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.normalize import normalize_for_compare
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Guest, Hypervisor, LibvirtError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.spec import DISK_KINDS, ResizeSpec

LIVE = "live"          # an API call on the running guest, no downtime
COLD = "cold"          # shutdown, change, start
OFFLINE = "offline"    # the guest is shut off: changed while it is off, and it stays off
PATHS = (LIVE, COLD, OFFLINE)
ACTIVE = ("running", "paused")
LIVE_DISK_BUSES = ("virtio", "scsi")   # guests see a live size change on these buses
BACKUP_MARGIN = 64 << 20               # free space left over after the backups


@dataclass
class Change:
    """One value that changes: ``before``/``after`` in vCPUs, KiB (memory) or bytes (disks)."""

    what: str
    before: Any
    after: Any
    how: str
    why: str

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return "%s %s -> %s (%s: %s)" % (self.what, self.before, self.after, self.how, self.why)


@dataclass
class DiskChange:
    """A disk that grows: where it is, its recorded format, its sizes in bytes, and its record entry."""

    key: str
    target: str
    path: str
    file_name: str
    kind: str
    format: str
    bus: str
    before: int
    after: int
    entry: Dict[str, Any]


@dataclass
class ResizePlan:
    """What a resize of one guest does (check mode returns it; a real run carries out ``steps``)."""

    name: str
    power_state: str                     # running, paused or shutoff, before the resize
    path: str = ""                       # live, cold or offline; "" when nothing changes
    changes: List[Change] = field(default_factory=list)
    steps: List[str] = field(default_factory=list)
    flavor: Optional[FlavorLayout] = None
    old_definition: str = ""             # libvirt's persistent definition as read
    new_definition: str = ""
    old_file: Optional[bytes] = None     # domain.xml as read (None: the guest has none)
    new_file: Optional[bytes] = None
    metadata_xml: Optional[str] = None   # live: our metadata element with the new flavor name
    vcpus: Optional[int] = None          # live: the vCPU count to plug up to
    balloon_kib: Optional[int] = None    # live: the balloon target
    new_dimms_kib: Tuple[int, ...] = ()  # live: the DIMMs to plug
    disks: List[DiskChange] = field(default_factory=list)
    backup_bytes: int = 0
    warnings: List[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def changes_of(self, how: str) -> List[Change]:
        return [change for change in self.changes if change.how == how]


def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


def _parse(text: str, source: str) -> model.Domain:
    try:
        return model.Domain.from_xml(text)
    except (model.ModelError, ValueError) as exc:
        raise VirtfleetError("cannot parse the domain XML from %s: %s" % (source, exc))


@dataclass
class _Now:
    """The guest's vCPUs and memory as it has them (its live definition when it runs)."""

    vcpus: int
    max_vcpus: int
    memory_kib: int          # the balloon target (currentMemory)
    total_kib: int           # <memory>: boot memory and DIMMs
    max_memory_kib: Optional[int]
    slots: Optional[int]
    dimms_kib: Tuple[int, ...]
    cell_kib: Optional[int]
    balloon: bool
    smm_secure: bool


def _now(dom: model.Domain) -> _Now:
    dimms = [designer.dimm_size_kib(device) for device in dom.devices if designer.is_dimm(device)]
    if None in dimms:
        _fail("domain %s has memory devices vm_resize does not manage (DIMMs on another NUMA node or in another "
              "unit); resize it by hand" % dom.name)
    numa = [element for element in (dom.cpu.extra if dom.cpu is not None else []) if element.tag == "numa"]
    cell = designer.numa_cell_memory_kib(dom)
    if numa and cell is None:
        _fail("domain %s has a NUMA topology of more than one cell; vm_resize manages guests with one NUMA cell "
              "(as domain_xml designs them)" % dom.name)
    balloons = dom.devices_of(model.MemBalloon)
    secure = dom.os is not None and dom.os.loader is not None and bool(dom.os.loader.secure)
    total = dom.memory_kib or 0
    return _Now(vcpus=dom.vcpu_current or dom.vcpus or 1, max_vcpus=dom.vcpus or 1,
                memory_kib=dom.current_memory_kib or total, total_kib=total, max_memory_kib=dom.max_memory_kib,
                slots=dom.max_memory_slots, dimms_kib=tuple(dimms), cell_kib=cell,
                balloon=not balloons or balloons[0].model != "none",
                smm_secure=bool(dom.features is not None and dom.features.smm) and secure)


class _Planner:
    """Builds one plan; each rule adds a change and what it needs."""

    def __init__(self, hypervisor: Hypervisor, spec: ResizeSpec, guest: Guest) -> None:
        self.hypervisor, self.spec, self.guest = hypervisor, spec, guest
        state = guest.status()
        self.plan = ResizePlan(spec.name, "shutoff" if state not in ACTIVE else state)
        self.running = self.plan.power_state in ACTIVE
        self.plan.old_definition = guest.inactive_xml()
        self.defined = _parse(self.plan.old_definition, "libvirt")
        self.current = _parse(guest.live_xml(), "libvirt (live)") if self.running else self.defined
        self.now = _now(self.current)
        try:
            self.plan.old_file = read_bytes(spec.layout.domain_xml)
        except OSError as exc:
            raise VirtfleetError("cannot read %s: %s" % (spec.layout.domain_xml, exc.strerror or exc))
        self.file = _parse(self.plan.old_file.decode("utf-8", "replace"), spec.layout.domain_xml) \
            if self.plan.old_file else None
        self._limits: Optional[Tuple[Optional[int], Optional[int]]] = None
        self.cold_needed = False

    # ---- helpers

    def add(self, what: str, before: Any, after: Any, live: bool, why: str) -> None:
        how = LIVE if live else COLD
        if not self.running:
            how, why = OFFLINE, "the guest is shut off; it is changed while off and stays off"
        self.cold_needed = self.cold_needed or how == COLD
        self.plan.changes.append(Change(what, before, after, how, why))

    def limits(self) -> Tuple[Optional[int], Optional[int]]:
        if self._limits is None:
            self._limits = designer.host_limits(self.hypervisor)
        return self._limits

    def refuse_decrease(self, what: str, before: Any, after: Any, why: str) -> None:
        if not self.spec.allow_decrease:
            _fail("refusing to decrease %s of guest %s from %s to %s: %s. Set allow_decrease: true to do it with a "
                  "cold resize (shutdown and start); nothing was changed." % (what, self.spec.name, before, after, why))

    def maximum(self, value: int, given: Optional[int], existing: Optional[int], had_headroom: bool,
                host_cap: Optional[int]) -> Optional[int]:
        """The maximum after the resize, by the designer's headroom rule (the same as domain_xml's); without
        headroom a maximum the guest has is kept while it covers ``value`` (it changes only at a restart)."""
        if given is None and not self.spec.headroom and existing is not None and existing >= value:
            return existing
        return designer.headroom_maximum(value, given, existing if had_headroom else None, host_cap,
                                         self.spec.headroom)

    # ---- vCPUs

    def vcpus(self) -> Tuple[int, int]:
        now, spec = self.now, self.spec
        want = spec.vcpus if spec.vcpus is not None else now.vcpus
        had_headroom = now.max_vcpus > now.vcpus or now.max_memory_kib is not None
        cap = self.limits()[0] if spec.headroom and spec.max_vcpus is None else None
        maximum = self.maximum(want, spec.max_vcpus, now.max_vcpus, had_headroom, cap) or want
        if maximum != now.max_vcpus:
            if maximum < now.max_vcpus:
                self.refuse_decrease("the vCPU maximum", now.max_vcpus, maximum, "a lower maximum removes headroom")
            self.check_machine_vcpus(maximum)
            self.add("max_vcpus", now.max_vcpus, maximum, False, "the <vcpu> maximum is fixed while the guest runs")
        if want != now.vcpus:
            if want < now.vcpus:
                self.refuse_decrease("vCPUs", now.vcpus, want, "vCPU removal from a running guest is not reliable "
                                     "with this libvirt/QEMU, so a decrease is cold only")
                self.add("vcpus", now.vcpus, want, False, "a decrease (vCPU unplug is not reliable)")
            elif maximum != now.max_vcpus or want > now.max_vcpus:
                self.add("vcpus", now.vcpus, want, False, "above the running maximum of %d vCPUs" % now.max_vcpus)
            elif now.smm_secure:
                self.add("vcpus", now.vcpus, want, False, "with SMM and Secure Boot firmware a hot-added vCPU hangs "
                         "the guest")
            else:
                self.add("vcpus", now.vcpus, want, True, "plugged up to the <vcpu> maximum of %d" % now.max_vcpus)
                self.plan.vcpus = want
        return want, maximum

    def check_machine_vcpus(self, maximum: int) -> None:
        """A maximum above what the machine type takes would only fail at start: refuse it now."""
        os_ = self.current.os
        try:
            caps = model.parse_element(self.hypervisor.domain_capabilities(os_.machine, self.current.type))
        except (LibvirtError, AttributeError, model.ModelError, TypeError):
            return  # not known here: libvirt says so at start, and the resize rolls back
        limit = caps.find("vcpu")
        if limit is not None and (limit.get("max") or "").isdigit() and maximum > int(limit.get("max")):
            _fail("guest %s cannot have %d vCPUs: machine %s takes at most %s; nothing was changed"
                  % (self.spec.name, maximum, os_.machine, limit.get("max")))

    # ---- memory

    def memory(self) -> Tuple[int, Optional[int], Optional[int]]:
        """(wanted memory, maximum, slots) in KiB; adds the changes and the live actions they need."""
        now, spec = self.now, self.spec
        want = spec.memory_kib if spec.memory_kib is not None else now.memory_kib
        cap = self.limits()[1] if spec.headroom and spec.max_memory_kib is None else None
        maximum = self.maximum(want, spec.max_memory_kib, now.max_memory_kib, now.max_memory_kib is not None, cap)
        slots = now.slots if maximum is not None and maximum == now.max_memory_kib else None
        if maximum is not None and slots is None:
            slots = now.slots or designer.DEFAULT_MEMORY_SLOTS
        if maximum != now.max_memory_kib:
            if now.max_memory_kib is not None and (maximum is None or maximum < now.max_memory_kib):
                self.refuse_decrease("the memory maximum", _kib(now.max_memory_kib), _kib(maximum),
                                     "a lower maximum removes headroom")
            self.add("max_memory", _kib(now.max_memory_kib), _kib(maximum), False,
                     "<maxMemory> (hot-plug headroom) is fixed while the guest runs")
        if want == now.memory_kib:
            return want, maximum, slots
        if want < now.memory_kib:
            self.refuse_decrease("memory", _kib(now.memory_kib), _kib(want), "memory removal from a running guest "
                                 "is not reliable, so a decrease is cold only")
            self.add("memory", _kib(now.memory_kib), _kib(want), False, "a decrease")
        elif maximum != now.max_memory_kib:
            self.add("memory", _kib(now.memory_kib), _kib(want), False, "applied with the new maximum, at the restart")
        elif want <= now.total_kib and now.balloon:
            self.add("memory", _kib(now.memory_kib), _kib(want), True, "the balloon gives it within <memory>")
            self.plan.balloon_kib = want
        else:
            self.memory_by_dimm(want)
        return want, maximum, slots

    def memory_by_dimm(self, want: int) -> None:
        now = self.now
        grow = want - now.total_kib
        why = None
        if now.max_memory_kib is None or now.cell_kib is None:
            why = "the guest has no memory hot-plug headroom (<maxMemory> and a NUMA cell; see domain_xml headroom)"
        elif want > now.max_memory_kib:
            why = "above <maxMemory> of %s" % _kib(now.max_memory_kib)
        elif grow % designer.DIMM_BLOCK_KIB:
            why = "a hot-plugged DIMM is a whole number of 128 MiB, and %s is not" % _kib(grow)
        elif now.slots is not None and len(now.dimms_kib) >= now.slots:
            why = "all %d memory slots are used" % now.slots
        elif now.memory_kib < now.total_kib and not now.balloon:
            why = "the balloon that would give back the rest of <memory> is disabled"
        if why is not None:
            self.add("memory", _kib(now.memory_kib), _kib(want), False, why)
            return
        self.add("memory", _kib(now.memory_kib), _kib(want), True, "a %s DIMM is plugged%s" % (
            _kib(grow), " after the balloon gives back the rest of <memory>" if now.memory_kib < now.total_kib else ""))
        if now.memory_kib < now.total_kib:
            self.plan.balloon_kib = now.total_kib
        self.plan.new_dimms_kib = (grow,)

    # ---- the flavor's name in the guest's metadata (domain_xml records it there)

    def flavor_name(self) -> Optional[str]:
        spec, meta = self.spec, self.current.metadata
        if spec.flavor is None or (meta is not None and meta.flavor == spec.flavor):
            return None
        self.add("flavor", meta.flavor if meta is not None else None, spec.flavor, True,
                 "libvirt sets a running guest's metadata")
        return spec.flavor

    # ---- disks

    def disks(self) -> None:
        records = read_disk_records(self.spec.layout) if self.spec.disks else {}
        for key, size in self.spec.disks:
            disk = self.find_disk(key)
            path = os.path.normpath(disk.source_file)
            file_name = os.path.basename(path)
            entry = records.get(file_name)
            if not self.spec.layout.owns(path) or not isinstance(entry, dict) or not entry.get("format"):
                _fail("disks.%s: %s has no format record in %s; vm_resize grows only disks "
                      "virtfleet.libvirt.guest_disk made in the guest's instance directory (their format is recorded, "
                      "never probed)"
                      % (key, path, self.spec.layout.disk_info))
            kind = entry.get("kind") or "root"
            if kind == "config_drive":
                _fail("disks.%s: %s is a config drive; guest_disk rebuilds it, it is never resized" % (key, path))
            if entry["format"] != (disk.driver_type or "raw"):
                _fail("disks.%s: %s is recorded as %s but the domain opens it as %s; refusing to resize it"
                      % (key, path, entry["format"], disk.driver_type))
            before = self.disk_size(disk, path, entry["format"])
            if size < before:
                _fail("refusing to shrink disk %s (%s) of guest %s from %s (%d bytes) to %s (%d bytes): shrinking "
                      "destroys the guest's data; nothing was changed. Ask for %d bytes or more."
                      % (disk.target_dev, path, self.spec.name, format_size(before), before, format_size(size), size,
                         before))
            if size == before:
                continue
            bus = disk.target_bus or "virtio"
            live = bus in LIVE_DISK_BUSES
            self.add("disk %s" % disk.target_dev, before, size, live,
                     "libvirt grows it under the running guest (blockResize)" if live
                     else "a guest on the %s bus does not see a live size change" % bus)
            self.plan.disks.append(DiskChange(key, disk.target_dev, path, file_name, kind, entry["format"], bus,
                                              before, size, dict(entry)))

    def find_disk(self, key: str) -> model.Disk:
        disks = [d for d in self.current.devices_of(model.Disk) if (d.device or "disk") == "disk"]
        if key in DISK_KINDS:
            path = self.spec.layout.disk(key)
            found = [d for d in disks if d.source_file and os.path.normpath(d.source_file) == path]
            what = "no disk of guest %s is %s (its %s disk); name it by its target device (vda) instead" % (
                self.spec.name, path, key)
        else:
            found = [d for d in disks if d.target_dev == key]
            what = "guest %s has no disk %s (it has %s)" % (self.spec.name, key, ", ".join(
                d.target_dev for d in disks if d.target_dev) or "none")
        if not found or not found[0].source_file:
            _fail("disks.%s: %s" % (key, what))
        if found[0].readonly:
            _fail("disks.%s: %s is read-only; there is nothing to grow" % (key, found[0].source_file))
        return found[0]

    def disk_size(self, disk: model.Disk, path: str, fmt: str) -> int:
        """The disk's virtual size: what the running guest has, else read from the file in its recorded format."""
        if self.running:
            return self.guest.block_size(disk.target_dev)
        size = recorded_virtual_size(path, fmt)
        if size is None:
            from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img

            size = int(qemu_img.info(path, fmt)["virtual-size"])
        return size

    # ---- the whole plan

    def build(self) -> ResizePlan:
        plan, spec, now = self.plan, self.spec, self.now
        flavor_name = self.flavor_name()
        vcpus, max_vcpus = self.vcpus()
        memory, max_memory, slots = self.memory()
        self.disks()
        if not plan.changes:
            return plan
        if self.running and (spec.mode == COLD or self.cold_needed):
            if spec.mode == LIVE:
                _fail("mode live: guest %s cannot take all of this live, and nothing was changed. Needing a cold "
                      "resize (shutdown and start): %s" % (spec.name, "; ".join(
                          c.describe() for c in plan.changes_of(COLD))))
            cause = "mode cold" if spec.mode == COLD else "the cold resize that %s needs" % ", ".join(
                c.what for c in plan.changes_of(COLD))
            for change in plan.changes_of(LIVE):
                change.how, change.why = COLD, "a running guest could take it live (%s), but it is applied in %s" % (
                    change.why, cause)
            plan.vcpus, plan.balloon_kib, plan.new_dimms_kib = None, None, ()
        plan.path = OFFLINE if not self.running else (COLD if plan.changes_of(COLD) else LIVE)
        if plan.path == LIVE:
            flavor = FlavorLayout(vcpus=vcpus, max_vcpus=now.max_vcpus, memory_kib=now.total_kib + sum(
                plan.new_dimms_kib), max_memory_kib=now.max_memory_kib, memory_slots=now.slots,
                dimms_kib=now.dimms_kib + plan.new_dimms_kib, current_memory_kib=memory)
        else:
            same_memory = memory == now.memory_kib and max_memory == now.max_memory_kib
            flavor = FlavorLayout(vcpus=vcpus, max_vcpus=max_vcpus, memory_kib=now.total_kib if same_memory
                                  else memory, max_memory_kib=max_memory, memory_slots=slots,
                                  dimms_kib=now.dimms_kib if same_memory else (),
                                  current_memory_kib=memory if same_memory else None)
        if flavor.current_memory_kib == flavor.memory_kib:
            flavor = FlavorLayout(**dict(asdict(flavor), current_memory_kib=None))
        plan.flavor = flavor
        plan.new_definition = _with_flavor(self.defined, flavor, flavor_name)
        if self.file is not None:
            plan.new_file = _with_flavor(self.file, flavor, flavor_name).encode("utf-8")
        if flavor_name is not None and plan.path == LIVE:
            plan.metadata_xml = _metadata_element(model.Domain.from_xml(plan.new_definition).metadata)
        changes_definition = _differs(plan.old_definition, plan.new_definition)
        plan.steps = steps_for(plan, spec.confirm, definition_changes=changes_definition)
        if plan.path != LIVE and plan.disks:
            self.check_backup_space()
        return plan

    def check_backup_space(self) -> None:
        """The backups of the disks that change must fit next to them: refuse before anything is touched."""
        plan = self.plan
        plan.backup_bytes = sum(allocated_bytes(d.path) for d in plan.disks)
        directory = self.spec.layout.instance_dir
        stats = os.statvfs(directory)
        free = stats.f_bavail * stats.f_frsize
        if plan.backup_bytes + BACKUP_MARGIN > free:
            _fail("not enough space in %s for the backup of the disks a cold resize changes: it needs %s (and %s to "
                  "spare), %s is free; nothing was changed. Free space there, or resize with the guest's disks "
                  "unchanged." % (directory, format_size(plan.backup_bytes), format_size(BACKUP_MARGIN),
                                  format_size(free)))


def _kib(value: Optional[int]) -> Optional[str]:
    """Memory in messages and plans: ``384M`` (whole MiB, as flavors say it), or None."""
    if value is None:
        return None
    return "%dM" % (value // 1024) if value % 1024 == 0 else "%dK" % value


def _with_flavor(domain: model.Domain, flavor: FlavorLayout, flavor_name: Optional[str]) -> str:
    changed = domain.copy()
    designer.apply_flavor(changed, flavor)
    if flavor_name is not None:
        changed.metadata = changed.metadata or model.Metadata()
        changed.metadata.flavor = flavor_name
    return changed.to_string()


def _metadata_element(metadata: model.Metadata) -> str:
    """Our metadata element as libvirt's setMetadata takes it: without namespaces (libvirt puts ours on)."""
    own = metadata.to_element()[0]
    for element in own.iter():
        element.tag = model.etree.QName(element).localname
    model.etree.cleanup_namespaces(own)
    return model.etree.tostring(own, encoding="unicode")


def _differs(before: str, after: str) -> bool:
    return normalize_for_compare(model.Domain.from_xml(before)).to_string() != \
        normalize_for_compare(model.Domain.from_xml(after)).to_string()


def steps_for(plan: ResizePlan, confirm: bool, definition_changes: bool) -> List[str]:
    """The steps of ``plan``, in order: data, so that another kind of resize (a move) brings its own."""
    file_changes = plan.new_file is not None and plan.new_file != plan.old_file
    steps = ["prepare"]
    if plan.path == LIVE:
        steps += [name for name, needed in (("set_metadata", plan.metadata_xml is not None),
                                            ("set_vcpus", plan.vcpus is not None),
                                            ("balloon", plan.balloon_kib is not None),
                                            ("plug_dimms", bool(plan.new_dimms_kib)),
                                            ("block_resize", bool(plan.disks)),
                                            ("sync_definition", definition_changes)) if needed]
    else:
        if plan.path == COLD:
            steps.append("shutdown")
        steps += [name for name, needed in (("backup", bool(plan.disks)), ("grow_disks", bool(plan.disks)),
                                            ("redefine", definition_changes)) if needed]
    if file_changes:
        steps.append("write_domain_xml")
    if plan.path == COLD:
        steps.append("start")
    steps.append("applied")
    if confirm:
        steps.append("confirm")
    return steps


def plan_resize(hypervisor: Hypervisor, spec: ResizeSpec) -> ResizePlan:
    """The plan for ``spec``; reads only. A guest that is not defined is an error."""
    guest = hypervisor.lookup(spec.name)
    if guest is None:
        _fail("domain %s is not defined on this hypervisor; boot it first (virtfleet.libvirt.domain)" % spec.name)
    if not guest.is_persistent():
        _fail("domain %s is transient (it has no persistent definition to resize); define it with "
              "virtfleet.libvirt.domain first" % spec.name)
    return _Planner(hypervisor, spec, guest).build()
