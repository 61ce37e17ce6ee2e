# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: core of the ``domain`` module, one domain brought to one wanted state.

``ensure_domain`` validates the parameters (``DomainSpec``), reads the desired XML, and then takes
the re-run memo's fast path (``_domain.memo``) when it proves there is nothing to do; otherwise the
full path plans (``_domain.plan``, reads only), returns the plan in check mode or carries it out
(``_domain.actions``), and records a fresh memo once nothing differs any more. With
``wait_for_address`` it then waits for the guest's address (``_domain.info``).

This file is loaded on every run: the full path's modules (and with them the domain model and lxml)
are imported only when the fast path does not answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DomainSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.state import ACTIVE
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import (
    Hypervisor, LibvirtError, open_hypervisor,
)

LIVE = "live"  # a difference a running guest could take without a restart (``_domain.differences.LIVE``)


def with_desired_xml(spec: DomainSpec) -> DomainSpec:
    """``spec`` with its desired XML: the ``xml`` option, else ``xml_file``, else the guest's ``domain.xml``."""
    if spec.xml is not None:
        return spec
    path = spec.desired_file
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise VirtfleetError("cannot read the domain XML %s: %s. Write it with virtfleet.libvirt.domain_xml first, "
                             "or pass xml/xml_file." % (path, getattr(exc, "strerror", None) or exc))
    return dataclasses.replace(spec, xml=text, xml_source=path)


@contextlib.contextmanager
def _hypervisor_for(spec: DomainSpec, hypervisor: Optional[Hypervisor]) -> Iterator[Hypervisor]:
    if hypervisor is not None:
        yield hypervisor
        return
    with open_hypervisor(spec.uri) as opened:
        yield opened


def ensure_domain(params: Dict[str, Any], check_mode: bool = False, diff: bool = False,
                  hypervisor: Optional[Hypervisor] = None) -> Dict[str, Any]:
    """Core of the ``domain`` module. ``hypervisor`` may be shared by a batch of guests."""
    spec = DomainSpec.from_params(params)  # before the name becomes part of a path
    if spec.state != "absent":
        spec = with_desired_xml(spec)
    with _hypervisor_for(spec, hypervisor) as opened:
        # A diff needs both definitions' texts, which only the full path makes.
        result = None if diff else memo.fast_result(opened, spec)
        if result is None:
            result = converge(opened, spec, check_mode)
        if spec.wait_for_address:
            result["interfaces"] = _interfaces(opened, spec, check_mode, result)
    return result


def _interfaces(hypervisor: Hypervisor, spec: DomainSpec, check_mode: bool, result: Dict[str, Any]) -> List[Dict]:
    # imported here: only runs that wait need the domain model
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.info import interfaces_once_reachable

    try:
        return interfaces_once_reachable(hypervisor, spec.name, spec.address_timeout, check_mode)
    except VirtfleetError as exc:
        # What was done stays reported: the guest was (re)defined or started though no address came.
        raise VirtfleetError(exc.msg, changed=result["changed"], actions=result["actions"], state=result["state"],
                             uuid=result.get("uuid"))


def converge(hypervisor: Hypervisor, spec: DomainSpec, check_mode: bool) -> Dict[str, Any]:
    """The full path: plan, then (outside check mode) carry the plan out and record the memo."""
    # imported here: the fast path needs neither the domain model nor lxml
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.plan import plan_domain

    plan = plan_domain(hypervisor, spec)
    result: Dict[str, Any] = {
        "changed": bool(plan.actions),
        "actions": list(plan.actions),
        "state": plan.after_state,
        "previous_state": plan.before_state,
        "restart_pending": plan.restart_pending,
        "differences": plan.differences,
        "changes": [change.as_dict() for change in plan.changes],
        "diff": {"before": plan.before_xml, "after": plan.after_xml if spec.state != "absent" else "",
                 "before_header": "%s (defined)" % spec.name, "after_header": "%s (desired)" % spec.name},
    }
    warnings: List[str] = []
    if spec.state == "absent" and spec.remove_storage:
        result["removed_files"] = plan.remove_files + ([plan.removed_dir] if plan.removed_dir else [])
        for path, why in plan.kept_files:
            warnings.append("domain %s: %s is kept: %s" % (spec.name, path, why))
    if not check_mode and plan.actions:
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.actions import apply_plan

        run = apply_plan(hypervisor, spec, plan)
        result["actions"] = run.done
        if "removed_files" in result:
            result["removed_files"] = list(run.removed_files)
        guest = hypervisor.lookup(spec.name)
        result["state"] = guest.status() if guest is not None else "absent"
        if guest is not None:
            record_memo(hypervisor, spec)
    if spec.state != "absent":
        guest = hypervisor.lookup(spec.name)
        if guest is not None:
            result["uuid"] = guest.uuid
    if plan.restart_pending:
        warnings.append(restart_warning(spec.name, plan.pending))
    if warnings:
        result[WARNINGS_KEY] = warnings
    return result


def restart_warning(name: str, pending) -> str:
    """What a pending restart waits for, from the classified differences between the live guest and its
    definition."""
    text = ("domain %s is running with an older definition; the new one applies at its next start (set apply: "
            "restart to restart it now)" % name)
    needing = [d for d in pending if d.applies != LIVE]
    if needing:
        text += ". It needs the restart for: " + "; ".join(d.describe() for d in needing)
    elif pending:
        text += ". A running guest could take these live, but this module applies them at the next start: " + \
            "; ".join(d.describe() for d in pending)
    return text


def _settled_texts(hypervisor: Hypervisor, spec: DomainSpec) -> Optional[memo.Texts]:
    """libvirt's texts when the full comparison finds nothing left to do (no action, no pending restart)."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.plan import plan_domain

    plan = plan_domain(hypervisor, spec)
    if not plan.settled or plan.inactive_text is None:
        return None
    if (plan.live_text is not None) != (plan.before_state in ACTIVE):
        return None  # the memo's key has a live text exactly when the guest runs
    return plan.inactive_text, plan.live_text


def record_memo(hypervisor: Hypervisor, spec: DomainSpec) -> bool:
    """After a run that changed the domain: record the re-run memo if nothing differs any more.

    Never fails the task; without a memo the next run just takes the full path.
    """
    code_hash = memo.code()
    if code_hash is None or spec.state not in memo.FAST_STATES:
        return False
    try:
        texts = _settled_texts(hypervisor, spec)
        guest = hypervisor.lookup(spec.name) if texts is not None else None
        if guest is None:
            return False
        return memo.record(guest, code_hash, spec.xml, texts, lambda: _settled_texts(hypervisor, spec))
    except (VirtfleetError, LibvirtError):
        return False


def domain_core(params: Dict[str, Any], check_mode: bool = False, diff: bool = False) -> Dict[str, Any]:
    """The ``domain`` module: one domain, or one per element of ``items`` (defines, starts, shutdowns and address
    waits at once, sharing one connection and one scan of the disks in use)."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_ITEM_SPEC
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.shared import list_form

    return list_form(ensure_domain, DOMAIN_ITEM_SPEC, "name")(params, check_mode, diff)
