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
3. ``result``: each leader prints one summary line per guest of its batch (``fleet_summary``); the guests that
   changed or failed join ``virtfleet_<role>_report`` (one ``add_host`` loop over those only) and each runs
   ``fleet_result`` as a host of its own, so that it fails alone (bad input, a failed item, an unreachable
   hypervisor) and the recap counts its change; one task hands every guest the run's results per guest
   (``<role>_results_by_guest``, ``fleet_results``). An unchanged fleet thus costs no task and no loop item per
   guest, only per hypervisor.

A role variable ``<role>_<name>`` (``boot_state``) is taken from the guest's ``<role>_<name>``, else from the
collection-wide ``virtfleet_<name>`` (shared by the boot, resize and destroy roles), else the role's default.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

COLLECTION_PREFIX = "virtfleet_"
PLAN_FACT = "virtfleet_%s_plan"         # per role, so that one playbook may boot and then destroy
LEADERS_GROUP = "virtfleet_%s_leaders"
REPORT_GROUP = "virtfleet_%s_report"     # the guests that changed or failed: reported as hosts of their own
OUTCOME_VAR = "virtfleet_%s_outcome"     # a reported guest's outcome, handed to it by the batch step (fleet_report)
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


def _flavor(v: Dict[str, Any], guest: str, role: str = "boot") -> Dict[str, Any]:
    flavors = v.get(role + "_flavors") or {}
    name = v.get(role + "_flavor")
    if not isinstance(flavors, dict):
        raise PlanError("%s_flavors must be a dictionary of flavor name -> {vcpus, memory, disk, ...}" % role)
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
                  "max_memory": flavor.get("max_memory"), "headroom": v.get("boot_headroom"),
                  "virt_type": v.get("boot_virt_type"),
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


def _health_checks(guest: str, v: Dict[str, Any]) -> Dict[str, Any]:
    """The resize role's checks between resize and confirm: a command on the hypervisor, a TCP port, the agent."""
    checks: Dict[str, Any] = {}
    timeout = v.get("resize_health_timeout")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise PlanError("guest %s: resize_health_timeout must be a number of seconds from 1 to 3600, got %r"
                        % (guest, timeout))
    command = v.get("resize_health_command")
    if command:
        if not isinstance(command, (str, list)):
            raise PlanError("guest %s: resize_health_command must be a command line or a list of arguments" % guest)
        checks["command"] = command
    port = v.get("resize_health_port")
    if port not in (None, "", 0):
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise PlanError("guest %s: resize_health_port must be a TCP port (1-65535), got %r"
                            % (guest, v.get("resize_health_port")))
        checks["port"] = {"host": v.get("resize_health_host") or "127.0.0.1", "port": port,
                          "search_regex": v.get("resize_health_search") or None}
    if v.get("resize_health_agent"):
        checks["agent"] = True
    if checks:
        checks["timeout"] = timeout
    return checks


def resize_guest(guest: str, v: Dict[str, Any]) -> Dict[str, Any]:
    """The resize role's vm_resize item for one guest: the flavor the inventory now names, and its checks."""
    if not v.get(HYPERVISOR_VAR):
        raise PlanError("guest %s has no virtfleet_hypervisor: set it to the inventory name of the hypervisor that "
                        "holds it" % guest)
    flavor = _flavor(v, guest, "resize")
    name = v["resize_guest_name"]
    disks = {"root": flavor["disk"]}
    for kind in ("ephemeral", "swap"):
        if _nonzero_size(flavor.get(kind)):
            disks[kind] = flavor[kind]
    checks = _health_checks(guest, v)
    resize = _clean({"name": name, "flavor": v.get("resize_flavor"), "vcpus": flavor["vcpus"],
                     "memory": flavor["memory"], "max_vcpus": flavor.get("max_vcpus"),
                     "max_memory": flavor.get("max_memory"), "headroom": v.get("resize_headroom"), "disks": disks,
                     "mode": v.get("resize_mode"), "allow_decrease": v.get("resize_allow_decrease"),
                     "shutdown_timeout": v.get("resize_shutdown_timeout"),
                     "start_timeout": v.get("resize_start_timeout"), "force_off": v.get("resize_force_off"),
                     # with a check, the resize stays unconfirmed (its backup kept) until the check passed
                     "confirm": not checks})
    return {"name": name, "resize": resize, "health": checks}


ROLES: Dict[str, Callable[[str, Dict[str, Any]], Dict[str, Any]]] = {
    "boot": boot_guest, "destroy": destroy_guest, "resize": resize_guest}


# The module item spec each planned part is checked against on the controller: a value Ansible's types or
# choices refuse would otherwise fail the whole batch's module call; checked here, it fails its guest alone.
ITEM_SPECS = {
    "guest": ("_guest.spec", "ITEM_SPEC"),
    "domain": ("_domain.spec", "DOMAIN_ITEM_SPEC"),
    "resize": ("_resize.spec", "ITEM_SPEC"),
}
_MODULE_UTILS = "ansible_collections.virtfleet.libvirt.plugins.module_utils."


def _item_spec(part: str):
    import importlib

    module, name = ITEM_SPECS[part]
    return getattr(importlib.import_module(_MODULE_UTILS + module), name)


def check_items(guest: str, planned: Dict[str, Any]) -> None:
    """Refuse a guest whose module arguments Ansible's argument validation would refuse, with its words."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    checked = dict(planned, guest=guest_item(planned)) if "disks" in planned else planned
    for part in ITEM_SPECS:
        if part not in checked or (part == "domain" and "guest" in checked):
            continue
        spec = _item_spec(part)
        validator = ArgumentSpecValidator(spec.argument_spec, **spec.constraints())
        for item in checked[part] if isinstance(checked[part], list) else [checked[part]]:
            errors = validator.validate(dict(item)).error_messages
            if errors:
                raise PlanError("guest %s: %s: %s" % (guest, STEP_LABELS.get(part, part), "; ".join(errors)))


def guest_item(planned: Dict[str, Any]) -> Dict[str, Any]:
    """The guest module's item for one booted guest: its parts without what the module fills in."""
    def without(part: Dict[str, Any], *keys: str) -> Dict[str, Any]:
        return {k: v for k, v in part.items() if k not in keys}

    return {"name": planned["name"], "image": dict(planned["image"]),
            "disks": [without(d, "guest") for d in planned["disks"]],
            "xml": without(planned["xml"], "name"), "domain": without(planned["domain"], "name")}


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
    """The items of ``step`` for one batch: ``guest`` (boot: one guest module item per guest), ``domain``
    (destroy: one domain item per guest), or a step of the resize role (built from the steps before it)."""
    guests = batch["guests"]
    if step == "guest":
        return [guest_item(planned) for planned in guests.values()]
    if step == "domain":
        return [planned["domain"] for planned in guests.values()]
    if step in RESIZE_STEPS:
        return resize_step_items(batch, step, previous, before)
    raise ValueError("unknown step %r" % step)


STEPS = {"boot": ("guest",), "destroy": ("domain",),
         "resize": ("apply", "health_command", "health_port", "health_agent", "finish")}
# The guest module's parts, read as steps of their own (each guest's result split by _guest_parts).
GUEST_PARTS = ("image", "disks", "xml", "domain")
STEP_LABELS = {"guest": "arguments", "image": "image", "disks": "disk", "xml": "domain XML", "domain": "domain",
               "resize": "resize",
               "apply": "resize", "health_command": "health command", "health_port": "health port",
               "health_agent": "guest agent ping", "finish": "confirm/revert"}
RESIZE_STEPS = STEPS["resize"]
HEALTH_STEPS = ("health_command", "health_port", "health_agent")


# ------------------------------------------------------------------------------------------- resize

def _awaiting_check(batch: Dict[str, Any], applied: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """guest -> its resize result, for the guests whose resize is applied but not confirmed (they have checks)."""
    by_name = {r.get("item"): r for r in _results_by(applied)}
    waiting = {}
    for guest, planned in batch["guests"].items():
        result = by_name.get(planned["name"])
        if planned["health"] and result is not None and _ok(result) and result.get("resize_state") == "applied":
            waiting[guest] = result
    return waiting


def _check_passed(step: str, result: Dict[str, Any]) -> Tuple[bool, str]:
    """Whether one health check passed, and what it said when it did not."""
    if step == "health_agent":
        agent = ((result.get("domains") or [{}])[0] or {}).get("agent") or {}
        if result.get("failed") or not agent.get("responding"):
            return False, "the guest agent did not answer: %s" % (agent.get("error") or result.get("msg") or "?")
        return True, ""
    if result.get("failed") or result.get("rc") not in (None, 0):
        said = (result.get("stderr") or result.get("msg") or result.get("stdout") or "").strip()
        return False, "%s failed%s%s" % (STEP_LABELS[step], " (rc=%s)" % result["rc"] if "rc" in result else "",
                                         ": %s" % said[-300:] if said else "")
    return True, ""


def health_verdicts(batch: Dict[str, Any], checks: Dict[str, Optional[Dict[str, Any]]]
                    ) -> Dict[str, List[str]]:
    """guest -> what its failed checks said (an empty list: every check it has passed)."""
    verdicts: Dict[str, List[str]] = {}
    for step in HEALTH_STEPS:
        seen = {}
        for result in _results_by(checks.get(step)):
            item = result.get("item")
            if isinstance(item, dict):
                seen[item.get("guest")] = result
        for guest, planned in batch["guests"].items():
            if step[len("health_"):] not in planned["health"]:
                continue
            failures = verdicts.setdefault(guest, [])
            result = seen.get(guest)
            if result is None:
                continue  # not waiting for a check (unchanged, failed and rolled back): nothing to judge
            passed, said = _check_passed(step, result)
            if not passed:
                failures.append(said)
    return verdicts


def resize_step_items(batch: Dict[str, Any], step: str, previous: Optional[Dict[str, Any]] = None,
                      before: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Items of the resize role's steps: ``apply`` (one vm_resize item per guest), each health check (loop
    items of the guests whose resize waits for it; ``previous`` = the apply result), ``finish`` (confirm or
    revert; ``previous`` = the apply result, ``before`` = the health checks' results by step)."""
    if step == "apply":
        return [planned["resize"] for planned in batch["guests"].values()]
    waiting = _awaiting_check(batch, previous)
    if step in HEALTH_STEPS:
        kind = step[len("health_"):]
        items = []
        for guest in waiting:
            health = batch["guests"][guest]["health"]
            if kind in health:
                items.append({"guest": guest, "name": batch["guests"][guest]["name"], kind: health[kind],
                              "timeout": health["timeout"], "attempts": max(1, health["timeout"] // 2)})
        return items
    verdicts = health_verdicts(batch, before or {})
    return [{"name": batch["guests"][guest]["name"],
             "state": "reverted" if verdicts.get(guest) else "confirmed"} for guest in waiting]


def _size_text(what: Any, value: Any) -> Any:
    """Byte counts of disks and memory in MiB or GiB, as operators write flavors."""
    if not str(what).startswith(("disk", "memory", "max_memory")) or isinstance(value, bool) \
            or not isinstance(value, int) or value % (1 << 20):
        return value
    return "%d GiB" % (value >> 30) if value % (1 << 30) == 0 else "%d MiB" % (value >> 20)


def _change_text(change: Dict[str, Any]) -> str:
    what = change.get("what")
    return "%s %s -> %s" % (what, _size_text(what, change.get("before")), _size_text(what, change.get("after")))


def resize_outcome(plan_data: Dict[str, Any], batch: Dict[str, Any], guest: str,
                   results: Dict[str, Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """One guest's outcome of the resize role: what changed, live or cold, downtime, checks, confirm/revert."""
    planned = batch["guests"][guest]
    name = planned["name"]
    out: Dict[str, Any] = {"changed": False, "failed": False, "hypervisor": batch["hypervisor"], "steps": {}}
    applied = results.get("apply")
    mine = [r for r in _results_by(applied) if r.get("item") == name]
    if not mine:
        why = applied.get("msg") if isinstance(applied, dict) else None
        out.update(failed=True, msg="the resize did not run on hypervisor %s for guest %s%s" % (
            batch["hypervisor"], guest, ": %s" % why if why else " (the hypervisor is unreachable; see the task of "
            "its leader %s)" % batch["leader"]))
        return out
    resize = mine[0]
    out["steps"]["apply"] = mine
    out["resize"] = resize
    if resize.get("failed"):
        out.update(failed=True, msg="resize: %s" % resize.get("msg", "failed"))
        return out
    out["changed"] = bool(resize.get("changed"))
    changes = ", ".join(_change_text(c) for c in resize.get("plan") or [])
    parts = ["%s %s (%s)" % ("resized" if out["changed"] else "pending", resize.get("how"), changes)
             if changes else "unchanged"]
    if resize.get("how") not in (None, "none") or changes:
        parts.append("downtime %g s" % float(resize.get("downtime_seconds") or 0))
    verdict = health_verdicts(batch, {step: results.get(step) for step in HEALTH_STEPS}).get(guest)
    finished = [r for r in _results_by(results.get("finish")) if r.get("item") == name]
    if finished:
        out["steps"]["finish"] = finished
        out["changed"] = out["changed"] or bool(finished[0].get("changed"))
        out["resize_state"] = finished[0].get("resize_state")
        if finished[0].get("failed"):
            out.update(failed=True, msg="%s after the health check: %s" % (
                "reverting" if verdict else "confirming", finished[0].get("msg", "failed")))
            return out
        parts.append("health %s" % ("failed" if verdict else "passed"))
        parts.append(out["resize_state"] or "?")
        if verdict:
            out.update(failed=True, msg="health check failed after the resize (%s): reverted to the previous size"
                       % "; ".join(verdict))
    else:
        out["resize_state"] = resize.get("resize_state")
        if resize.get("resize_state") == "applied":
            parts.append("awaiting confirmation")
    out["domain"] = {"state": resize.get("state")}
    out["summary"] = "%s: %s, %s" % (guest, resize.get("state", "?"), ", ".join(parts))
    return out


def _guest_parts(result: Any, planned: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[str]]:
    """The guest module's result for one guest as the results of its four parts, or the guest's failure."""
    if not isinstance(result, dict) or "results" not in result:
        return {part: result for part in GUEST_PARTS}, None
    mine = [r for r in _results_by(result) if r.get("item") == planned["name"]]
    if not mine:
        return {part: {"results": []} for part in GUEST_PARTS}, None
    one = mine[0]
    if one.get("failed"):
        return {}, one.get("msg", "failed")
    name = planned["name"]
    return {"image": {"results": [dict(one.get("image") or {}, item=planned["image"]["url"])]},
            "disks": {"results": [dict(d, item=name) for d in one.get("disks") or []]},
            "xml": {"results": [dict(one.get("xml") or {}, item=name)]},
            "domain": {"results": [dict(one.get("domain") or {}, item=name)]}}, None


def leader_results(plan_data: Dict[str, Any], guest: str, hostvars: Any) -> Dict[str, Optional[Dict[str, Any]]]:
    """The registered results of each step of the batch ``guest`` belongs to, read from its leader's variables
    (``<role>_<step>_result``, the names the roles register them under)."""
    label = plan_data["batch_of"].get(guest)
    if label is None:
        return {}
    leader_vars = hostvars[plan_data["batches"][label]["leader"]]
    role = plan_data["role"]
    return {step: leader_vars.get("%s_%s_result" % (role, step)) for step in STEPS[role]}


def own_outcome(plan_data: Dict[str, Any], guest: str, handed: Any, hostvars: Any) -> Dict[str, Any]:
    """The outcome the batch step handed to ``guest`` in this run (``handed``, its ``OUTCOME_VAR``), else
    worked out from its leader's results (a summary that did not run, or an outcome of an earlier run)."""
    if isinstance(handed, dict) and plan_data.get("run") is not None and handed.get("run") == plan_data["run"]:
        return {key: value for key, value in handed.items() if key != "run"}
    return guest_outcome(plan_data, guest, leader_results(plan_data, guest, hostvars))


def guest_outcome(plan_data: Dict[str, Any], guest: str, results: Dict[str, Optional[Dict[str, Any]]]
                  ) -> Dict[str, Any]:
    """One guest's outcome from its batch's step results: changed, failed and why, and its own results; a guest
    whose hypervisor could not be reached is ``unreachable`` too."""
    out = _outcome(plan_data, guest, results)
    if out.get("failed") and any(isinstance(r, dict) and r.get("unreachable") for r in results.values()):
        out["unreachable"] = True
    return out


def report(plan_data: Dict[str, Any], hostvars: Any) -> List[Dict[str, Any]]:
    """Every planned guest's summary line, outcome and domain result, and the groups it joins: the report group
    when it changed or failed (the roles hand those guests their outcome with one ``add_host`` loop, so that a
    guest's report reads its own outcome rather than its leader's results for the whole batch)."""
    lines = []
    group = REPORT_GROUP % plan_data["role"]
    for label, batch in plan_data["batches"].items():
        results = leader_results(plan_data, batch["leader"], hostvars)
        for guest in batch["guests"]:
            outcome = guest_outcome(plan_data, guest, results)
            failed = bool(outcome.get("failed"))
            lines.append({
                "guest": guest, "hypervisor": batch["hypervisor"], "batch": label, "failed": failed,
                "outcome": dict(outcome, run=plan_data.get("run")),
                "changed": bool(outcome.get("changed")), "domain": None if failed else outcome.get("domain"),
                "groups": [group] if failed or outcome.get("changed") else [],
                "summary": _summary_line(guest, outcome)})
    return lines


def _summary_line(guest: str, outcome: Dict[str, Any]) -> str:
    return "%s: FAILED: %s" % (guest, outcome["msg"]) if outcome.get("failed") else outcome["summary"]


def summary(plan_data: Dict[str, Any], leader: str, results: Sequence[Optional[Dict[str, Any]]]) -> List[str]:
    """One line per guest of ``leader``'s batch (its step results in order): name, state, what changed, console
    log, addresses, or why it failed."""
    batch = plan_data["batches"][plan_data["leaders"][leader]]
    by_step = dict(zip(STEPS[plan_data["role"]], results))
    return [_summary_line(guest, guest_outcome(plan_data, guest, by_step)) for guest in batch["guests"]]


def results_by_guest(plan_data: Dict[str, Any], hostvars: Any) -> Dict[str, Dict[str, Any]]:
    """guest -> its result of the run (hypervisor, changed, failed, summary, domain), for every planned guest and
    every guest that could not be planned: what later plays read (``<role>_results_by_guest``)."""
    out = {line["guest"]: {key: line[key] for key in ("hypervisor", "changed", "failed", "summary", "domain")}
           for line in report(plan_data, hostvars)}
    for guest, why in plan_data["errors"].items():
        out[guest] = {"hypervisor": None, "changed": False, "failed": True, "domain": None,
                      "summary": _summary_line(guest, {"failed": True, "msg": why})}
    return out


def _outcome(plan_data: Dict[str, Any], guest: str, results: Dict[str, Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    if guest in plan_data["errors"]:
        return {"failed": True, "changed": False, "msg": plan_data["errors"][guest]}
    label = plan_data["batch_of"].get(guest)
    if label is None:
        return {"failed": True, "changed": False, "msg": "guest %s was not planned (it was not in the play that "
                "planned this run)" % guest}
    batch = plan_data["batches"][label]
    if plan_data["role"] == "resize":
        return resize_outcome(plan_data, batch, guest, results)
    planned = batch["guests"][guest]
    name = planned["name"]
    out: Dict[str, Any] = {"changed": False, "failed": False, "hypervisor": batch["hypervisor"], "steps": {}}
    changes: List[str] = []
    steps = STEPS[plan_data["role"]]
    if plan_data["role"] == "boot":
        results, failure = _guest_parts(results.get("guest"), planned)
        if failure is not None:
            out.update(failed=True, msg=failure)
            return out
        steps = GUEST_PARTS
    for step in steps:
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
