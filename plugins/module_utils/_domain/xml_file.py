# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: core of the ``domain_xml`` module.

Writes a guest's domain definition into its instance directory. The file is the contract with
the ``domain`` module: rendered deterministically, rewritten only when its content changes, and
keeping its UUID across runs (from ``uuid``, else the file, else the defined domain, else new).

Re-run fast path: every written file carries, in an extended attribute, a record of what it was
rendered from: a digest of the module's parameters, of libvirt's answers the design depends on
(the resolved virt type and the domain capabilities XML) and of the source of the rendering code,
plus the digest of the file's content. When a run computes the same key and the file still has that
content, rendering again would give the same bytes, so the file's content is returned without
importing the designer, the model or lxml. Anything else (no record, other parameters, other
libvirt answers, other code, an edited file, UEFI firmware) takes the full path, which refreshes
the record (outside check mode). The record is only a cache: losing it costs time, never results.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid as uuidlib
from typing import Any, Dict, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import code_digest as _code_digest
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import read_bytes, write_file_atomic
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import validate_guest_name

DOMAIN_XML_FILE = "domain.xml"
FILE_MODE = 0o644
DIR_MODE = 0o755
RECORD_XATTR = "user.virtfleet.domain_xml"
RECORD_VERSION = 1
# Every module whose code decides the rendered bytes: a change to any of them invalidates the records.
CODE_MODULES = ("_domain.xml_file", "_domain.designer", "_domain.model", "_layout", "_sizes", "_host.virt_probe",
                "_common")


def _designer():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer as designer
    return designer


def _model():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model as model
    return model


def _require_lxml() -> None:
    try:
        import lxml  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        from ansible.module_utils.basic import missing_required_lib
        raise VirtfleetError(missing_required_lib("lxml"))


def _uuid_from_file(data: Optional[bytes]) -> Optional[str]:
    if not data:
        return None
    model = _model()
    try:
        found = model.Domain.from_xml(data).uuid
        return str(uuidlib.UUID(found)) if found else None
    except (model.ModelError, ValueError):
        return None  # a broken file is replaced; its UUID (if any) cannot be trusted


def _uuid_from_libvirt(conn, name: str) -> Optional[str]:
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import lookup_domain

    dom = lookup_domain(conn, name)
    return dom.UUIDString() if dom is not None else None


def render_domain_xml(conn, params: Dict[str, Any], existing: Optional[bytes],
                      host_answers: Optional[Tuple[str, str]] = None) -> Dict[str, Any]:
    """The desired XML text and the facts resolved for it (no writes).

    ``host_answers`` (virt type, domain capabilities XML) are libvirt's answers already fetched for
    the record key; the design then uses exactly what the key describes.
    """
    _require_lxml()
    designer, model = _designer(), _model()
    spec = designer.validate_spec(params)
    instance_dir = designer.instance_dir_of(params)
    if host_answers is not None:
        facts = designer.resolve_host_facts(conn, spec, virt_type=host_answers[0], caps_xml=host_answers[1])
    else:
        facts = designer.resolve_host_facts(conn, spec)
    if spec["uuid"] is None:
        spec["uuid"] = _uuid_from_file(existing) or _uuid_from_libvirt(conn, spec["name"]) or str(uuidlib.uuid4())
    domain = designer.design_domain(spec, facts, instance_dir)
    return {
        "xml": domain.to_string(),
        "uuid": spec["uuid"],
        "virt_type": facts.virt_type,
        "machine": facts.machine,
        "macs": [nic.mac for nic in domain.devices_of(model.Interface)],
        "instance_dir": instance_dir,
    }


def output_path(params: Dict[str, Any]) -> str:
    if params.get("path"):
        path = params["path"]
        if not isinstance(path, str) or not os.path.isabs(path):
            raise VirtfleetError("path must be an absolute path, got %r" % (path,))
        return os.path.normpath(path)
    return os.path.join(_designer().instance_dir_of(params), DOMAIN_XML_FILE)


def _quick_output_path(params: Dict[str, Any]) -> Optional[str]:
    """``output_path`` for plain absolute paths without importing the designer; None when unsure.

    Only used to find a record; the record itself must name the same path to be trusted.
    """
    if params.get("path"):
        path = params["path"]
        return os.path.normpath(path) if isinstance(path, str) and os.path.isabs(path) else None
    base = params.get("instance_dir")
    if not base:
        root = params.get("instances_path") or "/var/lib/virtfleet/instances"
        if not isinstance(root, str) or not os.path.isabs(root):
            return None
        base = os.path.join(os.path.normpath(root), params["name"])
    if not isinstance(base, str) or not os.path.isabs(base):
        return None
    return os.path.join(os.path.normpath(base), DOMAIN_XML_FILE)


def _write(path: str, data: bytes) -> None:
    """Create the instance directory when missing (0755: qemu must traverse it) and replace the file."""
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            os.chmod(directory, DIR_MODE)
        write_file_atomic(path, data, FILE_MODE)
    except OSError as exc:
        raise VirtfleetError("cannot write the domain XML %s: %s" % (path, exc.strerror or exc))


# ------------------------------------------------------------------------------------- re-run record

def code_digest() -> Optional[str]:
    """sha256 over the source of every module that decides the rendered bytes (None when unreadable)."""
    return _code_digest(CODE_MODULES)


def host_answers(conn, params: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """(resolved virt type, domain capabilities XML): everything from libvirt a BIOS design depends on.

    None when the fast path does not apply (UEFI also depends on firmware files) or libvirt refuses;
    the full path then reports any error in its own words.
    """
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.virt_probe import resolve_virt_type

    if params.get("firmware", "bios") != "bios" or not isinstance(params.get("machine", "pc"), str):
        return None
    try:
        virt_type = resolve_virt_type(conn, params.get("virt_type", "auto"))
        caps = conn.getDomainCapabilities(None, "x86_64", params.get("machine", "pc"), virt_type, 0)
    except Exception:  # pylint: disable=broad-except - VirtfleetError or libvirtError: full path
        return None
    return virt_type, caps


def record_key(params: Dict[str, Any], answers: Tuple[str, str]) -> Optional[str]:
    code = code_digest()
    if code is None:
        return None
    try:
        text = json.dumps({"params": params, "virt_type": answers[0], "caps": answers[1], "code": code},
                          sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None  # something not plain JSON in the parameters: no fast path
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_record(path: str) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(os.getxattr(path, RECORD_XATTR).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return data if isinstance(data, dict) and data.get("version") == RECORD_VERSION else None


def write_record(path: str, key: str, data: bytes, rendered: Dict[str, Any]) -> None:
    """Best effort: a file system without user extended attributes just never takes the fast path."""
    record = {"version": RECORD_VERSION, "key": key, "path": path, "sha256": hashlib.sha256(data).hexdigest(),
              "uuid": rendered["uuid"], "virt_type": rendered["virt_type"], "machine": rendered["machine"],
              "macs": rendered["macs"]}
    try:
        os.setxattr(path, RECORD_XATTR, json.dumps(record, sort_keys=True).encode("utf-8"))
    except (OSError, AttributeError):
        pass


def _from_record(path: str, key: Optional[str], existing: Optional[bytes]) -> Optional[Dict[str, Any]]:
    """The rendering recorded with ``path`` when it was made from ``key`` and the file still holds it."""
    if key is None or existing is None:
        return None
    record = read_record(path)
    if record is None or record.get("key") != key or record.get("path") != path:
        return None
    if record.get("sha256") != hashlib.sha256(existing).hexdigest():
        return None  # the file was edited since
    try:
        xml = existing.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not all(isinstance(record.get(k), str) for k in ("uuid", "virt_type", "machine")) \
            or not isinstance(record.get("macs"), list):
        return None
    return {"xml": xml, "uuid": record["uuid"], "virt_type": record["virt_type"], "machine": record["machine"],
            "macs": list(record["macs"])}


def ensure_domain_xml(params: Dict[str, Any], check_mode: bool, conn=None) -> Dict[str, Any]:
    """Core of the ``domain_xml`` module. ``conn`` lets tests pass an open connection."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import connect

    validate_guest_name(params.get("name"))  # before any path is built from it
    if conn is None:
        with connect(params.get("uri") or "qemu:///system") as opened:
            return _ensure(opened, params, check_mode)
    return _ensure(conn, params, check_mode)


def _ensure(conn, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    answers = host_answers(conn, params)
    key = record_key(params, answers) if answers is not None else None
    quick = _quick_output_path(params) if key is not None else None
    rendered = None
    if quick is not None:
        try:
            existing = read_bytes(quick)
        except OSError:
            existing = None
        rendered = _from_record(quick, key, existing)
        path = quick
    if rendered is None:
        path = output_path(params)
        try:
            existing = read_bytes(path)
        except OSError as exc:
            raise VirtfleetError("cannot read the existing domain XML %s: %s" % (path, exc.strerror or exc))
        rendered = render_domain_xml(conn, params, existing, host_answers=answers)
    data = rendered["xml"].encode("utf-8")
    changed = existing != data
    if not check_mode and "instance_dir" in rendered:  # rendered now, not taken from the record
        if changed:
            _write(path, data)
        if key is not None and (changed or (read_record(path) or {}).get("key") != key):
            write_record(path, key, data, rendered)
    before = existing.decode("utf-8", "replace") if existing is not None else ""
    return {
        "changed": changed,
        "path": path,
        "xml": rendered["xml"],
        "uuid": rendered["uuid"],
        "virt_type": rendered["virt_type"],
        "machine": rendered["machine"],
        "macs": rendered["macs"],
        "diff": {"before": before, "after": rendered["xml"], "before_header": path if existing is not None
                 else "%s (absent)" % path, "after_header": path},
    }
