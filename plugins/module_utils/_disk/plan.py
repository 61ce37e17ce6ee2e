# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the disk files of one guest, in its instance directory.

Kinds: ``root`` (overlay on, or flat copy of, a cached base), ``ephemeral`` (formatted data disk),
``swap`` (swap signature), ``blank`` (unformatted) and ``config_drive`` (ISO9660 metadata volume).

Each disk's format is recorded once, when we create the file, in ``disk.info.json`` (Nova's
``disk.info``); every later qemu-img call uses that recorded format with ``-f``. A format is
never probed from a disk a guest has written to: a guest can write a qcow2 header into its raw
disk (CVE-2026-24708).

Formatted blank bases (ephemeral and swap) are cached like Nova's: one file per (size, fs type,
label) in ``<instances_path>/_base/`` (``ephemeral_<size>_<fs>[_<label>]``, ``swap_<size>[_<label>]``)
with the same ``<base>.info.json`` record the image cache writes, made under an flock in
``<instances_path>/locks/`` under a temporary name and renamed into place; guests get qcow2
overlays on them, or flat copies.

Every operation is planned first (``plan_disk``: reads only), then carried out (``apply_plan``, in
``_disk_apply``), so check mode returns exactly what a real run would do. A re-run of a disk that
needs nothing loads only the planning: an existing disk's virtual size is read from the file in
Python (``_virtual_size``, in the recorded format), and qemu-img, mkfs and pycdlib are loaded only
when there is something for them to do.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import stat as statmod
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, read_bytes, write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import validate_guest_name
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, format_size, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.virtual_size import recorded_virtual_size


def _config_drive_mod():
    """Imported when a config drive is planned: a re-run of other disks does not pay for it."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive
    return _config_drive


def _mkfs_mod():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import mkfs as _mkfs
    return _mkfs


def _qemu_img_mod():
    """Imported when qemu-img must run (a new disk, a growth, an unusual header): not on a plain re-run."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img as _qemu_img
    return _qemu_img


DISK_INFO_FILE = "disk.info.json"
BASE_DIR = "_base"
LOCK_DIR = "locks"
RECORD_SUFFIX = ".info.json"
DIGEST_SUFFIX = ".digest.json"
KINDS = ("root", "ephemeral", "swap", "blank", "config_drive")
DEFAULT_FILE_NAMES = {"root": "disk", "ephemeral": "disk.local", "swap": "disk.swap", "config_drive": "disk.config",
                      "blank": "disk.blank"}
DISK_FORMATS = ("qcow2", "raw")
DEFAULT_MODES = {"config_drive": 0o600}
DEFAULT_MODE = 0o644
PREALLOCATIONS = ("off", "metadata", "falloc", "full")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LOCK_TIMEOUT = 1800
QEMU_CONF = "/etc/libvirt/qemu.conf"


def validate_file_name(name: str) -> str:
    if not isinstance(name, str) or not FILE_NAME_RE.match(name) or name == DISK_INFO_FILE \
            or name.endswith((".json", ".xml")) or TEMP_MARKER in name:
        raise VirtfleetError("invalid file_name %r: use a plain file name (letters, digits, '.', '_' or '-'), not a "
                             "path, and not one of the instance directory's records" % (name,))
    return name


def instance_dir_for(params: Dict[str, Any]) -> str:
    validate_guest_name(params["guest"])
    return params.get("instance_dir") or os.path.join(params["instances_path"], params["guest"])


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
    raw = read_bytes(base + RECORD_SUFFIX)
    if raw is not None:
        try:
            record = json.loads(raw.decode("utf-8"))
            if record.get("format"):
                return str(record["format"])
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
    raise VirtfleetError("the format of base image %s is unknown: pass base_format (the 'format' that "
                         "virtfleet.libvirt.image_cache returned)" % base)


def _parse_size_option(value: Any) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        return parse_size(value, "size")
    except SizeError as exc:
        raise VirtfleetError(str(exc))


def size_token(num_bytes: int) -> str:
    """Short exact size for file names: 1G, 512M, 64K or bytes."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if num_bytes and num_bytes % factor == 0:
            return "%d%s" % (num_bytes // factor, unit)
    return str(num_bytes)


def formatted_base_name(kind: str, size: int, fs_type: str, label: str) -> str:
    """Cache file name of a formatted blank base: ephemeral_<size>_<fs>[_<label>] or swap_<size>[_<label>]."""
    if kind == "swap":
        name = "swap_%s" % size_token(size)
    else:
        name = "ephemeral_%s_%s" % (size_token(size), fs_type)
    return name + ("_" + label if label else "")


def _current_virtual_size(path: str, fmt: str, st: Optional[os.stat_result] = None) -> int:
    """Virtual size of our disk in its recorded format: read in Python, or by qemu-img (-f) when unusual."""
    size = recorded_virtual_size(path, fmt, st)
    if size is None:
        size = int(_qemu_img_mod().info(path, fmt)["virtual-size"])
    return size


# ---------------------------------------------------------------------------------------------
# Ownership and permissions
# ---------------------------------------------------------------------------------------------

def parse_mode(value: Any) -> Optional[int]:
    """An octal mode ('0600', '600', 0o600 as an int); None when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise VirtfleetError("mode must be an octal number such as '0600', got %r" % (value,))
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        if not re.match(r"^0?[0-7]{3,4}$", text):
            raise VirtfleetError("mode must be an octal number such as '0600' (quote it in YAML), got %r" % (value,))
        mode = int(text, 8)
    if mode < 0 or mode > 0o7777:
        raise VirtfleetError("mode %r is out of range" % (value,))
    return mode


def resolve_owner(owner: Any) -> Optional[int]:
    if owner is None or owner == "":
        return None
    text = str(owner)
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise VirtfleetError("owner %r is not a user on the hypervisor" % (owner,))


def resolve_group(group: Any) -> Optional[int]:
    if group is None or group == "":
        return None
    text = str(group)
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise VirtfleetError("group %r is not a group on the hypervisor" % (group,))


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _attrs_of(st: os.stat_result) -> Dict[str, Any]:
    return {"mode": "%04o" % statmod.S_IMODE(st.st_mode), "owner": _user_name(st.st_uid),
            "group": _group_name(st.st_gid)}


def _attr_wants(params: Dict[str, Any]) -> Dict[str, Optional[int]]:
    return {"mode": parse_mode(params.get("mode")), "uid": resolve_owner(params.get("owner")),
            "gid": resolve_group(params.get("group"))}


def _attr_actions(st: os.stat_result, wants: Dict[str, Optional[int]]) -> List[str]:
    actions = []
    if wants["mode"] is not None and statmod.S_IMODE(st.st_mode) != wants["mode"]:
        actions.append("chmod")
    if (wants["uid"] is not None and st.st_uid != wants["uid"]) or \
            (wants["gid"] is not None and st.st_gid != wants["gid"]):
        actions.append("chown")
    return actions


def _attrs_after(before: Dict[str, Any], wants: Dict[str, Optional[int]], created_mode: int) -> Dict[str, Any]:
    if before.get("mode"):
        after = {key: before[key] for key in ("mode", "owner", "group")}
    else:
        after = {"mode": "%04o" % created_mode, "owner": _user_name(os.geteuid()), "group": _group_name(os.getegid())}
    if wants["mode"] is not None:
        after["mode"] = "%04o" % wants["mode"]
    if wants["uid"] is not None:
        after["owner"] = _user_name(wants["uid"])
    if wants["gid"] is not None:
        after["group"] = _group_name(wants["gid"])
    return after


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

def _resolve_format(kind: str, params: Dict[str, Any]) -> Dict[str, Optional[str]]:
    """(disk file format, config drive layout) for ``kind`` from the ``format`` option."""
    fmt = params.get("format")
    if kind == "config_drive":
        if fmt in (None, "config-2", "nocloud"):
            return {"format": "raw", "drive_format": fmt or "config-2"}
        raise VirtfleetError("a config drive's format is config-2 (OpenStack layout) or nocloud (label cidata); "
                             "the file itself is always a raw ISO9660 image (got format: %s)" % fmt)
    if fmt in ("config-2", "nocloud"):
        raise VirtfleetError("format %s is for kind: config_drive only; a %s disk is qcow2 or raw" % (fmt, kind))
    return {"format": fmt or "qcow2", "drive_format": None}


def _prealloc(params: Dict[str, Any]) -> Optional[str]:
    value = params.get("preallocation")
    return None if value in (None, "off") else value


def _base_plan(params: Dict[str, Any], kind: str) -> Dict[str, Any]:
    instance_dir = instance_dir_for(params)
    file_name = validate_file_name(params.get("file_name") or DEFAULT_FILE_NAMES[kind])
    path = os.path.join(instance_dir, file_name)
    formats = _resolve_format(kind, params)
    info = read_disk_info(instance_dir)
    st = _lstat(path)
    if st is not None and not statmod.S_ISREG(st.st_mode):
        raise VirtfleetError("%s exists and is not a regular file; refusing to touch it" % path)
    created_mode = parse_mode(params.get("mode"))
    if created_mode is None:
        created_mode = DEFAULT_MODES.get(kind, DEFAULT_MODE)
    return {"kind": kind, "path": path, "file_name": file_name, "instance_dir": instance_dir, "actions": [],
            "format": formats["format"], "drive_format": formats["drive_format"], "warnings": [], "info": info,
            "record": info.get(file_name), "new_record": None, "stat": st, "wants": _attr_wants(params),
            "created_mode": created_mode, "preallocation": _prealloc(params),
            "before": {"path": path, "exists": st is not None}}


def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _require_record(plan: Dict[str, Any]) -> Dict[str, Any]:
    record = plan["record"]
    if not isinstance(record, dict) or not record.get("format"):
        raise VirtfleetError(
            "%s exists but has no format record in %s, so its format cannot be trusted (a guest may have written "
            "any header into it). Remove the file to have it rebuilt, or restore the record."
            % (plan["path"], os.path.join(plan["instance_dir"], DISK_INFO_FILE)))
    kind = record.get("kind") or "root"
    if kind != plan["kind"]:
        raise VirtfleetError("%s is recorded as a %s disk, not %s; use another file_name or remove it first"
                             % (plan["path"], kind, plan["kind"]))
    return record


def _check_not_locked(path: str, fmt: str) -> None:
    """Fail clearly when a running guest holds the image (qemu's lock), before anything is changed."""
    qemu_img = _qemu_img_mod()
    try:
        qemu_img.info(path, fmt, force_share=False)
    except qemu_img.QemuImgError as exc:
        if qemu_img.is_locked_error(exc):
            raise locked_grow_error(path, nothing_changed=True)
        raise


def locked_grow_error(path: str, nothing_changed: bool = False) -> VirtfleetError:
    """The error for a grow that qemu's image lock forbids (a running guest holds the disk)."""
    return VirtfleetError(
        "cannot grow %s: a running guest holds it (qemu's image lock). Grow a running guest's disk with "
        "virtfleet.libvirt.vm_resize, or shut the guest down first%s." % (path, "; nothing was changed"
                                                                          if nothing_changed else ""))


def _plan_existing_size(plan: Dict[str, Any], size: Optional[int], growable: bool) -> None:
    """Compare the recorded disk's virtual size with ``size``: grow, refuse to shrink, or nothing."""
    path, fmt = plan["path"], plan["format"]
    current = plan.get("current_size")
    if current is None:
        current = _current_virtual_size(path, fmt, plan["stat"])
    plan["before"]["virtual_size"] = current
    plan["virtual_size"] = current
    if size is None or size == current:
        return
    if size < current:
        raise VirtfleetError(
            "refusing to shrink %s from %s (%d bytes) to %s (%d bytes): shrinking destroys the guest's data. "
            "Keep the size at %d bytes or more."
            % (path, format_size(current), current, format_size(size), size, current))
    if not growable:
        raise VirtfleetError(
            "refusing to grow the %s disk %s from %s to %s in place: its %s was made for %d bytes and would not "
            "cover the new space. Remove it (state: absent) and run again to rebuild it empty, or grow it from "
            "inside the guest after virtfleet.libvirt.vm_resize." % (
                plan["kind"], path, format_size(current), format_size(size),
                "swap signature" if plan["kind"] == "swap" else "filesystem", current))
    _check_not_locked(path, fmt)
    plan["actions"].append("grow")
    plan["virtual_size"] = size


def plan_root_disk(params: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """Decide what the root disk needs; reads state only.

    In check mode the base may not exist yet (image_cache, in check mode too, only predicted its
    download); a missing disk is then predicted as created at ``size``.
    """
    plan = _base_plan(params, "root")
    backing = params.get("backing") or "overlay"
    if backing == "overlay" and plan["format"] != "qcow2":
        raise VirtfleetError("an overlay root disk is always qcow2; use format: qcow2 with backing: overlay, or "
                             "backing: flat for a raw disk")
    base = params.get("base")
    if not base:
        raise VirtfleetError("a root disk needs base: the path of a cached image (from virtfleet.libvirt.image_cache)")
    if not os.path.isfile(base):
        if check_mode and plan["stat"] is None and params.get("base_format"):
            return _predict_root_on_missing_base(plan, params, backing, base)
        raise VirtfleetError("base image %s does not exist; fetch it with virtfleet.libvirt.image_cache first" % base)
    base_fmt = base_format_of(base, params.get("base_format"))
    size = _parse_size_option(params.get("size"))
    plan.update(backing=backing, base=os.path.abspath(base), base_format=base_fmt)
    if plan["stat"] is None:
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format import inspect_file

        inspection = inspect_file(base, declared_format=base_fmt)
        if size is None:
            size = inspection.virtual_size
        if inspection.virtual_size > size:
            raise VirtfleetError(
                "base image %s has a virtual size of %s (%d bytes), larger than the requested root disk size %s "
                "(%d bytes); a root disk cannot be smaller than its image. Ask for a size of at least %s."
                % (base, format_size(inspection.virtual_size), inspection.virtual_size, format_size(size), size,
                   format_size(inspection.virtual_size)))
        plan["actions"].append("create")
        if backing == "flat" and size > inspection.virtual_size:
            plan["actions"].append("grow")
        plan["virtual_size"] = size
        plan["base_size"] = inspection.virtual_size
        plan["new_record"] = {"format": plan["format"], "kind": "root", "backing": backing, "base": plan["base"],
                              "base_format": base_fmt}
        return plan
    record = _require_record(plan)
    plan["format"] = record["format"]
    _plan_existing_size(plan, size, growable=True)
    recorded_base = record.get("base")
    if recorded_base and os.path.realpath(recorded_base) != os.path.realpath(base):
        plan["warnings"].append("%s was built from %s, not from %s; it is left as it is (remove it to rebuild it "
                                "from the new base)" % (plan["path"], recorded_base, base))
    plan["base"] = recorded_base or plan["base"]
    plan["backing"] = record.get("backing") or backing
    return plan


def _predict_root_on_missing_base(plan: Dict[str, Any], params: Dict[str, Any], backing: str,
                                  base: str) -> Dict[str, Any]:
    """Check mode only: the root disk that will be built once image_cache has fetched ``base``."""
    size = _parse_size_option(params.get("size"))
    plan.update(backing=backing, base=os.path.abspath(base), base_format=params["base_format"], virtual_size=size)
    plan["actions"].append("create")
    plan["warnings"].append("base image %s is not in the cache yet (check mode); the root disk is predicted from "
                            "the requested size only" % base)
    return plan


def _backing_for(params: Dict[str, Any], fmt: str) -> str:
    backing = params.get("backing") or ("overlay" if fmt == "qcow2" else "flat")
    if backing == "overlay" and fmt != "qcow2":
        raise VirtfleetError("an overlay is always qcow2; use format: qcow2, or backing: flat for a raw disk")
    return backing


def plan_formatted_disk(params: Dict[str, Any], kind: str) -> Dict[str, Any]:
    """ephemeral or swap: an overlay on (or copy of) a cached formatted base of (size, fs type, label)."""
    plan = _base_plan(params, kind)
    size = _parse_size_option(params.get("size"))
    if size is None:
        raise VirtfleetError("a %s disk needs size (such as 10G)" % kind)
    if kind == "swap":
        fs_type, label = "swap", params.get("label") or ""
    else:
        fs_type = params.get("fs_type") or "ext4"
        label = params.get("label")
        label = "ephemeral0" if label is None else label
    if not _made_as_asked(plan, fs_type, label, size):
        label = _mkfs_mod().validate_label(fs_type, label)
        _mkfs_mod().validate_size(fs_type, size)
    plan.update(fs_type=fs_type, label=label, virtual_size=size)
    backing = _backing_for(params, plan["format"])
    base_name = formatted_base_name(kind, size, fs_type, label)
    base = os.path.join(params["instances_path"], BASE_DIR, base_name)
    plan.update(backing=backing, base=base, base_format="raw",
                lock=os.path.join(params["instances_path"], LOCK_DIR, base_name + ".lock"))
    plan["before"].update({"fs_type": None, "label": None})
    if plan["stat"] is not None:
        record = _require_record(plan)
        plan["format"] = record["format"]
        plan["backing"] = record.get("backing") or backing
        plan["base"] = record.get("base") or base
        plan["before"].update(fs_type=record.get("fs_type"), label=record.get("label"))
        if (record.get("fs_type"), record.get("label") or "") != (fs_type, label):
            raise VirtfleetError(
                "%s was formatted as %s with label %r; refusing to reformat it as %s with label %r (that destroys its "
                "data). Remove it (state: absent) first, or use another file_name."
                % (plan["path"], record.get("fs_type"), record.get("label") or "", fs_type, label))
        _plan_existing_size(plan, size, growable=False)
        return plan
    if _base_record_problem(base, kind, size, fs_type, label) is not None:
        _mkfs_mod().find_tool(fs_type)  # a missing tool fails now, in check mode too, before anything is written
        plan["actions"].append("create_base")
    plan["actions"].append("create")
    plan["new_record"] = {"format": plan["format"], "kind": kind, "backing": backing, "fs_type": fs_type,
                          "label": label, "base_format": "raw"}
    plan["new_record"]["base" if backing == "overlay" else "copied_from"] = base
    return plan


def _made_as_asked(plan: Dict[str, Any], fs_type: str, label: str, size: int) -> bool:
    """True when the existing ephemeral or swap disk is recorded as formatted as asked and has the size asked.

    Such a disk was made from these very options, validated then by the mkfs rules (and it is never
    resized), so a re-run need not load those rules again. Anything else (no disk, no or another
    record, another size, a size only qemu-img can tell) is validated as for a new disk, before
    any other check, as always.
    """
    record = plan["record"]
    if plan["stat"] is None or not isinstance(record, dict) or not record.get("format") \
            or (record.get("kind") or "root") != plan["kind"] \
            or (record.get("fs_type"), record.get("label") or "") != (fs_type, label):
        return False
    current = recorded_virtual_size(plan["path"], record["format"], plan["stat"])
    if current is None:
        return False
    plan["current_size"] = current
    return current == size


def _base_record(kind: str, size: int, fs_type: str, label: str) -> Dict[str, Any]:
    return {"format": "raw", "kind": kind, "size": size, "fs_type": fs_type, "label": label,
            "virtual_size": size}


def _base_record_problem(base: str, kind: str, size: int, fs_type: str, label: str) -> Optional[str]:
    """None when the cached base exists and its record says it is what we need."""
    try:
        st = os.stat(base)
    except FileNotFoundError:
        return "missing"
    raw = read_bytes(base + RECORD_SUFFIX)
    try:
        record = json.loads(raw.decode("utf-8")) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):
        return "no record"
    wanted = _base_record(kind, size, fs_type, label)
    if any(record.get(key) != value for key, value in wanted.items()) or st.st_size != size:
        return "record mismatch"
    return None


def plan_blank_disk(params: Dict[str, Any]) -> Dict[str, Any]:
    plan = _base_plan(params, "blank")
    size = _parse_size_option(params.get("size"))
    if size is None:
        raise VirtfleetError("a blank disk needs size (such as 10G)")
    if size % 512:
        raise VirtfleetError("the size of a disk must be a multiple of 512 bytes (asked for %d bytes)" % size)
    if plan["stat"] is not None:
        record = _require_record(plan)
        plan["format"] = record["format"]
        _plan_existing_size(plan, size, growable=True)
        return plan
    plan["actions"].append("create")
    plan["virtual_size"] = size
    plan["new_record"] = {"format": plan["format"], "kind": "blank"}
    return plan


def _digest_path(plan: Dict[str, Any]) -> str:
    return os.path.join(plan["instance_dir"], plan["file_name"] + DIGEST_SUFFIX)


def _read_digest(path: str) -> Dict[str, Any]:
    raw = read_bytes(path)
    if raw is None:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def plan_config_drive(params: Dict[str, Any]) -> Dict[str, Any]:
    plan = _base_plan(params, "config_drive")
    files = _config_drive_mod().drive_files(dict(params, drive_format=plan["drive_format"]))
    digest = _config_drive_mod().content_digest(plan["drive_format"], files)
    plan.update(files=files, digest=digest, label=_config_drive_mod().LABELS[plan["drive_format"]])
    stored = _read_digest(_digest_path(plan)) if plan["stat"] is not None else {}
    plan["before"].update(drive_format=stored.get("drive_format"), files=stored.get("files"))
    plan["new_record"] = {"format": "raw", "kind": "config_drive", "drive_format": plan["drive_format"],
                          "label": plan["label"]}
    if plan["stat"] is None:
        plan["actions"].append("create")
    else:
        record = _require_record(plan)
        if record.get("format") != "raw":
            raise VirtfleetError("%s is recorded with format %s; a config drive is raw"
                                 % (plan["path"], record.get("format")))
        if stored.get("content_digest") != digest:
            plan["actions"].append("rebuild")
    plan["virtual_size"] = None
    _warn_dynamic_ownership(plan)
    return plan


def _warn_dynamic_ownership(plan: Dict[str, Any]) -> None:
    """A 0600 root-owned drive is readable by qemu only because libvirt chowns it at start."""
    if plan["wants"]["uid"] is not None:
        return
    raw = read_bytes(QEMU_CONF) or b""
    if re.search(rb"^\s*dynamic_ownership\s*=\s*0\b", raw, re.M):
        plan["warnings"].append("dynamic_ownership is off in %s: qemu cannot read the mode %04o config drive %s "
                                "unless you set owner to the qemu user (libvirt-qemu on Debian)"
                                % (QEMU_CONF, plan["created_mode"], plan["path"]))


def plan_absent(params: Dict[str, Any], kind: str) -> Dict[str, Any]:
    plan = _base_plan(params, kind)
    plan["referenced_by"] = []
    if plan["stat"] is not None:
        users = domains_referencing(params.get("uri") or "qemu:///system", plan["path"])
        plan["referenced_by"] = users
        if users and not params.get("force"):
            raise VirtfleetError(
                "refusing to remove %s: it is still used by the defined libvirt domain(s) %s. Undefine them (or "
                "remove the disk from their definition) first, or pass force: true; nothing was changed."
                % (plan["path"], ", ".join(users)), referenced_by=users)
        plan["actions"].append("remove")
    elif plan["record"] is not None or os.path.exists(_digest_path(plan)):
        plan["actions"].append("forget")
    return plan


def _disk_sources(xml: str) -> List[str]:
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    sources = []
    for disk in root.iter("disk"):
        for source in disk.findall("source"):
            for attr in ("file", "dev"):
                if source.get(attr):
                    sources.append(source.get(attr))
    return sources


def domains_referencing(uri: str, path: str) -> List[str]:
    """Names of defined or running domains whose disks name ``path`` (persistent and live definitions)."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import libvirt_conn as conn_mod

    wanted = os.path.realpath(path)
    users = []
    with conn_mod.connect(uri) as conn:
        for dom in conn.listAllDomains(0):
            xmls = []
            for flags in (getattr(conn_mod.libvirt, "VIR_DOMAIN_XML_INACTIVE", 2), 0):
                try:
                    xmls.append(dom.XMLDesc(flags))
                except conn_mod.libvirt.libvirtError:
                    continue
            if any(os.path.realpath(src) == wanted for xml in xmls for src in _disk_sources(xml)):
                users.append(dom.name())
    return sorted(set(users))


def plan_disk(params: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """The whole plan for one disk: actions, before and after; nothing is changed."""
    kind = params.get("kind") or "root"
    if kind not in KINDS:
        raise VirtfleetError("unknown disk kind %r; use one of %s" % (kind, ", ".join(KINDS)))
    state = params.get("state") or "present"
    if params.get("preallocation") not in (None,) + PREALLOCATIONS:
        raise VirtfleetError("preallocation must be one of %s" % ", ".join(PREALLOCATIONS))
    if state == "absent":
        plan = plan_absent(params, kind)
        plan["after"] = {"path": plan["path"], "exists": False}
        if plan["stat"] is not None:
            plan["before"].update(_attrs_of(plan["stat"]))
            plan["before"]["format"] = (plan["record"] or {}).get("format")
        return plan
    if kind == "root":
        plan = plan_root_disk(params, check_mode)
    elif kind in ("ephemeral", "swap"):
        plan = plan_formatted_disk(params, kind)
    elif kind == "blank":
        plan = plan_blank_disk(params)
    else:
        plan = plan_config_drive(params)
    if plan["preallocation"] and kind == "config_drive":
        raise VirtfleetError("preallocation does not apply to a config drive")
    st = plan["stat"]
    if st is not None:
        plan["before"].update(_attrs_of(st))
        plan["before"]["format"] = plan["format"]
        plan["actions"].extend(_attr_actions(st, plan["wants"]))
    after = {key: value for key, value in plan["before"].items() if key not in ("mode", "owner", "group")}
    after.update(path=plan["path"], exists=True, format=plan["format"])
    if plan.get("virtual_size") is not None:
        after["virtual_size"] = plan["virtual_size"]
    if kind in ("ephemeral", "swap"):
        after.update(fs_type=plan["fs_type"], label=plan["label"])
    if kind == "config_drive":
        after.update(drive_format=plan["drive_format"], files=_config_drive_mod().describe(plan["files"]))
    after.update(_attrs_after(plan["before"] if st is not None else {}, plan["wants"], plan["created_mode"]))
    plan["after"] = after
    return plan


# ---------------------------------------------------------------------------------------------
# Carrying out a plan
# ---------------------------------------------------------------------------------------------

def apply_plan(plan: Dict[str, Any]) -> None:
    """Carry out ``plan`` (see ``_disk_apply``, loaded only when there is something to do)."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.apply import apply_plan as apply

    apply(plan)


def _xml_disk(plan: Dict[str, Any]) -> Dict[str, Any]:
    if plan["kind"] == "config_drive":
        return {"path": plan["path"], "format": "raw", "device": "cdrom", "readonly": True}
    return {"path": plan["path"], "format": plan["format"], "device": "disk", "readonly": False}


def ensure_disk(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Core of the ``guest_disk`` module: one disk file of one guest."""
    plan = plan_disk(params, check_mode)
    if not check_mode and plan["actions"]:
        apply_plan(plan)
    after = plan["after"]
    present = (params.get("state") or "present") == "present"
    result: Dict[str, Any] = {
        "changed": bool(plan["actions"]),
        "actions": plan["actions"],
        "kind": plan["kind"],
        "path": plan["path"],
        "format": plan["format"],
        "warnings_list": plan["warnings"],
        "diff": {"before": plan["before"], "after": after},
    }
    if not present:
        result["referenced_by"] = plan.get("referenced_by", [])
        return result
    result["virtual_size"] = after.get("virtual_size")
    result["xml_disk"] = _xml_disk(plan)
    result["owned_files"] = [plan["path"]]
    if plan["kind"] in ("root", "ephemeral", "swap") and plan.get("backing") == "overlay":
        result["backing_file"] = plan["base"]
    if plan["kind"] in ("ephemeral", "swap"):
        result.update(fs_type=plan["fs_type"], label=plan["label"], base=plan["base"])
    if plan["kind"] == "config_drive":
        result.update(drive_format=plan["drive_format"], label=plan["label"],
                      files=sorted(plan["files"]))
        result["owned_files"].append(_digest_path(plan))
        if not check_mode or plan["stat"] is not None:
            st = _lstat(plan["path"])
            if st is not None:
                result["virtual_size"] = st.st_size
    return result
