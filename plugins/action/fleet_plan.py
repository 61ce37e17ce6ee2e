# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: plan a role's work over the guests of the play, one batch per hypervisor (controller only)."""

from __future__ import annotations

import uuid

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.virtfleet.libvirt.plugins.plugin_utils import _fleet


class ActionModule(ActionBase):
    """See ``plugins/plugin_utils/_fleet.py``; documented in ``plugins/modules/fleet_plan.py``."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("role", "guests", "per_guest"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        role = args.get("role")
        if role not in _fleet.ROLES:
            raise AnsibleError("fleet_plan: role must be one of %s, got %r" % (", ".join(sorted(_fleet.ROLES)), role))
        guests = args.get("guests")
        if guests is None:
            guests = task_vars.get("ansible_play_batch") or []
        if isinstance(guests, str):
            guests = [guests]
        defaults = self._role_defaults(role)
        hostvars = task_vars["hostvars"]

        def guest_vars(guest):
            merged = _fleet.merged_vars(role, dict(hostvars.raw_get(guest)), defaults)
            templar = self._templar.copy_with_new_env(available_variables=merged)
            wanted = {k: merged[k] for k in merged
                      if k.startswith(role + "_") or k == _fleet.HYPERVISOR_VAR}
            try:
                return templar.template(wanted)
            except AnsibleError as exc:
                raise _fleet.PlanError("cannot template the variables of guest %s: %s" % (guest, exc))

        planned = _fleet.plan(role, list(guests), guest_vars, per_guest=bool(args.get("per_guest")))
        planned["run"] = uuid.uuid4().hex  # tells this run's outcomes (fleet_report) from an earlier run's
        result.update(changed=False, ansible_facts={_fleet.PLAN_FACT % role: planned},
                      leaders=sorted(planned["leaders"]), errors=planned["errors"])
        return result

    def _role_defaults(self, role):
        """The role's documented defaults (its defaults/main.yml), untemplated."""
        current = getattr(self._task, "_role", None)
        if current is None or current.get_name().split(".")[-1] != role:
            raise AnsibleError("fleet_plan runs inside the %s role (include or import it with tasks_from: plan)" % role)
        return dict(current.get_default_vars())
