# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the image cache under ``<instances_path>/_base``.

Every image a guest boots from enters the hypervisor through the cache. This file holds its
layout and the cached re-run; the rest is loaded only when it is needed:

* a cached image is named after the sha1 of its identity (URL without credentials, checksum,
  cache format), as Nova names its bases after the image id, and described by a small JSON
  record (``<name>.info.json``) that later runs trust together with the file's size and mtime,
  so a re-run costs a ``stat`` and no re-hash;
* fetching, verifying, inspecting and converting an image is ``_image_fetch`` (it is also what
  re-inspects a file recorded by an older inspector, or with ``verify: full``);
* removing images (``state: absent`` and ``pruned``) is ``_image_prune``.

A cached re-run imports neither of them, nor the inspector, qemu-img or the HTTP client: under
AnsiballZ every imported module is compiled from source on every run. One exclusive ``flock``
per image under ``<instances_path>/locks`` makes concurrent runs download once.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, exclusive_lock, read_json_record, remove_quietly, write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format_consts import (
    INSPECTOR_VERSION, QEMU_FORMAT_NAMES,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size

BASE_DIR = "_base"
LOCK_DIR = "locks"
RECORD_SUFFIX = ".info.json"
RECORD_VERSION = 1
DEFAULT_MAX_VIRTUAL_SIZE = "1T"
CHECKSUM_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
CACHE_FORMATS = ("raw", "qcow2", "source")
HEX_DIGITS = "0123456789abcdefABCDEF"


# --------------------------------------------------------------------------------------------------
# Pure helpers: URLs, checksums, names, records
# --------------------------------------------------------------------------------------------------

def is_hex(value: str) -> bool:
    """Whether ``value`` is a non-empty run of hex digits."""
    return bool(value) and not value.strip(HEX_DIGITS)


def public_url(url: str) -> str:
    """``url`` without user name and password, for names, records and messages."""
    if url.startswith("/"):
        return "file://" + os.path.normpath(url)
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_scheme(url: str) -> str:
    """``http``, ``https`` or ``file``; anything else is refused with the accepted forms."""
    if url.startswith("/"):
        return "file"
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise VirtfleetError("unsupported image url %s: use http://, https://, file:// or an absolute path on "
                             "the hypervisor" % public_url(url))
    return scheme


def local_path_of(url: str) -> str:
    """The host path of a ``file://`` URL or plain absolute path."""
    if url.startswith("/"):
        return url
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise VirtfleetError("file URL %s names a remote host; only file:///path is supported" % url)
    return unquote(parts.path)


def file_name_of(url: str) -> str:
    """The last path element of ``url``: the name a SUMS file lists the image under."""
    path = url if url.startswith("/") else unquote(urlsplit(url).path)
    return os.path.basename(path.rstrip("/"))


def parse_checksum(value: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(algorithm, hex digest or SUMS location)`` from ``"sha256:<hex>"`` / ``"sha256:<url>"``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or ":" not in value:
        raise VirtfleetError("checksum %r: expected '<algorithm>:<hex digest>' or '<algorithm>:<url of a SUMS "
                             "file>' with algorithm one of %s" % (value, ", ".join(sorted(CHECKSUM_ALGORITHMS))))
    algo, rest = value.split(":", 1)
    algo = algo.strip().lower()
    rest = rest.strip()
    if algo not in CHECKSUM_ALGORITHMS:
        raise VirtfleetError("checksum algorithm %r is not supported; use one of %s"
                             % (algo, ", ".join(sorted(CHECKSUM_ALGORITHMS))))
    if is_sums_reference(rest):
        return algo, rest
    if not is_hex(rest) or len(rest) != CHECKSUM_ALGORITHMS[algo]:
        raise VirtfleetError("checksum %s:%s is not a %s digest (%d hex digits expected)"
                             % (algo, rest, algo, CHECKSUM_ALGORITHMS[algo]))
    return algo, rest.lower()


def is_sums_reference(value: str) -> bool:
    return value.startswith("/") or "://" in value


def resolve_checksum(params: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """``(algorithm, hex digest)``; a SUMS reference is read (``_image_fetch``) and the image's line looked up."""
    parsed = parse_checksum(params.get("checksum"))
    if parsed is None or not is_sums_reference(parsed[1]):
        return parsed
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.fetch import digest_from_sums

    return digest_from_sums(params, *parsed)


def image_identity(url: str, checksum: Optional[str], cache_format: str) -> str:
    """What makes two requests the same cached image (credentials are not part of it)."""
    return "url=%s\nchecksum=%s\ncache_format=%s" % (public_url(url), checksum or "", cache_format)


def base_name(url: str, checksum: Optional[str], cache_format: str) -> str:
    """File name of the cached base: sha1 of the identity, like Nova's ``_base`` names."""
    return hashlib.sha1(image_identity(url, checksum, cache_format).encode("utf-8")).hexdigest()


def cache_paths(instances_path: str, name: str) -> Dict[str, str]:
    base_dir = os.path.join(instances_path, BASE_DIR)
    return {
        "base_dir": base_dir,
        "path": os.path.join(base_dir, name),
        "record": os.path.join(base_dir, name + RECORD_SUFFIX),
        "lock": os.path.join(instances_path, LOCK_DIR, name + ".lock"),
    }


def qemu_name(fmt: str) -> str:
    return QEMU_FORMAT_NAMES.get(fmt, fmt)


def cached_format_of(source_format: str, cache_format: str) -> str:
    """Format of the file we keep: what was asked, or for ``source`` the format qemu will see."""
    if cache_format != "source":
        return cache_format
    return "raw" if qemu_name(source_format) == "raw" else source_format


def record_matches(record: Any, stat: Optional[os.stat_result], url: str, checksum: Optional[str]) -> Optional[str]:
    """None when ``record`` describes the file ``stat`` is of, for this request; else why not."""
    if stat is None:
        return "no cached file"
    if not isinstance(record, dict):
        return "no valid record"
    for key in ("format", "source_format", "virtual_size", "size", "mtime_ns", "inspector_version"):
        if key not in record:
            return "the record lacks %r" % key
    if record.get("url") != public_url(url):
        return "the record is for another url"
    if (record.get("checksum") or None) != (checksum or None):
        return "the record is for another checksum"
    if record["size"] != stat.st_size or record["mtime_ns"] != stat.st_mtime_ns:
        return "the cached file changed since it was recorded (size or mtime)"
    return None


def read_record(record_path: str) -> Optional[Dict[str, Any]]:
    return read_json_record(record_path)


def write_record(record_path: str, record: Dict[str, Any]) -> None:
    write_file_atomic(record_path, json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n", 0o644)


def stat_or_none(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------
# Locking and housekeeping
# --------------------------------------------------------------------------------------------------

def image_lock(lock_path: str, timeout: float, what: str):
    """Exclusive per-image lock; waits up to ``timeout`` seconds for another run to finish."""
    return exclusive_lock(lock_path, timeout, what, "raise lock_timeout or find the stuck run")


def remove_stale_temps(path: str) -> List[str]:
    """Temporary files of earlier runs for this image (killed mid-download); safe to remove under its lock."""
    import glob  # here: a cached re-run never needs it

    removed = []
    for prefix in (path + TEMP_MARKER, path + RECORD_SUFFIX + TEMP_MARKER):
        for stale in glob.glob(glob.escape(prefix) + "*"):
            remove_quietly(stale)
            removed.append(stale)
    return removed


# --------------------------------------------------------------------------------------------------
# present: the cached re-run
# --------------------------------------------------------------------------------------------------

def image_request(params: Dict[str, Any]) -> Dict[str, Any]:
    """Validated view of the options for one image."""
    url = params.get("url")
    if not url:
        raise VirtfleetError("url is required with state=%s" % params.get("state", "present"))
    if url_scheme(url) == "file" and not os.path.isabs(local_path_of(url)):
        raise VirtfleetError("image path %s is not absolute" % url)
    cache_format = params.get("cache_format") or "raw"
    if cache_format not in CACHE_FORMATS:
        raise VirtfleetError("cache_format must be one of %s, got %r" % (", ".join(CACHE_FORMATS), cache_format))
    declared = params.get("format") or None
    try:
        max_virtual_size = parse_size(params.get("max_virtual_size") or DEFAULT_MAX_VIRTUAL_SIZE, "max_virtual_size")
    except SizeError as exc:
        raise VirtfleetError(str(exc))
    return {"url": url, "cache_format": cache_format, "declared": declared, "max_virtual_size": max_virtual_size,
            "verify": params.get("verify") or "quick"}


def image_result(path: str, record: Dict[str, Any], stat: os.stat_result, changed: bool, fetched: bool,
                 transfer: Optional[Dict[str, Any]] = None, actions: Optional[List[str]] = None) -> Dict[str, Any]:
    transfer = transfer or {}
    seconds = transfer.get("seconds", 0.0)
    received = transfer.get("received", 0)
    return {
        "changed": changed,
        "path": path,
        "format": record["format"],
        "source_format": record["source_format"],
        "virtual_size": record["virtual_size"],
        "actual_size": stat.st_blocks * 512,
        "size": stat.st_size,
        "checksum": record.get("checksum"),
        "fetched": fetched,
        "bytes": received,
        "seconds": round(seconds, 3),
        "throughput": int(received / seconds) if seconds > 0 else 0,
        "compression": transfer.get("compression") or record.get("compression"),
        "actions": actions or [],
    }


def cached_result(paths: Dict[str, str], req: Dict[str, Any], checksum: Optional[str],
                  check_mode: bool, locked: bool) -> Optional[Dict[str, Any]]:
    """The result for an image already cached and trustworthy, or None when it must be fetched.

    A file recorded by an older inspector, or any file with ``verify: full``, is inspected again, which
    happens under the image's lock (``locked``); without it the answer is None, "redo under the lock".
    """
    stat = stat_or_none(paths["path"])
    record = read_record(paths["record"])
    if record_matches(record, stat, req["url"], checksum) is not None:
        return None
    actions: List[str] = []
    stale_inspector = record["inspector_version"] != INSPECTOR_VERSION
    full = req["verify"] == "full"
    if stale_inspector or full:
        if check_mode:
            return image_result(paths["path"], record, stat, changed=stale_inspector, fetched=False,
                                actions=["reinspect"] if stale_inspector else [])
        if not locked:
            return None  # redo under the lock
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.fetch import reinspect

        record = reinspect(paths, record, req, stat, full)
        if stale_inspector:
            write_record(paths["record"], record)
            actions.append("reinspect")
    # Nothing is written on a cached re-run (not even a "last used" touch): an idempotent run only
    # reads. Use is seen by pruning through the disks' backing chains and the base's atime.
    return image_result(paths["path"], record, stat, changed=bool(actions), fetched=False, actions=actions)


def ensure_present(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    req = image_request(params)
    checksum = resolve_checksum(params)
    checksum_text = "%s:%s" % checksum if checksum else None
    name = base_name(req["url"], checksum_text, req["cache_format"])
    paths = cache_paths(params["instances_path"], name)

    cached = cached_result(paths, req, checksum_text, check_mode, locked=False)
    if cached is not None:
        return cached
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.fetch import fetch_present

    return fetch_present(paths, req, params, checksum, check_mode)


def ensure_image(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Bring one image (or, for ``pruned``, the cache) to ``params['state']``."""
    state = params.get("state") or "present"
    if state == "present":
        return ensure_present(params, check_mode)
    if state in ("absent", "pruned"):
        from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import prune as _image_prune

        if state == "absent":
            return _image_prune.ensure_absent(params, check_mode)
        return _image_prune.ensure_pruned(params, check_mode)
    raise VirtfleetError("state must be present, absent or pruned, got %r" % state)
