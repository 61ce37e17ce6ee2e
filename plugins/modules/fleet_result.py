#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin of the same name, on the controller; this file documents it.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_result
short_description: One guest's outcome of a role's batch run
version_added: 0.1.0
description:
  - Used by the C(boot), C(resize) and C(destroy) roles (their C(result) step); runs on the controller only. The
    playbooks run it for the guests that changed or failed (the group C(virtfleet_<role>_report) that the
    batch step fills); the per-guest form of a role runs it for every guest of the play.
  - Collects the guest's own results from the step results its batch leader registered, so that the guest
    reports changed when something of it changed and fails alone when its input was bad or one of its items
    failed; a guest whose hypervisor could not be reached is reported unreachable.
author:
  - virtfleet developers (@virtfleet)
options:
  role:
    description: The role whose results are collected (its C(fleet_plan) fact and C(<role>_<step>_result) registers).
    type: str
    required: true
    choices: [boot, destroy, resize]
attributes:
  check_mode:
    description: Reads results only.
    support: full
  diff_mode:
    description: The diffs are shown by the steps themselves.
    support: none
  action:
    description: Runs on the controller as an action plugin.
    support: full
"""

EXAMPLES = r"""
- name: Report the guest
  virtfleet.libvirt.fleet_result:
    role: boot
  register: boot_result
"""

RETURN = r"""
hypervisor:
  description: The hypervisor that holds the guest.
  returned: when the guest was planned
  type: str
summary:
  description: One line on the guest (name, state, what changed, console log, addresses).
  returned: on success
  type: str
steps:
  description: The guest's own item results of each step (as the modules returned them).
  returned: when the guest was planned
  type: dict
domain:
  description: The guest's result of the domain step (state, uuid, and interfaces when waited for).
  returned: on success
  type: dict
"""
