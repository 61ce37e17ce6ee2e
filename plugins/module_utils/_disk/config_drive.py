# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: config drives (ISO9660 volumes carrying a guest's metadata).

Two layouts, both read by cloud-init:

- ``config-2`` (OpenStack): volume label ``config-2``, ``openstack/latest/meta_data.json`` (uuid,
  name, hostname, public_keys, keys, files, meta, admin_pass), ``user_data``, ``network_data.json``,
  ``vendor_data.json``; injected files under ``openstack/content/NNNN``.
- ``nocloud``: volume label ``cidata``, ``meta-data``, ``user-data``, ``network-config``,
  ``vendor-data``.

``drive_files`` is pure: options in, ``{path on the drive: bytes}`` out, so it is tested without
pycdlib. ``content_digest`` identifies the content (not the ISO bytes, which carry timestamps): a
drive is rebuilt only when the digest changes. The ISO is written in Python with pycdlib (Rock
Ridge and Joliet names over level-1 ISO names), never by a shell tool.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import traceback
import uuid as uuidlib
from typing import Any, Dict, List, Mapping

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import DRIVE_PATH_PART
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import DRIVE_FORMATS

LABELS = {"config-2": "config-2", "nocloud": "cidata"}  # the volume label of each of DRIVE_FORMATS
JOLIET_MAX = 64
_NAMESPACE = uuidlib.UUID("6c1f3b0e-9d7a-4c59-9d0c-7a1f0b3c2e11")


def default_uuid(guest: str) -> str:
    """A stable instance UUID for ``guest`` when none is given (same name, same UUID)."""
    return str(uuidlib.uuid5(_NAMESPACE, guest))


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise VirtfleetError("%s must be text, got %s" % (what, type(value).__name__))


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def validate_drive_path(path: str) -> str:
    """A relative path on the drive, made of safe components; refuses '..', absolute paths and oddities."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise VirtfleetError("invalid config drive path %r: use a relative path such as 'virtfleet/mode'" % (path,))
    parts = path.split("/")
    for part in parts:
        if len(part) > JOLIET_MAX:
            raise VirtfleetError("invalid config drive path %r: a name is longer than %d characters" % (path, JOLIET_MAX))
        if not DRIVE_PATH_PART.matches(part):
            raise VirtfleetError("invalid config drive path %r: each part may hold letters, digits and . _ @ + = , -"
                                 % (path,))
    return "/".join(parts)


def _public_keys(keys: Any) -> Dict[str, str]:
    if not keys:
        return {}
    if isinstance(keys, Mapping):
        return {str(name): str(key).strip() for name, key in keys.items()}
    if isinstance(keys, (list, tuple)):
        return {"key-%d" % index: str(key).strip() for index, key in enumerate(keys)}
    return {"key-0": str(keys).strip()}


def drive_files(params: Mapping[str, Any]) -> Dict[str, bytes]:
    """Every file of the drive: {relative path: content}. Deterministic for the same options."""
    fmt = params.get("drive_format") or DRIVE_FORMATS[0]
    if fmt not in DRIVE_FORMATS:
        raise VirtfleetError("unknown config drive format %r; use one of %s" % (fmt, ", ".join(DRIVE_FORMATS)))
    guest = params["guest"]
    instance_uuid = params.get("instance_uuid") or default_uuid(guest)
    hostname = params.get("hostname") or guest
    keys = _public_keys(params.get("public_keys"))
    user_data = params.get("user_data")
    network_data = params.get("network_data")
    vendor_data = params.get("vendor_data")
    files: Dict[str, bytes] = {}
    if fmt == "config-2":
        injected = []
        for index, item in enumerate(params.get("files") or []):
            if not isinstance(item, Mapping) or not item.get("path") or item.get("content") is None:
                raise VirtfleetError("each entry of files needs path (in the guest) and content")
            content_path = "/content/%04d" % index
            files["openstack" + content_path] = _as_bytes(item["content"], "files[%d].content" % index)
            injected.append({"path": str(item["path"]), "content_path": content_path})
        meta: Dict[str, Any] = {
            "uuid": instance_uuid,
            "name": guest,
            "hostname": hostname,
            "launch_index": 0,
            "availability_zone": params.get("availability_zone") or "nova",
            "project_id": params.get("project_id") or "",
            "public_keys": keys,
            "keys": [{"name": name, "type": "ssh", "data": key} for name, key in sorted(keys.items())],
            "files": injected,
            "meta": dict(params.get("metadata") or {}),
        }
        if params.get("admin_pass"):
            meta["admin_pass"] = params["admin_pass"]
        files["openstack/latest/meta_data.json"] = _json(meta)
        if user_data is not None:
            files["openstack/latest/user_data"] = _as_bytes(user_data, "user_data")
        files["openstack/latest/network_data.json"] = _json(network_data or {})
        files["openstack/latest/vendor_data.json"] = _json(vendor_data or {})
    else:
        if params.get("files"):
            raise VirtfleetError("files (injected files) exist only in the config-2 format; use write_files in "
                                 "user_data with nocloud")
        if params.get("admin_pass"):
            raise VirtfleetError("admin_pass exists only in the config-2 format; set a password through "
                                 "user_data with nocloud")
        meta = {"instance-id": instance_uuid, "local-hostname": hostname}
        if keys:
            meta["public-keys"] = [keys[name] for name in sorted(keys)]
        if params.get("metadata"):
            meta["meta"] = dict(params["metadata"])
        # JSON is valid YAML: cloud-init reads meta-data with a YAML parser.
        files["meta-data"] = _json(meta)
        files["user-data"] = _as_bytes(user_data if user_data is not None else "", "user_data")
        if network_data:
            files["network-config"] = _json(network_data)
        if vendor_data:
            files["vendor-data"] = _json(vendor_data)
    for path, content in sorted((params.get("extra_files") or {}).items()):
        path = validate_drive_path(path)
        if path in files:
            raise VirtfleetError("extra_files: %s is already part of the %s layout" % (path, fmt))
        files[path] = _as_bytes(content, "extra_files[%s]" % path)
    return files


def content_digest(fmt: str, files: Mapping[str, bytes]) -> str:
    """sha256 over the label and every (path, content): equal content, equal digest, whatever the ISO bytes."""
    digest = hashlib.sha256()
    digest.update(("virtfleet-config-drive-v1\0%s\0%s\0" % (fmt, LABELS[fmt])).encode("utf-8"))
    for path in sorted(files):
        data = files[path]
        digest.update(path.encode("utf-8") + b"\0" + str(len(data)).encode("ascii") + b"\0")
        digest.update(data)
    return digest.hexdigest()


def require_pycdlib():
    """pycdlib, imported only when an ISO is written or read (a re-run that only compares digests never is)."""
    try:
        import pycdlib
    except ImportError:
        from ansible.module_utils.basic import missing_required_lib

        raise VirtfleetError(missing_required_lib("pycdlib"), exception=traceback.format_exc())
    return pycdlib


def write_iso(fmt: str, files: Mapping[str, bytes], out_path: str) -> None:
    """Write the ISO9660 volume (Rock Ridge + Joliet) holding ``files`` to the new file ``out_path``."""
    pycdlib = require_pycdlib()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=LABELS[fmt], sys_ident="LINUX", joliet=3, rock_ridge="1.09",
            app_ident_str="virtfleet.libvirt")
    iso_names: Dict[str, str] = {"": ""}
    counter = [0]

    def iso_name(directory: bool) -> str:
        counter[0] += 1
        return ("D%07d" % counter[0]) if directory else ("F%07d.;1" % counter[0])

    def ensure_dir(rel: str) -> None:
        if rel in iso_names:
            return
        parent = posixpath.dirname(rel)
        ensure_dir(parent)
        name = iso_name(True)
        iso_names[rel] = iso_names[parent] + "/" + name
        iso.add_directory(iso_names[rel], rr_name=posixpath.basename(rel), joliet_path="/" + rel,
                          file_mode=0o40555)

    try:
        for rel in sorted(files):
            data = files[rel]
            parent = posixpath.dirname(rel)
            ensure_dir(parent)
            iso.add_fp(io.BytesIO(data), len(data), iso_names[parent] + "/" + iso_name(False),
                       rr_name=posixpath.basename(rel), joliet_path="/" + rel, file_mode=0o100444)
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            iso.write_fp(handle)
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise VirtfleetError("cannot build the config drive %s: %s" % (out_path, exc))
    finally:
        iso.close()


def read_iso(path: str) -> Dict[str, bytes]:
    """{path: content} of every file of a config drive, by its Rock Ridge names (for tests and checks)."""
    pycdlib = require_pycdlib()
    iso = pycdlib.PyCdlib()
    iso.open(path)
    out: Dict[str, bytes] = {}
    try:
        for dirname, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                rr_path = posixpath.join(dirname, name)
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=rr_path)
                out[rr_path.lstrip("/")] = buf.getvalue()
    finally:
        iso.close()
    return out


def volume_label(path: str) -> str:
    with open(path, "rb") as handle:
        handle.seek(32808)
        return handle.read(32).decode("ascii", "replace").strip()


def describe(files: Mapping[str, bytes]) -> List[Dict[str, Any]]:
    """What a diff may show: file names and sizes, never contents (they hold secrets)."""
    return [{"path": path, "size": len(files[path])} for path in sorted(files)]
