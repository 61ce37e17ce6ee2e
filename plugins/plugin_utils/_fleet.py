# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the roles: one module call per hypervisor for all its guests.

Guests are inventory hosts naming ``virtfleet_hypervisor``; flavors are data. The roles do not run a task
per guest and module (Ansible's fixed cost per host-task makes that slow at fleet scale). Instead:

1. ``plan`` (one controller task, ``fleet_plan``): every guest of the play gets its variables (its inventory
   and extra vars over the role's documented defaults, templated in the guest's own context) turned into the
   per-item arguments of each module, checked, and grouped into batches, one per hypervisor (and libvirt URI
   and instances path). The first guest of each batch is its leader.
2. ``batch`` (the leaders): each step is one module call with the list of the batch's items, delegated to
   the hypervisor; the items of a step are built from the results of the step before (``fleet_items``).
3. ``result`` (every guest, ``fleet_result``): the guest's own results are collected from its leader's, so
   that it fails alone (bad input, a failed item, an unreachable hypervisor) and its results are registered
   for later plays.

A role variable ``<role>_<name>`` (``boot_state``) is taken from the guest's ``<role>_<name>``, else from the
collection-wide ``virtfleet_<name>`` (shared by the boot, resize and destroy roles), else the role's default.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

COLLECTION_PREFIX = "virtfleet_"
PLAN_FACT = "virtfleet_%s_plan"         # per role, so that one playbook may boot and then destroy
LEADERS_GROUP = "virtfleet_%s_leaders"
# Inventory-wide variables every role reads as they are (never defaulted by a role).
HYPERVISOR_VAR = "virtfleet_hypervisor"


class PlanError(Exception):
    """A guest whose variables cannot become module arguments; the message says why and what to do."""


def role_value(name: str, role: str, guest_vars: Dict[str, Any], defaults: Dict[str, Any]) -> Tuple[bool, Any]:
    """(found, raw value) of the role variable ``<role>_<name>`` for one guest."""
    for key in ("%s_%s" % (role, name), COLLECTION_PREFIX + name):
        if key in guest_vars:
            return True, guest_vars[key]
    key = "%s_%s" % (role, name)
    if key in defaults:
        return True, defaults[key]
    return False, None


def merged_vars(role: str, guest_vars: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """The variables a guest's role tasks would see: the role's defaults under the guest's own variables, with
    every ``<role>_<name>`` resolved through the collection-wide ``virtfleet_<name>``."""
    merged = dict(defaults)
    merged.update(guest_vars)
    for key in defaults:
        if key.startswith(role + "_"):
            _found, merged[key] = role_value(key[len(role) + 1:], role, guest_vars, defaults)
    return merged


def _nonzero_size(value: Any) -> bool:
    return value not in (None, "", 0, "0", False)


def _clean(item: Dict[str, Any]) -> Dict[str, Any]:
    """An item without the options left to the module's defaults (None / empty string for optional text)."""
    return {k: v for k, v in item.items() if v is not None}


def _public_url(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


def _flavor(v: Dict[str, Any], guest: str) -> Dict[str, Any]:
    flavors = v.get("boot_flavors") or {}
    name = v.get("boot_flavor")
    if not isinstance(flavors, dict):
        raise PlanError("boot_flavors must be a dictionary of flavor name -> {vcpus, memory, disk, ...}")
    if name not in flavors:
        raise PlanError("Unknown flavor %r for guest %s. Known flavors: %s. Set virtfleet_flavor to one of them or "
                        "add it to virtfleet_flavors." % (name, guest, ", ".join(sorted(map(str, flavors)))))
    flavor = flavors[name]
    if not isinstance(flavor, dict) or not all(k in flavor for k in ("vcpus", "memory", "disk")):
        raise PlanError("flavor %r must give vcpus, memory and disk (and may give ephemeral, swap, max_vcpus, "
                        "max_memory)" % (name,))
    return flavor


def boot_guest(guest: str, v: Dict[str, Any]) -> Dict[str, Any]:
    """The boot role's per-item module arguments for one guest (``v``: its templated merged variables)."""
    if not v.get(HYPERVISOR_VAR):
        raise PlanError("guest %s has no virtfleet_hypervisor: set it to the inventory name of the hypervisor that "
                        "holds it" % guest)
    if not v.get("boot_image_url"):
        raise PlanError("guest %s has no image: set virtfleet_image_url (http, https, file URL or a path on the "
                        "hypervisor)" % guest)
    flavor = _flavor(v, guest)
    name = v["boot_guest_name"]
    image = _clean({"url": v["boot_image_url"], "checksum": v.get("boot_image_checksum") or None,
                    "format": v.get("boot_image_format") or None, "cache_format": v.get("boot_image_cache_format")})
    disks = [_clean({"guest": name, "kind": "root", "size": flavor["disk"], "format": v.get("boot_root_format"),
                     "backing": v.get("boot_root_backing")})]
    if _nonzero_size(flavor.get("ephemeral")):
        disks.append(_clean({"guest": name, "kind": "ephemeral", "size": flavor["ephemeral"],
                             "fs_type": v.get("boot_ephemeral_fs_type"), "label": v.get("boot_ephemeral_label"),
                             "format": v.get("boot_root_format")}))
    if _nonzero_size(flavor.get("swap")):
        disks.append(_clean({"guest": name, "kind": "swap", "size": flavor["swap"],
                             "format": v.get("boot_root_format")}))
    if v.get("boot_config_drive"):
        disks.append(_clean({"guest": name, "kind": "config_drive", "format": v.get("boot_config_drive_format"),
                             "hostname": v.get("boot_hostname") or name, "instance_uuid": v.get("boot_guest_uuid"),
                             "public_keys": v.get("boot_ssh_public_keys") or None,
                             "user_data": v.get("boot_user_data") or None,
                             "extra_files": v.get("boot_config_drive_files") or None}))
    xml = _clean({"name": name, "uuid": v.get("boot_guest_uuid"), "vcpus": flavor["vcpus"],
                  "memory": flavor["memory"], "max_vcpus": flavor.get("max_vcpus"),
                  "max_memory": flavor.get("max_memory"), "virt_type": v.get("boot_virt_type"),
                  "machine": v.get("boot_machine"), "fw_cfg": v.get("boot_fw_cfg") or None,
                  "guest_agent": v.get("boot_guest_agent"), "nics": v.get("boot_nics") or None,
                  "metadata": {"flavor": v.get("boot_flavor"), "image": _public_url(str(v["boot_image_url"]))}})
    domain = _clean({"name": name, "state": v.get("boot_state"), "start_timeout": v.get("boot_start_timeout"),
                     "shutdown_timeout": v.get("boot_shutdown_timeout"),
                     "wait_for_address": v.get("boot_wait_for_address"),
                     "address_timeout": v.get("boot_address_timeout")})
    return {"name": name, "image": image, "disks": disks, "xml": xml, "domain": domain}


def destroy_guest(guest: str, v: Dict[str, Any]) -> Dict[str, Any]:
    """The destroy role's module arguments for one guest: its domain absent, with the files made for it."""
    if not v.get(HYPERVISOR_VAR):
        raise PlanError("guest %s has no virtfleet_hypervisor: set it to the inventory name of the hypervisor that "
                        "holds it" % guest)
    name = v["destroy_guest_name"]
    return {"name": name, "domain": _clean({"name": name, "state": "absent",
                                            "remove_storage": v.get("destroy_remove_storage")})}


ROLES: Dict[str, Callable[[str, Dict[str, Any]], Dict[str, Any]]] = {"boot": boot_guest, "destroy": destroy_guest}


# The module item spec each planned part is checked against on the controller: a value Ansible's types or
# choices refuse would otherwise fail the whole batch's module call; checked here, it fails its guest alone.
ITEM_SPECS = {
    "image": ("_image.spec", "ITEM_SPEC"),
    "disks": ("_disk.spec", "ITEM_SPEC"),
    "xml": ("_domain.spec", "DOMAIN_XML_ITEM_SPEC"),
    "domain": ("_domain.spec", "DOMAIN_ITEM_SPEC"),
}
_MODULE_UTILS = "ansible_collections.virtfleet.libvirt.plugins.module_utils."


def _item_spec(part: str):
    import importlib

    module, name = ITEM_SPECS[part]
    return getattr(importlib.import_module(_MODULE_UTILS + module), name)


def check_items(guest: str, planned: Dict[str, Any]) -> None:
    """Refuse a guest whose module arguments Ansible's argument validation would refuse, with its words."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    for part in ("image", "disks", "xml", "domain"):
        if part not in planned:
            continue
        spec = _item_spec(part)
        validator = ArgumentSpecValidator(spec.argument_spec, **spec.constraints())
        for item in planned[part] if isinstance(planned[part], list) else [planned[part]]:
            errors = validator.validate(dict(item)).error_messages
            if errors:
                raise PlanError("guest %s: %s: %s" % (guest, STEP_LABELS.get(part, part), "; ".join(errors)))


def batch_key(v: Dict[str, Any], role: str) -> Tuple[str, str, str]:
    return (str(v.get(HYPERVISOR_VAR)), str(v.get("%s_uri" % role)), str(v.get("%s_instances_path" % role)))


def plan(role: str, guests: List[str], guest_vars: Callable[[str], Dict[str, Any]], per_guest: bool = False
         ) -> Dict[str, Any]:
    """The plan of one role over ``guests``: batches (leader, hypervisor, uri, instances_path, guests and
    their items) and the guests that cannot be planned, with why.

    ``guest_vars(name)`` gives a guest's templated merged variables; ``per_guest`` makes every guest its own
    batch (the role applied to guest hosts in the user's own play).
    """
    build = ROLES[role]
    batches: Dict[str, Dict[str, Any]] = {}
    errors: Dict[str, str] = {}
    for guest in guests:
        try:
            v = guest_vars(guest)
            planned = build(guest, v)
            check_items(guest, planned)
        except PlanError as exc:
            errors[guest] = str(exc)
            continue
        key = batch_key(v, role) + ((guest,) if per_guest else ())
        label = "|".join(key)
        batch = batches.get(label)
        if batch is None:
            batch = batches[label] = {"leader": guest, "hypervisor": key[0], "uri": key[1],
                                      "instances_path": key[2], "guests": {}}
        batch["guests"][guest] = planned
    leaders = {batch["leader"]: label for label, batch in batches.items()}
    return {"role": role, "batches": batches, "leaders": leaders, "errors": errors,
            "batch_of": {g: label for label, b in batches.items() for g in b["guests"]}}


# ------------------------------------------------------------------------------------------- steps

def _results_by(result: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    if not isinstance(result, dict):
        return []
    return [r for r in result.get("results") or [] if isinstance(r, dict)]


def _ok(result: Dict[str, Any]) -> bool:
    return not result.get("failed")


def step_items(batch: Dict[str, Any], step: str, previous: Optional[Dict[str, Any]] = None,
               before: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """The items of ``step`` for one batch, built from the results of the steps before it.

    ``image``: the distinct images; ``disks``: every disk of the guests whose image is cached (``previous`` =
    the image step's result); ``xml``: one domain XML per guest whose disks were all built (``previous`` =
    the disk step's result, ``before`` = the image step's); ``domain``: one per guest whose XML was written.
    """
    guests = batch["guests"]
    if step == "image":
        seen: Dict[str, Dict[str, Any]] = {}
        for planned in guests.values():
            seen.setdefault(planned["image"]["url"] + "\0" + str(sorted(planned["image"].items())),
                            planned["image"])
        return list(seen.values())
    if step == "disks":
        images = {r.get("item"): r for r in _results_by(previous)}
        items = []
        for planned in guests.values():
            cached = images.get(planned["image"]["url"])
            if cached is None or not _ok(cached):
                continue
            for disk in planned["disks"]:
                disk = dict(disk)
                if disk["kind"] == "root":
                    disk.update(base=cached.get("path"), base_format=cached.get("format"))
                items.append(disk)
        return items
    if step == "xml":
        disks: Dict[str, List[Dict[str, Any]]] = {}
        for result in _results_by(previous):
            disks.setdefault(result.get("item"), []).append(result)
        items = []
        for name, planned in guests.items():
            built = disks.get(planned["name"], [])
            if len(built) != len(planned["disks"]) or not all(_ok(r) for r in built):
                continue
            xml = copy.deepcopy(planned["xml"])
            xml["disks"] = [dict(built[0]["xml_disk"], boot_order=1)] + [r["xml_disk"] for r in built[1:]]
            owned = []
            for result in built:
                owned += [f for f in result.get("owned_files") or [] if f not in owned]
            xml["metadata"]["owned_files"] = owned
            items.append(xml)
        return items
    if step == "domain" and previous is None:
        return [planned["domain"] for planned in guests.values()]  # a role whose first step is the domain
    if step == "domain":
        written = {r.get("item"): r for r in _results_by(previous) if _ok(r)}
        items = []
        for planned in guests.values():
            xml = written.get(planned["name"])
            if xml is not None:
                items.append(dict(planned["domain"], xml=xml["xml"]))
        return items
    raise ValueError("unknown step %r" % step)


STEPS = {"boot": ("image", "disks", "xml", "domain"), "destroy": ("domain",)}
STEP_LABELS = {"image": "image", "disks": "disk", "xml": "domain XML", "domain": "domain"}


def guest_outcome(plan_data: Dict[str, Any], guest: str, results: Dict[str, Optional[Dict[str, Any]]]
                  ) -> Dict[str, Any]:
    """One guest's outcome from its batch's step results: changed, failed and why, and its own results."""
    if guest in plan_data["errors"]:
        return {"failed": True, "changed": False, "msg": plan_data["errors"][guest]}
    label = plan_data["batch_of"].get(guest)
    if label is None:
        return {"failed": True, "changed": False, "msg": "guest %s was not planned (it was not in the play that "
                "planned this run)" % guest}
    batch = plan_data["batches"][label]
    planned = batch["guests"][guest]
    name = planned["name"]
    out: Dict[str, Any] = {"changed": False, "failed": False, "hypervisor": batch["hypervisor"], "steps": {}}
    changes: List[str] = []
    for step in STEPS[plan_data["role"]]:
        result = results.get(step)
        if not isinstance(result, dict) or ("results" not in result and not result.get("skipped")):
            why = (result or {}).get("msg") if isinstance(result, dict) else None
            out.update(failed=True, msg="the %s step did not run on hypervisor %s for guest %s%s" % (
                STEP_LABELS[step], batch["hypervisor"], guest,
                ": %s" % why if why else " (the hypervisor is unreachable, or an earlier step failed for the whole "
                "batch; see the task of its leader %s)" % batch["leader"]))
            return out
        key = planned["image"]["url"] if step == "image" else name
        if not isinstance(result, dict) or result.get("skipped"):
            continue
        mine = [r for r in _results_by(result) if r.get("item") == key]
        out["steps"][step] = mine
        for one in mine:
            if one.get("failed"):
                out.update(failed=True, msg="%s: %s" % (STEP_LABELS[step], one.get("msg", "failed")))
                return out
            if one.get("changed"):
                out["changed"] = True
                what = one.get("kind") or STEP_LABELS[step]
                changes.append("%s %s" % (what, "+".join(one.get("actions") or ["written"])))
        if not mine:
            out.update(failed=True, msg="no %s result for guest %s" % (STEP_LABELS[step], guest))
            return out
    domain = (out["steps"].get("domain") or [{}])[0]
    xml = (out["steps"].get("xml") or [{}])[0]
    out["domain"] = domain
    out["summary"] = "%s: %s, %s%s%s" % (
        guest, domain.get("state", "?"), ", ".join(changes) if changes else "unchanged",
        ", console %s" % xml["console_log"] if xml.get("console_log") else "",
        ", addresses %s" % ", ".join(a["address"] for nic in domain.get("interfaces") or []
                                     for a in nic.get("addresses") or []) if domain.get("interfaces") else "")
    return out
