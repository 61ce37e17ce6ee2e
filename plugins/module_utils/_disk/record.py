# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the disk layer's records, read and written here only.

- ``disk.info.json`` in the instance directory: one entry per disk file (its format, kind, and how
  it was made), Nova's ``disk.info``. Every later qemu-img call trusts the recorded format only.
- ``<file>.digest.json`` next to a config drive: the digest of its content (and its file list).
- ``<base>.info.json`` next to a cached formatted base (the image cache's record shape).

Reading needs no lock. Every change happens inside ``locked(layout)``, which holds the guest's lock
(``GuestLayout.lock``) and re-reads the record under it, so that two disks of one guest built at once
never lose each other's entry.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    exclusive_lock, read_bytes, read_json_record, remove_quietly, write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import RECORD_SUFFIX, GuestLayout

LOCK_TIMEOUT = 1800
RECORD_MODE = 0o644
DIGEST_MODE = 0o600


def _json_bytes(data: Dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def read_disk_records(layout: GuestLayout) -> Dict[str, Dict[str, Any]]:
    """{file name: record} of the guest's disks; empty when there is no record file."""
    raw = read_bytes(layout.disk_info)
    if raw is None:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise VirtfleetError(
            "the disk format record %s is corrupt (%s), so no disk of guest %s can be trusted; nothing was changed. "
            "Restore it from a backup, or move it aside and record each disk again by running its task with "
            "adopt: true and the format it was made in (nothing is guessed from a disk's bytes)"
            % (layout.disk_info, exc, layout.name))
    return data if isinstance(data, dict) else {}


def write_disk_records(layout: GuestLayout, records: Dict[str, Dict[str, Any]]) -> None:
    """Replace the whole record file; only for callers holding the guest's lock (see ``locked``)."""
    write_file_atomic(layout.disk_info, _json_bytes(records), RECORD_MODE)


class LockedRecords:
    """The guest's disk records while its lock is held: read once under the lock, written on each change."""

    def __init__(self, layout: GuestLayout) -> None:
        self.layout = layout
        self.entries = read_disk_records(layout)

    def get(self, file_name: str) -> Optional[Dict[str, Any]]:
        return self.entries.get(file_name)

    def set(self, file_name: str, entry: Dict[str, Any]) -> None:
        if self.entries.get(file_name) != entry:
            entries = dict(self.entries, **{file_name: entry})
            write_disk_records(self.layout, entries)
            self.entries = entries

    def drop(self, file_name: str) -> None:
        if file_name in self.entries:
            entries = {name: entry for name, entry in self.entries.items() if name != file_name}
            write_disk_records(self.layout, entries)
            self.entries = entries


@contextlib.contextmanager
def locked(layout: GuestLayout, timeout: float = LOCK_TIMEOUT) -> Iterator[LockedRecords]:
    """Hold the guest's lock; yields its records, read under the lock."""
    with exclusive_lock(layout.lock, timeout, "the disks of guest %s" % layout.name):
        yield LockedRecords(layout)


# ---- a config drive's digest record

def read_digest(layout: GuestLayout, file_name: str) -> Dict[str, Any]:
    """The stored digest record of config drive ``file_name`` ({} when none or unreadable)."""
    return read_json_record(layout.digest_of(file_name)) or {}


def write_digest(layout: GuestLayout, file_name: str, digest: Dict[str, Any]) -> None:
    write_file_atomic(layout.digest_of(file_name), _json_bytes(digest), DIGEST_MODE)


def remove_digest(layout: GuestLayout, file_name: str) -> None:
    remove_quietly(layout.digest_of(file_name))


# ---- cached bases: image_cache's record next to a base, and the record of a formatted base

def base_format_of(base: str, declared: Optional[str]) -> str:
    """The base's format: as declared, else from image_cache's record next to it; never probed."""
    if declared:
        return declared
    record = read_json_record(base + RECORD_SUFFIX) or {}
    if record.get("format"):
        return str(record["format"])
    raise VirtfleetError("the format of base image %s is unknown: pass base_format (the 'format' that "
                         "virtfleet.libvirt.image_cache returned)" % base)


def formatted_base_record(kind: str, size: int, fs_type: str, label: str) -> Dict[str, Any]:
    """The record of a formatted blank base (ephemeral or swap) of this size, filesystem and label."""
    return {"format": "raw", "kind": kind, "size": size, "fs_type": fs_type, "label": label, "virtual_size": size}


def formatted_base_problem(base: str, kind: str, size: int, fs_type: str, label: str) -> Optional[str]:
    """None when the cached base exists and its record says it is what we need."""
    try:
        st = os.stat(base)
    except FileNotFoundError:
        return "missing"
    record = read_json_record(base + RECORD_SUFFIX)
    if record is None:
        return "no record"
    wanted = formatted_base_record(kind, size, fs_type, label)
    if any(record.get(key) != value for key, value in wanted.items()) or st.st_size != size:
        return "record mismatch"
    return None


def write_formatted_base_record(base: str, kind: str, size: int, fs_type: str, label: str) -> None:
    write_file_atomic(base + RECORD_SUFFIX, _json_bytes(formatted_base_record(kind, size, fs_type, label)),
                      RECORD_MODE)
