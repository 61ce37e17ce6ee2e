# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the image cache under ``<instances_path>/_base``.

Every image a guest boots from enters the hypervisor here, so this file is where an image from
someone we do not control is checked before anything else reads it:

* the bytes are hashed while they stream in (one pass; a checksum mismatch keeps nothing);
* the downloaded file is inspected by our pure-Python inspector before qemu-img ever opens it
  (a hostile header must not reach qemu-img's probing);
* a conversion is written to another temporary file and inspected again;
* the result appears under its final name only complete and fsync'ed (rename), followed by a
  small JSON record (``<name>.info.json``) that later runs trust together with the file's size
  and mtime, so a re-run costs a ``stat`` and no re-hash.

Base names are the sha1 of the image's identity (URL without credentials, checksum, cache
format), as Nova names its bases after the image id. One exclusive ``flock`` per image under
``<instances_path>/locks`` makes concurrent runs download once.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import socket
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, exclusive_lock, fsync_dir, read_json_record, remove_quietly, temp_path_for,
    write_file_atomic,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, format_size, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _image_format as image_format

try:  # zstd is optional: only used when the python module is installed.
    import zstandard as _zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the host
    _zstd = None


def __getattr__(name: str) -> Any:
    """``qemu_img`` is imported on first use (a cached re-run never runs it); this keeps the attribute."""
    if name == "qemu_img":
        from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qemu_img
        return _qemu_img
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


BASE_DIR = "_base"
LOCK_DIR = "locks"
RECORD_SUFFIX = ".info.json"
RECORD_VERSION = 1
CHUNK_SIZE = 1 << 20
DEFAULT_MAX_VIRTUAL_SIZE = "1T"
CHECKSUM_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
CACHE_FORMATS = ("raw", "qcow2", "source")
# Formats a downloaded image may have when the user did not declare one. Everything else (luks, qed,
# unknown) is refused by the inspector; this list is the second fence.
SAFE_SOURCE_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "gpt", "mbr")
# How much larger than max_virtual_size a downloaded file may grow before we stop writing: qcow2 and
# vmdk metadata make a file slightly larger than its virtual size, nothing legitimate makes it much larger.
_DOWNLOAD_SLACK = 64 << 20
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --------------------------------------------------------------------------------------------------
# Pure helpers: URLs, checksums, names, records
# --------------------------------------------------------------------------------------------------

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
    if not _HEX_RE.match(rest) or len(rest) != CHECKSUM_ALGORITHMS[algo]:
        raise VirtfleetError("checksum %s:%s is not a %s digest (%d hex digits expected)"
                             % (algo, rest, algo, CHECKSUM_ALGORITHMS[algo]))
    return algo, rest.lower()


def is_sums_reference(value: str) -> bool:
    return value.startswith("/") or "://" in value


def find_in_sums(text: str, file_name: str, algo: str) -> Optional[str]:
    """The digest a SUMS file lists for ``file_name`` (GNU ``<hex>  [*]name`` or BSD ``ALGO (name) = <hex>``)."""
    want = CHECKSUM_ALGORITHMS[algo]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        bsd = re.match(r"^([A-Za-z0-9-]+)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$", line)
        if bsd:
            name, digest = bsd.group(2), bsd.group(3)
            if bsd.group(1).replace("-", "").lower() != algo:
                continue
        else:
            fields = line.split(None, 1)
            if len(fields) != 2:
                continue
            digest, name = fields[0], fields[1].strip()
            if name.startswith("*") or name.startswith(" "):
                name = name[1:]
            if name.startswith("./"):
                name = name[2:]
        if len(digest) == want and _HEX_RE.match(digest) and os.path.basename(name) == file_name:
            return digest.lower()
    return None


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
    return image_format.QEMU_FORMAT_NAMES.get(fmt, fmt)


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


def parse_age(value: Any) -> float:
    """Seconds in ``value``: a number of seconds or ``30m``, ``24h``, ``7d``, ``2w``."""
    if isinstance(value, bool):
        raise VirtfleetError("min_unused_age: expected a duration such as 24h, got %r" % (value,))
    if isinstance(value, (int, float)):
        if value < 0:
            raise VirtfleetError("min_unused_age cannot be negative (%r)" % (value,))
        return float(value)
    match = _AGE_RE.match(str(value))
    if not match:
        raise VirtfleetError("min_unused_age: cannot parse %r; use seconds or a number with s, m, h, d or w" % (value,))
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def retry_delays(retries: int, first_delay: float) -> List[float]:
    """Exponential backoff between attempts (1, 2, 4 ... times ``first_delay``, capped at 60 s)."""
    return [min(60.0, first_delay * (2 ** n)) for n in range(max(0, retries))]


# --------------------------------------------------------------------------------------------------
# Decompression by magic bytes
# --------------------------------------------------------------------------------------------------

def detect_compression(head: bytes) -> Optional[str]:
    """``gzip``/``xz``/``bzip2``/``zstd`` from the first bytes, never from a file name suffix."""
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if len(head) >= 10 and head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
        return "bzip2"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


class _Decompressor:
    """Streaming decompressor with bounded output per call; handles concatenated streams (multi-member gzip)."""

    def __init__(self, kind: str) -> None:
        if kind == "zstd" and _zstd is None:
            raise VirtfleetError("the image is zstd-compressed but the python 'zstandard' module is not installed "
                                 "on the hypervisor; install it (python3-zstandard) or publish the image uncompressed")
        self.kind = kind
        self._obj = self._new()

    def _new(self) -> Any:
        import bz2
        import lzma

        if self.kind == "gzip":
            return zlib.decompressobj(wbits=31)
        if self.kind == "xz":
            return lzma.LZMADecompressor()
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        return _zstd.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes, limit: int) -> Iterator[bytes]:
        """Decompressed pieces of ``data`` (each at most ``limit`` bytes for zlib/xz/bz2)."""
        while data:
            obj = self._obj
            if self.kind == "gzip":
                out = obj.decompress(data, limit)
                data = obj.unconsumed_tail
                if out:
                    yield out
                if obj.eof:
                    data = obj.unused_data + data
                    self._obj = self._new() if data else obj
                    if not data:
                        return
                continue
            if self.kind == "zstd":
                out = obj.decompress(data)
                if out:
                    yield out
                return
            out = obj.decompress(data, limit)
            data = b""
            if out:
                yield out
            while not obj.eof and not obj.needs_input:
                out = obj.decompress(b"", limit)
                if out:
                    yield out
            if obj.eof and obj.unused_data:
                data = obj.unused_data
                self._obj = self._new()

    def finish(self) -> None:
        """Fail when the compressed stream was cut short."""
        if self.kind == "zstd":
            return
        if not self._obj.eof:
            raise VirtfleetError("the %s stream ended early (truncated download?)" % self.kind)


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------

class _TransientError(Exception):
    """A failure worth retrying (connection refused/reset, timeout, 5xx, body cut short)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _describe_url_error(exc: BaseException) -> Tuple[str, bool]:
    """(cause for the message, transient?) for an exception from opening or reading a URL."""
    import ssl

    import urllib.error

    from ansible.module_utils.urls import ConnectionError as UrlsConnectionError, SSLValidationError

    if isinstance(exc, urllib.error.HTTPError):
        transient = exc.code >= 500 or exc.code in (408, 429)
        cause = ("HTTP %d %s" % (exc.code, exc.reason or "")).strip()
        if exc.code in (401, 403):
            cause += " (check url_username/url_password, headers or the credentials in the url)"
        return cause, transient
    if isinstance(exc, SSLValidationError):
        return _describe_tls(exc), False
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            return _describe_tls(reason), False
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timed out", True
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused", True
        if isinstance(reason, socket.gaierror):
            return "cannot resolve the host name (%s)" % reason, False
        if isinstance(reason, OSError):
            return "%s" % (reason.strerror or reason), True
        return str(reason), True
    if isinstance(exc, ssl.SSLError):
        return _describe_tls(exc), False
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out", True
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", True
    if isinstance(exc, UrlsConnectionError):
        return str(exc), True
    import http.client

    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection before the end of the body", True
    if isinstance(exc, (http.client.HTTPException, ConnectionError)):
        return "%s: %s" % (type(exc).__name__, exc), True
    return "%s: %s" % (type(exc).__name__, exc), False


def _describe_tls(exc: BaseException) -> str:
    """A TLS failure, with what to do about it."""
    import ssl

    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return ("TLS certificate validation failed (%s); install the server's CA certificate on the hypervisor, "
                "or set validate_certs: false for a test server only" % text)
    if "CERTIFICATE_REQUIRED" in text or "alert" in text.lower():
        return ("the server refused the TLS handshake (%s); it may require a client certificate "
                "(client_cert/client_key)" % text)
    return "TLS error: %s" % text


@contextlib.contextmanager
def open_source(url: str, params: Dict[str, Any]) -> Iterator[Tuple[Any, Optional[int]]]:
    """A readable stream of the source and its length when known."""
    scheme = url_scheme(url)
    if scheme == "file":
        path = local_path_of(url)
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise VirtfleetError("cannot read the image %s: %s" % (public_url(url), exc.strerror or exc))
        with handle:
            yield handle, os.fstat(handle.fileno()).st_size
        return
    from ansible.module_utils.urls import open_url

    try:
        response = open_url(
            url,
            headers=params.get("headers") or None,
            timeout=params.get("timeout") or 60,
            validate_certs=params.get("validate_certs", True),
            url_username=params.get("url_username"),
            url_password=params.get("url_password"),
            force_basic_auth=bool(params.get("force_basic_auth")),
            client_cert=params.get("client_cert"),
            client_key=params.get("client_key"),
            use_proxy=params.get("use_proxy", True),
            http_agent="virtfleet.libvirt-image_cache",
        )
    except Exception as exc:  # pylint: disable=broad-except
        cause, transient = _describe_url_error(exc)
        if transient:
            raise _TransientError(cause)
        raise VirtfleetError("cannot fetch %s: %s" % (public_url(url), cause))
    try:
        length = response.headers.get("Content-Length")
        encoding = (response.headers.get("Content-Encoding") or "identity").lower()
        yield response, (int(length) if length and length.isdigit() and encoding == "identity" else None)
    finally:
        response.close()


def read_small(url: str, params: Dict[str, Any], limit: int = 4 << 20) -> str:
    """The text of a small document (a SUMS file), with the same transport options as the image."""
    def attempt() -> str:
        with open_source(url, params) as (stream, _length):
            try:
                data = stream.read(limit + 1)
            except Exception as exc:  # pylint: disable=broad-except
                cause, transient = _describe_url_error(exc)
                if transient:
                    raise _TransientError(cause)
                raise VirtfleetError("cannot read %s: %s" % (public_url(url), cause))
        if len(data) > limit:
            raise VirtfleetError("the checksum file %s is larger than %s; is it really a SUMS file?"
                                 % (public_url(url), format_size(limit)))
        return data.decode("utf-8", "replace")

    return _with_retries(attempt, url, params)


def _with_retries(attempt: Callable[[], Any], url: str, params: Dict[str, Any]) -> Any:
    """Run ``attempt``, retrying transient failures with exponential backoff."""
    delays = retry_delays(int(params.get("retries") or 0), float(params.get("retry_delay") or 1.0))
    tries = 0
    while True:
        try:
            return attempt()
        except _TransientError as exc:
            if tries >= len(delays):
                cause = exc.cause
                if cause == "timed out":
                    cause = ("timed out (no data for %s s; raise timeout if the server is slow)"
                             % (params.get("timeout") or 60))
                suffix = " (after %d attempts)" % (tries + 1) if tries else ""
                raise VirtfleetError("cannot fetch %s: %s%s" % (public_url(url), cause, suffix))
            time.sleep(delays[tries])
            tries += 1


def resolve_checksum(params: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """``(algorithm, hex digest)``; a SUMS reference is read and the image's line looked up."""
    parsed = parse_checksum(params.get("checksum"))
    if parsed is None or not is_sums_reference(parsed[1]):
        return parsed
    algo, sums_url = parsed
    url_scheme(sums_url)
    text = read_small(sums_url, params)
    name = file_name_of(params["url"])
    digest = find_in_sums(text, name, algo)
    if digest is None:
        raise VirtfleetError("the checksum file %s has no %s line for %r (the image %s); check the url and the "
                             "algorithm" % (public_url(sums_url), algo, name, public_url(params["url"])))
    return algo, digest


# --------------------------------------------------------------------------------------------------
# Streaming download
# --------------------------------------------------------------------------------------------------

def stream_to_file(stream: Any, length: Optional[int], dest: str, algo: Optional[str],
                   max_bytes: int, url: str) -> Dict[str, Any]:
    """Copy ``stream`` to ``dest`` (created exclusively), hashing and decompressing on the way; one pass."""
    hasher = hashlib.new(algo) if algo else None
    received = 0
    written = 0
    compression: Optional[str] = None
    decompressor: Optional[_Decompressor] = None
    head_pending = True
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb", buffering=0) as out:
        buf = b""
        while True:
            try:
                chunk = stream.read(CHUNK_SIZE)
            except Exception as exc:  # pylint: disable=broad-except
                cause, transient = _describe_url_error(exc)
                if transient:
                    raise _TransientError(cause)
                raise VirtfleetError("cannot fetch %s: %s" % (public_url(url), cause))
            if not chunk:
                break
            received += len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            if head_pending:
                buf += chunk
                if len(buf) < 16 and (length is None or received < length):
                    continue
                compression = detect_compression(buf)
                if compression:
                    decompressor = _Decompressor(compression)
                chunk, buf, head_pending = buf, b"", False
            pieces = decompressor.feed(chunk, CHUNK_SIZE * 4) if decompressor else (chunk,)
            for piece in pieces:
                written += len(piece)
                if written > max_bytes:
                    raise VirtfleetError("the image %s grows beyond %s on disk, more than max_virtual_size allows; "
                                         "raise max_virtual_size if it is legitimate"
                                         % (public_url(url), format_size(max_bytes)))
                _write_all(out, piece)
        if head_pending and buf:
            compression = detect_compression(buf)
            if compression:
                decompressor = _Decompressor(compression)
                for piece in decompressor.feed(buf, CHUNK_SIZE * 4):
                    written += len(piece)
                    _write_all(out, piece)
            else:
                written += len(buf)
                _write_all(out, buf)
        if length is not None and received != length:
            raise _TransientError("the server closed the connection after %d of %d bytes" % (received, length))
        if decompressor is not None:
            decompressor.finish()
        os.fsync(out.fileno())
    return {"received": received, "written": written, "compression": compression,
            "digest": hasher.hexdigest() if hasher else None}


def _write_all(out: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        count = out.write(view)
        view = view[count:]


# --------------------------------------------------------------------------------------------------
# Locking and housekeeping
# --------------------------------------------------------------------------------------------------

def image_lock(lock_path: str, timeout: float, what: str):
    """Exclusive per-image lock; waits up to ``timeout`` seconds for another run to finish."""
    return exclusive_lock(lock_path, timeout, what, "raise lock_timeout or find the stuck run")


def remove_stale_temps(path: str) -> List[str]:
    """Temporary files of earlier runs for this image (killed mid-download); safe to remove under its lock."""
    removed = []
    for prefix in (path + TEMP_MARKER, path + RECORD_SUFFIX + TEMP_MARKER):
        for stale in glob.glob(glob.escape(prefix) + "*"):
            remove_quietly(stale)
            removed.append(stale)
    return removed


def read_record(record_path: str) -> Optional[Dict[str, Any]]:
    return read_json_record(record_path)


def write_record(record_path: str, record: Dict[str, Any]) -> None:
    write_file_atomic(record_path, json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n", 0o644)


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _ensure_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)


# --------------------------------------------------------------------------------------------------
# present
# --------------------------------------------------------------------------------------------------

def _request(params: Dict[str, Any]) -> Dict[str, Any]:
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


def _result(path: str, record: Dict[str, Any], stat: os.stat_result, changed: bool, fetched: bool,
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


def _reinspect(paths: Dict[str, str], record: Dict[str, Any], req: Dict[str, Any],
               stat: os.stat_result, full: bool) -> Dict[str, Any]:
    """Inspect a cached file again (new inspector version, or verify: full); an unsafe one is removed."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qemu_img as qemu_img

    try:
        inspection = image_format.inspect_file(paths["path"], declared_format=record["format"],
                                               max_virtual_size=req["max_virtual_size"])
    except VirtfleetError as exc:
        remove_quietly(paths["record"])
        remove_quietly(paths["path"])
        raise VirtfleetError("the cached image %s (from %s) failed re-inspection and was removed: %s"
                             % (paths["path"], record.get("url"), exc.msg))
    if full and record.get("file_sha256"):
        digest = _hash_file(paths["path"], "sha256")
        if digest != record["file_sha256"]:
            raise VirtfleetError("the cached image %s does not match its record: sha256 %s, recorded %s; remove it "
                                 "with state: absent and fetch it again" % (paths["path"], digest, record["file_sha256"]))
    if full and qemu_name(record["format"]) != "raw":
        try:
            report = qemu_img.check(paths["path"], record["format"])
        except qemu_img.QemuImgError as exc:
            raise VirtfleetError("the cached image %s fails qemu-img check: %s" % (paths["path"], exc.msg))
        problems = {key: report.get(key) for key in ("corruptions", "check-errors") if report.get(key)}
        if problems:
            raise VirtfleetError("qemu-img check finds the cached image %s damaged (%s); remove it with state: "
                                 "absent and fetch it again" % (paths["path"], ", ".join(
                                     "%s: %s" % item for item in sorted(problems.items()))))
    updated = dict(record)
    updated["inspector_version"] = image_format.INSPECTOR_VERSION
    updated["virtual_size"] = inspection.virtual_size
    updated["size"] = stat.st_size
    updated["mtime_ns"] = stat.st_mtime_ns
    return updated


def _hash_file(path: str, algo: str) -> str:
    hasher = hashlib.new(algo)
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK_SIZE * 4)
            if not block:
                return hasher.hexdigest()
            hasher.update(block)


def _cached_result(paths: Dict[str, str], req: Dict[str, Any], checksum: Optional[str],
                   check_mode: bool, locked: bool) -> Optional[Dict[str, Any]]:
    """The result for an image already cached and trustworthy, or None when it must be fetched."""
    stat = _stat(paths["path"])
    record = read_record(paths["record"])
    if record_matches(record, stat, req["url"], checksum) is not None:
        return None
    actions: List[str] = []
    stale_inspector = record["inspector_version"] != image_format.INSPECTOR_VERSION
    full = req["verify"] == "full"
    if stale_inspector or full:
        if check_mode:
            return _result(paths["path"], record, stat, changed=stale_inspector, fetched=False,
                           actions=["reinspect"] if stale_inspector else [])
        if not locked:
            return None  # redo under the lock
        record = _reinspect(paths, record, req, stat, full)
        if stale_inspector:
            write_record(paths["record"], record)
            actions.append("reinspect")
    # Nothing is written on a cached re-run (not even a "last used" touch): an idempotent run only
    # reads. Use is seen by pruning through the disks' backing chains and the base's atime.
    return _result(paths["path"], record, stat, changed=bool(actions), fetched=False, actions=actions)


def _name_the_source(exc: VirtfleetError, temp: str, url: str) -> VirtfleetError:
    """The inspector's refusal, naming the image's URL instead of our temporary file."""
    msg = exc.msg.replace(temp, public_url(url))
    if public_url(url) not in msg:
        msg = "%s: %s" % (public_url(url), msg)
    details = {"reason": exc.reason} if getattr(exc, "reason", None) else {}
    return VirtfleetError(msg, **details)


def _fetch(paths: Dict[str, str], req: Dict[str, Any], params: Dict[str, Any],
           checksum: Optional[Tuple[str, str]]) -> Dict[str, Any]:
    """Download, verify, inspect, convert and publish one image; leaves no temporary file on failure."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qemu_img as qemu_img

    url = req["url"]
    # Without a checksum to verify we still hash (sha256) what arrives, so verify: full can compare later.
    algo = checksum[0] if checksum else "sha256"
    max_bytes = req["max_virtual_size"] + req["max_virtual_size"] // 10 + _DOWNLOAD_SLACK
    temps: List[str] = []
    try:
        download = temp_path_for(paths["path"])
        temps.append(download)
        started = time.monotonic()

        def attempt() -> Dict[str, Any]:
            remove_quietly(download)
            with open_source(url, params) as (stream, length):
                return stream_to_file(stream, length, download, algo, max_bytes, url)

        transfer = _with_retries(attempt, url, params)
        transfer["seconds"] = time.monotonic() - started
        if checksum and transfer["digest"] != checksum[1]:
            raise VirtfleetError("checksum mismatch for %s: expected %s:%s, got %s:%s; nothing was kept"
                                 % (public_url(url), algo, checksum[1], algo, transfer["digest"]))
        try:
            inspection = image_format.inspect_file(download, declared_format=req["declared"],
                                                   max_virtual_size=req["max_virtual_size"])
        except VirtfleetError as exc:
            raise _name_the_source(exc, download, url)
        source_format = inspection.format
        if req["declared"] is None and source_format not in SAFE_SOURCE_FORMATS:
            raise VirtfleetError("refusing image %s: detected format %r is not one we cache; declare format if "
                                 "this is intended" % (public_url(url), source_format))
        target = cached_format_of(source_format, req["cache_format"])
        final_tmp = download
        actions = ["fetch"]
        if transfer["compression"]:
            actions.append("decompress")
        if qemu_name(target) != qemu_name(source_format):
            final_tmp = temp_path_for(paths["path"])
            temps.append(final_tmp)
            try:
                qemu_img.convert(download, qemu_name(source_format), final_tmp, qemu_name(target))
            except qemu_img.QemuImgError as exc:
                raise VirtfleetError("converting %s from %s to %s failed: %s"
                                     % (public_url(url), source_format, target, exc))
            remove_quietly(download)
            try:
                converted = image_format.inspect_file(final_tmp, declared_format=target,
                                                      max_virtual_size=req["max_virtual_size"])
            except VirtfleetError as exc:
                raise VirtfleetError("the conversion of %s to %s produced an image we refuse: %s"
                                     % (public_url(url), target, _name_the_source(exc, final_tmp, url).msg))
            if converted.virtual_size != inspection.virtual_size:
                raise VirtfleetError("the conversion of %s changed the virtual size from %d to %d bytes"
                                     % (public_url(url), inspection.virtual_size, converted.virtual_size))
            actions.append("convert")
        os.chmod(final_tmp, 0o644)
        fd = os.open(final_tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(final_tmp, paths["path"])
        temps.remove(final_tmp)
        fsync_dir(paths["base_dir"])
        stat = os.stat(paths["path"])
        record = {
            "record_version": RECORD_VERSION,
            "url": public_url(url),
            "checksum": "%s:%s" % checksum if checksum else None,
            "format": target,
            "source_format": source_format,
            "compression": transfer["compression"],
            "virtual_size": inspection.virtual_size,
            "size": stat.st_size,
            "mtime": stat.st_mtime,
            "mtime_ns": stat.st_mtime_ns,
            "inspector_version": image_format.INSPECTOR_VERSION,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bytes": transfer["received"],
        }
        if final_tmp == download and algo == "sha256" and not transfer["compression"]:
            record["file_sha256"] = transfer["digest"]
        write_record(paths["record"], record)
        return _result(paths["path"], record, stat, changed=True, fetched=True, transfer=transfer, actions=actions)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise VirtfleetError("no space left on the device of %s while caching %s; free space or move "
                                 "instances_path" % (paths["base_dir"], public_url(url)))
        if exc.errno == errno.EDQUOT:
            raise VirtfleetError("disk quota exceeded in %s while caching %s" % (paths["base_dir"], public_url(url)))
        raise VirtfleetError("cannot cache %s in %s: %s" % (public_url(url), paths["base_dir"], exc))
    finally:
        for temp in temps:
            remove_quietly(temp)


def _planned_fetch(path: str, req: Dict[str, Any], checksum: Optional[str]) -> Dict[str, Any]:
    """Check mode: what a fetch would do, as far as it is known without downloading anything."""
    declared = req["declared"]
    actions = ["fetch"]
    if declared:
        fmt: Optional[str] = cached_format_of(declared, req["cache_format"])
        if qemu_name(fmt) != qemu_name(declared):
            actions.append("convert")
    else:
        fmt = None if req["cache_format"] == "source" else req["cache_format"]
    return {"changed": True, "path": path, "format": fmt, "source_format": declared, "virtual_size": None,
            "actual_size": None, "size": None, "checksum": checksum, "fetched": False, "bytes": 0,
            "seconds": 0.0, "throughput": 0, "compression": None, "actions": actions}


def ensure_present(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    req = _request(params)
    checksum = resolve_checksum(params)
    checksum_text = "%s:%s" % checksum if checksum else None
    name = base_name(req["url"], checksum_text, req["cache_format"])
    paths = cache_paths(params["instances_path"], name)

    cached = _cached_result(paths, req, checksum_text, check_mode, locked=False)
    if cached is not None:
        return cached
    if check_mode:
        return _planned_fetch(paths["path"], req, checksum_text)

    _ensure_dir(params["instances_path"])
    _ensure_dir(paths["base_dir"])
    with image_lock(paths["lock"], float(params.get("lock_timeout") or 1800), public_url(req["url"])):
        cached = _cached_result(paths, req, checksum_text, check_mode, locked=True)
        if cached is not None:
            return cached
        remove_stale_temps(paths["path"])
        return _fetch(paths, req, params, checksum)


# --------------------------------------------------------------------------------------------------
# absent / pruned
# --------------------------------------------------------------------------------------------------

def bases_in_use(instances_path: str) -> Dict[str, List[str]]:
    """{real path of a cached base: [disks using it]} from the backing chain of every disk under the tree."""
    base_dir = os.path.realpath(os.path.join(instances_path, BASE_DIR))
    used: Dict[str, List[str]] = {}
    try:
        entries = sorted(os.listdir(instances_path))
    except FileNotFoundError:
        return used
    for entry in entries:
        instance_dir = os.path.join(instances_path, entry)
        if entry in (BASE_DIR, LOCK_DIR) or not os.path.isdir(instance_dir):
            continue
        info = read_json_record(os.path.join(instance_dir, "disk.info.json")) or {}
        for file_name in sorted(os.listdir(instance_dir)):
            disk = os.path.join(instance_dir, file_name)
            if not os.path.isfile(disk) or file_name.endswith(".json") or file_name.endswith(".xml") \
                    or TEMP_MARKER in file_name:
                continue
            disk_info = info.get(file_name) if isinstance(info.get(file_name), dict) else {}
            recorded_base = disk_info.get("base")
            if recorded_base:
                used.setdefault(os.path.realpath(recorded_base), []).append(disk)
            for backing in _backing_chain(disk, disk_info.get("format")):
                real = os.path.realpath(backing)
                if os.path.dirname(real) == base_dir:
                    used.setdefault(real, []).append(disk)
    return used


def _backing_chain(disk: str, fmt: Optional[str]) -> List[str]:
    """Backing files of ``disk``.

    A disk whose format we recorded as qcow2 is asked to qemu-img (with -f, never probed). For a disk without
    a record only its own qcow2 header is read, in Python: a guest can write a fake qcow2 header into a raw
    disk, and qemu-img must not be made to follow the file names such a header gives.
    """
    from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qemu_img as qemu_img

    if fmt is None:
        backing = qcow2_backing_name(disk)
        if backing and not os.path.isabs(backing):
            backing = os.path.join(os.path.dirname(disk), backing)
        return [backing] if backing else []
    if qemu_name(fmt) != "qcow2":
        return []
    try:
        top = qemu_img.info(disk, "qcow2", backing_chain=True)
    except qemu_img.QemuImgError:
        # unreadable now (locked, damaged): fall back to the header so that a base is never pruned by mistake
        backing = qcow2_backing_name(disk)
        return [os.path.join(os.path.dirname(disk), backing)] if backing else []
    files = []
    for layer in top.get("chain") or [top]:
        backing = layer.get("full-backing-filename") or layer.get("backing-filename")
        if backing:
            if not os.path.isabs(backing):
                backing = os.path.join(os.path.dirname(layer.get("filename") or disk), backing)
            files.append(backing)
    return files


def qcow2_backing_name(path: str) -> Optional[str]:
    """The backing file name written in a qcow2 header, read without qemu; None for anything else."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset = int.from_bytes(header[8:16], "big")
            length = int.from_bytes(header[16:20], "big")
            if not offset or not 0 < length <= 1023:
                return None
            handle.seek(offset)
            name = handle.read(length)
    except OSError:
        return None
    return name.decode("utf-8", "replace") or None


def _remove_base(paths: Dict[str, str]) -> None:
    remove_quietly(paths["path"])
    remove_quietly(paths["record"])
    remove_stale_temps(paths["path"])
    fsync_dir(paths["base_dir"])


def ensure_absent(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    req = _request(params)
    checksum = resolve_checksum(params)
    checksum_text = "%s:%s" % checksum if checksum else None
    paths = cache_paths(params["instances_path"], base_name(req["url"], checksum_text, req["cache_format"]))
    result = {"changed": False, "path": paths["path"], "fetched": False, "actions": [], "users": []}
    if _stat(paths["path"]) is None and _stat(paths["record"]) is None:
        return result
    users = bases_in_use(params["instances_path"]).get(os.path.realpath(paths["path"]), [])
    result["users"] = users
    if users and not params.get("force"):
        raise VirtfleetError("the cached image %s (%s) is still used by %s; remove those disks first or pass "
                             "force: true" % (paths["path"], public_url(req["url"]), ", ".join(users)), users=users)
    result.update(changed=True, actions=["remove"])
    if check_mode:
        return result
    with image_lock(paths["lock"], float(params.get("lock_timeout") or 1800), public_url(req["url"])):
        _remove_base(paths)
    return result


def ensure_pruned(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Remove bases in no disk's backing chain and unused for ``min_unused_age``; re-checked under each lock."""
    instances_path = params["instances_path"]
    min_age = parse_age(params.get("min_unused_age", "24h"))
    base_dir = os.path.join(instances_path, BASE_DIR)
    result: Dict[str, Any] = {"changed": False, "removed": [], "kept": [], "actions": [], "fetched": False}
    try:
        names = sorted(os.listdir(base_dir))
    except FileNotFoundError:
        return result
    used = bases_in_use(instances_path)
    now = time.time()
    for name in names:
        if name.endswith(RECORD_SUFFIX) or TEMP_MARKER in name or not os.path.isfile(os.path.join(base_dir, name)):
            continue
        paths = cache_paths(instances_path, name)
        if os.path.realpath(paths["path"]) in used:
            result["kept"].append(paths["path"])
            continue
        stat = _stat(paths["path"])
        if stat is None or now - _last_use(stat, paths["record"]) < min_age:
            if stat is not None:
                result["kept"].append(paths["path"])
            continue
        result["removed"].append(paths["path"])
        if check_mode:
            continue
        with image_lock(paths["lock"], float(params.get("lock_timeout") or 1800), paths["path"]):
            stat = _stat(paths["path"])
            if stat is None or time.time() - _last_use(stat, paths["record"]) < min_age:
                result["removed"].remove(paths["path"])
                continue
            _remove_base(paths)
    result["changed"] = bool(result["removed"])
    result["actions"] = ["remove"] * len(result["removed"])
    return result


def _last_use(stat: os.stat_result, record_path: str) -> float:
    """When the base was last used: read by a guest (atime), fetched or converted (mtime), or re-inspected."""
    record = _stat(record_path)
    return max(stat.st_atime, stat.st_mtime, record.st_mtime if record else 0.0)


def ensure_image(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Bring one image (or, for ``pruned``, the cache) to ``params['state']``."""
    state = params.get("state") or "present"
    if state == "present":
        return ensure_present(params, check_mode)
    if state == "absent":
        return ensure_absent(params, check_mode)
    if state == "pruned":
        return ensure_pruned(params, check_mode)
    raise VirtfleetError("state must be present, absent or pruned, got %r" % state)
