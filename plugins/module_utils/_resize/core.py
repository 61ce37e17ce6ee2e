# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: core of the ``vm_resize`` module, one guest resized, confirmed or reverted.

``ensure_resize`` validates the parameters (``ResizeSpec``), plans (``_resize.plan``, reads only),
returns the plan in check mode or when nothing changes (no lock, no write), and otherwise takes the
guest's lock, plans again under it and carries the steps out (``_resize.steps``), recording each in
the resize record (``_resize.record``). ``state: confirmed`` and ``state: reverted`` finish a resize
left unconfirmed. A ``Hypervisor`` may be passed in, so that a list form can share one connection.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import exclusive_lock
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor, shared_or_opened
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.shared import list_form
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.plan import (
    COLD, LIVE, ResizePlan, plan_resize,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.record import (
    APPLIED, CONFIRMED, PREPARED, REVERTED, UNFINISHED, ResizeRecord, read_record,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.spec import ITEM_SPEC, ResizeSpec

LOCK_TIMEOUT = 1800


def _steps():
    """The step handlers (with qemu-img and the file writers), imported only when something changes: a re-run
    with nothing to do never loads them."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize import steps

    return steps


@contextlib.contextmanager
def _guest_lock(spec: ResizeSpec) -> Iterator[None]:
    with exclusive_lock(spec.layout.lock, LOCK_TIMEOUT, "guest %s" % spec.name):
        yield


def ensure_resize(params: Dict[str, Any], check_mode: bool = False, diff: bool = False,
                  hypervisor: Optional[Hypervisor] = None) -> Dict[str, Any]:
    """One guest's resize (``vm_resize_core`` adds the list form). ``hypervisor`` may be shared by a batch."""
    spec = ResizeSpec.from_params(params)
    with shared_or_opened(spec.uri, hypervisor) as opened:
        if spec.state == "resized":
            return resize(opened, spec, check_mode, diff)
        return finish(opened, spec, check_mode)


def _unfinished(spec: ResizeSpec, record: Optional[ResizeRecord]) -> None:
    if record is not None and record.state in UNFINISHED:
        how = ("it was interrupted before it was applied; revert it with state: reverted" if record.state == PREPARED
               else "keep it with state: confirmed, or go back with state: reverted")
        raise VirtfleetError(
            "guest %s has an unfinished resize (%s; %s); finish it before another one: %s. Nothing was changed."
            % (spec.name, record.state, record.summary(), how), resize_state=record.state,
            record=spec.layout.resize_record)


def resize(hypervisor: Hypervisor, spec: ResizeSpec, check_mode: bool, diff: bool) -> Dict[str, Any]:
    record = read_record(spec.layout)
    try:
        plan = plan_resize(hypervisor, spec)
    except VirtfleetError:
        _unfinished(spec, record)  # the resize in progress explains the guest's state better
        raise
    if not plan.changed or check_mode:
        if plan.changed:
            _unfinished(spec, record)
        return _result(hypervisor, spec, plan, record, diff, changed=plan.changed)
    _unfinished(spec, record)
    with _guest_lock(spec):
        record = read_record(spec.layout)  # again, under the lock: another run may have resized meanwhile
        _unfinished(spec, record)
        plan = plan_resize(hypervisor, spec)
        if not plan.changed:
            return _result(hypervisor, spec, plan, record, diff, changed=False)
        record = ResizeRecord.new(
            spec.layout, how=plan.path, mode=spec.mode, power_state=plan.power_state,
            changes=[change.as_dict() for change in plan.changes], steps=list(plan.steps),
            old_definition=plan.old_definition, new_definition=plan.new_definition,
            old_file=_text(plan.old_file), new_file=_text(plan.new_file),
            disks=[{"target": d.target, "path": d.path, "file_name": d.file_name, "kind": d.kind, "format": d.format,
                    "bus": d.bus, "before": d.before, "after": d.after, "entry": d.entry, "backup": None,
                    "grow": None} for d in plan.disks])
        handlers = _steps()
        run = handlers.Run(hypervisor, spec, hypervisor.lookup(spec.name), record, plan)
        handlers.run_steps(run, plan.steps)
        result = _result(hypervisor, spec, plan, record, diff, changed=True)
        result["downtime_seconds"] = round(run.downtime, 3)
        result["step_seconds"] = dict(run.step_seconds)
        if run.warnings:
            result.setdefault(WARNINGS_KEY, []).extend(run.warnings)
        return result


def _text(data: Optional[bytes]) -> Optional[str]:
    return data.decode("utf-8") if data is not None else None


def _result(hypervisor: Hypervisor, spec: ResizeSpec, plan: ResizePlan, record: Optional[ResizeRecord], diff: bool,
            changed: bool) -> Dict[str, Any]:
    guest = hypervisor.lookup(spec.name)
    result: Dict[str, Any] = {
        "changed": changed,
        "how": plan.path or "none",
        "plan": [change.as_dict() for change in plan.changes],
        "steps": list(plan.steps),
        "downtime_seconds": 0.0 if plan.path != COLD or not changed else None,
        "backup": record.backups() if record is not None else [],
        "resize_state": record.state if record is not None else None,
        "record": spec.layout.resize_record,
        "state": guest.status() if guest is not None else "absent",
    }
    if diff:
        before = (plan.old_file or b"").decode("utf-8", "replace") or plan.old_definition
        after = (plan.new_file or b"").decode("utf-8", "replace") or plan.new_definition or before
        result["diff"] = {"before": before, "after": after if changed else before,
                          "before_header": "%s (before the resize)" % spec.name,
                          "after_header": "%s (after the resize)" % spec.name}
    warnings: List[str] = list(plan.warnings)
    if not changed and record is not None and record.state in UNFINISHED:
        warnings.append("guest %s has an unfinished resize (%s, %s): finish it with state: confirmed or state: "
                        "reverted" % (spec.name, record.state, record.summary()))
    if plan.path == LIVE and changed and not spec.confirm:
        warnings.append("guest %s was resized live and is not confirmed: state: reverted takes it back with a "
                        "restart" % spec.name)
    if warnings:
        result[WARNINGS_KEY] = warnings
    return result


def finish(hypervisor: Hypervisor, spec: ResizeSpec, check_mode: bool) -> Dict[str, Any]:
    """``state: confirmed`` or ``state: reverted``: finish the recorded resize (idempotent)."""
    record = read_record(spec.layout)
    wanted = CONFIRMED if spec.state == "confirmed" else REVERTED
    guest = hypervisor.lookup(spec.name)
    base = {"changed": False, "how": "none", "plan": [], "steps": [], "downtime_seconds": 0.0, "backup": [],
            "record": spec.layout.resize_record, "resize_state": record.state if record is not None else None,
            "state": guest.status() if guest is not None else "absent"}
    if record is None:
        if wanted == CONFIRMED:
            return base
        raise VirtfleetError("guest %s has no resize to revert (no %s)" % (spec.name, spec.layout.resize_record))
    if record.state == wanted:
        return base
    if record.state in (CONFIRMED, REVERTED):
        raise VirtfleetError("the last resize of guest %s was %s already (%s); it cannot be %s now. Resize it again "
                             "instead." % (spec.name, record.state, record.summary(), wanted))
    if wanted == CONFIRMED and record.state == PREPARED:
        raise VirtfleetError("the last resize of guest %s was interrupted before it was applied (%s): it cannot be "
                             "confirmed; revert it with state: reverted" % (spec.name, record.summary()))
    if guest is None:
        raise VirtfleetError("domain %s is not defined any more; its resize record %s cannot be %s"
                             % (spec.name, spec.layout.resize_record, wanted))
    steps = ["confirm"] if wanted == CONFIRMED else ["shutdown", "restore", "start"]
    base.update(changed=True, steps=steps, how=COLD if wanted == REVERTED else "none",
                plan=list(record.data.get("changes") or []), backup=record.backups())
    if check_mode:
        base["downtime_seconds"] = None if wanted == REVERTED else 0.0
        return base
    with _guest_lock(spec):
        record = read_record(spec.layout)
        if record is None or record.state not in (APPLIED, PREPARED):
            return finish(hypervisor, spec, check_mode)
        handlers = _steps()
        run = handlers.Run(hypervisor, spec, guest, record)
        started = time.monotonic()
        if wanted == CONFIRMED:
            handlers.remove_backups(record)
            record.set_state(CONFIRMED)
            base["downtime_seconds"] = 0.0
        else:
            undone = handlers.revert(run)
            base["reverted"] = undone.done
            if undone.left:
                base[WARNINGS_KEY] = ["guest %s: not undone: %s" % (spec.name, "; ".join(undone.left))]
            base["downtime_seconds"] = round(time.monotonic() - started, 3) if record.data.get("power_state") in \
                ("running", "paused") else 0.0
    base.update(resize_state=record.state, backup=record.backups(), state=guest.status())
    return base


# The module: one guest, or each element of ``items`` (concurrently, sharing one connection; a guest's elements
# one after the other, each resize under the guest's own lock).
vm_resize_core = list_form(ensure_resize, ITEM_SPEC, "name", serial=lambda one: one.get("name"))
