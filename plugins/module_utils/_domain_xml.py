# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: core of the ``domain_xml`` module.

Writes a guest's domain definition into its instance directory. The file is the contract with
the ``domain`` module: rendered deterministically, rewritten only when its content changes, and
keeping its UUID across runs (from ``uuid``, else the file, else the defined domain, else new).
"""

from __future__ import annotations

import os
import uuid as uuidlib
from typing import Any, Dict, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import read_bytes, write_file_atomic
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _designer as designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _domain_model as model

DOMAIN_XML_FILE = "domain.xml"
FILE_MODE = 0o644
DIR_MODE = 0o755


def _uuid_from_file(data: Optional[bytes]) -> Optional[str]:
    if not data:
        return None
    try:
        found = model.Domain.from_xml(data).uuid
        return str(uuidlib.UUID(found)) if found else None
    except (model.ModelError, ValueError):
        return None  # a broken file is replaced; its UUID (if any) cannot be trusted


def _uuid_from_libvirt(conn, name: str) -> Optional[str]:
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._libvirt_conn import lookup_domain

    dom = lookup_domain(conn, name)
    return dom.UUIDString() if dom is not None else None


def render_domain_xml(conn, params: Dict[str, Any], existing: Optional[bytes]) -> Dict[str, Any]:
    """The desired XML text and the facts resolved for it (no writes)."""
    spec = designer.validate_spec(params)
    instance_dir = designer.instance_dir_of(params)
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
    return os.path.join(designer.instance_dir_of(params), DOMAIN_XML_FILE)


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


def ensure_domain_xml(params: Dict[str, Any], check_mode: bool, conn=None) -> Dict[str, Any]:
    """Core of the ``domain_xml`` module. ``conn`` lets tests pass an open connection."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._libvirt_conn import connect

    designer.validate_guest_name(params.get("name"))  # before any path is built from it
    path = output_path(params)
    try:
        existing = read_bytes(path)
    except OSError as exc:
        raise VirtfleetError("cannot read the existing domain XML %s: %s" % (path, exc.strerror or exc))
    if conn is None:
        with connect(params.get("uri") or "qemu:///system") as opened:
            rendered = render_domain_xml(opened, params, existing)
    else:
        rendered = render_domain_xml(conn, params, existing)
    data = rendered["xml"].encode("utf-8")
    changed = existing != data
    if changed and not check_mode:
        _write(path, data)
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
