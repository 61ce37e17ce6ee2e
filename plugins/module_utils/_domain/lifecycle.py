# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: bring one libvirt domain to a wanted state.

``plan_domain`` decides (reads libvirt only) and ``apply_plan`` acts, so check mode returns the
very plan a real run would carry out. Idempotency is semantic: the desired XML and the defined
(inactive) XML are parsed into the typed model and normalised before they are compared.

A run that changed something compares once more afterwards and, when nothing differs any more,
records the re-run memo (``_domain_memo``) with which later runs skip parsing and comparing.
"""

from __future__ import annotations

import os
import stat
import uuid as uuidlib
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo as memo
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model as model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.state import (  # noqa: F401 - re-exported
    ACTIVE, MAX_NAME_LENGTH, MAX_TIMEOUT, WANTED_STATES, autostart_actions, runs_after, state_after,
    transition_actions, validate_params,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import (
    libvirt, explain_libvirt_failure, libvirt_error_text, lookup_domain, normalized_state, wait_for_state,
    domain_state,
)


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
    # inactive_text/live_text: libvirt's XML as read, which the comparison (and a memo) stands for
    plan: Dict[str, Any] = {"name": name, "actions": [], "before_state": before_state, "restart_pending": False,
                            "before_xml": "", "after_xml": "", "desired_xml": None, "differences": [],
                            "inactive_text": None, "live_text": None}

    if state == "absent":
        if dom is not None:
            inactive = memo.inactive_xml(dom)
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
        current_state = "shutoff"
    else:
        plan["inactive_text"] = memo.inactive_xml(dom)
        current = model.Domain.from_xml(plan["inactive_text"])
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

    plan["actions"] += transition_actions(state, current_state)
    if runs_after(state, current_state):
        # The running guest may lag behind its definition, changed now or by an earlier run.
        plan["live_text"] = memo.live_xml(dom)
        live = _semantic_xml(plan["live_text"], "libvirt (live)")
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
        plan["actions"] += autostart_actions(params["autostart"], bool(dom.autostart()) if dom is not None else False)

    plan["after_state"] = state_after(state, before_state)
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
            action.replace("_", " "), name, explain_libvirt_failure(libvirt_error_text(exc))), actions=done)
    return done


def _undefine_flags() -> int:
    flags = 0
    for flag in ("VIR_DOMAIN_UNDEFINE_NVRAM", "VIR_DOMAIN_UNDEFINE_TPM", "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
                 "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA", "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA"):
        flags |= getattr(libvirt, flag, 0)
    return flags


def _settled_texts(conn, params: Dict[str, Any]) -> Optional[memo.Texts]:
    """libvirt's texts when the full comparison finds nothing left to do (no action, no pending restart)."""
    plan = plan_domain(conn, params)
    if plan["actions"] or plan["restart_pending"] or plan["inactive_text"] is None:
        return None
    if (plan["live_text"] is not None) != (plan["before_state"] in ACTIVE):
        return None  # the memo's key has a live text exactly when the guest runs
    return plan["inactive_text"], plan["live_text"]


def record_memo(conn, params: Dict[str, Any]) -> bool:
    """After a run that changed the domain: record the re-run memo if nothing differs any more.

    Never fails the task; without a memo the next run just takes the full path.
    """
    code_hash = memo.code()
    if code_hash is None or params["state"] not in memo.FAST_STATES:
        return False
    try:
        texts = _settled_texts(conn, params)
        dom = lookup_domain(conn, params["name"]) if texts is not None else None
        if dom is None:
            return False
        return memo.record(dom, code_hash, params["xml"], texts, lambda: _settled_texts(conn, params))
    except (VirtfleetError, libvirt.libvirtError):
        return False


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
        if dom is not None:
            record_memo(conn, params)
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
