# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the disk files of one guest, in its instance directory.

Each disk's format is recorded once, when we create the file, in ``disk.info.json`` (Nova's
``disk.info``); every later qemu-img call uses that recorded format with ``-f``. A format is
never probed from a disk a guest has written to: a guest can write a qcow2 header into its raw
disk (CVE-2026-24708).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    atomic_output, read_bytes, write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, format_size, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _image_format as image_format
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qemu_img as qemu_img

DISK_INFO_FILE = "disk.info.json"
DEFAULT_FILE_NAMES = {"root": "disk", "ephemeral": "disk.local", "swap": "disk.swap", "config_drive": "disk.config"}
GUEST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_guest_name(name: str) -> str:
    if not isinstance(name, str) or not GUEST_NAME_RE.match(name) or name in (".", ".."):
        raise VirtfleetError("invalid guest name %r: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit" % (name,))
    return name


def instance_dir_for(params: Dict[str, Any]) -> str:
    return params.get("instance_dir") or os.path.join(params["instances_path"], validate_guest_name(params["guest"]))


def read_disk_info(instance_dir: str) -> Dict[str, Dict[str, Any]]:
    """The per-instance record of disk formats ({file name: {format, kind, ...}}); empty when none."""
    raw = read_bytes(os.path.join(instance_dir, DISK_INFO_FILE))
    if raw is None:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise VirtfleetError("the disk format record %s is corrupt (%s); restore it or remove the guest's disks"
                             % (os.path.join(instance_dir, DISK_INFO_FILE), exc))
    return data if isinstance(data, dict) else {}


def write_disk_info(instance_dir: str, info: Dict[str, Dict[str, Any]]) -> None:
    payload = json.dumps(info, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    write_file_atomic(os.path.join(instance_dir, DISK_INFO_FILE), payload, 0o644)


def base_format_of(base: str, declared: Optional[str]) -> str:
    """The base's format: as declared, else from image_cache's record next to it; never probed."""
    if declared:
        return declared
    raw = read_bytes(base + ".info.json")
    if raw is not None:
        try:
            record = json.loads(raw.decode("utf-8"))
            if record.get("format"):
                return str(record["format"])
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
    raise VirtfleetError("the format of base image %s is unknown: pass base_format (the 'format' that "
                         "virtfleet.libvirt.image_cache returned)" % base)


def _qemu_name(fmt: str) -> str:
    return image_format.QEMU_FORMAT_NAMES.get(fmt, fmt)


def _parse_size_option(value: Any) -> Optional[int]:
    if value is None:
        return None
    try:
        return parse_size(value, "size")
    except SizeError as exc:
        raise VirtfleetError(str(exc))


def _current_virtual_size(path: str, fmt: str) -> int:
    return int(qemu_img.info(path, _qemu_name(fmt))["virtual-size"])


def plan_root_disk(params: Dict[str, Any]) -> Dict[str, Any]:
    """Decide what the root disk needs; reads state only."""
    instance_dir = instance_dir_for(params)
    file_name = params.get("file_name") or DEFAULT_FILE_NAMES["root"]
    path = os.path.join(instance_dir, file_name)
    fmt = params.get("format") or "qcow2"
    backing = params.get("backing") or "overlay"
    if backing == "overlay" and fmt != "qcow2":
        raise VirtfleetError("an overlay root disk is always qcow2; use format: qcow2 with backing: overlay, or "
                             "backing: flat for a raw disk")
    base = params.get("base")
    if not base:
        raise VirtfleetError("a root disk needs base: the path of a cached image (from virtfleet.libvirt.image_cache)")
    if not os.path.isfile(base):
        raise VirtfleetError("base image %s does not exist; fetch it with virtfleet.libvirt.image_cache first" % base)
    base_fmt = base_format_of(base, params.get("base_format"))
    inspection = image_format.inspect_file(base, declared_format=base_fmt)
    size = _parse_size_option(params.get("size"))
    if size is None:
        size = inspection.virtual_size
    if inspection.virtual_size > size:
        raise VirtfleetError(
            "base image %s has a virtual size of %s (%d bytes), larger than the requested root disk size %s "
            "(%d bytes); a root disk cannot be smaller than its image. Ask for a size of at least %s."
            % (base, format_size(inspection.virtual_size), inspection.virtual_size, format_size(size), size,
               format_size(inspection.virtual_size)))

    info = read_disk_info(instance_dir)
    plan: Dict[str, Any] = {"path": path, "file_name": file_name, "instance_dir": instance_dir, "actions": [],
                            "format": fmt, "size": size, "base": base, "base_format": base_fmt, "backing": backing,
                            "warnings": [], "info": info}
    before: Dict[str, Any] = {"path": path, "exists": os.path.exists(path)}
    if not before["exists"]:
        plan["actions"].append("create")
        if backing == "flat" and size > inspection.virtual_size:
            plan["actions"].append("grow")
        plan["before"] = before
        plan["after"] = {"path": path, "exists": True, "format": fmt, "virtual_size": size, "backing": backing}
        return plan

    record = info.get(file_name)
    if record is None:
        raise VirtfleetError(
            "%s exists but has no format record in %s, so its format cannot be trusted (a guest may have written "
            "any header into it). Remove the file to have it rebuilt, or restore the record."
            % (path, os.path.join(instance_dir, DISK_INFO_FILE)))
    fmt = record["format"]
    plan["format"] = fmt
    current = _current_virtual_size(path, fmt)
    before.update({"format": fmt, "virtual_size": current})
    if size < current:
        raise VirtfleetError(
            "refusing to shrink %s from %s (%d bytes) to %s (%d bytes): shrinking destroys the guest's data. "
            "Keep the size at %d bytes or more." % (path, format_size(current), current, format_size(size), size,
                                                      current))
    if size > current:
        plan["actions"].append("grow")
    recorded_base = record.get("base")
    if recorded_base and os.path.realpath(recorded_base) != os.path.realpath(base):
        plan["warnings"].append("%s was built from %s, not from %s; it is left as it is (remove it to rebuild it "
                                "from the new base)" % (path, recorded_base, base))
    plan["before"] = before
    plan["after"] = dict(before, virtual_size=size)
    return plan


def apply_root_disk(plan: Dict[str, Any], params: Dict[str, Any]) -> None:
    path, fmt, size = plan["path"], plan["format"], plan["size"]
    base_q = _qemu_name(plan["base_format"])
    mode = int(params.get("mode") or "0644", 8)
    if "create" in plan["actions"]:
        os.makedirs(plan["instance_dir"], mode=0o755, exist_ok=True)
        with atomic_output(path, mode) as tmp:
            if plan["backing"] == "overlay":
                qemu_img.create(tmp, "qcow2", size, backing_file=os.path.abspath(plan["base"]), backing_fmt=base_q)
            else:
                qemu_img.convert(plan["base"], base_q, tmp, fmt)
                if "grow" in plan["actions"]:
                    qemu_img.resize(tmp, fmt, size)
        info = dict(plan["info"])
        info[plan["file_name"]] = {"format": fmt, "kind": "root", "backing": plan["backing"],
                                   "base": os.path.abspath(plan["base"]), "base_format": plan["base_format"]}
        write_disk_info(plan["instance_dir"], info)
    elif "grow" in plan["actions"]:
        try:
            qemu_img.resize(path, fmt, size)
        except qemu_img.QemuImgError as exc:
            if qemu_img.is_locked_error(exc):
                raise VirtfleetError(
                    "cannot grow %s: a running guest holds it (qemu's image lock). Grow a running guest's disk "
                    "with virtfleet.libvirt.vm_resize, or shut the guest down first." % path)
            raise


def ensure_disk(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Core of the ``guest_disk`` module: one disk file of one guest."""
    kind = params.get("kind") or "root"
    if kind != "root":
        raise VirtfleetError("disk kind %r is not supported yet; supported: root" % kind)
    if params.get("state") == "absent":
        raise VirtfleetError("state=absent is not supported yet for guest_disk")
    plan = plan_root_disk(params)
    if not check_mode and plan["actions"]:
        apply_root_disk(plan, params)
    after = plan["after"]
    return {
        "changed": bool(plan["actions"]),
        "actions": plan["actions"],
        "path": plan["path"],
        "format": plan["format"],
        "virtual_size": after.get("virtual_size"),
        "warnings_list": plan["warnings"],
        "diff": {"before": plan["before"], "after": after},
    }
