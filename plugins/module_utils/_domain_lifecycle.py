# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: bring one libvirt domain to a wanted state.

``plan_domain`` decides (reads libvirt only) and ``apply_plan`` acts, so check mode returns the
very plan a real run would carry out. Idempotency is semantic: the desired XML and the defined
(inactive) XML are parsed into the typed model and normalised before they are compared.
"""

from __future__ import annotations

import os
import stat
import uuid as uuidlib
from typing import Any, Dict, List

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _domain_model as model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._libvirt_conn import (
    libvirt, libvirt_error_text, lookup_domain, normalized_state, wait_for_state, domain_state,
)

WANTED_STATES = ("running", "shutdown", "paused", "defined", "absent")
MAX_NAME_LENGTH = 255  # what a file name may be; libvirt's own limit is far above any sane name
MAX_TIMEOUT = 86400


def validate_params(params: Dict[str, Any]) -> None:
    """Reject what libvirt or the file system would choke on, before anything is looked up."""
    name = params.get("name")
    if not isinstance(name, str) or not name.strip():
        raise VirtfleetError("name must be a non-empty string, got %r" % (name,))
    if len(name) > MAX_NAME_LENGTH:
        raise VirtfleetError("name is %d characters long; at most %d are allowed" % (len(name), MAX_NAME_LENGTH))
    bad = sorted({c for c in name if c == "/" or ord(c) < 32 or ord(c) == 127})
    if bad or name in (".", "..") or name != name.strip():
        raise VirtfleetError("name %r is not a valid domain name: no '/', control characters, leading or "
                             "trailing blanks, and not '.' or '..'" % (name,))
    if params.get("state", "running") not in WANTED_STATES:
        raise VirtfleetError("state must be one of %s, got %r" % (", ".join(WANTED_STATES), params.get("state")))
    for key in ("shutdown_timeout", "start_timeout"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_TIMEOUT):
            raise VirtfleetError("%s must be a number of seconds from 0 to %d, got %r" % (key, MAX_TIMEOUT, value))


def _parse_desired(xml: Any, source: str, name: str) -> "model.Domain":
    """The desired definition, parsed; it must name the domain the task is about."""
    if not isinstance(xml, str) or not xml.strip():
        raise VirtfleetError("the domain XML from %s is empty" % source)
    try:
        parsed = model.Domain.from_xml(xml)
    except Exception as exc:  # malformed XML from a file or a user
        raise VirtfleetError("cannot parse the domain XML from %s: %s" % (source, exc))
    if parsed.name != name:
        raise VirtfleetError("the domain XML from %s defines domain %r, not %r; the name option and the XML's "
                             "<name> must agree" % (source, parsed.name, name))
    if parsed.uuid:
        try:
            uuidlib.UUID(parsed.uuid)
        except ValueError:
            raise VirtfleetError("the domain XML from %s has an invalid UUID %r" % (source, parsed.uuid))
    return parsed


def _same_uuid(one: str, two: str) -> bool:
    try:
        return uuidlib.UUID(one) == uuidlib.UUID(two)
    except ValueError:
        return one.lower() == two.lower()


def _semantic_xml(xml: str, source: str, runtime: bool = False) -> str:
    """Canonical text of a domain definition, for comparison and diffs.

    ``runtime`` reduces a definition the way a running guest's live XML is reduced (its expanded
    CPU model cannot be mapped back), so the two compare equal when nothing changed.
    """
    try:
        parsed = model.Domain.from_xml(xml)
    except Exception as exc:  # malformed XML from a file or a user
        raise VirtfleetError("cannot parse the domain XML from %s: %s" % (source, exc))
    return _canonical(parsed, runtime)


def _canonical(domain: "model.Domain", runtime: bool = False) -> str:
    """Canonical text of an already parsed definition (see ``_semantic_xml``)."""
    return model.normalize_for_compare(domain, runtime=runtime).to_string()


def _inactive_xml(dom) -> str:
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)


def _adopt_identity(desired: "model.Domain", current: "model.Domain") -> None:
    """Keep the defined UUID and MACs when the desired XML leaves them out (libvirt generated them)."""
    if not desired.uuid or (current.uuid and _same_uuid(desired.uuid, current.uuid)):
        desired.uuid = current.uuid  # also spells an equal UUID the way libvirt does
    cur_nics = [d for d in current.devices if isinstance(d, model.Interface)]
    new_nics = [d for d in desired.devices if isinstance(d, model.Interface)]
    for index, nic in enumerate(new_nics):
        if not nic.mac and index < len(cur_nics):
            nic.mac = cur_nics[index].mac


def plan_domain(conn, params: Dict[str, Any]) -> Dict[str, Any]:
    """What must happen to reach ``params['state']``: a list of actions plus before/after facts."""
    name = params["name"]
    state = params["state"]
    dom = lookup_domain(conn, name)
    before_state = normalized_state(dom) if dom is not None else "absent"
    plan: Dict[str, Any] = {"name": name, "actions": [], "before_state": before_state, "restart_pending": False,
                            "before_xml": "", "after_xml": "", "desired_xml": None, "differences": []}

    if state == "absent":
        if dom is not None:
            inactive = _inactive_xml(dom)
            plan["before_xml"] = _semantic_xml(inactive, "libvirt")
            if before_state != "shutoff":
                plan["actions"].append("destroy")
            if dom.isPersistent():
                plan["actions"].append("undefine")  # a transient domain is gone once destroyed
            if params.get("remove_storage"):
                plan["remove_files"], plan["kept_files"] = removable_files(conn, name, owned_files(inactive))
                if plan["remove_files"]:
                    plan["actions"].append("remove_storage")
        plan["after_state"] = "absent"
        return plan

    desired_xml = params["xml"]
    # Each definition is parsed once; the parsed objects serve identity, UUID check and comparison.
    desired = _parse_desired(desired_xml, params.get("xml_source", "the xml option"), name)
    if dom is None:
        plan["actions"].append("define")
        plan["after_xml"] = _canonical(desired)
        plan["desired_xml"] = desired_xml
        running_after = False
        current_state = "shutoff"
    else:
        current = model.Domain.from_xml(_inactive_xml(dom))
        _adopt_identity(desired, current)
        desired_xml = desired.to_string()
        want_uuid, have_uuid = desired.uuid, current.uuid
        if want_uuid and have_uuid and not _same_uuid(want_uuid, have_uuid):
            raise VirtfleetError(
                "domain %s is defined with UUID %s but the desired XML has UUID %s; libvirt cannot change a "
                "domain's UUID. Remove the uuid from the XML to keep the existing one, or set state=absent first."
                % (name, have_uuid, want_uuid))
        plan["before_xml"] = _canonical(current)
        plan["after_xml"] = _canonical(desired)
        if plan["before_xml"] != plan["after_xml"]:
            plan["actions"].append("redefine")
            plan["desired_xml"] = desired_xml
            plan["differences"] = _changed_lines(plan["before_xml"], plan["after_xml"])
        current_state = before_state
        running_after = current_state in ("running", "paused")

    if state == "running":
        if current_state == "paused":
            plan["actions"].append("resume")
        elif current_state != "running":
            plan["actions"].append("start")
    elif state == "paused":
        if current_state == "running":
            plan["actions"].append("suspend")
        elif current_state != "paused":
            plan["actions"].append("start_paused")
    elif state == "shutdown":
        if current_state in ("running", "paused"):
            plan["actions"].append("shutdown")
        running_after = False

    if running_after and state in ("running", "paused", "defined"):
        # The running guest may lag behind its definition, changed now or by an earlier run.
        live = _semantic_xml(dom.XMLDesc(0), "libvirt (live)")
        # ``desired`` equals the definition after this run (redefined or already equal), so it is what
        # the live guest is compared with; no second read of the inactive XML.
        desired_runtime = _canonical(desired, runtime=True)
        if live != desired_runtime:
            if params.get("apply") == "restart":
                # a restart keeps the guest as asked (or, for state defined, as it was: paused stays paused)
                paused_after = state == "paused" or (state == "defined" and current_state == "paused")
                plan["actions"] += ["shutdown", "start_paused" if paused_after else "start"]
                if not plan["differences"]:
                    plan["differences"] = _changed_lines(live, desired_runtime)
            else:
                plan["restart_pending"] = True

    if params.get("autostart") is not None:
        have = bool(dom.autostart()) if dom is not None else False
        if have != params["autostart"]:
            plan["actions"].append("autostart_on" if params["autostart"] else "autostart_off")

    plan["after_state"] = {"running": "running", "paused": "paused", "shutdown": "shutoff"}.get(
        state, before_state if before_state != "absent" else "shutoff")
    return plan


def _changed_lines(before: str, after: str) -> List[str]:
    """The lines that differ, for a one-glance summary next to the full diff."""
    import difflib
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def owned_files(xml: str) -> List[str]:
    """Files the collection created for this guest, as recorded in its metadata (never anything else)."""
    parsed = model.Domain.from_xml(xml)
    files = list(getattr(parsed.metadata, "owned_files", None) or []) if parsed.metadata else []
    seen: List[str] = []
    for path in files:
        if path and os.path.isabs(path) and "\0" not in path and os.path.normpath(path) not in seen:
            seen.append(os.path.normpath(path))
    return seen


def _files_of_other_domains(conn, name: str) -> Dict[str, str]:
    """realpath of every file a disk of another defined or running domain uses -> that domain's name."""
    used: Dict[str, str] = {}
    for other in conn.listAllDomains(0):
        other_name = other.name()
        if other_name == name:
            continue
        for flags in (libvirt.VIR_DOMAIN_XML_INACTIVE, 0):
            try:
                parsed = model.Domain.from_xml(other.XMLDesc(flags))
            except Exception:  # pylint: disable=broad-except - vanished meanwhile or foreign XML
                continue
            for disk in parsed.devices_of(model.Disk):
                if disk.source_file:
                    used.setdefault(os.path.realpath(disk.source_file), other_name)
    return used


def removable_files(conn, name: str, owned: List[str]):
    """(files to delete, [(file, why it is kept)]): existing regular files or links, used by no other domain."""
    remove: List[str] = []
    kept: List[tuple] = []
    used = None
    for path in owned:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # already gone: nothing to do
        except OSError as exc:
            kept.append((path, "cannot inspect it: %s" % (exc.strerror or exc)))
            continue
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            kept.append((path, "not a regular file"))
            continue
        if used is None:
            used = _files_of_other_domains(conn, name)
        other = used.get(os.path.realpath(path))
        if other is not None and not stat.S_ISLNK(info.st_mode):
            kept.append((path, "domain %s uses it" % other))
            continue
        remove.append(path)
    return remove, kept


def _shutdown(dom, name: str, timeout: float, force_off: bool) -> List[str]:
    done = []
    if normalized_state(dom) == "shutoff":
        return done
    if normalized_state(dom) == "paused":
        dom.resume()
    dom.shutdown()
    done.append("shutdown")
    try:
        wait_for_state(dom, {"shutoff"}, timeout, name)
    except VirtfleetError as exc:
        if not force_off:
            raise VirtfleetError(
                "%s after an ACPI shutdown request; the guest ignored it. Set force_off: true to power it off "
                "hard after shutdown_timeout, or raise shutdown_timeout." % exc.msg)
        dom.destroy()
        done.append("destroy")
        wait_for_state(dom, {"shutoff"}, 30, name)
    return done


def _start(dom, name: str, timeout: float, paused: bool = False) -> None:
    flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
    dom.createWithFlags(flags)
    reached = wait_for_state(dom, {"paused" if paused else "running", "shutoff"}, timeout, name)
    if not paused:
        state, reason = domain_state(dom)
        if state == "paused":
            raise VirtfleetError(
                "domain %s paused right after start (reason %d): the hypervisor cannot run it. With virt type "
                "kvm this usually means KVM does not work on this host; use virt_type qemu." % (name, reason))
    if reached == "shutoff" and not paused:
        # A guest may legitimately power itself off quickly; that is its business, not a start failure.
        return


def apply_plan(conn, params: Dict[str, Any], plan: Dict[str, Any]) -> List[str]:
    """Carry out ``plan``; returns what was done (may include a forced destroy)."""
    name = params["name"]
    done: List[str] = []
    plan["removed_files"] = []
    dom = lookup_domain(conn, name)
    try:
        for action in plan["actions"]:
            if action in ("define", "redefine"):
                dom = conn.defineXML(plan["desired_xml"])
                done.append(action)
            elif action == "start":
                _start(dom, name, params["start_timeout"])
                done.append(action)
            elif action == "start_paused":
                _start(dom, name, params["start_timeout"], paused=True)
                done.append(action)
            elif action == "resume":
                dom.resume()
                wait_for_state(dom, {"running"}, params["start_timeout"], name)
                done.append(action)
            elif action == "suspend":
                dom.suspend()
                wait_for_state(dom, {"paused"}, params["start_timeout"], name)
                done.append(action)
            elif action == "shutdown":
                done += _shutdown(dom, name, params["shutdown_timeout"], params["force_off"])
            elif action == "destroy":
                if normalized_state(dom) != "shutoff":
                    dom.destroy()
                done.append(action)
            elif action == "undefine":
                dom.undefineFlags(_undefine_flags())
                done.append(action)
            elif action == "remove_storage":
                for path in plan.get("remove_files", []):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise VirtfleetError("domain %s is undefined but its file %s cannot be removed: %s" % (
                            name, path, exc.strerror or exc), actions=done, removed_files=plan["removed_files"])
                    plan["removed_files"].append(path)
                done.append(action)
            elif action in ("autostart_on", "autostart_off"):
                dom.setAutostart(1 if action == "autostart_on" else 0)
                done.append(action)
    except libvirt.libvirtError as exc:
        raise VirtfleetError("libvirt failed to %s domain %s: %s" % (
            action.replace("_", " "), name, libvirt_error_text(exc)), actions=done)
    return done


def _undefine_flags() -> int:
    flags = 0
    for flag in ("VIR_DOMAIN_UNDEFINE_NVRAM", "VIR_DOMAIN_UNDEFINE_TPM", "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
                 "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA", "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA"):
        flags |= getattr(libvirt, flag, 0)
    return flags


def ensure_domain(conn, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Core of the ``domain`` module: one domain, one wanted state."""
    validate_params(params)
    plan = plan_domain(conn, params)
    result: Dict[str, Any] = {
        "changed": bool(plan["actions"]),
        "actions": list(plan["actions"]),
        "state": plan["after_state"],
        "previous_state": plan["before_state"],
        "restart_pending": plan["restart_pending"],
        "differences": plan["differences"],
        "diff": {"before": plan["before_xml"], "after": plan["after_xml"] if params["state"] != "absent" else "",
                 "before_header": "%s (defined)" % params["name"], "after_header": "%s (desired)" % params["name"]},
    }
    warnings: List[str] = []
    if params["state"] == "absent" and params.get("remove_storage"):
        result["removed_files"] = list(plan.get("remove_files", []))
        for path, why in plan.get("kept_files", []):
            warnings.append("domain %s: owned file %s is kept: %s" % (params["name"], path, why))
    if not check_mode and plan["actions"]:
        result["actions"] = apply_plan(conn, params, plan)
        if "removed_files" in result:
            result["removed_files"] = list(plan["removed_files"])
        dom = lookup_domain(conn, params["name"])
        result["state"] = normalized_state(dom) if dom is not None else "absent"
    if params["state"] != "absent":
        dom = lookup_domain(conn, params["name"])
        if dom is not None:
            result["uuid"] = dom.UUIDString()
    if plan["restart_pending"]:
        warnings.append("domain %s is running with an older definition; the new one applies at its next "
                        "start (set apply: restart to restart it now)" % params["name"])
    if warnings:
        result["warnings_text"] = warnings
    return result
