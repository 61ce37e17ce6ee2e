# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the core of the ``guest_disk`` module, one disk file of one guest.

Parameters in, a JSON-serialisable result out: the typed spec is built from the parameters, the plan
made from it (reads only), and then either returned (check mode) or carried out by ``_disk.apply``,
which is loaded only when there is something to do.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.plan import DiskPlan, plan_disk
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import FORMATTED_KINDS, ITEM_SPEC, DiskSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.shared import list_form


def _xml_disk(plan: DiskPlan) -> Dict[str, Any]:
    if plan.kind == "config_drive":
        return {"path": plan.path, "format": "raw", "device": "cdrom", "readonly": True}
    return {"path": plan.path, "format": plan.format, "device": "disk", "readonly": False}


def result_of(plan: DiskPlan, check_mode: bool) -> Dict[str, Any]:
    """The module's result for ``plan`` (carried out unless ``check_mode``)."""
    result: Dict[str, Any] = {
        "changed": bool(plan.actions),
        "actions": list(plan.actions),
        "kind": plan.kind,
        "path": plan.path,
        "format": plan.format,
        WARNINGS_KEY: list(plan.warnings),
        "diff": {"before": plan.before, "after": plan.after},
    }
    if not plan.spec.present:
        result["referenced_by"] = list(plan.referenced_by)
        return result
    result["virtual_size"] = plan.after.get("virtual_size")
    result["xml_disk"] = _xml_disk(plan)
    result["owned_files"] = [plan.path]
    if plan.kind in ("root",) + FORMATTED_KINDS and plan.backing == "overlay":
        result["backing_file"] = plan.base
    if plan.kind in FORMATTED_KINDS:
        result.update(fs_type=plan.fs_type, label=plan.label, base=plan.base)
    if plan.kind == "config_drive":
        result.update(drive_format=plan.spec.drive_format, label=plan.label, files=sorted(plan.files))
        result["owned_files"].append(plan.layout.digest_of(plan.file_name))
        if not check_mode or plan.stat is not None:
            try:
                result["virtual_size"] = os.lstat(plan.path).st_size
            except FileNotFoundError:
                pass
    return result


def ensure_disk(params: Mapping[str, Any], check_mode: bool = False, diff: bool = False,
                hypervisor: Any = None) -> Dict[str, Any]:
    """Core of the ``guest_disk`` module: one disk file of one guest.

    ``hypervisor`` (a ``_host.guest.Hypervisor``) may be shared by a batch; ``diff`` is accepted for
    ``run_core`` (the diff is always computed, and dropped by the module when not asked for).
    """
    del diff
    spec = DiskSpec.from_params(params)
    plan = plan_disk(spec, check_mode, hypervisor)
    if plan.actions and not check_mode:
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.apply import apply_plan

        plan = apply_plan(plan, lambda: plan_disk(spec, False, hypervisor))
    return result_of(plan, check_mode)


# The module: one disk, or every disk of ``items`` (one guest's disks one after the other, different guests'
# at once), sharing one libvirt connection that only removals open.
ensure_disks = list_form(ensure_disk, ITEM_SPEC, "guest", serial=lambda one: one.get("guest"),
                         describe=lambda one: "%s %s" % (one.get("guest"), one.get("file_name") or one.get("kind")))
