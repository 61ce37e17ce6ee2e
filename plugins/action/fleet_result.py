# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: one guest's outcome, collected from its batch leader's results (controller only)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.virtfleet.libvirt.plugins.plugin_utils import _fleet


class ActionModule(ActionBase):
    """See ``plugins/plugin_utils/_fleet.py``; documented in ``plugins/modules/fleet_result.py``."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("role",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        guest = task_vars["inventory_hostname"]
        role = self._task.args.get("role")
        planned = task_vars.get(_fleet.PLAN_FACT % role)
        if not isinstance(planned, dict):
            result.update(failed=True, msg="no %s plan for %s: run the role's plan step first" % (role, guest))
            return result
        outcome = _fleet.own_outcome(planned, guest, task_vars.get(_fleet.OUTCOME_VAR % role), task_vars["hostvars"])
        if outcome.get("unreachable"):  # its hypervisor: the guest cannot be reached either
            outcome.pop("failed")
        result.update(outcome)
        if not outcome.get("failed") and not outcome.get("unreachable"):
            # the guest's domain result, for later tasks (boot_domain.interfaces); virtfleet_boot_domain is the name
            # the per-guest role of 0.1.0 registered it under
            facts = {"%s_domain" % role: outcome.get("domain")}
            if role == "boot":
                facts["virtfleet_boot_domain"] = outcome.get("domain")
            result["ansible_facts"] = facts
        return result
