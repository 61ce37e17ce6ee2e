# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what one disk of a guest needs, decided by reading state only.

Kinds: ``root`` (overlay on, or flat copy of, a cached base), ``ephemeral`` (formatted data disk),
``swap`` (swap signature), ``blank`` (unformatted) and ``config_drive`` (ISO9660 metadata volume).

Each disk's format is recorded once, when we create the file, in ``disk.info.json`` (Nova's
``disk.info``, see ``_disk.record``); every later qemu-img call uses that recorded format with ``-f``.
A format is never probed from a disk a guest has written to: a guest can write a qcow2 header into
its raw disk (CVE-2026-24708).

Formatted blank bases (ephemeral and swap) are cached like Nova's: one file per (size, fs type,
label) in the cache (``ephemeral_<size>_<fs>[_<label>]``, ``swap_<size>[_<label>]``) with the same
record the image cache writes; guests get qcow2 overlays on them, or flat copies.

``plan_disk`` returns a ``DiskPlan`` (actions, before and after) and changes nothing, so check mode
returns exactly what a real run would do (``_disk.apply`` carries it out). A re-run of a disk that
needs nothing loads only this planning: an existing disk's virtual size is read from the file in
Python (``_disk.virtual_size``, in the recorded format), and qemu-img, mkfs, pycdlib and libvirt are
loaded only when there is something for them to do.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat as statmod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import read_bytes
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout, cache_layout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import format_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import record as records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import (
    DEFAULT_EPHEMERAL_LABEL, DEFAULT_FS_TYPE, FORMATTED_KINDS, SWAP_FS, DiskSpec, Ownership,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.virtual_size import (
    qcow2_damage, recorded_virtual_size,
)

QEMU_CONF = "/etc/libvirt/qemu.conf"
ISO_MAGIC_OFFSET, ISO_MAGIC = 32769, b"CD001"  # an ISO9660 volume descriptor's identifier


def _config_drive_mod():
    """Imported when a config drive is planned: a re-run of other disks does not pay for it."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive
    return _config_drive


def _mkfs_mod():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import mkfs as _mkfs
    return _mkfs


def _space_mod():
    """Imported when a disk is made or grown: how large a file its filesystem takes."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import space as _space
    return _space


def _qemu_img_mod():
    """Imported when qemu-img must run (a new disk, a growth, an unusual header): not on a plain re-run."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img as _qemu_img
    return _qemu_img


@dataclass
class DiskPlan:
    """What one disk needs: the actions (in order), the state before and after, and what they work on."""

    spec: DiskSpec
    format: str
    observed_record: Optional[Dict[str, Any]]  # the disk's entry in disk.info.json when planned
    stat: Optional[os.stat_result]             # the disk file's lstat when planned
    record: Optional[Dict[str, Any]] = None    # the entry the plan works from (made from the options to adopt)
    actions: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    before: Dict[str, Any] = field(default_factory=dict)
    after: Dict[str, Any] = field(default_factory=dict)
    new_record: Optional[Dict[str, Any]] = None
    virtual_size: Optional[int] = None
    current_size: Optional[int] = None
    base: Optional[str] = None
    base_format: Optional[str] = None
    base_size: Optional[int] = None
    backing: Optional[str] = None
    base_lock: Optional[str] = None
    fs_type: Optional[str] = None
    label: Optional[str] = None
    files: Dict[str, bytes] = field(default_factory=dict)
    digest: Optional[str] = None
    stored_digest: Dict[str, Any] = field(default_factory=dict)
    referenced_by: List[str] = field(default_factory=list)
    # the spec's facts every handler needs, at hand
    kind: str = field(init=False)
    path: str = field(init=False)
    file_name: str = field(init=False)
    layout: GuestLayout = field(init=False)

    def __post_init__(self) -> None:
        self.kind, self.path, self.file_name = self.spec.kind, self.spec.path, self.spec.file_name
        self.layout = self.spec.layout


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


def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _stat_key(st: Optional[os.stat_result]) -> Optional[Tuple[int, int, int, int]]:
    return None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def still_current(plan: DiskPlan, entry: Optional[Dict[str, Any]]) -> bool:
    """Whether the disk file, its record ``entry`` (read under the guest's lock) and its digest are still
    what ``plan`` was made from; else another run changed them meanwhile and the plan must be made again."""
    if _stat_key(_lstat(plan.path)) != _stat_key(plan.stat) or entry != plan.observed_record:
        return False
    return plan.kind != "config_drive" or records.read_digest(plan.layout, plan.file_name) == plan.stored_digest


def _current_virtual_size(path: str, fmt: str, st: Optional[os.stat_result] = None) -> int:
    """Virtual size of our disk in its recorded format: read in Python, or by qemu-img (-f) when unusual."""
    size = recorded_virtual_size(path, fmt, st)
    if size is None:
        size = int(_qemu_img_mod().info(path, fmt)["virtual-size"])
    return size


# ---------------------------------------------------------------------------------------------
# Ownership and permissions
# ---------------------------------------------------------------------------------------------

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


def _attr_actions(st: os.stat_result, wants: Ownership) -> List[str]:
    actions = []
    if wants.mode is not None and statmod.S_IMODE(st.st_mode) != wants.mode:
        actions.append("chmod")
    if (wants.uid is not None and st.st_uid != wants.uid) or (wants.gid is not None and st.st_gid != wants.gid):
        actions.append("chown")
    return actions


def _attrs_after(before: Dict[str, Any], wants: Ownership, created_mode: int) -> Dict[str, Any]:
    if before.get("mode"):
        after = {key: before[key] for key in ("mode", "owner", "group")}
    else:
        after = {"mode": "%04o" % created_mode, "owner": _user_name(os.geteuid()), "group": _group_name(os.getegid())}
    if wants.mode is not None:
        after["mode"] = "%04o" % wants.mode
    if wants.uid is not None:
        after["owner"] = _user_name(wants.uid)
    if wants.gid is not None:
        after["group"] = _group_name(wants.gid)
    return after


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

def _base_plan(spec: DiskSpec) -> DiskPlan:
    spec.layout.check_writable()  # a symlink planted as the instance directory is never followed
    info = records.read_disk_records(spec.layout)
    st = _lstat(spec.path)
    if st is not None and not statmod.S_ISREG(st.st_mode):
        raise VirtfleetError("%s exists and is not a regular file; refusing to touch it" % spec.path)
    entry = info.get(spec.file_name)
    return DiskPlan(spec=spec, format=spec.format, observed_record=entry, record=entry, stat=st,
                    before={"path": spec.path, "exists": st is not None})


def _adopt_advice(plan: DiskPlan) -> str:
    return ("If you know how this file was made, run the same task with adopt: true and format: (qcow2 or raw, as "
            "it was made)%s to record it as it is; nothing is ever guessed from its bytes. Or restore %s from a "
            "backup." % (" and its base" if plan.kind == "root" else "", plan.layout.disk_info))


def _require_record(plan: DiskPlan) -> Dict[str, Any]:
    """The existing disk's record; with adopt, a record made from the options when it has none."""
    record = plan.record
    if not isinstance(record, dict) or not record.get("format"):
        if plan.spec.adopt:
            return _adopt(plan)
        raise VirtfleetError(
            "%s exists but has no format record in %s, so its format cannot be trusted (a guest may have written "
            "any header into it). Nothing was changed. %s" % (plan.path, plan.layout.disk_info, _adopt_advice(plan)))
    kind = record.get("kind") or "root"
    if kind != plan.kind:
        raise VirtfleetError("%s is recorded as a %s disk, not %s; use another file_name, or remove it first if it "
                             "is no longer needed" % (plan.path, kind, plan.kind))
    return record


def _expected_backing(plan: DiskPlan) -> Tuple[Optional[str], Optional[str]]:
    """(backing file, its format) an overlay of this kind may name: the given base, or the formatted base."""
    if plan.kind == "root" and plan.spec.base:
        base = os.path.abspath(plan.spec.base)
        return base, plan.spec.base_format or records.base_format_of(base, None)
    if plan.kind in FORMATTED_KINDS:
        return plan.base, "raw"
    return None, None


def _adopt(plan: DiskPlan) -> Dict[str, Any]:
    """Record an existing file as the options say it was made. The format is the user's word, never read from
    the file; a qcow2 file is accepted only when the backing file its header names (if any) is the one this
    disk may have, with its format named, so that qemu is never led to another file."""
    spec = plan.spec
    if spec.kind == "config_drive":
        fmt = "raw"
    elif not spec.format_given:
        raise VirtfleetError("adopt needs format: the format %s was made in (qcow2 or raw); it is never guessed from "
                             "the file" % plan.path)
    else:
        fmt = spec.format
    entry: Dict[str, Any] = {"format": fmt, "kind": spec.kind, "adopted": True}
    backing, backing_format = None, None
    if fmt == "qcow2":
        header = qcow2.read(plan.path)
        if header is None:
            raise VirtfleetError("cannot adopt %s as qcow2: it has no readable qcow2 header; if it is a raw disk, say "
                                 "format: raw" % plan.path)
        if header.incompatible_features & qcow2.INCOMPAT_DATA_FILE or header.crypt_method:
            raise VirtfleetError("cannot adopt %s: its qcow2 header asks for an external data file or encryption, "
                                 "which this collection never makes" % plan.path)
        backing = qcow2.backing_file_of(plan.path)
        if backing is not None:
            expected, expected_format = _expected_backing(plan)
            if expected is None or os.path.realpath(backing) != os.path.realpath(expected):
                raise VirtfleetError(
                    "cannot adopt %s: its qcow2 header names the backing file %s, which is not %s; refusing to record "
                    "it (qemu would open that file)" % (plan.path, backing, expected or "a base this disk may have"))
            if header.backing_format != expected_format:
                raise VirtfleetError(
                    "cannot adopt %s: its qcow2 header names the backing format %r, not %r; refusing to record it "
                    "(qemu must never probe a backing file's format)" % (plan.path, header.backing_format,
                                                                         expected_format))
            backing_format = expected_format
    if spec.kind == "root":
        entry.update(backing="overlay" if backing else "flat", base_format=backing_format)
        if backing:
            entry["base"] = backing
    elif spec.kind in FORMATTED_KINDS:
        entry.update(backing="overlay" if backing else "flat", fs_type=plan.fs_type, label=plan.label,
                     base_format="raw")
        entry["base" if backing else "copied_from"] = plan.base
    elif spec.kind == "config_drive":
        entry.update(drive_format=spec.drive_format, label=plan.label)
    if spec.kind != "config_drive":
        entry["virtual_size"] = _current_virtual_size(plan.path, fmt, plan.stat)
    plan.record = entry
    plan.new_record = entry
    plan.actions.append("adopt")
    return entry


def _record_mismatch(plan: DiskPlan, what: str) -> VirtfleetError:
    return VirtfleetError(
        "%s no longer matches its record in %s: %s. Something outside virtfleet changed it (cut it short, replaced "
        "or resized it); nothing was changed. Restore it from a backup, or, if the file is as it should be now, "
        "run the same task with adopt: true to record it as it is." % (plan.path, plan.layout.disk_info, what))


def _check_header(plan: DiskPlan) -> None:
    """A recorded qcow2 disk must still start with a qcow2 header whose tables lie inside the file."""
    if plan.format != "qcow2":
        return
    damage = qcow2_damage(plan.path, plan.stat.st_size)
    if damage is not None:
        if plan.spec.adopt:
            raise VirtfleetError("cannot adopt %s as qcow2: %s" % (plan.path, damage))
        raise _record_mismatch(plan, damage)


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


def _plan_existing_size(plan: DiskPlan, size: Optional[int], growable: bool) -> None:
    """Compare the recorded disk's virtual size with ``size``: grow, refuse to shrink, or nothing."""
    path, fmt = plan.path, plan.format
    _check_header(plan)
    current = plan.current_size
    if current is None:
        current = _current_virtual_size(path, fmt, plan.stat)
    recorded = (plan.record or {}).get("virtual_size")
    if recorded is not None and recorded != current:
        if not plan.spec.adopt:
            raise _record_mismatch(plan, "its virtual size is %s (%d bytes), its record says %s (%d bytes)"
                                   % (format_size(current), current, format_size(recorded), recorded))
        plan.record = dict(plan.record, virtual_size=current, adopted=True)
        plan.new_record = plan.record
        plan.actions.append("adopt")
    plan.before["virtual_size"] = current
    plan.virtual_size = current
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
                plan.kind, path, format_size(current), format_size(size),
                "swap signature" if plan.kind == "swap" else "filesystem", current))
    _check_not_locked(path, fmt)
    if fmt == "raw" or plan.spec.preallocation in ("falloc", "full"):
        _space_mod().check_file_fits(path, size)
    plan.actions.append("grow")
    plan.virtual_size = size
    plan.new_record = dict(plan.record or {}, virtual_size=size)


def plan_root_disk(spec: DiskSpec, check_mode: bool = False) -> DiskPlan:
    """Decide what the root disk needs; reads state only.

    In check mode the base may not exist yet (image_cache, in check mode too, only predicted its
    download); a missing disk is then predicted as created at ``size``.
    """
    plan = _base_plan(spec)
    backing = spec.backing or "overlay"
    if backing == "overlay" and plan.format != "qcow2":
        raise VirtfleetError("an overlay root disk is always qcow2; use format: qcow2 with backing: overlay, or "
                             "backing: flat for a raw disk")
    base = spec.base
    if not base:
        raise VirtfleetError("a root disk needs base: the path of a cached image (from virtfleet.libvirt.image_cache)")
    if not os.path.isfile(base):
        if check_mode and plan.stat is None and spec.base_format:
            return _predict_root_on_missing_base(plan, backing, base)
        raise VirtfleetError("base image %s does not exist; fetch it with virtfleet.libvirt.image_cache first" % base)
    base_fmt = records.base_format_of(base, spec.base_format)
    size = spec.size
    plan.backing, plan.base, plan.base_format = backing, os.path.abspath(base), base_fmt
    cache = cache_layout(spec.layout.instances_path)
    if cache.is_base(plan.base):  # image_cache removes or prunes it only under this lock, taken exclusive
        plan.base_lock = cache.lock(os.path.basename(plan.base))
    if plan.stat is None:
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
        _check_fits(plan, size)
        plan.actions.append("create")
        if backing == "flat" and size > inspection.virtual_size:
            plan.actions.append("grow")
        plan.virtual_size = size
        plan.base_size = inspection.virtual_size
        plan.new_record = {"format": plan.format, "kind": "root", "backing": backing, "base": plan.base,
                           "base_format": base_fmt, "virtual_size": size}
        return plan
    record = _require_record(plan)
    plan.format = record["format"]
    _plan_existing_size(plan, size, growable=True)
    recorded_base = record.get("base")
    if recorded_base and os.path.realpath(recorded_base) != os.path.realpath(base):
        plan.warnings.append("%s was built from %s, not from %s; it is left as it is (remove it to rebuild it "
                             "from the new base)" % (plan.path, recorded_base, base))
    plan.base = recorded_base or plan.base
    plan.backing = record.get("backing") or backing
    return plan


def _predict_root_on_missing_base(plan: DiskPlan, backing: str, base: str) -> DiskPlan:
    """Check mode only: the root disk that will be built once image_cache has fetched ``base``."""
    plan.backing, plan.base, plan.base_format = backing, os.path.abspath(base), plan.spec.base_format
    plan.virtual_size = plan.spec.size
    plan.actions.append("create")
    plan.warnings.append("base image %s is not in the cache yet (check mode); the root disk is predicted from "
                         "the requested size only" % base)
    return plan


def _check_fits(plan: DiskPlan, size: int) -> None:
    """A disk file as long as its virtual size (raw, or fully preallocated) must fit its filesystem's limit."""
    if plan.format == "raw" or plan.spec.preallocation in ("falloc", "full"):
        _space_mod().check_file_fits(plan.path, size)


def _backing_for(spec: DiskSpec, fmt: str) -> str:
    backing = spec.backing or ("overlay" if fmt == "qcow2" else "flat")
    if backing == "overlay" and fmt != "qcow2":
        raise VirtfleetError("an overlay is always qcow2; use format: qcow2, or backing: flat for a raw disk")
    return backing


def plan_formatted_disk(spec: DiskSpec, _check_mode: bool = False) -> DiskPlan:
    """ephemeral or swap: an overlay on (or copy of) a cached formatted base of (size, fs type, label)."""
    plan = _base_plan(spec)
    kind, size = spec.kind, spec.size
    if size is None:
        raise VirtfleetError("a %s disk needs size (such as 10G)" % kind)
    if kind == "swap":
        fs_type, label = SWAP_FS, spec.label or ""
    else:
        fs_type = spec.fs_type or DEFAULT_FS_TYPE
        label = DEFAULT_EPHEMERAL_LABEL if spec.label is None else spec.label
    if not _made_as_asked(plan, fs_type, label, size):
        label = _mkfs_mod().validate_label(fs_type, label)
        _mkfs_mod().validate_size(fs_type, size)
    plan.fs_type, plan.label, plan.virtual_size = fs_type, label, size
    backing = _backing_for(spec, plan.format)
    cache = cache_layout(spec.layout.instances_path)
    base_name = formatted_base_name(kind, size, fs_type, label)
    base = cache.base(base_name)
    plan.backing, plan.base, plan.base_format, plan.base_lock = backing, base, "raw", cache.lock(base_name)
    plan.before.update({"fs_type": None, "label": None})
    if plan.stat is not None:
        record = _require_record(plan)
        plan.format = record["format"]
        plan.backing = record.get("backing") or backing
        plan.base = record.get("base") or base
        plan.before.update(fs_type=record.get("fs_type"), label=record.get("label"))
        if (record.get("fs_type"), record.get("label") or "") != (fs_type, label):
            raise VirtfleetError(
                "%s was formatted as %s with label %r; refusing to reformat it as %s with label %r (that destroys its "
                "data). Remove it (state: absent) first, or use another file_name."
                % (plan.path, record.get("fs_type"), record.get("label") or "", fs_type, label))
        _plan_existing_size(plan, size, growable=False)
        return plan
    if records.formatted_base_problem(base, kind, size, fs_type, label) is not None:
        _mkfs_mod().find_tool(fs_type)  # a missing tool fails now, in check mode too, before anything is written
        _space_mod().check_file_fits(base, size)
        plan.actions.append("create_base")
    if backing == "flat":
        _check_fits(plan, size)
    plan.actions.append("create")
    plan.new_record = {"format": plan.format, "kind": kind, "backing": backing, "fs_type": fs_type,
                       "label": label, "base_format": "raw", "virtual_size": size}
    plan.new_record["base" if backing == "overlay" else "copied_from"] = base
    return plan


def _made_as_asked(plan: DiskPlan, fs_type: str, label: str, size: int) -> bool:
    """True when the existing ephemeral or swap disk is recorded as formatted as asked and has the size asked.

    Such a disk was made from these very options, validated then by the mkfs rules (and it is never
    resized), so a re-run need not load those rules again. Anything else (no disk, no or another
    record, another size, a size only qemu-img can tell) is validated as for a new disk, before
    any other check, as always.
    """
    record = plan.record
    if plan.stat is None or not isinstance(record, dict) or not record.get("format") \
            or (record.get("kind") or "root") != plan.kind \
            or (record.get("fs_type"), record.get("label") or "") != (fs_type, label):
        return False
    current = recorded_virtual_size(plan.path, record["format"], plan.stat)
    if current is None:
        return False
    plan.current_size = current
    return current == size


def plan_blank_disk(spec: DiskSpec, _check_mode: bool = False) -> DiskPlan:
    plan = _base_plan(spec)
    size = spec.size
    if size is None:
        raise VirtfleetError("a blank disk needs size (such as 10G)")
    if size % 512:
        raise VirtfleetError("the size of a disk must be a multiple of 512 bytes (asked for %d bytes)" % size)
    if plan.stat is not None:
        record = _require_record(plan)
        plan.format = record["format"]
        _plan_existing_size(plan, size, growable=True)
        return plan
    _check_fits(plan, size)
    plan.actions.append("create")
    plan.virtual_size = size
    plan.new_record = {"format": plan.format, "kind": "blank", "virtual_size": size}
    return plan


def plan_config_drive(spec: DiskSpec, _check_mode: bool = False) -> DiskPlan:
    plan = _base_plan(spec)
    drive = _config_drive_mod()
    plan.files = drive.drive_files(spec.drive_params())
    plan.digest = drive.content_digest(spec.drive_format, plan.files)
    plan.label = drive.LABELS[spec.drive_format]
    plan.stored_digest = records.read_digest(spec.layout, spec.file_name) if plan.stat is not None else {}
    plan.before.update(drive_format=plan.stored_digest.get("drive_format"), files=plan.stored_digest.get("files"))
    plan.new_record = {"format": "raw", "kind": "config_drive", "drive_format": spec.drive_format,
                       "label": plan.label}
    if plan.stat is None:
        plan.actions.append("create")
    else:
        record = _require_record(plan)
        if record.get("format") != "raw":
            raise VirtfleetError("%s is recorded with format %s; a config drive is raw" % (plan.path, record.get("format")))
        damage = _config_drive_damage(plan)
        if damage is not None:
            plan.warnings.append("the config drive %s was damaged (%s); it is rebuilt from the options" % (
                plan.path, damage))
        if damage is not None or plan.stored_digest.get("content_digest") != plan.digest:
            plan.actions.append("rebuild")
    plan.virtual_size = None
    return plan


def _config_drive_damage(plan: DiskPlan) -> Optional[str]:
    """Why the existing drive is not the ISO that was written: another length than recorded, or no ISO9660
    volume descriptor any more. A cheap look (its length and 5 bytes), never a read of its files."""
    recorded = plan.stored_digest.get("size")
    if recorded is not None and recorded != plan.stat.st_size:
        return "it is %d bytes long, %d when it was written" % (plan.stat.st_size, recorded)
    try:
        with open(plan.path, "rb") as handle:
            handle.seek(ISO_MAGIC_OFFSET)
            magic = handle.read(len(ISO_MAGIC))
    except OSError as exc:
        return "it cannot be read (%s)" % (exc.strerror or exc)
    return None if magic == ISO_MAGIC else "it holds no ISO9660 volume any more"


def _warn_dynamic_ownership(plan: DiskPlan) -> None:
    """A 0600 root-owned disk is usable by qemu only because libvirt chowns it at start (dynamic_ownership)."""
    if plan.spec.wants.uid is not None or not plan.actions or os.geteuid() != 0:
        return  # an unprivileged user's session QEMU runs as that user: its own files are its to open
    try:
        raw = read_bytes(QEMU_CONF) or b""
    except OSError:  # unreadable: nothing to warn about that we could know
        return
    if re.search(rb"^\s*dynamic_ownership\s*=\s*0\b", raw, re.M):
        mode = plan.spec.wants.mode if plan.stat is not None and plan.spec.wants.mode is not None \
            else plan.spec.created_mode
        plan.warnings.append("dynamic_ownership is off in %s: qemu cannot open the mode %04o disk %s unless you set "
                             "owner (or group, with a mode that lets the group in) to the qemu user's (libvirt-qemu "
                             "on Debian)" % (QEMU_CONF, mode, plan.path))


def _guests_using(spec: DiskSpec, hypervisor: Any) -> List[str]:
    """Every defined or running guest whose disks or backing chains use the disk (libvirt, loaded only here)."""
    if hypervisor is not None:
        return hypervisor.guests_using(spec.path)
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import open_hypervisor

    with open_hypervisor(spec.uri) as opened:
        return opened.guests_using(spec.path)


def plan_absent(spec: DiskSpec, hypervisor: Any = None) -> DiskPlan:
    plan = _base_plan(spec)
    if plan.stat is not None:
        users = _guests_using(spec, hypervisor)
        plan.referenced_by = users
        if users and not spec.force:
            raise VirtfleetError(
                "refusing to remove %s: it is still used by the defined libvirt domain(s) %s. Undefine them (or "
                "remove the disk from their definition) first, or pass force: true; nothing was changed."
                % (plan.path, ", ".join(users)), referenced_by=users)
        plan.actions.append("remove")
    elif plan.record is not None or os.path.exists(spec.layout.digest_of(spec.file_name)):
        plan.actions.append("forget")
    return plan


PLANNERS = {"root": plan_root_disk, "ephemeral": plan_formatted_disk, "swap": plan_formatted_disk,
            "blank": plan_blank_disk, "config_drive": plan_config_drive}


def plan_disk(spec: DiskSpec, check_mode: bool = False, hypervisor: Any = None) -> DiskPlan:
    """The whole plan for one disk: actions, before and after; nothing is changed.

    ``hypervisor`` (a ``_host.guest.Hypervisor``) is what a batch shares; without it, removing a disk
    opens its own connection to ask libvirt which guests use the file.
    """
    if not spec.present:
        plan = plan_absent(spec, hypervisor)
        plan.after = {"path": plan.path, "exists": False}
        if plan.stat is not None:
            plan.before.update(_attrs_of(plan.stat))
            plan.before["format"] = (plan.record or {}).get("format")
        return plan
    plan = PLANNERS[spec.kind](spec, check_mode)
    st = plan.stat
    if st is not None:
        plan.before.update(_attrs_of(st))
        plan.before["format"] = plan.format
        plan.actions.extend(_attr_actions(st, spec.wants))
    after = {key: value for key, value in plan.before.items() if key not in ("mode", "owner", "group")}
    after.update(path=plan.path, exists=True, format=plan.format)
    if plan.virtual_size is not None:
        after["virtual_size"] = plan.virtual_size
    if spec.kind in FORMATTED_KINDS:
        after.update(fs_type=plan.fs_type, label=plan.label)
    if spec.kind == "config_drive":
        after.update(drive_format=spec.drive_format, files=_config_drive_mod().describe(plan.files))
    after.update(_attrs_after(plan.before if st is not None else {}, spec.wants, spec.created_mode))
    plan.after = after
    _warn_dynamic_ownership(plan)
    return plan
