# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: carrying out a ``DiskPlan`` (made by ``_disk.plan``), one handler per action.

Everything happens under the guest's lock (``_disk.record.locked``): the records are read again under
it, and a plan that another run overtook meanwhile is made again first. Creating an ephemeral or swap
disk also holds its cached formatted base's lock (the one image_cache's prune takes), so the base is
neither built twice nor removed while an overlay is made on it. ``_disk.core`` loads this file only
when a plan has something to do, so a re-run of an unchanged disk loads neither qemu-img's wrapper
nor mkfs nor pycdlib.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Dict, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    atomic_output, exclusive_lock, fsync_dir, remove_quietly,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import DIR_MODE
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import record as records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.plan import (
    DiskPlan, locked_grow_error, still_current,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import FORMATTED_KINDS, Ownership
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img as qemu_img

BASE_MODE = 0o644  # a cached base is read by the qemu of every guest built on it


def _mkfs_mod():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import mkfs as _mkfs
    return _mkfs


def _config_drive_mod():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive
    return _config_drive


class _Run:
    """One plan being carried out: the guest's records (its lock held), the base's lock, what is done."""

    def __init__(self, plan: DiskPlan, book: records.LockedRecords, stack: contextlib.ExitStack) -> None:
        self.plan = plan
        self.book = book
        self._stack = stack
        self._base_locked = False
        self.created = False  # the file was (re)built with its mode and owner: grow, chmod, chown are done

    def hold_base_lock(self) -> None:
        """The cached base's lock, held until the plan is carried out."""
        if not self._base_locked:
            self._stack.enter_context(exclusive_lock(self.plan.base_lock, records.LOCK_TIMEOUT, self.plan.base))
            self._base_locked = True


def _apply_attrs(path: str, wants: Ownership) -> None:
    if wants.mode is not None:
        os.chmod(path, wants.mode)
    if wants.uid is not None or wants.gid is not None:
        os.chown(path, -1 if wants.uid is None else wants.uid, -1 if wants.gid is None else wants.gid)


def _overlay_options(plan: DiskPlan) -> Dict[str, str]:
    # qemu-img refuses to preallocate a qcow2 overlay unless it has extended L2 entries.
    return {"extended_l2": "on"} if plan.spec.preallocation else {}


def _build_from_base(plan: DiskPlan, tmp: str, base_size: Optional[int]) -> None:
    # qemu_img maps our format names to qemu's driver names (and refuses any other).
    preallocation = plan.spec.preallocation
    if plan.backing == "overlay":
        qemu_img.create(tmp, "qcow2", plan.virtual_size, backing_file=plan.base, backing_fmt=plan.base_format,
                        options=_overlay_options(plan), preallocation=preallocation)
        return
    options = {"preallocation": preallocation} if preallocation else None
    qemu_img.convert(plan.base, plan.base_format, tmp, plan.format, options=options)
    if base_size is None or plan.virtual_size > base_size:
        qemu_img.resize(tmp, plan.format, plan.virtual_size)


def ensure_formatted_base(plan: DiskPlan) -> None:
    """Make the cached formatted base; the caller holds its lock (another run may have made it meanwhile)."""
    base, kind, size = plan.base, plan.kind, plan.virtual_size
    if records.formatted_base_problem(base, kind, size, plan.fs_type, plan.label) is None:
        return
    os.makedirs(os.path.dirname(base), mode=DIR_MODE, exist_ok=True)
    with atomic_output(base, BASE_MODE) as tmp:
        _mkfs_mod().make_filesystem(tmp, size, plan.fs_type, plan.label)
        # the record first: a base without its record is rebuilt, a record without its base too
        records.write_formatted_base_record(base, kind, size, plan.fs_type, plan.label)


BUILDERS: Dict[str, Callable[[DiskPlan, str], None]] = {
    "root": lambda plan, tmp: _build_from_base(plan, tmp, plan.base_size),
    "ephemeral": lambda plan, tmp: _build_from_base(plan, tmp, plan.virtual_size),
    "swap": lambda plan, tmp: _build_from_base(plan, tmp, plan.virtual_size),
    "blank": lambda plan, tmp: qemu_img.create(tmp, plan.format, plan.virtual_size,
                                               preallocation=plan.spec.preallocation),
    "config_drive": lambda plan, tmp: _config_drive_mod().write_iso(plan.spec.drive_format, plan.files, tmp),
}


def _build(run: _Run) -> None:
    """(Re)build the disk under a temporary name, publish it, then record it."""
    plan = run.plan
    if plan.kind in FORMATTED_KINDS:
        run.hold_base_lock()
        ensure_formatted_base(plan)
    os.makedirs(plan.layout.instance_dir, mode=DIR_MODE, exist_ok=True)
    with atomic_output(plan.path, plan.spec.created_mode) as tmp:
        BUILDERS[plan.kind](plan, tmp)
        _apply_attrs(tmp, plan.spec.wants)
    if plan.kind == "config_drive":
        records.write_digest(plan.layout, plan.file_name, {
            "content_digest": plan.digest, "drive_format": plan.spec.drive_format,
            "files": _config_drive_mod().describe(plan.files)})
    run.book.set(plan.file_name, plan.new_record)
    run.created = True


def _create_base(run: _Run) -> None:
    run.hold_base_lock()
    ensure_formatted_base(run.plan)


def _grow(run: _Run) -> None:
    if run.created:
        return  # a flat copy is grown to size while it is built
    plan = run.plan
    try:
        qemu_img.resize(plan.path, plan.format, plan.virtual_size)
    except qemu_img.QemuImgError as exc:
        if qemu_img.is_locked_error(exc):
            raise locked_grow_error(plan.path)
        raise


def _set_attrs(run: _Run) -> None:
    if not run.created:
        _apply_attrs(run.plan.path, run.plan.spec.wants)


def _remove(run: _Run) -> None:
    """remove (the file exists) and forget (only its records are left): both end with neither."""
    plan = run.plan
    remove_quietly(plan.path)
    records.remove_digest(plan.layout, plan.file_name)
    run.book.drop(plan.file_name)
    fsync_dir(plan.layout.instance_dir)


HANDLERS: Dict[str, Callable[[_Run], None]] = {
    "create_base": _create_base, "create": _build, "rebuild": _build, "grow": _grow, "chmod": _set_attrs,
    "chown": _set_attrs, "remove": _remove, "forget": _remove,
}


def apply_plan(plan: DiskPlan, replan: Callable[[], DiskPlan]) -> DiskPlan:
    """Carry out ``plan`` under the guest's lock; returns the plan carried out (``replan()``'s when another
    run changed the disk or its record since ``plan`` was made)."""
    with records.locked(plan.layout) as book:
        if not still_current(plan, book.get(plan.file_name)):
            plan = replan()
        with contextlib.ExitStack() as stack:
            run = _Run(plan, book, stack)
            for action in plan.actions:
                HANDLERS[action](run)
    return plan
