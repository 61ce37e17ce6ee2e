# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: one whole guest in one module call (the boot role's one call per hypervisor).

Ansible spends a fixed cost on every task, whatever the module does. The boot role's four steps (cache the
image, build the disks, write the domain XML, define and start the domain) as four module calls cost four
times that cost for a fleet whose every guest is already as described. This core runs the four modules'
own cores one after the other for one guest, each on the results of the one before, in one process, on
the batch's one libvirt connection; the list form runs it for every guest of a hypervisor at once.
Each part keeps its own fast path (the image and disk records, the domain XML's record, the domain's memo),
so a re-run reads state and changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.core import ensure_disk
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.lifecycle import ensure_domain
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_file import ensure_domain_xml
from ansible_collections.virtfleet.libvirt.plugins.module_utils._guest.spec import ITEM_SPEC
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.shared import list_form
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import image_cache_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import exclusive_lock
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import (
    DEFAULT_INSTANCES_PATH, guest_layout, validate_guest_name,
)

PARTS = ("image", "disks", "xml", "domain")
BUILD_LOCK_TIMEOUT = 1800
_LABELS = {"image": "image", "disks": "disk", "xml": "domain XML", "domain": "domain"}


def _shared(params: Dict[str, Any]) -> Dict[str, Any]:
    return {key: params.get(key) for key in ("uri", "instances_path") if params.get(key) is not None}


def _run(part: str, core: Callable[..., Dict[str, Any]], params: Dict[str, Any], check_mode: bool, diff: bool,
         hypervisor: Any, done: Dict[str, Any], what: str = "") -> Dict[str, Any]:
    """One part's core; its failure names the part and carries what the parts before it did."""
    try:
        return core(params, check_mode, diff, hypervisor=hypervisor)
    except VirtfleetError as exc:
        details = dict(done)
        details.update(failed_part=part, changed=any(_changed(r) for r in done.values()))
        raise VirtfleetError("%s%s: %s" % (_LABELS[part], " " + what if what else "", exc.msg), **details)


def _changed(result: Any) -> bool:
    if isinstance(result, list):
        return any(_changed(one) for one in result)
    return bool(isinstance(result, dict) and result.get("changed"))


def _disk_xml(built: List[Dict[str, Any]], extra: Optional[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """The domain's disks: the built ones in order (the first boots), then any the XML part lists itself."""
    disks = [dict(built[0]["xml_disk"], boot_order=1)] + [dict(r["xml_disk"]) for r in built[1:]]
    return disks + [dict(d) for d in extra or []]


def ensure_guest(params: Dict[str, Any], check_mode: bool = False, diff: bool = False,
                 hypervisor: Any = None) -> Dict[str, Any]:
    """Core of the ``guest`` module: one guest's image, disks, domain XML and domain, in that order, under the
    guest's build lock (not in check mode, which writes nothing, not even a lock file)."""
    name = params.get("name")
    validate_guest_name(name)
    _check_parts(params, name)
    if check_mode:
        return _ensure_guest(params, check_mode, diff, hypervisor)
    layout = guest_layout(params.get("instances_path") or DEFAULT_INSTANCES_PATH, name)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(layout.build_lock, BUILD_LOCK_TIMEOUT,
                                               "guest %s (another run is building it)" % name))
        except OSError as exc:
            raise VirtfleetError("cannot take the build lock of guest %s (%s): %s; instances_path must be a "
                                 "directory this user can write" % (name, layout.build_lock, exc.strerror or exc))
        return _ensure_guest(params, check_mode, diff, hypervisor)


def _check_parts(params: Dict[str, Any], name: str) -> None:
    for part in ("image", "xml"):
        if not isinstance(params.get(part), dict):
            raise VirtfleetError("guest %s: %s must be a dictionary of the %s options" % (
                name, part, "image_cache" if part == "image" else "domain_xml"))
    disks = params.get("disks")
    if not isinstance(disks, list) or not disks or not all(isinstance(d, dict) for d in disks):
        raise VirtfleetError("guest %s: disks must list at least its root disk (guest_disk options)" % name)


def _ensure_guest(params: Dict[str, Any], check_mode: bool, diff: bool, hypervisor: Any) -> Dict[str, Any]:
    name = params.get("name")
    disks = params["disks"]
    shared = _shared(params)
    done: Dict[str, Any] = {}
    warnings: List[str] = []

    image = _run("image", image_cache_core, dict(params["image"], state="present", **shared), check_mode, diff,
                 hypervisor, done)
    done["image"] = image
    built: List[Dict[str, Any]] = []
    for disk in disks:
        one = dict(disk, guest=name, state="present", **shared)
        if (one.get("kind") or "root") == "root":
            one.update(base=image.get("path"), base_format=image.get("format"))
        done["disks"] = built
        built.append(_run("disks", ensure_disk, one, check_mode, diff, hypervisor, done,
                          one.get("file_name") or one.get("kind") or "root"))
    done["disks"] = built

    xml_params = dict(params["xml"], name=name, **shared)
    xml_params["disks"] = _disk_xml(built, params["xml"].get("disks"))
    metadata = dict(xml_params.get("metadata") or {})
    owned = list(metadata.get("owned_files") or [])
    for result in built:
        owned += [f for f in result.get("owned_files") or [] if f not in owned]
    metadata["owned_files"] = owned
    xml_params["metadata"] = metadata
    xml = _run("xml", ensure_domain_xml, xml_params, check_mode, diff, hypervisor, done)
    text = xml.pop("xml", None)
    done["xml"] = xml

    domain = _run("domain", ensure_domain, dict(params.get("domain") or {}, name=name, xml=text, **shared),
                  check_mode, diff, hypervisor, done)
    done["domain"] = domain
    for part in PARTS:
        for result in done[part] if isinstance(done[part], list) else [done[part]]:
            warnings += ["%s: %s" % (_LABELS[part], w) for w in result.pop(WARNINGS_KEY, None) or []]
    out: Dict[str, Any] = dict(done, changed=any(_changed(r) for r in done.values()), name=name,
                               state=domain.get("state"), console_log=xml.get("console_log"))
    if diff:
        out["diff"] = [d for r in [image] + built + [xml, domain] for d in _diffs(r)]
    for result in [image] + built + [xml, domain]:
        result.pop("diff", None)
    if warnings:
        out[WARNINGS_KEY] = warnings
    return out


def _diffs(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    found = result.get("diff") if result.get("changed") else None
    if not found:
        return []
    return list(found) if isinstance(found, list) else [found]


# The module: one guest, or every guest of ``items`` at once, on one shared libvirt connection.
ensure_guests = list_form(ensure_guest, ITEM_SPEC, "name")
