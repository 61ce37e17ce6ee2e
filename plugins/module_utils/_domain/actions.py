# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: carry out a ``DomainPlan``, one small handler per action.

``ACTIONS`` maps each action a plan may hold to its handler; a handler does one thing through the
``Guest``/``Hypervisor`` wrapper and returns what it did (a shutdown that had to be forced says
``shutdown`` and ``destroy``). A libvirt failure stops the run with what was done so far.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.record import locked
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.plan import DomainPlan, removable_files
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DomainSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Guest, Hypervisor, LibvirtError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import (
    explain_libvirt_failure, libvirt_error_text,
)


@dataclass
class Run:
    """What the handlers of one plan share."""

    hypervisor: Hypervisor
    spec: DomainSpec
    plan: DomainPlan
    guest: Optional[Guest]
    done: List[str] = field(default_factory=list)
    removed_files: List[str] = field(default_factory=list)


Handler = Callable[[Run, str], List[str]]


def _define(run: Run, action: str) -> List[str]:
    run.guest = run.hypervisor.define(run.plan.desired_xml)
    return [action]


def _start(run: Run, action: str) -> List[str]:
    run.guest.start(run.spec.start_timeout, paused=action == "start_paused")
    return [action]


def _resume(run: Run, action: str) -> List[str]:
    run.guest.resume(run.spec.start_timeout)
    return [action]


def _suspend(run: Run, action: str) -> List[str]:
    run.guest.suspend(run.spec.start_timeout)
    return [action]


def _shutdown(run: Run, _action: str) -> List[str]:
    return run.guest.shutdown(run.spec.shutdown_timeout, run.spec.force_off)


def _destroy(run: Run, action: str) -> List[str]:
    run.guest.destroy()
    return [action]


def _undefine(run: Run, action: str) -> List[str]:
    run.guest.undefine()
    return [action]


def _remove_storage(run: Run, action: str) -> List[str]:
    """Remove the planned files under the guest's lock (no disk of it is being built meanwhile), each only if
    it is still the guest's own and no other domain has started to use it; then the emptied instance directory."""
    layout = run.spec.layout
    with locked(layout):
        still, _kept = removable_files(run.hypervisor, layout, run.plan.remove_files)
        for path in still:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise VirtfleetError("the files of domain %s cannot all be removed: %s: %s" % (
                    run.plan.name, path, exc.strerror or exc), actions=run.done, removed_files=run.removed_files)
            run.removed_files.append(path)
        with contextlib.suppress(OSError):
            os.rmdir(layout.instance_dir)  # only when nothing else is left in it
            run.removed_files.append(layout.instance_dir)
    return [action]


def _autostart(run: Run, action: str) -> List[str]:
    run.guest.set_autostart(action == "autostart_on")
    return [action]


ACTIONS: Dict[str, Handler] = {
    "define": _define,
    "redefine": _define,
    "start": _start,
    "start_paused": _start,
    "resume": _resume,
    "suspend": _suspend,
    "shutdown": _shutdown,
    "destroy": _destroy,
    "undefine": _undefine,
    "remove_storage": _remove_storage,
    "autostart_on": _autostart,
    "autostart_off": _autostart,
}


def apply_plan(hypervisor: Hypervisor, spec: DomainSpec, plan: DomainPlan) -> Run:
    """Carry out ``plan``; the returned run says what was done (a forced destroy included) and removed."""
    run = Run(hypervisor, spec, plan, hypervisor.lookup(plan.name))
    action = ""
    try:
        for action in plan.actions:
            run.done += ACTIONS[action](run, action)
    except LibvirtError as exc:
        raise VirtfleetError("libvirt failed to %s domain %s: %s" % (
            action.replace("_", " "), plan.name, explain_libvirt_failure(libvirt_error_text(exc))), actions=run.done)
    return run
