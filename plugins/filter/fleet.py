# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the roles use to build each step's list of items from the step before."""

from __future__ import annotations

from ansible_collections.virtfleet.libvirt.plugins.plugin_utils import _fleet


def fleet_items(plan, leader, step, previous=None, before=None):
    """The items of ``step`` for the batch that ``leader`` leads in ``plan``."""
    return _fleet.step_items(plan["batches"][plan["leaders"][leader]], step, previous, before)


def fleet_batch(plan, leader):
    """The batch that ``leader`` leads (hypervisor, uri, instances_path, guests)."""
    return plan["batches"][plan["leaders"][leader]]


def fleet_summary(plan, leader, *results):
    """One line per guest of ``leader``'s batch: name, state, what changed, console log, addresses."""
    return _fleet.summary(plan, leader, results)


def fleet_report(plan, hostvars):
    """The guests that changed or failed, each with its outcome and report group, from its leader's results."""
    return [line for line in _fleet.report(plan, hostvars) if line["groups"]]


def fleet_results(plan, hostvars):
    """guest -> its result of the run, for every guest of the plan."""
    return _fleet.results_by_guest(plan, hostvars)


class FilterModule:
    def filters(self):
        return {"fleet_items": fleet_items, "fleet_batch": fleet_batch, "fleet_summary": fleet_summary,
                "fleet_report": fleet_report, "fleet_results": fleet_results}
