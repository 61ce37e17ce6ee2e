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

import contextlib
import dataclasses
import hashlib
import json
import os
import uuid as uuidlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import DEFAULT_URI
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import code_digest as _code_digest
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import read_bytes, write_file_atomic
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import (
    DIR_MODE, GuestLayout, absolute_path, guest_layout, validate_guest_name,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import (
    DOMAIN_XML_ITEM_SPEC, option_value,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor, open_hypervisor

FILE_MODE = 0o644
RECORD_XATTR = "user.virtfleet.domain_xml"
RECORD_VERSION = 1
# Every module whose code decides the rendered bytes (or what is valid): a change to any of them
# invalidates the records.
CODE_MODULES = ("_domain.xml_file", "_domain.spec", "_domain.xml_spec", "_domain.designer", "_domain.model",
                "_domain.user_net", "_layout", "_identifiers", "_sizes", "_argspec", "_host.virt_probe", "_common")


def _designer():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
    return designer


def _model():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
    return model


def _spec_class():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec
    return DomainXmlSpec


def _require_lxml() -> None:
    try:
        import lxml  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        from ansible.module_utils.basic import missing_required_lib
        raise VirtfleetError(missing_required_lib("lxml"))


def _option(params: Dict[str, Any], key: str) -> Any:
    return option_value(params, DOMAIN_XML_ITEM_SPEC, key)


def _previous_definition(data: Optional[bytes]):
    """The definition written before (the design keeps its UUID, headroom and hot-plugged memory); None when
    there is none or it is broken (a broken file is replaced and nothing in it can be trusted)."""
    if not data:
        return None
    model = _model()
    try:
        return model.Domain.from_xml(data)
    except (model.ModelError, ValueError):
        return None


def _uuid_from(previous) -> Optional[str]:
    try:
        return str(uuidlib.UUID(previous.uuid)) if previous is not None and previous.uuid else None
    except ValueError:
        return None


def _uuid_from_libvirt(hypervisor: Hypervisor, name: str) -> Optional[str]:
    guest = hypervisor.lookup(name)
    return guest.uuid if guest is not None else None


def owned_files(layout: GuestLayout, path: str, uefi: bool) -> List[str]:
    """The files a guest of this definition has in its instance directory because of it: the definition,
    its console log and, with UEFI, its variable store."""
    return [path, layout.console_log] + ([layout.nvram] if uefi else [])


def render_domain_xml(hypervisor: Hypervisor, params: Dict[str, Any], existing: Optional[bytes],
                      host_answers: Optional[Tuple[Any, ...]] = None) -> Dict[str, Any]:
    """The desired XML text and the facts resolved for it (no writes).

    ``host_answers`` (virt type, domain capabilities XML, and with headroom the host's limits) are
    libvirt's answers already fetched for the record key; the design then uses exactly what the key
    describes.
    """
    _require_lxml()
    designer = _designer()
    spec = _spec_class().from_params(params)
    if host_answers is not None:
        facts = designer.resolve_host_facts(hypervisor, spec, virt_type=host_answers[0], caps_xml=host_answers[1],
                                            limits=host_answers[2] if len(host_answers) > 2 else None)
    else:
        facts = designer.resolve_host_facts(hypervisor, spec)
    previous = _previous_definition(existing)
    if spec.uuid is None:
        spec = dataclasses.replace(spec, uuid=_uuid_from(previous) or _uuid_from_libvirt(hypervisor, spec.name)
                                   or str(uuidlib.uuid4()))
    domain = designer.design_domain(spec, facts, spec.layout, previous)
    return {
        "xml": domain.to_string(),
        "uuid": spec.uuid,
        "virt_type": facts.virt_type,
        "machine": facts.machine,
        "macs": designer.assign_macs(spec),
        "owned_files": owned_files(spec.layout, spec.path, spec.firmware == "uefi"),
        "rendered": True,
    }


def output_path(params: Dict[str, Any]) -> str:
    """The file written: ``path``, else ``domain.xml`` in the guest's instance directory."""
    if _option(params, "path"):
        return absolute_path(_option(params, "path"), "path")
    return _layout_of(params).domain_xml


def _layout_of(params: Dict[str, Any]) -> GuestLayout:
    return guest_layout(params.get("instances_path"), params.get("name"), params.get("instance_dir"))


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


def host_answers(hypervisor: Hypervisor, params: Dict[str, Any]) -> Optional[Tuple[Any, ...]]:
    """(resolved virt type, domain capabilities XML[, host limits with headroom]): everything from libvirt a
    BIOS design depends on.

    None when the fast path does not apply (UEFI also depends on firmware files) or libvirt refuses;
    the full path then reports any error in its own words.
    """
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.virt_probe import resolve_virt_type

    machine = _option(params, "machine")
    if _option(params, "firmware") != "bios" or not isinstance(machine, str):
        return None
    try:
        virt_type = resolve_virt_type(hypervisor, _option(params, "virt_type"))
        caps = hypervisor.domain_capabilities(machine, virt_type)
        if _option(params, "headroom") is True:
            return virt_type, caps, list(hypervisor.host_resources())
    except Exception:  # pylint: disable=broad-except
        # VirtfleetError or a libvirt error: the full path reports it in its own words
        return None
    return virt_type, caps


def record_key(params: Dict[str, Any], answers: Tuple[Any, ...]) -> Optional[str]:
    code = code_digest()
    if code is None:
        return None
    key = {"params": params, "virt_type": answers[0], "caps": answers[1], "code": code}
    if len(answers) > 2:
        key["host"] = answers[2]
    try:
        text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None  # something not plain JSON in the parameters: no fast path
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_record(path: str) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(os.getxattr(path, RECORD_XATTR).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return data if isinstance(data, dict) and data.get("version") == RECORD_VERSION else None


RECORDED = ("uuid", "virt_type", "machine", "macs", "owned_files")


def write_record(path: str, key: str, data: bytes, rendered: Dict[str, Any]) -> None:
    """Best effort: a file system without user extended attributes just never takes the fast path."""
    record = {"version": RECORD_VERSION, "key": key, "path": path, "sha256": hashlib.sha256(data).hexdigest()}
    record.update({name: rendered[name] for name in RECORDED})
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
            or not all(isinstance(record.get(k), list) for k in ("macs", "owned_files")):
        return None
    return dict({name: record[name] for name in RECORDED}, xml=xml, rendered=False)


@contextlib.contextmanager
def _hypervisor_for(params: Dict[str, Any], hypervisor: Optional[Hypervisor]) -> Iterator[Hypervisor]:
    if hypervisor is not None:
        yield hypervisor
        return
    with open_hypervisor(params.get("uri") or DEFAULT_URI) as opened:
        yield opened


def ensure_domain_xml(params: Dict[str, Any], check_mode: bool = False, diff: bool = False,
                      hypervisor: Optional[Hypervisor] = None) -> Dict[str, Any]:
    """Core of the ``domain_xml`` module: one guest's definition file. ``hypervisor`` may be shared by a batch."""
    validate_guest_name(params.get("name"))  # before any path is built from it
    with _hypervisor_for(params, hypervisor) as opened:
        return _ensure(opened, params, check_mode)


def _ensure(hypervisor: Hypervisor, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    answers = host_answers(hypervisor, params)
    key = record_key(params, answers) if answers is not None else None
    path = output_path(params)
    try:
        existing = read_bytes(path)
    except OSError as exc:
        raise VirtfleetError("cannot read the existing domain XML %s: %s" % (path, exc.strerror or exc))
    rendered = _from_record(path, key, existing)
    if rendered is None:
        rendered = render_domain_xml(hypervisor, params, existing, host_answers=answers)
    data = rendered["xml"].encode("utf-8")
    changed = existing != data
    if not check_mode and rendered["rendered"]:
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
        "owned_files": rendered["owned_files"],
        "console_log": rendered["owned_files"][1],  # owned_files() puts it second
        "diff": {"before": before, "after": rendered["xml"], "before_header": path if existing is not None
                 else "%s (absent)" % path, "after_header": path},
    }


def _domain_xml_items():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_XML_ITEM_SPEC
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.shared import list_form

    return list_form(ensure_domain_xml, DOMAIN_XML_ITEM_SPEC, "name")


def domain_xml_core(params: Dict[str, Any], check_mode: bool = False, diff: bool = False) -> Dict[str, Any]:
    """The ``domain_xml`` module: one guest's definition file, or one per element of ``items`` (at once,
    sharing one connection and one probe of the host's virt type and domain capabilities)."""
    return _domain_xml_items()(params, check_mode, diff)
