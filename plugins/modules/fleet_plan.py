#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin of the same name, on the controller; this file documents it.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_plan
short_description: Plan a role's work over the guests of the play, one batch per hypervisor
version_added: 0.1.0
description:
  - Used by the C(boot), C(resize) and C(destroy) roles (their C(plan) step); runs on the controller only.
  - For every guest of the play (or O(guests)), takes the guest's variables over the role's documented defaults
    (a role variable C(<role>_<name>) falls back to the collection-wide C(virtfleet_<name>)), templates them in
    the guest's own context, and turns them into the per-item arguments of each module the role calls.
  - Guests are grouped into batches, one per hypervisor (C(virtfleet_hypervisor)), libvirt URI and instances
    path. The first guest of each batch is its leader, which makes one module call per step for all guests of
    its batch. A guest whose variables cannot be planned (an unknown flavor, no hypervisor) is reported by the
    role's C(result) step, and the others go on.
  - Sets the fact C(virtfleet_<role>_plan).
author:
  - virtfleet developers (@virtfleet)
options:
  role:
    description: The role whose work is planned.
    type: str
    required: true
    choices: [boot, destroy, resize]
  guests:
    description: The guests to plan. Defaults to the hosts of the current play batch.
    type: list
    elements: str
  per_guest:
    description: Make every guest its own batch (one module call per guest), for plays that run the role for some
      of their hosts only.
    type: bool
    default: false
attributes:
  check_mode:
    description: Plans only; changes nothing anywhere.
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to show.
    support: none
  action:
    description: Runs on the controller as an action plugin.
    support: full
"""

EXAMPLES = r"""
- name: Plan the boot of the play's guests
  virtfleet.libvirt.fleet_plan:
    role: boot
  run_once: true
"""

RETURN = r"""
leaders:
  description: The guests that act for their batch.
  returned: always
  type: list
  elements: str
errors:
  description: Guests that cannot be planned, with why.
  returned: always
  type: dict
"""
