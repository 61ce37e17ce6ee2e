# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: carry out a ``ResizePlan``, one small handler per step, and go back.

``STEPS`` maps each step a plan may hold to its handler. Every handler does one thing through the
``Guest``/``Hypervisor`` wrapper, ``qemu_img`` (always with the disk's recorded format) or an atomic
file write, and notes in the resize record what it did, before and after, so that ``restore`` can
bring the guest back from any point: after a failure (``rollback``, automatic), when a resize is
reverted (``revert``), and after an interruption (a revert from the ``prepared`` record).

Test hook: the environment variable ``VIRTFLEET_RESIZE_FAULT`` (a comma-separated list of step names,
or ``restore``) makes that step fail as a real failure would (the backup copy with ``ENOSPC`` after its
first chunk); only tests set it, to prove that every step rolls back.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import copy_sparse, write_file_atomic
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import format_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.record import (
    read_disk_records, write_disk_records,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.normalize import normalize_for_compare
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_file import FILE_MODE as XML_FILE_MODE
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Guest, Hypervisor, LibvirtError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import (
    explain_libvirt_failure, libvirt_error_text,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.plan import ACTIVE, LIVE, ResizePlan
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.record import (
    APPLIED, CONFIRMED, REVERTED, ResizeRecord,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.spec import ResizeSpec

FAULT_ENV = "VIRTFLEET_RESIZE_FAULT"
BACKUP_DIR_MODE = 0o700
BALLOON_WAIT = 10.0
ROLLBACK_SHUTDOWN_TIMEOUT = 30
# Steps after which libvirt's persistent definition may differ from the old one.
DEFINITION_STEPS = ("set_metadata", "set_vcpus", "balloon", "plug_dimms", "sync_definition", "redefine")


def fault(step: str) -> bool:
    """Whether the test hook asks ``step`` to fail."""
    return step in (os.environ.get(FAULT_ENV) or "").split(",")


def _inject(step: str) -> None:
    if fault(step):
        raise VirtfleetError("%s failed: fault injected by %s=%s (a test hook)" % (step, FAULT_ENV, step))


@dataclass
class Run:
    """What the handlers of one resize share."""

    hypervisor: Hypervisor
    spec: ResizeSpec
    guest: Guest
    record: ResizeRecord
    plan: Optional[ResizePlan] = None
    down_at: Optional[float] = None
    downtime: float = 0.0
    warnings: List[str] = field(default_factory=list)
    step_seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def layout(self):
        return self.spec.layout


Handler = Callable[[Run], None]


# ------------------------------------------------------------------------------------------- steps

def _prepare(run: Run) -> None:
    run.record.save()  # the record exists (prepared) before the first change


def _shutdown(run: Run) -> None:
    run.down_at = time.monotonic()
    _inject("shutdown")
    run.guest.shutdown(run.spec.shutdown_timeout, run.spec.force_off)


def _backup(run: Run) -> None:
    os.makedirs(run.layout.resize_backup_dir, mode=BACKUP_DIR_MODE, exist_ok=True)
    for disk in run.record.disks:
        target = run.layout.resize_backup(disk["file_name"])
        mode = os.stat(disk["path"]).st_mode & 0o7777

        def full_disk(copied: int) -> None:
            if fault("backup"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)

        try:
            copy_sparse(disk["path"], target, mode, after_chunk=full_disk)
        except OSError as exc:
            raise VirtfleetError("the backup of disk %s (%s) to %s failed: %s" % (
                disk["target"], disk["path"], target, exc.strerror or exc))
        disk["backup"] = target
        run.record.save()


def _grow_disks(run: Run) -> None:
    for disk in run.record.disks:
        disk["grow"] = "started"
        run.record.save()
        if fault("grow_disks"):
            raise VirtfleetError("growing %s failed: fault injected by %s=grow_disks (a test hook)"
                                 % (disk["path"], FAULT_ENV))
        qemu_img.resize(disk["path"], disk["format"], disk["after"])
        _record_size(run, disk, disk["after"])
        disk["grow"] = "done"
        run.record.save()


def _block_resize(run: Run) -> None:
    for disk in run.record.disks:
        disk["grow"] = "started"
        run.record.save()
        _inject("block_resize")
        run.guest.block_resize(disk["target"], disk["after"])
        _record_size(run, disk, disk["after"])
        disk["grow"] = "done"
        run.record.save()


def _record_size(run: Run, disk: Dict, size: int) -> None:
    """Keep the disk's record (disk.info.json) telling its size, where it records one."""
    entries = read_disk_records(run.layout)
    entry = entries.get(disk["file_name"])
    if isinstance(entry, dict) and "virtual_size" in entry and entry["virtual_size"] != size:
        entries[disk["file_name"]] = dict(entry, virtual_size=size)
        write_disk_records(run.layout, entries)


def _redefine(run: Run) -> None:
    _inject("redefine")
    run.hypervisor.define(run.record.data["new_definition"])


def _write_domain_xml(run: Run) -> None:
    _inject("write_domain_xml")
    _write_file(run.layout.domain_xml, run.record.data["new_file"])


def _write_file(path: str, text: str) -> None:
    try:
        write_file_atomic(path, text.encode("utf-8"), XML_FILE_MODE)
    except OSError as exc:
        raise VirtfleetError("cannot write %s: %s" % (path, exc.strerror or exc))


def _start(run: Run) -> None:
    _inject("start")
    run.guest.start(run.spec.start_timeout, paused=run.record.data["power_state"] == "paused")
    if run.down_at is not None:
        run.downtime = time.monotonic() - run.down_at


def _set_metadata(run: Run) -> None:
    _inject("set_metadata")
    run.guest.set_metadata(run.plan.metadata_xml, model.VIRTFLEET_PREFIX, model.VIRTFLEET_NS, live=True)


def _set_vcpus(run: Run) -> None:
    _inject("set_vcpus")
    run.guest.set_vcpus(run.plan.vcpus, live=True, config=True)


def _balloon(run: Run) -> None:
    _inject("balloon")
    target = run.plan.balloon_kib
    run.guest.set_memory(target, live=True, config=True)
    deadline = time.monotonic() + BALLOON_WAIT
    actual = None
    while time.monotonic() < deadline:
        actual = run.guest.memory_stats().get("actual")
        if actual == target:
            return
        time.sleep(0.2)
    run.warnings.append("guest %s: the balloon target is %d KiB but the guest reports %s KiB after %.0f s; does it "
                        "run the virtio_balloon driver?" % (run.spec.name, target, actual, BALLOON_WAIT))


def _plug_dimms(run: Run) -> None:
    _inject("plug_dimms")
    for size in run.plan.new_dimms_kib:
        element = designer.dimm_device(size).to_element()
        run.guest.attach_device(model.etree.tostring(element, encoding="unicode"), live=True, config=True)


def _sync_definition(run: Run) -> None:
    """The live calls changed the persistent definition too; make sure it is exactly the planned one."""
    _inject("sync_definition")
    wanted = run.record.data["new_definition"]
    if _canonical(run.guest.inactive_xml()) != _canonical(wanted):
        run.hypervisor.define(wanted)


def _canonical(xml: str) -> str:
    return normalize_for_compare(model.Domain.from_xml(xml)).to_string()


def _applied(run: Run) -> None:
    run.record.set_state(APPLIED, downtime_seconds=round(run.downtime, 3))


def _confirm(run: Run) -> None:
    remove_backups(run.record)
    run.record.set_state(CONFIRMED)


STEPS: Dict[str, Handler] = {
    "prepare": _prepare,
    "shutdown": _shutdown,
    "backup": _backup,
    "grow_disks": _grow_disks,
    "redefine": _redefine,
    "write_domain_xml": _write_domain_xml,
    "start": _start,
    "set_metadata": _set_metadata,
    "set_vcpus": _set_vcpus,
    "balloon": _balloon,
    "plug_dimms": _plug_dimms,
    "block_resize": _block_resize,
    "sync_definition": _sync_definition,
    "applied": _applied,
    "confirm": _confirm,
}


def remove_backups(record: ResizeRecord) -> None:
    for disk in record.disks:
        if disk.get("backup"):
            try:
                os.unlink(disk["backup"])
            except FileNotFoundError:
                pass
            disk["backup"] = None
    shutil.rmtree(record.layout.resize_backup_dir, ignore_errors=True)


def _explain(exc: Exception) -> str:
    if isinstance(exc, VirtfleetError):
        return exc.msg
    if isinstance(exc, LibvirtError):
        return "libvirt: " + explain_libvirt_failure(libvirt_error_text(exc))
    return "%s: %s" % (type(exc).__name__, exc)


def run_steps(run: Run, steps: List[str]) -> None:
    """Carry out ``steps``; on a failure after the first change, roll back and raise what happened and what was
    rolled back."""
    step = ""
    try:
        for step in steps:
            started = time.monotonic()
            STEPS[step](run)
            if step not in ("applied", "confirm"):
                run.record.step_done(step)
            run.step_seconds[step] = round(time.monotonic() - started, 3)  # its record write included
    except (VirtfleetError, LibvirtError, OSError) as exc:
        failure = "resize of guest %s failed at step %s: %s" % (run.spec.name, step, _explain(exc))
        rollback(run, step, failure)


# ------------------------------------------------------------------------------------- going back

@dataclass
class Restore:
    """What bringing a guest back did, and what it could not undo."""

    done: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)


def restore(run: Run, stop_first: bool, stop_timeout: int, force_off: bool) -> Restore:
    """Bring the guest back to the record's old definition, disks and power state, from wherever the resize got to.

    ``stop_first``: the guest may not run while its disks and definition are put back (a revert, or a cold
    resize that failed after the guest was shut down); else (a live resize that failed) it keeps running, its
    definition goes back, and what was plugged into it stays until its next restart.
    """
    record, out = run.record, Restore()
    data = record.data
    if fault("restore"):
        raise VirtfleetError("fault injected by %s=restore (a test hook)" % FAULT_ENV)
    if stop_first and run.guest.status() != "shutoff":
        run.guest.shutdown(stop_timeout, force_off)
        out.done.append("shut the guest down")
    entries = read_disk_records(run.layout) if record.disks else {}
    restored = {}
    for disk in record.disks:
        if disk.get("grow") not in ("started", "done"):
            continue
        if disk.get("backup"):
            os.replace(disk["backup"], disk["path"])
            disk["backup"] = None
            out.done.append("restored disk %s from its backup" % disk["target"])
        elif run.guest.status() == "shutoff":
            qemu_img.resize(disk["path"], disk["format"], disk["before"], shrink=True)
            out.done.append("cut disk %s back to %s" % (disk["target"], format_size(disk["before"])))
        else:
            out.left.append("disk %s stays %s (a running guest's disk cannot shrink); a revert with the guest off "
                            "cuts it back" % (disk["target"], format_size(disk["after"])))
            continue
        restored[disk["file_name"]] = disk["entry"]
        disk["grow"] = None
        record.save()
    if restored:
        write_disk_records(run.layout, dict(entries, **restored))
    if any(step in record.done for step in DEFINITION_STEPS) or data.get("failed_step") in DEFINITION_STEPS:
        run.hypervisor.define(data["old_definition"])
        out.done.append("defined the old definition")
        if run.guest.status() in ACTIVE and data.get("how") == LIVE:
            out.left.append("the running guest keeps what was plugged into it (%s) until its next restart; its "
                            "definition is the old one" % ", ".join(
                                c["what"] for c in data.get("changes") or [] if c.get("how") == LIVE))
    if "write_domain_xml" in record.done or data.get("failed_step") == "write_domain_xml":
        if data.get("old_file") is not None:
            _write_file(run.layout.domain_xml, data["old_file"])
            out.done.append("wrote the old domain.xml back")
    if data["power_state"] in ACTIVE and run.guest.status() == "shutoff":
        run.guest.start(run.spec.start_timeout, paused=data["power_state"] == "paused")
        out.done.append("started the guest again")
    remove_backups(record)
    return out


def rollback(run: Run, step: str, failure: str) -> None:
    """Undo what the resize did before ``step`` failed, and raise the failure with what was rolled back."""
    record = run.record
    record.data["failure"], record.data["failed_step"] = failure, step
    stop_first = record.data.get("how") != LIVE and ("start" in record.done or step == "start")
    try:
        record.save()
        undone = restore(run, stop_first, ROLLBACK_SHUTDOWN_TIMEOUT, True)
    except (VirtfleetError, LibvirtError, OSError) as exc:
        record.data["rollback_failure"] = _explain(exc)
        try:
            record.save()
        except VirtfleetError:
            pass
        raise VirtfleetError(
            "%s. Rolling back failed too: %s. Where things are: %s. To finish by hand: fix the cause, then run "
            "virtfleet.libvirt.vm_resize with state: reverted (it goes back from the record %s), or put the "
            "backups of %s back over the disks and define the old definition from the record."
            % (failure, _explain(exc), where_things_are(run), record.layout.resize_record,
               record.layout.resize_backup_dir),
            resize_state=record.state, record=record.layout.resize_record, failed_step=step)
    record.set_state(REVERTED, rolled_back=undone.done, left=undone.left)
    raise VirtfleetError(
        "%s. Rolled back: %s.%s The guest is %s." % (
            failure, "; ".join(undone.done) or "nothing had changed yet",
            (" Not undone: %s." % "; ".join(undone.left)) if undone.left else "", _state_of(run.guest)),
        resize_state=REVERTED, rolled_back=undone.done, not_undone=undone.left, failed_step=step,
        record=record.layout.resize_record)


def _state_of(guest: Guest) -> str:
    try:
        return guest.status()
    except LibvirtError:
        return "in an unknown state"


def where_things_are(run: Run) -> str:
    """The state of each thing a resize touches, for a message when going back failed."""
    record = run.record
    parts = ["the guest is %s" % _state_of(run.guest)]
    for disk in record.disks:
        parts.append("disk %s: %s%s" % (disk["target"], {
            "started": "being grown (may be partly grown)", "done": "grown to %s" % format_size(disk["after"]),
        }.get(disk.get("grow"), "as it was"), ", backup at %s" % disk["backup"] if disk.get("backup") else ""))
    defined = any(step in record.done for step in DEFINITION_STEPS)
    parts.append("libvirt's definition: %s" % (
        "the new one (the old one is in the record)" if defined else "the old one"))
    return "; ".join(parts)


def revert(run: Run) -> Restore:
    """Take the recorded resize back (state: reverted): shut down, restore, start as the guest was."""
    run.record.data["failed_step"] = None
    undone = restore(run, True, run.spec.shutdown_timeout, run.spec.force_off)
    run.record.set_state(REVERTED, reverted=undone.done, left=undone.left)
    return undone
