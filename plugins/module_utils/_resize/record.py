# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the resize record, the one reader and writer of ``resize.json``.

A resize moves its guest's record through ``prepared`` (written before the first change) ->
``applied`` (the guest has its new size) -> ``confirmed`` (the backups are gone) or ``reverted`` (the
old definition, disks and power state are back). The record holds what a revert needs: the old
persistent definition and ``domain.xml``, the power state, each disk's old and new size, its record
entry and its backup, and which steps were done, so that a resize interrupted at any point (even by
``kill -9``) can be reverted from it. It is written atomically, and only under the guest's lock.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import read_bytes, write_file_atomic
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout

RECORD_VERSION = 1
RECORD_MODE = 0o644   # no secrets: definitions and sizes (the definition's secrets, if any, are libvirt's)
PREPARED, APPLIED, CONFIRMED, REVERTED = "prepared", "applied", "confirmed", "reverted"
STATES = (PREPARED, APPLIED, CONFIRMED, REVERTED)
UNFINISHED = (PREPARED, APPLIED)


def read_record(layout: GuestLayout) -> Optional["ResizeRecord"]:
    """The guest's resize record, None when it has none; a corrupt one is an error (it may be all that tells
    how to go back)."""
    try:
        raw = read_bytes(layout.resize_record)
    except OSError as exc:
        raise VirtfleetError("cannot read the resize record %s: %s" % (layout.resize_record, exc.strerror or exc))
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        data = None
        problem = str(exc)
    else:
        problem = "not a resize record of version %d" % RECORD_VERSION
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or data.get("state") not in STATES:
        raise VirtfleetError("the resize record %s is unreadable (%s); nothing was changed. It holds what a revert "
                             "needs: restore it, or move it aside once the guest is as it should be."
                             % (layout.resize_record, problem))
    return ResizeRecord(layout, data)


class ResizeRecord:
    """One resize of one guest, as recorded; ``save`` writes it (the caller holds the guest's lock)."""

    def __init__(self, layout: GuestLayout, data: Dict[str, Any]) -> None:
        self.layout = layout
        self.data = data

    @classmethod
    def new(cls, layout: GuestLayout, **facts: Any) -> "ResizeRecord":
        data = {"version": RECORD_VERSION, "state": PREPARED, "name": layout.name, "started_at": _now(),
                "done": [], "disks": [], "failure": None}
        data.update(facts)
        return cls(layout, data)

    @property
    def state(self) -> str:
        return self.data["state"]

    @property
    def done(self) -> List[str]:
        return self.data.setdefault("done", [])

    @property
    def disks(self) -> List[Dict[str, Any]]:
        return self.data.setdefault("disks", [])

    def backups(self) -> List[str]:
        return [disk["backup"] for disk in self.disks if disk.get("backup")]

    def step_done(self, step: str) -> None:
        if step not in self.done:
            self.done.append(step)
        self.save()

    def set_state(self, state: str, **facts: Any) -> None:
        self.data["state"] = state
        self.data[state + "_at"] = _now()
        self.data.update(facts)
        self.save()

    def save(self) -> None:
        text = json.dumps(self.data, indent=1, sort_keys=True) + "\n"
        try:
            write_file_atomic(self.layout.resize_record, text.encode("utf-8"), RECORD_MODE)
        except OSError as exc:
            raise VirtfleetError("cannot write the resize record %s: %s" % (self.layout.resize_record,
                                                                            exc.strerror or exc))

    def summary(self) -> str:
        """One line for messages: when it started and what it changes."""
        return "started %s, %s" % (self.data.get("started_at"), "; ".join(
            "%s %s -> %s" % (c.get("what"), c.get("before"), c.get("after")) for c in self.data.get("changes") or [])
            or "no changes recorded")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
