"""What /proc says about processes, for tests that kill a module and check what it left running."""

from __future__ import annotations

import os
from typing import List, Optional


def _stat_fields(pid: int) -> Optional[List[str]]:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children_named(parent_pid: int, name: str) -> List[int]:
    """Live processes called ``name`` whose parent is ``parent_pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        try:
            with open("/proc/%s/comm" % entry) as handle:
                comm = handle.read().strip()
        except OSError:
            continue
        if fields is not None and comm == name and int(fields[1]) == parent_pid and fields[0] != "Z":
            found.append(int(entry))
    return found
