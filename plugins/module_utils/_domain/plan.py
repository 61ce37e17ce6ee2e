# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what must happen to one libvirt domain to reach the wanted state.

``plan_domain`` reads libvirt only and returns a ``DomainPlan``: the actions in order, the states
before and after, and what differs. Idempotency is semantic: the desired XML and the defined
(inactive) XML are parsed into the typed model and normalised before they are compared; the
differences are classified (``_domain.differences``) so that a pending restart can say what it is
waiting for.
"""

from __future__ import annotations

import difflib
import os
import stat
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import FILE_NAME
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.record import read_disk_records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.differences import Difference, compare
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.normalize import (
    keeps_its_model, normalize_for_compare,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DomainSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.state import (
    autostart_actions, runs_after, state_after, transition_actions,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor, LibvirtError


@dataclass
class DomainPlan:
    """What a run does to one domain (check mode returns it; a real run carries it out)."""

    name: str
    wanted: str
    before_state: str
    after_state: str = ""
    actions: List[str] = field(default_factory=list)
    restart_pending: bool = False
    desired_xml: Optional[str] = None            # what define/redefine gives libvirt
    before_xml: str = ""                         # canonical texts, for diff mode
    after_xml: str = ""
    differences: List[str] = field(default_factory=list)      # changed lines of the canonical texts
    changes: List[Difference] = field(default_factory=list)   # the same, classified
    pending: List[Difference] = field(default_factory=list)   # what the running guest lacks
    inactive_text: Optional[str] = None          # libvirt's XML as read, which the comparison (and a memo) covers
    live_text: Optional[str] = None
    remove_files: List[str] = field(default_factory=list)
    kept_files: List[Tuple[str, str]] = field(default_factory=list)
    removed_dir: Optional[str] = None            # the instance directory, when removing the files empties it

    @property
    def settled(self) -> bool:
        """Nothing to do and nothing pending."""
        return not self.actions and not self.restart_pending


def _parse(xml: str, source: str) -> "model.Domain":
    try:
        return model.Domain.from_xml(xml)
    except Exception as exc:  # pylint: disable=broad-except
        # malformed XML from a file or a user
        raise VirtfleetError("cannot parse the domain XML from %s: %s" % (source, exc))


def _parse_desired(xml: Optional[str], source: str, name: str) -> "model.Domain":
    """The desired definition, parsed; it must name the domain the task is about."""
    if not isinstance(xml, str) or not xml.strip():
        raise VirtfleetError("the domain XML from %s is empty" % source)
    parsed = _parse(xml, source)
    if parsed.name != name:
        raise VirtfleetError("the domain XML from %s defines domain %r, not %r; the name option and the XML's "
                             "<name> must agree" % (source, parsed.name, name))
    if parsed.uuid:
        try:
            nil = uuidlib.UUID(parsed.uuid).int == 0
        except ValueError:
            raise VirtfleetError("the domain XML from %s has an invalid UUID %r" % (source, parsed.uuid))
        if nil:
            raise VirtfleetError("the domain XML from %s has the nil UUID %s, which names no domain; leave <uuid> "
                                 "out to keep the defined one or have libvirt make one" % (source, parsed.uuid))
    seen: List[str] = []
    for nic in parsed.devices_of(model.Interface):
        mac = (nic.mac or "").lower()
        if mac and mac.replace(":", "").strip("0") == "":
            raise VirtfleetError("the domain XML from %s gives a NIC the all-zero MAC %s" % (source, nic.mac))
        if mac and mac in seen:
            raise VirtfleetError("the domain XML from %s gives two NICs the MAC %s; each needs its own"
                                 % (source, nic.mac))
        seen.append(mac)
    return parsed


def _same_uuid(one: str, two: str) -> bool:
    try:
        return uuidlib.UUID(one) == uuidlib.UUID(two)
    except ValueError:
        return one.lower() == two.lower()


def _adopt_identity(desired: "model.Domain", current: "model.Domain") -> None:
    """Keep the defined UUID and MACs when the desired XML leaves them out (libvirt generated them)."""
    if not desired.uuid or (current.uuid and _same_uuid(desired.uuid, current.uuid)):
        desired.uuid = current.uuid  # also spells an equal UUID the way libvirt does
    cur_nics = current.devices_of(model.Interface)
    for index, nic in enumerate(desired.devices_of(model.Interface)):
        if not nic.mac and index < len(cur_nics):
            nic.mac = cur_nics[index].mac


def _changed_lines(before: str, after: str) -> List[str]:
    """The lines that differ, for a one-glance summary next to the full diff."""
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


class _Compared:
    """Two definitions, normalised once, with their canonical texts; ``runtime`` for a running guest's XML
    (``before``) and its desired definition, reduced alike (``normalize_for_compare``)."""

    def __init__(self, before: "model.Domain", after: "model.Domain", runtime: bool = False,
                 named_cpu: Optional["model.Cpu"] = None) -> None:
        self.before = normalize_for_compare(before, runtime=runtime, named_cpu=named_cpu)
        self.after = normalize_for_compare(after, runtime=runtime, named_cpu=named_cpu)
        self.before_text, self.after_text = self.before.to_string(), self.after.to_string()

    @property
    def equal(self) -> bool:
        return self.before_text == self.after_text

    def lines(self) -> List[str]:
        return _changed_lines(self.before_text, self.after_text)

    def differences(self) -> List[Difference]:
        return [] if self.equal else compare(self.before, self.after)


def plan_domain(hypervisor: Hypervisor, spec: DomainSpec) -> DomainPlan:
    """What must happen to reach ``spec.state``; ``spec.xml`` holds the desired XML (not for absent)."""
    guest = hypervisor.lookup(spec.name)
    plan = DomainPlan(spec.name, spec.state, guest.status() if guest is not None else "absent")
    if spec.state == "absent":
        listed: List[str] = []
        candidates = recorded_files(spec.layout) if spec.remove_storage else []
        undefined_with: List[str] = []  # files libvirt removes when it undefines the domain
        if guest is not None:
            inactive = guest.inactive_xml()
            parsed = _parse(inactive, "libvirt")
            plan.before_xml = normalize_for_compare(parsed).to_string()
            listed = list(parsed.metadata.owned_files) if parsed.metadata is not None else []
            if plan.before_state != "shutoff":
                plan.actions.append("destroy")
            if guest.is_persistent():
                plan.actions.append("undefine")  # a transient domain is gone once destroyed
                if parsed.os is not None and parsed.os.nvram is not None and parsed.os.nvram.path and \
                        os.path.normpath(parsed.os.nvram.path) == spec.layout.nvram:
                    candidates.remove(spec.layout.nvram)  # undefining removes it (with the TPM state)
                    undefined_with.append(spec.layout.nvram)
        if spec.remove_storage:
            # Also when the domain is gone already: a run that undefined it and then failed is finished.
            plan.remove_files, plan.kept_files = removable_files(hypervisor, spec.layout, candidates)
            plan.kept_files += _listed_but_not_recorded(listed, plan, spec.layout)
            if plan.remove_files:
                plan.actions.append("remove_storage")
                plan.removed_dir = _emptied(spec.layout, plan.remove_files + undefined_with)
        plan.after_state = "absent"
        return plan

    # Each definition is parsed once; the parsed objects serve identity, UUID check and comparison.
    desired = _parse_desired(spec.xml, spec.xml_source or "the xml option", spec.name)
    if guest is None:
        plan.actions.append("define")
        plan.after_xml = normalize_for_compare(desired).to_string()
        plan.desired_xml = spec.xml
        current_state = "shutoff"
    else:
        plan.inactive_text = guest.inactive_xml()
        current = _parse(plan.inactive_text, "libvirt")
        _adopt_identity(desired, current)
        if desired.uuid and current.uuid and not _same_uuid(desired.uuid, current.uuid):
            raise VirtfleetError(
                "domain %s is defined with UUID %s but the desired XML has UUID %s; libvirt cannot change a "
                "domain's UUID. Remove the uuid from the XML to keep the existing one, or set state=absent first."
                % (spec.name, current.uuid, desired.uuid))
        defined = _Compared(current, desired)
        plan.before_xml, plan.after_xml = defined.before_text, defined.after_text
        if not defined.equal:
            plan.actions.append("redefine")
            plan.desired_xml = desired.to_string()
            plan.differences, plan.changes = defined.lines(), defined.differences()
        current_state = plan.before_state

    plan.actions += transition_actions(spec.state, current_state)
    if runs_after(spec.state, current_state):
        # only a guest that runs now keeps running
        _plan_live(plan, spec, hypervisor, guest, desired, current_state)
    plan.actions += autostart_actions(spec.autostart, guest.autostart() if guest is not None else False)
    plan.after_state = state_after(spec.state, plan.before_state)
    return plan


def _offers_cpu_model(hypervisor: Hypervisor, domain: "model.Domain", name: str) -> bool:
    """Whether the hypervisor (QEMU) knows CPU model ``name`` for this domain's machine, by its domain
    capabilities; False when libvirt cannot say."""
    os_ = domain.os
    if domain.type is None:
        return False
    try:
        caps = model.parse_element(hypervisor.domain_capabilities(
            os_.machine if os_ is not None else None, domain.type,
            (os_.arch if os_ is not None else None) or "x86_64"))
    except (LibvirtError, model.ModelError):
        return False
    return name in {(m.text or "").strip() for m in caps.findall("cpu/mode[@name='custom']/model")}


def _named_cpu(hypervisor: Hypervisor, desired: "model.Domain", running: "model.Domain") -> Optional["model.Cpu"]:
    """The desired CPU when the running guest must show the model it names, else None (then only topology and
    NUMA cells are compared, as libvirt expands host-model and the like at start).

    A custom-mode model is started under its own name (``keeps_its_model``), except that libvirt falls back to
    another model for one QEMU lacks unless the fallback is forbid: a model that differs is then compared only
    when the hypervisor offers it, or a restart would be asked for on every run and never give it."""
    cpu = desired.cpu
    if not keeps_its_model(cpu):
        return None
    if running.cpu is not None and running.cpu.model == cpu.model:
        return cpu
    if cpu.model_fallback == "forbid" or _offers_cpu_model(hypervisor, desired, cpu.model):
        return cpu
    return None


def _plan_live(plan: DomainPlan, spec: DomainSpec, hypervisor: Hypervisor, guest, desired: "model.Domain",
               current_state: str) -> None:
    """The running guest may lag behind its definition, changed now or by an earlier run: restart it
    (``apply: restart``) or report the restart as pending, saying what the guest lacks."""
    plan.live_text = guest.live_xml()
    running = _parse(plan.live_text, "libvirt (live)")
    # ``desired`` equals the definition after this run (redefined or already equal), so it is what the
    # live guest is compared with; no second read of the inactive XML.
    live = _Compared(running, desired, runtime=True, named_cpu=_named_cpu(hypervisor, desired, running))
    if live.equal:
        return
    plan.pending = live.differences()
    if spec.apply == "restart":
        # a restart keeps the guest as asked (or, for state defined, as it was: paused stays paused)
        paused_after = spec.state == "paused" or (spec.state == "defined" and current_state == "paused")
        plan.actions += ["shutdown", "start_paused" if paused_after else "start"]
        if not plan.differences:
            plan.differences, plan.changes = live.lines(), plan.pending
    else:
        plan.restart_pending = True


def recorded_files(layout: GuestLayout) -> List[str]:
    """What the collection recorded creating for the guest, in the order of removal: the disks its disk record
    (``disk.info.json``) lists, each with its digest record, then the layout's own files, the disk record last.

    Never what the domain's metadata says (anyone who can define a domain can write that)."""
    try:
        records = read_disk_records(layout)
    except VirtfleetError as exc:
        raise VirtfleetError("cannot tell which files of guest %s to remove: %s. Nothing was changed."
                             % (layout.name, exc.msg))
    files: List[str] = []
    for file_name in sorted(records):
        if FILE_NAME.matches(file_name):  # a record naming anything but a plain file name is never followed
            files += [layout.file(file_name), layout.digest_of(file_name)]
    return files + [layout.domain_xml, layout.console_log, layout.nvram, layout.resize_record, layout.disk_info]


def own_instance_dir(layout: GuestLayout) -> Optional[str]:
    """None when the instance directory is the guest's own: ``<instances_path>/<name>``, a real directory
    reached through no symlink below the instances tree; else why it is not."""
    directory = layout.instance_dir
    try:
        info = os.lstat(directory)
    except OSError:
        return None  # nothing there: nothing to remove either
    if stat.S_ISLNK(info.st_mode):
        return "the instance directory %s is a symbolic link (to %s)" % (directory, os.readlink(directory))
    if not stat.S_ISDIR(info.st_mode):
        return "the instance directory %s is not a directory" % directory
    if os.path.realpath(directory) != os.path.join(os.path.realpath(layout.instances_path), layout.name):
        return "the instance directory %s is reached through a symbolic link" % directory
    return None


def removable_files(hypervisor: Hypervisor, layout: GuestLayout,
                    candidates: List[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(files to delete, [(path, why it is kept)]): of ``candidates``, the regular files directly inside the
    guest's own instance directory (``GuestLayout.owns``) that no other domain's disks or backing chains use
    (``Hypervisor.disks_in_use``)."""
    refused = own_instance_dir(layout)
    if refused is not None:
        return [], [(layout.instance_dir, refused + "; nothing in it is removed")]
    remove: List[str] = []
    kept: List[Tuple[str, str]] = []
    used = None
    for path in candidates:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # already gone (or never made): nothing to do
        except OSError as exc:
            kept.append((path, "cannot inspect it: %s" % (exc.strerror or exc)))
            continue
        if stat.S_ISLNK(info.st_mode):
            kept.append((path, "it is a symbolic link; only files the collection made are removed"))
            continue
        if not stat.S_ISREG(info.st_mode):
            kept.append((path, "not a regular file"))
            continue
        if not layout.owns(path):
            kept.append((path, "not inside the guest's own instance directory %s" % layout.instance_dir))
            continue
        if used is None:
            used = hypervisor.disks_in_use(except_guest=layout.name)
        users = sorted(used.get(os.path.realpath(path), ()))
        if users:
            kept.append((path, "domain %s uses it" % ", ".join(users)))
            continue
        remove.append(path)
    return remove, kept


def _emptied(layout: GuestLayout, removed: List[str]) -> Optional[str]:
    """The instance directory when nothing but ``removed`` is in it."""
    try:
        left = set(os.listdir(layout.instance_dir)) - {os.path.basename(path) for path in removed}
    except OSError:
        return None
    return None if left else layout.instance_dir


def _listed_but_not_recorded(listed: List[str], plan: DomainPlan, layout: GuestLayout) -> List[Tuple[str, str]]:
    """Files the domain's metadata names as owned that are kept because the collection did not record making
    them: said, so that nobody wonders."""
    said = set(plan.remove_files) | {path for path, _why in plan.kept_files}
    kept = []
    for path in listed:
        if isinstance(path, str) and os.path.isabs(path) and os.path.normpath(path) not in said \
                and os.path.lexists(path):
            kept.append((os.path.normpath(path), "the domain's metadata lists it, but only files the collection "
                         "recorded making in %s are removed" % layout.instance_dir))
    return kept
