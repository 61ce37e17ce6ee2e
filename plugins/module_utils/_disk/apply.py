# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: carrying out a guest disk plan made by ``_disks.plan_disk``.

Creating a disk (from a base, blank, formatted, or a config drive ISO), growing it, changing its
mode and owner, and removing it. ``_disks`` loads this file only when a plan has something to do,
so a re-run of an unchanged disk loads neither qemu-img's wrapper nor mkfs nor pycdlib.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    atomic_output, exclusive_lock, fsync_dir, remove_quietly, write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import plan as disks
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img as qemu_img


def file_lock(lock_path: str, timeout: float, what: str):
    """Exclusive lock for building the shared base ``what`` (the same lock path image_cache's prune takes)."""
    return exclusive_lock(lock_path, timeout, what)


def _apply_attrs(path: str, wants: Dict[str, Optional[int]], mode_default: Optional[int] = None) -> None:
    mode = wants["mode"] if wants["mode"] is not None else mode_default
    if mode is not None:
        os.chmod(path, mode)
    if wants["uid"] is not None or wants["gid"] is not None:
        os.chown(path, -1 if wants["uid"] is None else wants["uid"], -1 if wants["gid"] is None else wants["gid"])


def _overlay_options(plan: Dict[str, Any]) -> Dict[str, Any]:
    # qemu-img refuses to preallocate a qcow2 overlay unless it has extended L2 entries.
    return {"extended_l2": "on"} if plan["preallocation"] else {}


def _build_from_base(plan: Dict[str, Any], tmp: str, size: int, base_size: Optional[int]) -> None:
    # qemu_img maps our format names to qemu's driver names (and refuses any other).
    if plan["backing"] == "overlay":
        qemu_img.create(tmp, "qcow2", size, backing_file=plan["base"], backing_fmt=plan["base_format"],
                        options=_overlay_options(plan), preallocation=plan["preallocation"])
        return
    options = {"preallocation": plan["preallocation"]} if plan["preallocation"] else None
    qemu_img.convert(plan["base"], plan["base_format"], tmp, plan["format"], options=options)
    if base_size is None or size > base_size:
        qemu_img.resize(tmp, plan["format"], size)


def ensure_formatted_base(plan: Dict[str, Any]) -> None:
    """Make the cached formatted base; the caller holds its lock (another run may have made it meanwhile)."""
    base, kind, size = plan["base"], plan["kind"], plan["virtual_size"]
    if disks._base_record_problem(base, kind, size, plan["fs_type"], plan["label"]) is None:
        return
    os.makedirs(os.path.dirname(base), mode=0o755, exist_ok=True)
    with atomic_output(base, 0o644) as tmp:
        disks._mkfs_mod().make_filesystem(tmp, size, plan["fs_type"], plan["label"])
        # the record first: a base without its record is rebuilt, a record without its base too
        record = json.dumps(disks._base_record(kind, size, plan["fs_type"], plan["label"]), indent=2,
                            sort_keys=True).encode("utf-8") + b"\n"
        write_file_atomic(base + disks.RECORD_SUFFIX, record, 0o644)


def _create_disk(plan: Dict[str, Any], info: Dict[str, Dict[str, Any]]) -> None:
    path, kind = plan["path"], plan["kind"]
    os.makedirs(plan["instance_dir"], mode=0o755, exist_ok=True)
    with atomic_output(path, plan["created_mode"]) as tmp:
        if kind == "root":
            _build_from_base(plan, tmp, plan["virtual_size"], plan["base_size"])
        elif kind in ("ephemeral", "swap"):
            _build_from_base(plan, tmp, plan["virtual_size"], plan["virtual_size"])
        elif kind == "blank":
            qemu_img.create(tmp, plan["format"], plan["virtual_size"], preallocation=plan["preallocation"])
        else:
            disks._config_drive_mod().write_iso(plan["drive_format"], plan["files"], tmp)
        _apply_attrs(tmp, plan["wants"])
    if kind == "config_drive":
        payload = json.dumps({"content_digest": plan["digest"], "drive_format": plan["drive_format"],
                              "files": disks._config_drive_mod().describe(plan["files"])}, indent=2,
                             sort_keys=True).encode("utf-8") + b"\n"
        write_file_atomic(disks._digest_path(plan), payload, 0o600)
    if info.get(plan["file_name"]) != plan["new_record"]:
        info[plan["file_name"]] = plan["new_record"]
        disks.write_disk_info(plan["instance_dir"], info)


def apply_plan(plan: Dict[str, Any]) -> None:
    """Carry out ``plan`` (from ``_disks.plan_disk``, outside check mode)."""
    path, kind, actions = plan["path"], plan["kind"], plan["actions"]
    info = dict(plan["info"])
    if "remove" in actions or "forget" in actions:
        remove_quietly(path)
        remove_quietly(disks._digest_path(plan))
        if plan["file_name"] in info:
            info.pop(plan["file_name"])
            disks.write_disk_info(plan["instance_dir"], info)
        fsync_dir(plan["instance_dir"])
        return
    if kind in ("ephemeral", "swap") and "create" in actions:
        # The base's lock (the one image_cache's prune takes too) is held until the overlay names it.
        with file_lock(plan["lock"], disks.LOCK_TIMEOUT, plan["base"]):
            ensure_formatted_base(plan)
            _create_disk(plan, info)
        return
    if "create" in actions or "rebuild" in actions:
        _create_disk(plan, info)
        return
    if "grow" in actions:
        try:
            qemu_img.resize(path, plan["format"], plan["virtual_size"])
        except qemu_img.QemuImgError as exc:
            if qemu_img.is_locked_error(exc):
                raise disks.locked_grow_error(path)
            raise
    if "chmod" in actions or "chown" in actions:
        _apply_attrs(path, plan["wants"])
