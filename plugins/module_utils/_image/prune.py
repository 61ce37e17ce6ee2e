# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: removing images from the cache (``state: absent`` and ``pruned``).

A cached image is in use while it is in the backing chain of a disk under ``<instances_path>``.
A disk whose format its instance recorded is asked to qemu-img (always with its format); for any
other file only its own qcow2 header is read, in Python, so that a guest cannot make qemu-img
follow file names it wrote. Each removal is re-checked under the image's lock. The cache's
layout is ``_image_cache``.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, fsync_dir, read_json_record, remove_quietly,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import (
    BASE_DIR, LOCK_DIR, RECORD_SUFFIX, base_name, cache_paths, image_lock, image_request, public_url, qemu_name,
    remove_stale_temps, resolve_checksum, stat_or_none,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img as qemu_img

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(value: Any) -> float:
    """Seconds in ``value``: a number of seconds or ``30m``, ``24h``, ``7d``, ``2w``."""
    if isinstance(value, bool):
        raise VirtfleetError("min_unused_age: expected a duration such as 24h, got %r" % (value,))
    if isinstance(value, (int, float)):
        if value < 0:
            raise VirtfleetError("min_unused_age cannot be negative (%r)" % (value,))
        return float(value)
    match = _AGE_RE.match(str(value))
    if not match:
        raise VirtfleetError("min_unused_age: cannot parse %r; use seconds or a number with s, m, h, d or w" % (value,))
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def bases_in_use(instances_path: str) -> Dict[str, List[str]]:
    """{real path of a cached base: [disks using it]} from the backing chain of every disk under the tree."""
    base_dir = os.path.realpath(os.path.join(instances_path, BASE_DIR))
    used: Dict[str, List[str]] = {}
    try:
        entries = sorted(os.listdir(instances_path))
    except FileNotFoundError:
        return used
    for entry in entries:
        instance_dir = os.path.join(instances_path, entry)
        if entry in (BASE_DIR, LOCK_DIR) or not os.path.isdir(instance_dir):
            continue
        info = read_json_record(os.path.join(instance_dir, "disk.info.json")) or {}
        for file_name in sorted(os.listdir(instance_dir)):
            disk = os.path.join(instance_dir, file_name)
            if not os.path.isfile(disk) or file_name.endswith(".json") or file_name.endswith(".xml") \
                    or TEMP_MARKER in file_name:
                continue
            disk_info = info.get(file_name) if isinstance(info.get(file_name), dict) else {}
            recorded_base = disk_info.get("base")
            if recorded_base:
                used.setdefault(os.path.realpath(recorded_base), []).append(disk)
            for backing in _backing_chain(disk, disk_info.get("format")):
                real = os.path.realpath(backing)
                if os.path.dirname(real) == base_dir:
                    used.setdefault(real, []).append(disk)
    return used


def _backing_chain(disk: str, fmt: Optional[str]) -> List[str]:
    """Backing files of ``disk``.

    A disk whose format we recorded as qcow2 is asked to qemu-img (with -f, never probed). For a disk without
    a record only its own qcow2 header is read, in Python: a guest can write a fake qcow2 header into a raw
    disk, and qemu-img must not be made to follow the file names such a header gives.
    """
    if fmt is None:
        backing = qcow2_backing_name(disk)
        if backing and not os.path.isabs(backing):
            backing = os.path.join(os.path.dirname(disk), backing)
        return [backing] if backing else []
    if qemu_name(fmt) != "qcow2":
        return []
    try:
        top = qemu_img.info(disk, "qcow2", backing_chain=True)
    except qemu_img.QemuImgError:
        # unreadable now (locked, damaged): fall back to the header so that a base is never pruned by mistake
        backing = qcow2_backing_name(disk)
        return [os.path.join(os.path.dirname(disk), backing)] if backing else []
    files = []
    for layer in top.get("chain") or [top]:
        backing = layer.get("full-backing-filename") or layer.get("backing-filename")
        if backing:
            if not os.path.isabs(backing):
                backing = os.path.join(os.path.dirname(layer.get("filename") or disk), backing)
            files.append(backing)
    return files


def qcow2_backing_name(path: str) -> Optional[str]:
    """The backing file name written in a qcow2 header, read without qemu; None for anything else."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset = int.from_bytes(header[8:16], "big")
            length = int.from_bytes(header[16:20], "big")
            if not offset or not 0 < length <= 1023:
                return None
            handle.seek(offset)
            name = handle.read(length)
    except OSError:
        return None
    return name.decode("utf-8", "replace") or None


def _remove_base(paths: Dict[str, str]) -> None:
    remove_quietly(paths["path"])
    remove_quietly(paths["record"])
    remove_stale_temps(paths["path"])
    fsync_dir(paths["base_dir"])


def ensure_absent(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    req = image_request(params)
    checksum = resolve_checksum(params)
    checksum_text = "%s:%s" % checksum if checksum else None
    paths = cache_paths(params["instances_path"], base_name(req["url"], checksum_text, req["cache_format"]))
    result = {"changed": False, "path": paths["path"], "fetched": False, "actions": [], "users": []}
    if stat_or_none(paths["path"]) is None and stat_or_none(paths["record"]) is None:
        return result
    users = bases_in_use(params["instances_path"]).get(os.path.realpath(paths["path"]), [])
    result["users"] = users
    if users and not params.get("force"):
        raise VirtfleetError("the cached image %s (%s) is still used by %s; remove those disks first or pass "
                             "force: true" % (paths["path"], public_url(req["url"]), ", ".join(users)), users=users)
    result.update(changed=True, actions=["remove"])
    if check_mode:
        return result
    with image_lock(paths["lock"], float(params.get("lock_timeout") or 1800), public_url(req["url"])):
        _remove_base(paths)
    return result


def ensure_pruned(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Remove bases in no disk's backing chain and unused for ``min_unused_age``; re-checked under each lock."""
    instances_path = params["instances_path"]
    min_age = parse_age(params.get("min_unused_age", "24h"))
    base_dir = os.path.join(instances_path, BASE_DIR)
    result: Dict[str, Any] = {"changed": False, "removed": [], "kept": [], "actions": [], "fetched": False}
    try:
        names = sorted(os.listdir(base_dir))
    except FileNotFoundError:
        return result
    used = bases_in_use(instances_path)
    now = time.time()
    for name in names:
        if name.endswith(RECORD_SUFFIX) or TEMP_MARKER in name or not os.path.isfile(os.path.join(base_dir, name)):
            continue
        paths = cache_paths(instances_path, name)
        if os.path.realpath(paths["path"]) in used:
            result["kept"].append(paths["path"])
            continue
        stat = stat_or_none(paths["path"])
        if stat is None or now - _last_use(stat, paths["record"]) < min_age:
            if stat is not None:
                result["kept"].append(paths["path"])
            continue
        result["removed"].append(paths["path"])
        if check_mode:
            continue
        with image_lock(paths["lock"], float(params.get("lock_timeout") or 1800), paths["path"]):
            stat = stat_or_none(paths["path"])
            if stat is None or time.time() - _last_use(stat, paths["record"]) < min_age:
                result["removed"].remove(paths["path"])
                continue
            _remove_base(paths)
    result["changed"] = bool(result["removed"])
    result["actions"] = ["remove"] * len(result["removed"])
    return result


def _last_use(stat: os.stat_result, record_path: str) -> float:
    """When the base was last used: read by a guest (atime), fetched or converted (mtime), or re-inspected."""
    record = stat_or_none(record_path)
    return max(stat.st_atime, stat.st_mtime, record.st_mtime if record else 0.0)
