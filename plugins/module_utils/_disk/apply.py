# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: carrying out a ``DiskPlan`` (made by ``_disk.plan``), one handler per action.

Everything happens under the guest's lock (``_disk.record.locked``): the records are read again under
it, a plan that another run overtook meanwhile is made again first, and what a killed run left behind
(its temporary files) is removed. A disk made on a cached base holds the base's lock shared while it is
made (image_cache takes it exclusive to remove or prune the base); a formatted base is built under it
exclusive, once.

A new disk is built under a temporary name, then recorded, then published: a record without its disk
is simply made again, while a disk without its record would be refused. A growth is recorded first
too, and the record put back when it fails. A full filesystem or a file too large ends in a message
naming the file and the space it needs, with nothing half-made under its name.

``_disk.core`` loads this file only when a plan has something to do, so a re-run of an unchanged disk
loads neither qemu-img's wrapper nor mkfs nor pycdlib.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Iterator, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    atomic_output, file_lock, fsync_dir, remove_quietly,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import DIGEST_SUFFIX, DIR_MODE, TEMP_MARKER
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import record as records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import space
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.plan import (
    DiskPlan, locked_grow_error, still_current,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import FORMATTED_KINDS, Ownership
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img

BASE_MODE = 0o644  # a cached base is read by the qemu of every guest built on it


def _mkfs_mod():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import mkfs as _mkfs
    return _mkfs


def _config_drive_mod():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive
    return _config_drive


class _Run:
    """One plan being carried out: the guest's records (its lock held), the base's lock, what is done."""

    def __init__(self, plan: DiskPlan, book: records.LockedRecords) -> None:
        self.plan = plan
        self.book = book
        self._base_lock = contextlib.ExitStack()
        self._base_shared: Optional[bool] = None  # None: not held
        self.created = False  # the file was (re)built with its mode and owner: grow, chmod, chown are done

    def hold_base_lock(self, shared: bool) -> None:
        """The cached base's lock, held until the plan is carried out; taking it exclusive when it is held
        shared lets go of it first (so a formatted base found missing can be built)."""
        if self._base_shared is not None and (self._base_shared == shared or not self._base_shared):
            return
        self._base_lock.close()
        self._base_lock.enter_context(file_lock(self.plan.base_lock, records.LOCK_TIMEOUT,
                                                "the cached base %s" % self.plan.base, shared=shared))
        self._base_shared = shared

    def close(self) -> None:
        self._base_lock.close()

    @contextlib.contextmanager
    def recorded(self, entry: Optional[Dict[str, Any]]) -> Iterator[None]:
        """Record ``entry`` for the disk now; put the previous record back when the block fails."""
        name = self.plan.file_name
        previous = self.book.get(name)
        if entry is not None:
            self.book.set(name, entry)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the failure itself is what the user must see
                if previous is None:
                    self.book.drop(name)
                else:
                    self.book.set(name, previous)
            raise


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


def stale_temps(path: str) -> List[str]:
    """Temporary siblings of ``path`` (``<name>.virtfleet-tmp-<pid>-<hex>``) that runs killed while writing left;
    only callers holding the lock every writer of ``path`` holds may call them stale."""
    directory, name = os.path.split(path)
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, entry) for entry in entries if entry.startswith(name + TEMP_MARKER)]


def ensure_formatted_base(plan: DiskPlan) -> None:
    """Make the cached formatted base; the caller holds its lock exclusive (another run may have made it
    meanwhile, or been killed while making it)."""
    base, kind, size = plan.base, plan.kind, plan.virtual_size
    if records.formatted_base_problem(base, kind, size, plan.fs_type, plan.label) is None:
        return
    for temp in stale_temps(base) + stale_temps(base + records.RECORD_SUFFIX):
        remove_quietly(temp)
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
    """(Re)build the disk under a temporary name, record it, then publish it (and a config drive's digest)."""
    plan = run.plan
    if plan.base_lock:
        run.hold_base_lock(shared=True)
    if plan.kind in FORMATTED_KINDS:
        if records.formatted_base_problem(plan.base, plan.kind, plan.virtual_size, plan.fs_type, plan.label):
            run.hold_base_lock(shared=False)  # pruned (or never made) meanwhile: build it, once
        ensure_formatted_base(plan)
    os.makedirs(plan.layout.instance_dir, mode=DIR_MODE, exist_ok=True)
    with run.recorded(plan.new_record), atomic_output(plan.path, plan.spec.created_mode) as tmp:
        BUILDERS[plan.kind](plan, tmp)
        _apply_attrs(tmp, plan.spec.wants)
    if plan.kind == "config_drive":
        records.write_digest(plan.layout, plan.file_name, {
            "content_digest": plan.digest, "drive_format": plan.spec.drive_format,
            "files": _config_drive_mod().describe(plan.files), "size": os.stat(plan.path).st_size})
    run.created = True


def _create_base(run: _Run) -> None:
    run.hold_base_lock(shared=False)
    ensure_formatted_base(run.plan)


def _grow(run: _Run) -> None:
    if run.created:
        return  # a flat copy is grown to size while it is built
    plan = run.plan
    with run.recorded(plan.new_record):
        try:
            qemu_img.resize(plan.path, plan.format, plan.virtual_size)
        except qemu_img.QemuImgError as exc:
            if qemu_img.is_locked_error(exc):
                raise locked_grow_error(plan.path)
            raise


def _adopt(run: _Run) -> None:
    run.book.set(run.plan.file_name, run.plan.new_record)


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
    "chown": _set_attrs, "remove": _remove, "forget": _remove, "adopt": _adopt,
}


def _remove_stale_temps(plan: DiskPlan, book: records.LockedRecords) -> None:
    """Under the guest's lock every temporary file of its disks and records is a killed run's leftover."""
    names = {plan.file_name, *book.entries}
    for name in names | {name + DIGEST_SUFFIX for name in names}:
        for temp in stale_temps(plan.layout.file(name)):
            remove_quietly(temp)
    for temp in stale_temps(plan.layout.disk_info):
        remove_quietly(temp)


def _space_needed(plan: DiskPlan) -> Optional[int]:
    """About how many bytes the disk's files take when made (for the message when they do not fit)."""
    if plan.kind == "config_drive":
        return sum(len(data) for data in plan.files.values()) + (512 << 10)
    if plan.spec.preallocation in ("falloc", "full") and plan.virtual_size:
        return plan.virtual_size
    if plan.backing == "flat" and plan.base and os.path.exists(plan.base):
        return os.stat(plan.base).st_blocks * 512
    if "create_base" in plan.actions and plan.virtual_size:
        return plan.virtual_size // 64 + (1 << 20)  # a fresh filesystem's metadata
    return 1 << 20


def _carry_out(plan: DiskPlan, replan: Callable[[], DiskPlan]) -> DiskPlan:
    with records.locked(plan.layout) as book:
        if not still_current(plan, book.get(plan.file_name)):
            plan = replan()
        _remove_stale_temps(plan, book)
        run = _Run(plan, book)
        try:
            for action in plan.actions:
                HANDLERS[action](run)
        finally:
            run.close()
    return plan


def apply_plan(plan: DiskPlan, replan: Callable[[], DiskPlan]) -> DiskPlan:
    """Carry out ``plan`` under the guest's lock; returns the plan carried out (``replan()``'s when another
    run changed the disk or its record since ``plan`` was made)."""
    try:
        return _carry_out(plan, replan)
    except (OSError, VirtfleetError) as exc:
        if space.is_no_room(exc):
            raise space.no_room_error(plan.path, _space_needed(plan), exc)
        if isinstance(exc, OSError):
            raise VirtfleetError("cannot write %s: %s (%s); nothing was left under its name"
                                 % (plan.path, exc.strerror or exc, exc.filename or plan.path))
        raise
