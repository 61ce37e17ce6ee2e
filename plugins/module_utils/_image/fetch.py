# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: fetching an image into the cache, and re-inspecting a cached one.

An image from someone we do not control is checked here before anything else reads it:

* the bytes are hashed while they stream in (one pass; a checksum mismatch keeps nothing), and
  compressed streams are recognised by their magic bytes and decompressed on the way;
* the downloaded file is inspected by our pure-Python inspector before qemu-img ever opens it
  (a hostile header must not reach qemu-img's probing), and qemu-img is always told the format;
* a conversion is written to another temporary file and inspected again;
* its record is written first and the file then appears under its final name complete and
  fsync'ed (``_fileutil.atomic_output``), so a final name never holds a file without its record
  (``record`` names both; ``cache`` is the cached re-run, which never loads this file).

HTTP goes through ``ansible.module_utils.urls``. Loaded only when an image is not cached yet, or
its record asks for a re-inspection.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    atomic_output, remove_quietly, temp_path_for,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format as image_format
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.record import (
    FETCH, RECORD_VERSION, REINSPECT, VERIFY, CachedImage, ImagePlan, Target, cached_format_of, cached_image_result,
    image_lock, image_result, plan_present, qemu_name, record_bytes, remove_stale_temps, write_record,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import (
    CHECKSUM_ALGORITHMS, Checksum, ImageSpec, Transport, file_name_of, is_hex, local_path_of, public_url, url_scheme,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import format_size

try:  # zstd is optional: only used when the python module is installed.
    import zstandard as _zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the host
    _zstd = None

CHUNK_SIZE = 1 << 20
# Granularity of the holes a download leaves for its all-zero blocks (the usual filesystem block).
HOLE_BLOCK = 4096
_ZERO_BLOCK = bytes(HOLE_BLOCK)
_ZEROS = bytes(CHUNK_SIZE * 4)  # as large as the largest piece written (a decompressor's output)
# Formats a downloaded image may have when the user did not declare one. Everything else (luks, qed,
# unknown) is refused by the inspector; this list is the second fence.
SAFE_SOURCE_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "gpt", "mbr")
# How much larger than max_virtual_size a downloaded file may grow before we stop writing: qcow2 and
# vmdk metadata make a file slightly larger than its virtual size, nothing legitimate makes it much larger.
_DOWNLOAD_SLACK = 64 << 20


# --------------------------------------------------------------------------------------------------
# Decompression by magic bytes
# --------------------------------------------------------------------------------------------------

def detect_compression(head: bytes) -> Optional[str]:
    """``gzip``/``xz``/``bzip2``/``zstd`` from the first bytes, never from a file name suffix."""
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if len(head) >= 10 and head[:3] == b"BZh" and head[3:4] in b"123456789" \
            and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
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
        described = _describe_socket_error(reason)
        if described is not None:
            return described
        if isinstance(reason, socket.gaierror):
            return "cannot resolve the host name (%s)" % reason, False
        if isinstance(reason, OSError):
            return "%s" % (reason.strerror or reason), True
        return str(reason), True
    described = _describe_socket_error(exc)
    if described is not None:
        return described
    if isinstance(exc, UrlsConnectionError):
        return str(exc), True
    import http.client

    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection before the end of the body", True
    if isinstance(exc, (http.client.HTTPException, ConnectionError)):
        return "%s: %s" % (type(exc).__name__, exc), True
    return "%s: %s" % (type(exc).__name__, exc), False


def _describe_socket_error(exc: BaseException) -> Optional[Tuple[str, bool]]:
    """TLS, timeout and refused connection, raised bare or wrapped in urllib's URLError; else None."""
    import ssl

    if isinstance(exc, ssl.SSLError):
        return _describe_tls(exc), False
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out", True
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", True
    return None


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
def open_source(url: str, transport: Transport) -> Iterator[Tuple[Any, Optional[int]]]:
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
            headers=transport.headers,
            timeout=transport.timeout,
            validate_certs=transport.validate_certs,
            url_username=transport.url_username,
            url_password=transport.url_password,
            force_basic_auth=transport.force_basic_auth,
            client_cert=transport.client_cert,
            client_key=transport.client_key,
            use_proxy=transport.use_proxy,
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


def read_small(url: str, transport: Transport, limit: int = 4 << 20) -> str:
    """The text of a small document (a SUMS file), with the same transport options as the image."""
    def attempt() -> str:
        with open_source(url, transport) as (stream, _length):
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

    return _with_retries(attempt, url, transport)


def retry_delays(retries: int, first_delay: float) -> List[float]:
    """Exponential backoff between attempts (1, 2, 4 ... times ``first_delay``, capped at 60 s)."""
    return [min(60.0, first_delay * (2 ** n)) for n in range(max(0, retries))]


def _with_retries(attempt: Callable[[], Any], url: str, transport: Transport) -> Any:
    """Run ``attempt``, retrying transient failures with exponential backoff."""
    delays = retry_delays(transport.retries, transport.retry_delay)
    tries = 0
    while True:
        try:
            return attempt()
        except _TransientError as exc:
            if tries >= len(delays):
                cause = exc.cause
                if cause == "timed out":
                    cause = "timed out (no data for %s s; raise timeout if the server is slow)" % transport.timeout
                suffix = " (after %d attempts)" % (tries + 1) if tries else ""
                raise VirtfleetError("cannot fetch %s: %s%s" % (public_url(url), cause, suffix))
            time.sleep(delays[tries])
            tries += 1


# --------------------------------------------------------------------------------------------------
# Checksums from SUMS files
# --------------------------------------------------------------------------------------------------

def resolve_checksum(spec: ImageSpec) -> Optional[Checksum]:
    """The checksum to verify against: as given, or the image's line of the SUMS file it names."""
    checksum = spec.checksum
    if checksum is None or not checksum.is_sums:
        return checksum
    return digest_from_sums(spec, checksum.algorithm, checksum.value)


def digest_from_sums(spec: ImageSpec, algo: str, sums_url: str) -> Checksum:
    """``(algorithm, hex digest)`` from the image's line in the SUMS file at ``sums_url``."""
    url_scheme(sums_url)
    text = read_small(sums_url, spec.transport)
    name = file_name_of(spec.url)
    digest = find_in_sums(text, name, algo)
    if digest is None:
        raise VirtfleetError("the checksum file %s has no %s line for %r (the image %s); check the url and the "
                             "algorithm" % (public_url(sums_url), algo, name, public_url(spec.url)))
    return Checksum(algo, digest)


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
        if len(digest) == want and is_hex(digest) and os.path.basename(name) == file_name:
            return digest.lower()
    return None


# --------------------------------------------------------------------------------------------------
# Streaming download
# --------------------------------------------------------------------------------------------------

class SparseWriter:
    """Writes a new file leaving every all-zero block as a hole, as ``cp --sparse=always`` and ``qemu-img
    convert`` do: a block of ``HOLE_BLOCK`` bytes (aligned in the file) that holds only zeros is seeked
    over instead of written, so a mostly empty image takes only its data on disk and costs only its data
    to sync. The file gets its length when it is finished."""

    def __init__(self, fd: int, limit: int, too_large: Callable[[], VirtfleetError]) -> None:
        self.fd = fd
        self.offset = 0
        self.limit = limit
        self.too_large = too_large

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        size = len(data)
        if self.offset + size > self.limit:
            raise self.too_large()
        if size <= len(_ZEROS) and _ZEROS.startswith(data):  # the common case of an empty stretch
            self.offset += size
            return
        view = memoryview(data)
        run = -1  # where the current run of blocks with data starts in ``data``
        pos = 0
        end = min(size, HOLE_BLOCK - self.offset % HOLE_BLOCK)
        while pos < size:
            if end - pos == HOLE_BLOCK:
                zero = data.startswith(_ZERO_BLOCK, pos)
            else:
                zero = _ZERO_BLOCK.startswith(view[pos:end])
            if not zero:
                if run < 0:
                    run = pos
            elif run >= 0:
                self._pwrite(view[run:pos], self.offset + run)
                run = -1
            pos, end = end, min(size, end + HOLE_BLOCK)
        if run >= 0:
            self._pwrite(view[run:size], self.offset + run)
        self.offset += size

    def _pwrite(self, view: memoryview, offset: int) -> None:
        while view:
            count = os.pwrite(self.fd, view, offset)
            view, offset = view[count:], offset + count

    def finish(self) -> None:
        """Give the file its length (a trailing hole is not written)."""
        os.ftruncate(self.fd, self.offset)


def stream_to_file(stream: Any, length: Optional[int], dest: str, algo: Optional[str],
                   max_bytes: int, url: str, step: Any = None) -> Dict[str, Any]:
    """Copy ``stream`` to ``dest`` (created exclusively) in one pass: hashed as the bytes arrive,
    decompressed on the way, and written sparse (``SparseWriter``). Not synced: the file is synced
    once, before it is renamed to its final name (``atomic_output``). ``step`` (``_fetch``'s) learns the
    writer, so that a full disk can be reported with what was written."""
    hasher = hashlib.new(algo) if algo else None
    received = 0
    compression: Optional[str] = None
    decompressor: Optional[_Decompressor] = None
    head = b""

    def too_large() -> VirtfleetError:
        return VirtfleetError("the image %s grows beyond %s on disk, more than max_virtual_size allows; raise "
                              "max_virtual_size if it is legitimate" % (public_url(url), format_size(max_bytes)))

    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        out = SparseWriter(fd, max_bytes, too_large)
        if step is not None:
            step.writer = out
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
            if head is not None:  # the first bytes decide whether the stream is compressed
                head += chunk
                if len(head) < 16 and (length is None or received < length):
                    continue
                chunk, head = head, None
                compression = detect_compression(chunk)
                decompressor = _Decompressor(compression) if compression else None
                if compression and step is not None:
                    step.needed = None  # the length was the compressed one
            _write_through(out, decompressor, chunk)
        if head:
            compression = detect_compression(head)
            decompressor = _Decompressor(compression) if compression else None
            _write_through(out, decompressor, head)
        if length is not None and received != length:
            raise _TransientError("the server closed the connection after %d of %d bytes" % (received, length))
        if decompressor is not None:
            decompressor.finish()
        out.finish()
    finally:
        os.close(fd)
    return {"received": received, "written": out.offset, "compression": compression,
            "digest": hasher.hexdigest() if hasher else None}


def _write_through(out: SparseWriter, decompressor: Optional[_Decompressor], chunk: bytes) -> None:
    if decompressor is None:
        out.write(chunk)
        return
    for piece in decompressor.feed(chunk, CHUNK_SIZE * 4):
        out.write(piece)


# --------------------------------------------------------------------------------------------------
# Inspecting, converting and publishing
# --------------------------------------------------------------------------------------------------

def _ensure_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)


def reinspect(cached: CachedImage, target: Target, spec: ImageSpec, full: bool) -> Dict[str, Any]:
    """Inspect a cached file again (new inspector version, or verify: full); an unsafe one is removed."""
    record, path = cached.record, cached.path
    try:
        inspection = image_format.inspect_file(path, declared_format=record["format"],
                                               max_virtual_size=spec.max_virtual_size)
    except VirtfleetError as exc:
        remove_quietly(target.record_path)
        remove_quietly(path)
        raise VirtfleetError("the cached image %s (from %s) failed re-inspection and was removed: %s"
                             % (path, record.get("url"), exc.msg))
    if full and record.get("file_sha256"):
        digest = _hash_file(path, "sha256")
        if digest != record["file_sha256"]:
            raise VirtfleetError("the cached image %s does not match its record: sha256 %s, recorded %s; remove it "
                                 "with state: absent and fetch it again" % (path, digest, record["file_sha256"]))
    if full and qemu_name(record["format"]) != "raw":
        try:
            report = qemu_img.check(path, record["format"])
        except qemu_img.QemuImgError as exc:
            raise VirtfleetError("the cached image %s fails qemu-img check: %s" % (path, exc.msg))
        problems = {key: report.get(key) for key in ("corruptions", "check-errors") if report.get(key)}
        if problems:
            raise VirtfleetError("qemu-img check finds the cached image %s damaged (%s); remove it with state: "
                                 "absent and fetch it again" % (path, ", ".join(
                                     "%s: %s" % item for item in sorted(problems.items()))))
    updated = dict(record)
    updated["inspector_version"] = image_format.INSPECTOR_VERSION
    updated["virtual_size"] = inspection.virtual_size
    updated["size"] = cached.stat.st_size
    updated["mtime_ns"] = cached.stat.st_mtime_ns
    return updated


def _hash_file(path: str, algo: str) -> str:
    hasher = hashlib.new(algo)
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK_SIZE * 4)
            if not block:
                return hasher.hexdigest()
            hasher.update(block)


def _name_the_source(exc: VirtfleetError, temp: str, url: str) -> VirtfleetError:
    """The inspector's refusal, naming the image's URL instead of our temporary file."""
    msg = exc.msg.replace(temp, public_url(url))
    if public_url(url) not in msg:
        msg = "%s: %s" % (public_url(url), msg)
    details = {"reason": exc.reason} if getattr(exc, "reason", None) else {}
    return VirtfleetError(msg, **details)


def _inspect_download(path: str, spec: ImageSpec) -> Any:
    """The inspector's verdict on a downloaded file; refusals name the URL and a format we do not cache."""
    try:
        inspection = image_format.inspect_file(path, declared_format=spec.declared_format,
                                               max_virtual_size=spec.max_virtual_size)
    except VirtfleetError as exc:
        raise _name_the_source(exc, path, spec.url)
    if spec.declared_format is None and inspection.format not in SAFE_SOURCE_FORMATS:
        raise VirtfleetError("refusing image %s: detected format %r is not one we cache; declare format if "
                             "this is intended" % (public_url(spec.url), inspection.format))
    return inspection


def _convert(source: str, source_format: str, dest: str, target_format: str, spec: ImageSpec,
             virtual_size: int) -> None:
    """Convert ``source`` into ``dest`` with qemu-img (formats given), then inspect the result again."""
    url = spec.url
    try:
        qemu_img.convert(source, qemu_name(source_format), dest, qemu_name(target_format))
    except qemu_img.QemuImgError as exc:
        if "No space left" in (exc.stderr or ""):
            raise OSError(errno.ENOSPC, "No space left on device", dest)
        raise VirtfleetError("converting %s from %s to %s failed: %s"
                             % (public_url(url), source_format, target_format, exc))
    try:
        converted = image_format.inspect_file(dest, declared_format=target_format,
                                              max_virtual_size=spec.max_virtual_size)
    except VirtfleetError as exc:
        raise VirtfleetError("the conversion of %s to %s produced an image we refuse: %s"
                             % (public_url(url), target_format, _name_the_source(exc, dest, url).msg))
    if converted.virtual_size != virtual_size:
        raise VirtfleetError("the conversion of %s changed the virtual size from %d to %d bytes"
                             % (public_url(url), virtual_size, converted.virtual_size))


class _Step:
    """What ``_fetch`` is writing, so that a full disk is reported with the file and the space it needed."""

    def __init__(self) -> None:
        self.writing = "the download"
        self.path: Optional[str] = None
        self.needed: Optional[int] = None      # bytes the step needs at most, when known
        self.writer: Optional[SparseWriter] = None

    def set(self, writing: str, path: str, needed: Optional[int]) -> None:
        self.writing, self.path, self.needed, self.writer = writing, path, needed, None


def _fetch(spec: ImageSpec, target: Target) -> Dict[str, Any]:
    """Download, verify, inspect, convert and publish one image; leaves no temporary file on failure.

    The record is written first, then the file is renamed to its final name: a final name never holds a
    file without its record (a record without its file only makes the next run fetch again)."""
    url = spec.url
    checksum = target.checksum
    # Without a checksum to verify we still hash (sha256) what arrives, so verify: full can compare later.
    algo = checksum.algorithm if checksum else "sha256"
    max_bytes = spec.max_virtual_size + spec.max_virtual_size // 10 + _DOWNLOAD_SLACK
    source_tmp: Optional[str] = None
    record_written = False
    step = _Step()
    try:
        with atomic_output(target.path, 0o644) as final_tmp:
            started = time.monotonic()

            def attempt() -> Dict[str, Any]:
                remove_quietly(final_tmp)
                with open_source(url, spec.transport) as (stream, length):
                    step.set("the download", target.path, length)
                    return stream_to_file(stream, length, final_tmp, algo, max_bytes, url, step)

            transfer = _with_retries(attempt, url, spec.transport)
            transfer["seconds"] = time.monotonic() - started
            if checksum and transfer["digest"] != checksum.value:
                raise VirtfleetError("checksum mismatch for %s: expected %s:%s, got %s:%s; nothing was kept"
                                     % (public_url(url), algo, checksum.value, algo, transfer["digest"]))
            inspection = _inspect_download(final_tmp, spec)
            source_format = inspection.format
            target_format = cached_format_of(source_format, spec.cache_format)
            actions = [FETCH]
            if transfer["compression"]:
                actions.append("decompress")
            converted = qemu_name(target_format) != qemu_name(source_format)
            if converted:
                source_tmp = temp_path_for(target.path)
                os.rename(final_tmp, source_tmp)
                step.set("the conversion to %s" % target_format, target.path, inspection.virtual_size)
                _convert(source_tmp, source_format, final_tmp, target_format, spec, inspection.virtual_size)
                remove_quietly(source_tmp)
                actions.append("convert")
            stat = os.stat(final_tmp)
            record = {
                "record_version": RECORD_VERSION,
                "url": public_url(url),
                "checksum": target.checksum_text,
                "format": target_format,
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
            if not converted and algo == "sha256" and not transfer["compression"]:
                record["file_sha256"] = transfer["digest"]
            # the record takes a block beside the image (the image's temporary file is removed on failure)
            step.set("its record", target.record_path, stat.st_blocks * 512 + len(record_bytes(record)) + 4095
                     & ~4095)
            write_record(target.record_path, record)
            record_written = True
            step.set("the image", target.path, stat.st_blocks * 512)  # synced as it is renamed
        return image_result(target.path, record, os.stat(target.path), changed=True, fetched=True,
                            transfer=transfer, actions=actions)
    except BaseException as exc:
        if record_written:
            remove_quietly(target.record_path)
        if isinstance(exc, OSError):
            raise _os_error(exc, spec, step)
        raise
    finally:
        remove_quietly(source_tmp)


def _os_error(exc: OSError, spec: ImageSpec, step: _Step) -> VirtfleetError:
    """A file system failure while caching, said with the file, the space it needed and the space free
    (after what this run wrote was removed again)."""
    base_dir = spec.layout.base_dir
    url = public_url(spec.url)
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return VirtfleetError("cannot cache %s in %s: %s" % (url, base_dir, exc))
    if step.needed is not None:
        needed = "up to %s (%d bytes)" % (format_size(step.needed), step.needed)
    elif step.writer is not None:
        needed = "more than the %s written when it failed" % format_size(step.writer.offset)
    else:
        needed = "an unknown amount"
    try:
        available = shutil.disk_usage(base_dir).free
        free = "%s (%d bytes)" % (format_size(available), available)
    except OSError:
        free = "an unknown amount"
    problem = {errno.ENOSPC: "no space left on the device of %s" % base_dir,
               errno.EDQUOT: "disk quota exceeded in %s" % base_dir,
               errno.EFBIG: "the file system of %s does not take a file that large" % base_dir}[exc.errno]
    return VirtfleetError("%s while writing %s of %s to %s: caching it needs %s there and %s is free now "
                          "(nothing was kept); free space or move instances_path"
                          % (problem, step.writing, url, step.path or base_dir, needed, free),
                          path=step.path, needed_bytes=step.needed)


# --------------------------------------------------------------------------------------------------
# Carrying out a present plan, under the image's lock
# --------------------------------------------------------------------------------------------------

def _step_fetch(spec: ImageSpec, plan: ImagePlan) -> Dict[str, Any]:
    """Fetch under the lock. A file under the final name that its record does not describe (left by a run
    that failed or was killed after writing it, or changed since) is never served: it is removed first,
    which frees its space for the new copy, and the result says so."""
    target, cached = plan.target, plan.cached
    remove_stale_temps(target.path)
    found = None
    if cached.stat is not None:
        found = "the cached file %s was not usable (%s) and was removed before fetching the image again" % (
            target.path, cached.mismatch)
        remove_quietly(target.path)
    try:
        result = _fetch(spec, target)
    except VirtfleetError as exc:
        if found:
            raise VirtfleetError("%s (%s)" % (exc.msg, found), **exc.details)
        raise
    if found:
        result[WARNINGS_KEY] = [found]
    return result


def _step_inspect(spec: ImageSpec, plan: ImagePlan) -> Dict[str, Any]:
    """Re-inspect a file an older inspector passed (the record is rewritten), or verify one (verify: full)."""
    cached = plan.cached
    record = reinspect(cached, plan.target, spec, full=spec.verify == "full")
    if cached.stale_inspector:
        write_record(plan.target.record_path, record)
    return cached_image_result(CachedImage(cached.path, record, cached.stat, None), plan.actions)


_PRESENT_STEPS: Dict[str, Callable[[ImageSpec, ImagePlan], Dict[str, Any]]] = {
    FETCH: _step_fetch,
    REINSPECT: _step_inspect,
    VERIFY: _step_inspect,
}


def apply_present(spec: ImageSpec, plan: ImagePlan) -> Dict[str, Any]:
    """Carry out a present plan under the image's lock, where it is decided again: another run may have
    cached the image meanwhile."""
    target = plan.target
    _ensure_dir(spec.instances_path)
    _ensure_dir(spec.layout.base_dir)
    with image_lock(target.lock_path, spec.lock_timeout, public_url(spec.url)):
        plan = plan_present(spec, target)
        if not plan.steps:
            return cached_image_result(plan.cached)
        return _PRESENT_STEPS[plan.steps[0]](spec, plan)
