# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the states the ``domain`` module brings a domain to, and the way there.

Plain values in, plain values out: which parameters are acceptable, which actions take a domain
from the state it is in to the wanted one, and what its state is afterwards. No XML and no libvirt
here, so both the full plan (``_domain_lifecycle``) and the re-run fast path (``_domain_memo``)
decide transitions with the same code.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

WANTED_STATES = ("running", "shutdown", "paused", "defined", "absent")
MAX_NAME_LENGTH = 255  # what a file name may be; libvirt's own limit is far above any sane name
MAX_TIMEOUT = 86400
# libvirt states (as ``normalized_state`` names them) in which the guest has a live definition.
ACTIVE = ("running", "paused")


def validate_params(params: Dict[str, Any]) -> None:
    """Reject what libvirt or the file system would choke on, before anything is looked up."""
    name = params.get("name")
    if not isinstance(name, str) or not name.strip():
        raise VirtfleetError("name must be a non-empty string, got %r" % (name,))
    if len(name) > MAX_NAME_LENGTH:
        raise VirtfleetError("name is %d characters long; at most %d are allowed" % (len(name), MAX_NAME_LENGTH))
    bad = sorted({c for c in name if c == "/" or ord(c) < 32 or ord(c) == 127})
    if bad or name in (".", "..") or name != name.strip():
        raise VirtfleetError("name %r is not a valid domain name: no '/', control characters, leading or "
                             "trailing blanks, and not '.' or '..'" % (name,))
    if params.get("state", "running") not in WANTED_STATES:
        raise VirtfleetError("state must be one of %s, got %r" % (", ".join(WANTED_STATES), params.get("state")))
    if params.get("wait_for_address") and params.get("state", "running") != "running":
        raise VirtfleetError("wait_for_address needs state=running (a guest that does not run gets no address), "
                             "got state=%s" % params.get("state"))
    for key in ("shutdown_timeout", "start_timeout", "address_timeout"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_TIMEOUT):
            raise VirtfleetError("%s must be a number of seconds from 0 to %d, got %r" % (key, MAX_TIMEOUT, value))


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
