# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what the image cache holds, named and described (pure, and cheap to load).

* A cached image is named after the sha1 of its identity (URL without credentials, checksum, cache
  format), as Nova names its bases after the image id; where its file, record and lock live is
  ``_layout.cache_layout``'s business.
* Its record (``<name>.info.json``) says what the file is (format, virtual size, the inspector version
  that passed it) and which file it describes (size and mtime): later runs trust it together with a
  ``stat``, so a re-run costs no re-hash.
* The results every state returns are built here, so that the cached re-run (``cache``), the fetch
  (``fetch``) and removals (``prune``) answer alike.

Everything here is needed by a cached re-run or by more than one of those, and imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, exclusive_lock, read_json_record, remove_quietly, write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.qemu_formats import QEMU_FORMAT_NAMES
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format_consts import INSPECTOR_VERSION
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import Checksum, ImageSpec, public_url
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import RECORD_SUFFIX, CacheLayout

RECORD_VERSION = 1
# Keys a record must have for a re-run to trust it.
RECORD_KEYS = ("format", "source_format", "virtual_size", "size", "mtime_ns", "inspector_version")
LOCK_ADVICE = "raise lock_timeout or find the stuck run"


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------

def image_identity(url: str, checksum: Optional[str], cache_format: str) -> str:
    """What makes two requests the same cached image (credentials are not part of it)."""
    return "url=%s\nchecksum=%s\ncache_format=%s" % (public_url(url), checksum or "", cache_format)


def base_name(url: str, checksum: Optional[str], cache_format: str) -> str:
    """File name of the cached base: sha1 of the identity, like Nova's ``_base`` names."""
    return hashlib.sha1(image_identity(url, checksum, cache_format).encode("utf-8")).hexdigest()


def qemu_name(fmt: str) -> str:
    """qemu's driver name for our format name (a name qemu already uses is returned as it is)."""
    return QEMU_FORMAT_NAMES.get(fmt, fmt)


def cached_format_of(source_format: str, cache_format: str) -> str:
    """Format of the file we keep: what was asked, or for ``source`` the format qemu will see."""
    if cache_format != "source":
        return cache_format
    return "raw" if qemu_name(source_format) == "raw" else source_format


@dataclass(frozen=True)
class Target:
    """The one cached image a present/absent request is about: its name in the cache, and the checksum
    it is verified against (a SUMS reference already resolved to its digest)."""

    layout: CacheLayout
    name: str
    checksum: Optional[Checksum]

    @property
    def checksum_text(self) -> Optional[str]:
        return self.checksum.text if self.checksum else None

    @property
    def path(self) -> str:
        return self.layout.base(self.name)

    @property
    def record_path(self) -> str:
        return self.layout.record(self.name)

    @property
    def lock_path(self) -> str:
        return self.layout.lock(self.name)


def target_of(spec: ImageSpec, checksum: Optional[Checksum]) -> Target:
    text = checksum.text if checksum else None
    return Target(spec.layout, base_name(spec.url, text, spec.cache_format), checksum)


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------

def record_matches(record: Any, stat: Optional[os.stat_result], url: str, checksum: Optional[str]) -> Optional[str]:
    """None when ``record`` describes the file ``stat`` is of, for this request; else why not."""
    if stat is None:
        return "no cached file"
    if not isinstance(record, dict):
        return "no valid record"
    for key in RECORD_KEYS:
        if key not in record:
            return "the record lacks %r" % key
    if record.get("url") != public_url(url):
        return "the record is for another url"
    if (record.get("checksum") or None) != (checksum or None):
        return "the record is for another checksum"
    if record["size"] != stat.st_size or record["mtime_ns"] != stat.st_mtime_ns:
        return "the cached file changed since it was recorded (size or mtime)"
    return None


def read_record(record_path: str) -> Optional[Dict[str, Any]]:
    return read_json_record(record_path)


def record_bytes(record: Dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def write_record(record_path: str, record: Dict[str, Any]) -> None:
    write_file_atomic(record_path, record_bytes(record), 0o644)


def stat_or_none(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


@dataclass
class CachedImage:
    """A cached file together with the record that describes it, as a request found them."""

    path: str
    record: Optional[Dict[str, Any]]
    stat: Optional[os.stat_result]
    mismatch: Optional[str]  # None when the record describes the file for this request

    @property
    def usable(self) -> bool:
        return self.mismatch is None

    @property
    def stale_inspector(self) -> bool:
        return self.record is not None and self.record.get("inspector_version") != INSPECTOR_VERSION


def find_cached(target: Target, url: str) -> CachedImage:
    """What the cache holds for ``target``: reads one record and stats one file, nothing else."""
    stat = stat_or_none(target.path)
    record = read_record(target.record_path)
    return CachedImage(target.path, record, stat, record_matches(record, stat, url, target.checksum_text))


# What diff mode shows of a cached image: what a guest disk built on it would see.
STATE_KEYS = ("format", "source_format", "virtual_size", "size", "checksum")


def image_state(cached: CachedImage) -> Dict[str, Any]:
    """The cached image as diff mode shows it: present (with what its record says), unusable (a file its
    record does not describe, and why), or absent."""
    state: Dict[str, Any] = {"path": cached.path}
    if cached.usable:
        state["state"] = "present"
        state.update((key, cached.record.get(key)) for key in STATE_KEYS)
        state["inspector_version"] = cached.record.get("inspector_version")
    elif cached.stat is not None:
        state.update(state="unusable", reason=cached.mismatch)
    else:
        state["state"] = "absent"
    return state


def result_state(result: Dict[str, Any]) -> Dict[str, Any]:
    """The cached image a present result describes (predicted in check mode), as ``image_state`` shows it."""
    state = {"path": result["path"], "state": "present"}
    state.update((key, result.get(key)) for key in STATE_KEYS)
    state["inspector_version"] = INSPECTOR_VERSION
    return state


# --------------------------------------------------------------------------------------------------
# Locking and housekeeping
# --------------------------------------------------------------------------------------------------

def image_lock(lock_path: str, timeout: float, what: str):
    """Exclusive per-image lock; waits up to ``timeout`` seconds for another run to finish."""
    return exclusive_lock(lock_path, timeout, what, LOCK_ADVICE)


def remove_stale_temps(path: str) -> List[str]:
    """Temporary files of earlier runs for this image (killed mid-download); safe to remove under its lock."""
    import glob  # here: a cached re-run never needs it

    removed = []
    for prefix in (path + TEMP_MARKER, path + RECORD_SUFFIX + TEMP_MARKER):
        for stale in glob.glob(glob.escape(prefix) + "*"):
            remove_quietly(stale)
            removed.append(stale)
    return removed


# --------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------

FETCH = "fetch"
REINSPECT = "reinspect"
VERIFY = "verify"      # verify: full on a current record: checked, not a change
REMOVE = "remove"
UNREPORTED = frozenset({VERIFY})


@dataclass
class ImagePlan:
    """What a run does to the cache, decided from what is on disk: check mode answers with it, a real run
    carries its steps out (each one decided again under the image's lock, where another run may have
    been first)."""

    state: str
    steps: List[str]
    target: Optional[Target] = None          # present, absent: the one image
    cached: Optional[CachedImage] = None     # present: what the cache held when planned
    removals: List[str] = field(default_factory=list)  # absent, pruned: bases to remove
    kept: List[str] = field(default_factory=list)      # pruned: bases kept (used or recent)
    users: List[str] = field(default_factory=list)     # absent: what still uses the image

    @property
    def actions(self) -> List[str]:
        """The steps as results report them."""
        return [step for step in self.steps if step not in UNREPORTED]


def plan_present(spec: ImageSpec, target: Target) -> ImagePlan:
    """Fetch what is missing or no longer matches its record; re-inspect what an older inspector passed
    (or everything, with ``verify: full``); otherwise nothing."""
    cached = find_cached(target, spec.url)
    if not cached.usable:
        steps = [FETCH]
    elif cached.stale_inspector:
        steps = [REINSPECT]
    elif spec.verify == "full":
        steps = [VERIFY]
    else:
        steps = []
    return ImagePlan("present", steps, target=target, cached=cached)


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------

def image_result(path: str, record: Dict[str, Any], stat: os.stat_result, changed: bool, fetched: bool,
                 transfer: Optional[Dict[str, Any]] = None, actions: Optional[List[str]] = None) -> Dict[str, Any]:
    transfer = transfer or {}
    seconds = transfer.get("seconds", 0.0)
    received = transfer.get("received", 0)
    return {
        "changed": changed,
        "path": path,
        "format": record["format"],
        "source_format": record["source_format"],
        "virtual_size": record["virtual_size"],
        "actual_size": stat.st_blocks * 512,
        "size": stat.st_size,
        "checksum": record.get("checksum"),
        "fetched": fetched,
        "bytes": received,
        "seconds": round(seconds, 3),
        "throughput": int(received / seconds) if seconds > 0 else 0,
        "compression": transfer.get("compression") or record.get("compression"),
        "actions": actions or [],
    }


def cached_image_result(cached: CachedImage, actions: Optional[List[str]] = None) -> Dict[str, Any]:
    """The result for a usable cached image; ``actions`` (reinspect) make it a change."""
    return image_result(cached.path, cached.record, cached.stat, changed=bool(actions), fetched=False,
                        actions=actions)


def planned_fetch_result(path: str, spec: ImageSpec, checksum: Optional[str]) -> Dict[str, Any]:
    """Check mode: what a fetch would do, as far as it is known without downloading anything."""
    declared = spec.declared_format
    actions = ["fetch"]
    if declared:
        fmt: Optional[str] = cached_format_of(declared, spec.cache_format)
        if qemu_name(fmt) != qemu_name(declared):
            actions.append("convert")
    else:
        fmt = None if spec.cache_format == "source" else spec.cache_format
    return {"changed": True, "path": path, "format": fmt, "source_format": declared, "virtual_size": None,
            "actual_size": None, "size": None, "checksum": checksum, "fetched": False, "bytes": 0,
            "seconds": 0.0, "throughput": 0, "compression": None, "actions": actions}
