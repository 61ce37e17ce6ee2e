# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: removing images from the cache (``state: absent`` and ``pruned``).

A cached image is in use while anything names it:

* a disk of any libvirt domain defined or running on the host, or a file in such a disk's backing
  chain, wherever the disk lives (``_host.guest.Hypervisor.disks_in_use``);
* a disk in the instances tree, for guests whose disks exist but that are not defined (yet): the base
  its instance recorded, and the backing chain of a disk recorded as qcow2. For a file without a
  record only its own qcow2 header is read: a guest can write a fake header into a raw disk, and the
  names such a header gives are not followed any further.

Headers are read in Python (``_qcow2``, through ``backing_chain``); qemu-img never runs here. Each
removal happens under the image's exclusive lock, and the in-use check is made again under it:
guest_disk holds the same lock shared while it makes an overlay on, or a copy of, the base.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, fsync_dir, read_json_record, remove_quietly,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import backing_chain, open_hypervisor
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.record import (
    REMOVE, ImagePlan, Target, find_cached, image_lock, image_state, qemu_name, remove_stale_temps, stat_or_none,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import ImageSpec, public_url
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import (
    RECORD_SUFFIX, CacheLayout, GuestLayout,
)


# --------------------------------------------------------------------------------------------------
# What uses a base
# --------------------------------------------------------------------------------------------------

def bases_in_use(layout: CacheLayout, hypervisor: Any = None) -> Dict[str, List[str]]:
    """{real path of a cached base: what uses it}: libvirt's domains (``domain <name>``), when a
    ``hypervisor`` is given, and the disks of the instances tree (their paths)."""
    used: Dict[str, List[str]] = {}
    if hypervisor is not None:
        for path, guests in sorted(hypervisor.disks_in_use().items()):
            if layout.is_base(path):
                used.setdefault(os.path.realpath(path), []).extend("domain %s" % name for name in sorted(guests))
    for disk, bases in _tree_disks(layout):
        for base in bases:
            real = os.path.realpath(base)
            if layout.is_base(real) and disk not in used.get(real, []):
                used.setdefault(real, []).append(disk)
    return used


def _tree_disks(layout: CacheLayout) -> Iterator[tuple]:
    """(disk, [files it says it is based on]) for every file in every instance directory of the tree."""
    root = layout.instances_path
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    not_guests = {os.path.realpath(layout.base_dir), os.path.realpath(layout.lock_dir)}
    for entry in entries:
        instance_dir = os.path.join(root, entry)
        if not os.path.isdir(instance_dir) or os.path.realpath(instance_dir) in not_guests:
            continue
        guest = GuestLayout(root, entry, instance_dir)
        info = read_json_record(guest.disk_info) or {}
        for file_name in sorted(os.listdir(instance_dir)):
            disk = guest.file(file_name)
            if not os.path.isfile(disk) or file_name.endswith((".json", ".xml")) or TEMP_MARKER in file_name:
                continue
            disk_info = info.get(file_name) if isinstance(info.get(file_name), dict) else {}
            bases = [disk_info["base"]] if isinstance(disk_info.get("base"), str) and disk_info["base"] else []
            yield disk, bases + _backing_chain(disk, disk_info.get("format"))


def _backing_chain(disk: str, fmt: Optional[str]) -> List[str]:
    """Backing files of ``disk``, read from qcow2 headers in Python.

    A disk whose format we recorded as qcow2 is followed down its chain (its header was written by
    qemu-img, the files below it by us). For a disk without a record only its own header is read: a
    guest can write a fake qcow2 header into a raw disk, and the file such a header names is not opened.
    """
    if fmt is None:
        backing = qcow2.backing_file_of(disk)
        return [backing] if backing else []
    if qemu_name(fmt) != "qcow2":
        return []
    return backing_chain(disk, "qcow2")[1:]


@contextlib.contextmanager
def _hypervisor(spec: ImageSpec, given: Any) -> Iterator[Any]:
    """The batch's hypervisor, or a connection of this run's own."""
    if given is not None:
        yield given
        return
    with open_hypervisor(spec.uri) as hypervisor:
        yield hypervisor


def _remove_base(layout: CacheLayout, name: str) -> None:
    remove_quietly(layout.base(name))
    remove_quietly(layout.record(name))
    remove_stale_temps(layout.base(name))
    fsync_dir(layout.base_dir)


# --------------------------------------------------------------------------------------------------
# state: absent
# --------------------------------------------------------------------------------------------------

def plan_absent(spec: ImageSpec, target: Target, used: Dict[str, List[str]]) -> ImagePlan:
    """Remove the image unless something uses it (then refuse, unless ``force``)."""
    users = used.get(os.path.realpath(target.path), [])
    if users and not spec.force:
        raise VirtfleetError("the cached image %s (%s) is still used by %s; remove those disks first or pass "
                             "force: true" % (target.path, public_url(spec.url), ", ".join(users)), users=users)
    return ImagePlan("absent", [REMOVE], target=target, removals=[target.name], users=users)


def _exists(target: Target) -> bool:
    return stat_or_none(target.path) is not None or stat_or_none(target.record_path) is not None


def ensure_absent(spec: ImageSpec, target: Target, check_mode: bool, hypervisor: Any = None) -> Dict[str, Any]:
    before = image_state(find_cached(target, spec.url))
    absent = {"path": target.path, "state": "absent"}
    result: Dict[str, Any] = {"changed": False, "path": target.path, "fetched": False, "actions": [], "users": [],
                              "diff": {"before": before, "after": before}}
    if not _exists(target):
        return result
    with _hypervisor(spec, hypervisor) as hv:
        if check_mode:
            plan = plan_absent(spec, target, bases_in_use(spec.layout, hv))
        else:
            with image_lock(target.lock_path, spec.lock_timeout, public_url(spec.url)):
                if not _exists(target):
                    return result
                # Decided under the lock: an overlay made meanwhile (under the lock, shared) is seen here.
                plan = plan_absent(spec, target, bases_in_use(spec.layout, hv))
                _remove_base(spec.layout, target.name)
    result.update(changed=True, actions=plan.actions, users=plan.users, diff={"before": before, "after": absent})
    return result


# --------------------------------------------------------------------------------------------------
# state: pruned
# --------------------------------------------------------------------------------------------------

def cached_names(layout: CacheLayout) -> List[str]:
    """Names of the files in the cache (images of image_cache, and other modules' bases), without records."""
    try:
        names = sorted(os.listdir(layout.base_dir))
    except FileNotFoundError:
        return []
    return [name for name in names if not name.endswith(RECORD_SUFFIX) and TEMP_MARKER not in name
            and os.path.isfile(layout.base(name))]


def plan_pruned(spec: ImageSpec, names: List[str], used: Dict[str, List[str]], now: float) -> ImagePlan:
    """Remove every base in ``names`` that nothing uses and that was unused for ``min_unused_age``."""
    layout = spec.layout
    plan = ImagePlan("pruned", [])
    for name in names:
        path = layout.base(name)
        stat = stat_or_none(path)
        if stat is None:
            continue
        if os.path.realpath(path) in used or now - _last_use(stat, layout.record(name)) < spec.min_unused_age:
            plan.kept.append(path)
            continue
        plan.removals.append(name)
        plan.steps.append(REMOVE)
    return plan


def ensure_pruned(spec: ImageSpec, check_mode: bool, hypervisor: Any = None) -> Dict[str, Any]:
    """Remove bases nothing uses and unused for ``min_unused_age``; decided again under their locks."""
    layout = spec.layout
    names = cached_names(layout)
    bases = {"bases": [layout.base(name) for name in names]}
    result: Dict[str, Any] = {"changed": False, "removed": [], "kept": [], "actions": [], "fetched": False,
                              "diff": {"before": bases, "after": bases}}
    if not names:
        return result
    with _hypervisor(spec, hypervisor) as hv:
        plan = plan_pruned(spec, names, bases_in_use(layout, hv), time.time())
        if not check_mode and plan.removals:
            with contextlib.ExitStack() as locks:
                for name in plan.removals:
                    locks.enter_context(image_lock(layout.lock(name), spec.lock_timeout, layout.base(name)))
                final = plan_pruned(spec, plan.removals, bases_in_use(layout, hv), time.time())
                for name in final.removals:
                    _remove_base(layout, name)
            plan.kept = sorted(plan.kept + final.kept)
            plan.removals, plan.steps = final.removals, final.steps
    removed = [layout.base(name) for name in plan.removals]
    result.update(changed=bool(removed), removed=removed, kept=plan.kept, actions=plan.actions,
                  diff={"before": bases, "after": {"bases": [path for path in bases["bases"] if path not in removed]}})
    return result


def _last_use(stat: os.stat_result, record_path: str) -> float:
    """When the base was last used: read by a guest (atime), fetched or converted (mtime), or re-inspected."""
    record = stat_or_none(record_path)
    return max(stat.st_atime, stat.st_mtime, record.st_mtime if record else 0.0)
