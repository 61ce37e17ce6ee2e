# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the states the ``domain`` module brings a domain to, and the way there.

Plain values in, plain values out: which actions take a domain from the state it is in to the
wanted one, and what its state is afterwards. No XML and no libvirt here, so both the full plan
(``_domain.plan``) and the re-run fast path (``_domain.memo``) decide transitions with the same code.
"""

from __future__ import annotations

from typing import List, Optional

# libvirt states (as ``Guest.status`` names them) in which the guest has a live definition.
ACTIVE = ("running", "paused")


def transition_actions(wanted: str, current: str) -> List[str]:
    """Actions from ``current`` (running, paused or shutoff) to the wanted state (not ``absent``)."""
    if wanted == "running":
        if current == "paused":
            return ["resume"]
        if current != "running":
            return ["start"]
    elif wanted == "paused":
        if current == "running":
            return ["suspend"]
        if current != "paused":
            return ["start_paused"]
    elif wanted == "shutdown":
        if current in ACTIVE:
            return ["shutdown"]
    return []


def runs_after(wanted: str, current: str) -> bool:
    """Whether a guest in ``current`` still runs (or is paused) once ``transition_actions`` are done."""
    return current in ACTIVE and wanted != "shutdown"


def autostart_actions(want: Optional[bool], have: bool) -> List[str]:
    """``autostart_on``/``autostart_off`` when the wanted autostart (None: leave it) differs from ``have``."""
    if want is None or bool(have) == want:
        return []
    return ["autostart_on" if want else "autostart_off"]


def state_after(wanted: str, before: str) -> str:
    """State after the task for a wanted state other than ``absent``; ``before`` may be ``absent``."""
    return {"running": "running", "paused": "paused", "shutdown": "shutoff"}.get(
        wanted, before if before != "absent" else "shutoff")
