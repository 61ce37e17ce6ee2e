# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: image_cache's core, the entry that dispatches, and the cached re-run.

Every image a guest boots from enters the hypervisor through the cache under ``<instances_path>/_base``
(see ``record`` for names and records). This file answers a cached re-run by itself, from one record
and one ``stat``; the rest is loaded only when it is needed, and only from here, pointing down:

* fetching, verifying, inspecting and converting an image, and re-inspecting a cached one, is ``fetch``;
* removing images (``state: absent`` and ``pruned``) is ``prune``.

A cached re-run imports neither of them, nor the inspector, qemu-img, libvirt or the HTTP client: under
AnsiballZ every imported module is compiled from source on every run. One exclusive ``flock`` per image
under ``<instances_path>/locks`` makes concurrent runs download once.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.record import (
    FETCH, Target, cached_image_result, image_state, plan_present, planned_fetch_result, result_state, target_of,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.shared import list_form
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import ITEM_SPEC, ImageSpec


def image_cache_core(params: Dict[str, Any], check_mode: bool = False, diff: bool = False,
                     hypervisor: Any = None) -> Dict[str, Any]:
    """image_cache's core over one image (or, for ``pruned``, the cache): Ansible's parameters in, a result out.

    ``hypervisor`` (a ``_host.guest.Hypervisor``) may be shared by a batch; removals open one otherwise.
    """
    return ensure_image(ImageSpec.from_params(params), check_mode, diff, hypervisor)


def ensure_image(spec: ImageSpec, check_mode: bool = False, diff: bool = False,
                 hypervisor: Any = None) -> Dict[str, Any]:
    """Bring one image (or, for ``pruned``, the cache) to ``spec.state``. The result's ``diff`` holds the
    cached image (or the cache's list of bases) before and after, as ``record.image_state`` shows it;
    ``run_core`` drops it unless diff mode asked for it."""
    return _STATES[spec.state](spec, check_mode, hypervisor)


def resolved_target(spec: ImageSpec) -> Target:
    """The cached image ``spec`` names; a checksum given as a SUMS file is read first (that needs ``fetch``)."""
    checksum = spec.checksum
    if checksum is not None and checksum.is_sums:
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.fetch import resolve_checksum

        checksum = resolve_checksum(spec)
    return target_of(spec, checksum)


def ensure_present(spec: ImageSpec, check_mode: bool, hypervisor: Any = None) -> Dict[str, Any]:
    """A cached, trustworthy image is answered from its record; anything else is ``fetch``'s."""
    target = resolved_target(spec)
    plan = plan_present(spec, target)
    before = image_state(plan.cached)
    # Nothing is written on a cached re-run (not even a "last used" touch): an idempotent run only
    # reads. Use is seen by pruning through the disks' backing chains and the base's atime.
    if not plan.steps:
        result = cached_image_result(plan.cached)
    elif check_mode and plan.steps == [FETCH]:
        result = planned_fetch_result(target.path, spec, target.checksum_text)
    elif check_mode:
        result = cached_image_result(plan.cached, plan.actions)
    else:
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.fetch import apply_present

        result = apply_present(spec, plan)
    after = result_state(result)
    result["diff"] = {"before": before if result["changed"] else after, "after": after}
    return result


def ensure_absent(spec: ImageSpec, check_mode: bool, hypervisor: Any = None) -> Dict[str, Any]:
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import prune

    return prune.ensure_absent(spec, resolved_target(spec), check_mode, hypervisor)


def ensure_pruned(spec: ImageSpec, check_mode: bool, hypervisor: Any = None) -> Dict[str, Any]:
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import prune

    return prune.ensure_pruned(spec, check_mode, hypervisor)


_STATES: Dict[str, Callable[[ImageSpec, bool, Optional[Any]], Dict[str, Any]]] = {
    "present": ensure_present,
    "absent": ensure_absent,
    "pruned": ensure_pruned,
}


def _describe(one: Dict[str, Any]) -> str:
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import public_url

    return public_url(one["url"]) if one.get("url") else str(one.get("state"))


# The module: one image, or every image of ``items`` (equal urls one after the other, so a batch fetches each
# image once; the others at once), sharing one libvirt connection that only removals open.
image_cache_items = list_form(image_cache_core, ITEM_SPEC, "url",
                              serial=lambda one: one.get("url") or one.get("state"), describe=_describe)
