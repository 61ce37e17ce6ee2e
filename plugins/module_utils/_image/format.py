# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what an untrusted image file really is, read from its header bytes.

qemu-img follows references written inside an image: a qcow2 backing file or external data file
(CVE-2024-32498), VMDK extents named by a descriptor (CVE-2022-47951), a VHD/VHDX parent. Asked
to probe, it trusts the first bytes of a file a guest may have written (CVE-2024-40767,
CVE-2026-24708). So before qemu-img ever touches a downloaded or user-supplied image, this
module reads only the few header bytes it needs (no whole-file reads: a sparse 10 GiB image
inspects in milliseconds), works out the format, and refuses anything that could make qemu
open another file, anything ambiguous, and anything whose header does not add up.

The rules are deliberately strict: an image we cannot fully explain is refused, with a message
saying which file, why, and what to do. Bump ``INSPECTOR_VERSION`` whenever a rule changes, so
that cached verdicts recorded with an older version are re-checked.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

# The version and the format-name table live in a tiny module of their own so that a cached re-run can
# compare versions without loading the inspector; they are this module's names all the same.
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format_consts import (  # noqa: F401
    INSPECTOR_VERSION, QEMU_FORMAT_NAMES,
)

# Formats whose content qemu reads as plain bytes.
RAW_LAYOUTS = ("iso", "gpt", "mbr")
KNOWN_FORMATS = tuple(QEMU_FORMAT_NAMES)
# Accepted spellings of a declared format besides our own names.
_DECLARED_ALIASES = {"vpc": "vhd", "img": "raw"}

SECTOR = 512
HEAD_BYTES = 64 * 1024  # covers every magic we look for, including ISO's at 0x8001..0x9001
MAX_QCOW2_CLUSTER_BITS = 21
MIN_QCOW2_CLUSTER_BITS = 9
MAX_QCOW2_L1_BYTES = 32 * 1024 * 1024  # qemu's own ceiling for the L1 table
MAX_QCOW2_REFTABLE_BYTES = 8 * 1024 * 1024
MAX_QCOW2_SNAPSHOTS = 65536
MAX_QCOW2_EXTENSIONS = 64
MAX_VMDK_DESCRIPTOR_BYTES = 1024 * 1024
MAX_LUKS2_HEADER_BYTES = 4 * 1024 * 1024
MAX_VIRTUAL_SIZE_ANY = (1 << 63) - 1

QCOW2_MAGIC = b"QFI\xfb"
QED_MAGIC = b"QED\x00"
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_COWD_MAGIC = b"COWD"
VHD_COOKIE = b"conectix"
VHDX_SIGNATURE = b"vhdxfile"
VDI_SIGNATURE = 0xBEDA107F
LUKS_MAGIC = b"LUKS\xba\xbe"
ISO_OFFSETS = (0x8001, 0x8801, 0x9001)

QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_INCOMPAT_COMPRESSION = 1 << 3
QCOW2_INCOMPAT_EXTL2 = 1 << 4
QCOW2_INCOMPAT_KNOWN = (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE
                        | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)
QCOW2_EXT_END = 0x00000000
QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
QCOW2_EXT_DATA_FILE = 0x44415441

VHD_TYPE_FIXED = 2
VHD_TYPE_DYNAMIC = 3
VHD_TYPE_DIFFERENCING = 4
VHD_MAX_GEOMETRY_SECTORS = 65535 * 16 * 255

VHDX_REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VHDX_REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
VHDX_META_VIRTUAL_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
VHDX_META_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
VHDX_META_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le

VMDK_SAFE_CREATE_TYPES = ("monolithicSparse", "streamOptimized")
_VMDK_EXTENT_RE = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?(?:\s+(\d+))?\s*$')
_VMDK_KEY_RE = re.compile(r'^([A-Za-z][A-Za-z0-9_.]*)\s*=\s*"?([^"]*)"?\s*$')


class UnsafeImageError(VirtfleetError):
    """The image must not reach qemu-img: it is ambiguous, malformed or refers to other files."""

    def __init__(self, path: str, reason: str, advice: str = "", **details: Any) -> None:
        advice = advice or ("use an image from a trusted source in a plain format (raw or qcow2 without a "
                            "backing file)")
        msg = "refusing image %s: %s; %s" % (path, reason, advice)
        super().__init__(msg, path=path, reason=reason, **details)
        self.path = path
        self.reason = reason


@dataclass
class ImageInspection:
    """What the header says about an image that passed every safety rule."""

    format: str
    virtual_size: int
    actual_size: int
    file_size: int
    partition_table: Optional[str] = None
    details: Dict[str, Any] = field(default_factory=dict)


class _Reader:
    """Bounded positional reads from one open file; short reads return what exists."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        chunks: List[bytes] = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------

def _is_vmdk_text_descriptor(head: bytes) -> bool:
    """qemu's rule: after comment and blank lines, the first line is ``version=1|2|3``."""
    text = head[:4096]
    for raw_line in text.split(b"\n"):
        line = raw_line.strip(b" \t\r")
        if not line or line.startswith(b"#"):
            continue
        return line in (b"version=1", b"version=2", b"version=3")
    return False


def _vhd_footer_valid(footer: bytes) -> bool:
    return len(footer) >= 512 and footer[:8] == VHD_COOKIE


def _partition_table(head: bytes) -> Optional[str]:
    """'gpt' or 'mbr' when the first sectors hold a partition table, else None."""
    if len(head) < 1024 or head[510:512] != b"\x55\xaa":
        # A GPT disk with 4 KiB sectors keeps its header at 4096, but still has the protective MBR.
        return None
    entries = [head[446 + 16 * i:446 + 16 * (i + 1)] for i in range(4)]
    if any(entry[4] == 0xEE for entry in entries) and (head[512:520] == b"EFI PART"
                                                       or head[4096:4104] == b"EFI PART"):
        return "gpt"
    if all(entry[0] in (0x00, 0x80) for entry in entries) and any(entry[4] != 0 for entry in entries):
        return "mbr"
    return None


def _matches(head: bytes, tail: bytes, file_size: int) -> Tuple[List[str], Dict[str, Any]]:
    """Every non-raw format whose signature is present, plus raw layouts (iso, partition table)."""
    found: List[str] = []
    where: Dict[str, Any] = {}
    if head[:4] == QCOW2_MAGIC:
        found.append("qcow2")
    if head[:4] == QED_MAGIC:
        found.append("qed")
    if head[:4] in (VMDK_SPARSE_MAGIC, VMDK_COWD_MAGIC) or _is_vmdk_text_descriptor(head):
        found.append("vmdk")
    vhd_head = head[:8] == VHD_COOKIE
    vhd_tail = file_size >= 1024 and tail[-512:][:8] == VHD_COOKIE
    if vhd_head or vhd_tail:
        found.append("vhd")
        where["vhd_footer_only"] = vhd_tail and not vhd_head
    if head[:8] == VHDX_SIGNATURE:
        found.append("vhdx")
    if len(head) >= 0x48 and struct.unpack_from("<I", head, 0x40)[0] == VDI_SIGNATURE:
        found.append("vdi")
    if head[:6] == LUKS_MAGIC:
        found.append("luks")
    where["iso"] = any(head[off:off + 5] == b"CD001" for off in ISO_OFFSETS)
    where["partition_table"] = _partition_table(head)
    return found, where


def _detect(path: str, head: bytes, tail: bytes, file_size: int) -> Tuple[str, Dict[str, Any]]:
    found, where = _matches(head, tail, file_size)
    if len(found) > 1:
        raise UnsafeImageError(
            path, "its header matches several formats at once (%s): a polyglot file that different tools "
            "would read differently" % ", ".join(found),
            "re-create the image with a single format, e.g. qemu-img convert -f <its real format> -O qcow2",
            matched_formats=found)
    if found:
        fmt = found[0]
        # A fixed VHD is raw data plus a footer, so the data may legitimately look like an ISO;
        # any other container format has its own header where an ISO descriptor would sit.
        if where["iso"] and not (fmt == "vhd" and where.get("vhd_footer_only")):
            raise UnsafeImageError(
                path, "it carries both a %s header and an ISO 9660 volume descriptor (a polyglot file)" % fmt,
                "re-create the image with a single format", matched_formats=[fmt, "iso"])
        return fmt, where
    if where["iso"]:
        return "iso", where
    if where["partition_table"]:
        return where["partition_table"], where
    return "raw", where


def _open_for_inspection(path: str) -> Tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise VirtfleetError("cannot open image %s to inspect it: %s" % (path, exc.strerror or exc))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeImageError(path, "it is not a regular file", "point at an image file")
    return fd, st


def detect_format(path: str) -> str:
    """The format the header bytes show (raw, qcow2, vmdk, vhd, vhdx, vdi, qed, iso, luks, gpt, mbr).

    Only detection: ``inspect_file`` is what says whether the image is safe to hand to qemu-img.
    """
    fd, st = _open_for_inspection(path)
    try:
        reader = _Reader(fd, st.st_size)
        head = reader.read(0, HEAD_BYTES)
        tail = reader.read(max(0, st.st_size - SECTOR), SECTOR)
        return _detect(path, head, tail, st.st_size)[0]
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Per-format parsing and safety rules
# ---------------------------------------------------------------------------------------------

def _corrupt(path: str, fmt: str, what: str) -> UnsafeImageError:
    return UnsafeImageError(path, "its %s header is truncated or corrupt (%s)" % (fmt, what),
                            "download the image again and compare its checksum, or convert it from a trusted "
                            "copy")


def _qcow2_extensions(path: str, cluster: bytes, start: int) -> List[Tuple[int, bytes]]:
    """Header extensions (type, data) in the first cluster; malformed chains are corruption."""
    extensions: List[Tuple[int, bytes]] = []
    offset = start
    for _ in range(MAX_QCOW2_EXTENSIONS):
        if offset + 8 > len(cluster):
            raise _corrupt(path, "qcow2", "header extensions run past the first cluster")
        ext_type, ext_len = struct.unpack_from(">II", cluster, offset)
        if ext_type == QCOW2_EXT_END:
            return extensions
        data_start = offset + 8
        if data_start + ext_len > len(cluster):
            raise _corrupt(path, "qcow2", "header extension 0x%08x of %d bytes runs past the first cluster"
                           % (ext_type, ext_len))
        extensions.append((ext_type, cluster[data_start:data_start + ext_len]))
        offset = data_start + ((ext_len + 7) & ~7)
    raise _corrupt(path, "qcow2", "more than %d header extensions" % MAX_QCOW2_EXTENSIONS)


def _inspect_qcow2(path: str, reader: _Reader, allow_luks: bool) -> Tuple[int, Dict[str, Any]]:
    head = reader.read(0, 104)
    if len(head) < 72:
        raise _corrupt(path, "qcow2", "the file is %d bytes, shorter than a qcow2 header" % reader.size)
    (_magic, version, backing_offset, backing_size, cluster_bits, size, crypt_method, l1_size, l1_offset,
     reftable_offset, reftable_clusters, nb_snapshots, snapshots_offset) = struct.unpack_from(">IIQIIQIIQQIIQ", head)
    if version not in (2, 3):
        raise UnsafeImageError(path, "qcow2 version %d is not supported (only versions 2 and 3 are)" % version,
                               "convert the image with a trusted qemu-img to a current qcow2 (compat=1.1)",
                               qcow2_version=version)
    details: Dict[str, Any] = {"qcow2_version": version, "cluster_bits": cluster_bits}
    if not MIN_QCOW2_CLUSTER_BITS <= cluster_bits <= MAX_QCOW2_CLUSTER_BITS:
        raise _corrupt(path, "qcow2", "cluster_bits %d outside %d..%d"
                       % (cluster_bits, MIN_QCOW2_CLUSTER_BITS, MAX_QCOW2_CLUSTER_BITS))
    cluster_size = 1 << cluster_bits
    incompatible = compatible = autoclear = 0
    refcount_order = 4
    header_length = 72
    if version == 3:
        if len(head) < 104:
            raise _corrupt(path, "qcow2", "the file is %d bytes, shorter than a version 3 header" % reader.size)
        incompatible, compatible, autoclear, refcount_order, header_length = struct.unpack_from(">QQQII", head, 72)
        if header_length < 104 or header_length % 8 or header_length > cluster_size:
            raise _corrupt(path, "qcow2", "header_length %d (must be a multiple of 8 from 104 to the cluster size)"
                           % header_length)
        if refcount_order > 6:
            raise _corrupt(path, "qcow2", "refcount_order %d above 6" % refcount_order)
    details.update({"incompatible_features": incompatible, "compatible_features": compatible,
                    "autoclear_features": autoclear, "refcount_order": refcount_order,
                    "header_length": header_length})
    if reader.size < header_length:
        raise _corrupt(path, "qcow2", "the file is %d bytes, shorter than its %d-byte header"
                       % (reader.size, header_length))

    cluster = reader.read(0, cluster_size)
    if backing_offset or backing_size:
        name = ""
        if 0 < backing_size <= 1023 and backing_offset + backing_size <= len(cluster):
            name = cluster[backing_offset:backing_offset + backing_size].decode("utf-8", "replace")
        raise UnsafeImageError(
            path, "it is a qcow2 overlay with a backing file%s: qemu would read that file too"
            % (" (%r)" % name if name else ""),
            "flatten it first (qemu-img convert -f qcow2 -O qcow2 on a trusted host) and use the result",
            backing_file=name)
    if incompatible & QCOW2_INCOMPAT_DATA_FILE:
        raise UnsafeImageError(
            path, "it is a qcow2 image whose data lives in an external data file (incompatible feature bit 2): "
            "qemu would read that file (CVE-2024-32498)",
            "convert it to a self-contained qcow2 on a trusted host")
    unknown = incompatible & ~QCOW2_INCOMPAT_KNOWN
    if unknown:
        raise UnsafeImageError(
            path, "it sets unknown qcow2 incompatible feature bits 0x%x" % unknown,
            "convert it with a trusted qemu-img to a plain qcow2")
    if incompatible & QCOW2_INCOMPAT_CORRUPT:
        raise UnsafeImageError(path, "qemu has marked this qcow2 image corrupt (incompatible feature bit 1)",
                               "repair it with qemu-img check -r all on a trusted host, or fetch a fresh copy")
    if crypt_method == 1:
        raise UnsafeImageError(path, "it uses qcow2's legacy AES encryption, which is broken and unsupported",
                               "re-encrypt it with LUKS or provide an unencrypted image")
    if crypt_method == 2 and not allow_luks:
        raise UnsafeImageError(path, "it is an encrypted (LUKS) qcow2 image and encrypted images were not allowed",
                               "set allow_luks if the image is meant to be encrypted, or provide a plain image")
    if crypt_method > 2:
        raise _corrupt(path, "qcow2", "unknown crypt_method %d" % crypt_method)
    if version == 3 and header_length > 104:
        compression_type = cluster[104]
        if compression_type not in (0, 1):
            raise _corrupt(path, "qcow2", "unknown compression type %d" % compression_type)
        details["compression_type"] = "zstd" if compression_type == 1 else "zlib"

    for ext_type, data in _qcow2_extensions(path, cluster, header_length):
        if ext_type == QCOW2_EXT_DATA_FILE:
            raise UnsafeImageError(
                path, "it names an external data file %r in a qcow2 header extension (CVE-2024-32498)"
                % data.decode("utf-8", "replace"), "convert it to a self-contained qcow2 on a trusted host")
        if ext_type == QCOW2_EXT_BACKING_FORMAT:
            details["backing_format_extension"] = data.decode("utf-8", "replace")

    if size > MAX_VIRTUAL_SIZE_ANY:
        raise _corrupt(path, "qcow2", "virtual size %d does not fit a signed 64-bit integer" % size)
    l2_entry_size = 16 if incompatible & QCOW2_INCOMPAT_EXTL2 else 8
    bytes_per_l1_entry = cluster_size * (cluster_size // l2_entry_size)
    needed_l1 = -(-size // bytes_per_l1_entry)
    if l1_size * 8 > MAX_QCOW2_L1_BYTES:
        raise _corrupt(path, "qcow2", "L1 table of %d entries exceeds qemu's %d-byte limit"
                       % (l1_size, MAX_QCOW2_L1_BYTES))
    if l1_size < needed_l1:
        raise _corrupt(path, "qcow2", "L1 table of %d entries is too small for a virtual size of %d bytes"
                       % (l1_size, size))
    if l1_size and (l1_offset % cluster_size or l1_offset < cluster_size
                    or l1_offset + l1_size * 8 > reader.size):
        raise _corrupt(path, "qcow2", "L1 table at offset %d (%d entries) lies outside the %d-byte file or is "
                       "misaligned" % (l1_offset, l1_size, reader.size))
    if (reftable_offset % cluster_size or reftable_offset < cluster_size or reftable_clusters == 0
            or reftable_clusters * cluster_size > MAX_QCOW2_REFTABLE_BYTES
            or reftable_offset + reftable_clusters * cluster_size > reader.size + cluster_size):
        raise _corrupt(path, "qcow2", "refcount table at offset %d (%d clusters) is misplaced"
                       % (reftable_offset, reftable_clusters))
    if nb_snapshots > MAX_QCOW2_SNAPSHOTS or (nb_snapshots and (snapshots_offset % cluster_size
                                                                or snapshots_offset >= reader.size)):
        raise _corrupt(path, "qcow2", "snapshot table (%d snapshots at offset %d) is misplaced"
                       % (nb_snapshots, snapshots_offset))
    details.update({"l1_size": l1_size, "snapshots": nb_snapshots, "encrypted": crypt_method == 2})
    return size, details


def _parse_vmdk_descriptor(text: str) -> Tuple[Dict[str, str], List[Dict[str, Any]]]:
    keys: Dict[str, str] = {}
    extents: List[Dict[str, Any]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        extent = _VMDK_EXTENT_RE.match(line)
        if extent:
            extents.append({"access": extent.group(1), "sectors": int(extent.group(2)),
                            "type": extent.group(3), "file": extent.group(4), "offset": extent.group(5)})
            continue
        if re.match(r"^(RW|RDONLY|NOACCESS)\b", line):
            # Looks like an extent line we cannot parse: qemu might still read it.
            extents.append({"access": "?", "sectors": 0, "type": "unparsed", "file": line, "offset": None})
            continue
        pair = _VMDK_KEY_RE.match(line)
        if pair:
            keys[pair.group(1)] = pair.group(2)
    return keys, extents


def _vmdk_text_refusal(path: str, text: str) -> UnsafeImageError:
    keys, extents = _parse_vmdk_descriptor(text)
    names = [e["file"] for e in extents if e.get("file")]
    return UnsafeImageError(
        path, "it is a VMDK descriptor file (createType %s) that makes qemu open other files%s "
        "(CVE-2022-47951)" % (keys.get("createType", "unknown"), (": " + ", ".join(repr(n) for n in names))
                              if names else ""),
        "convert the disk to a single monolithicSparse/streamOptimized VMDK or to qcow2 on a trusted host",
        create_type=keys.get("createType"), extent_files=names)


def _inspect_vmdk(path: str, reader: _Reader, head: bytes) -> Tuple[int, Dict[str, Any]]:
    if head[:4] == VMDK_COWD_MAGIC:
        raise UnsafeImageError(path, "it is a VMDK3 (COWD/vmfsSparse) extent, which may refer to a parent disk",
                               "convert it to a monolithicSparse or streamOptimized VMDK on a trusted host")
    if head[:4] != VMDK_SPARSE_MAGIC:
        raise _vmdk_text_refusal(path, head[:MAX_VMDK_DESCRIPTOR_BYTES].split(b"\x00", 1)[0].decode("latin-1"))
    if len(head) < 512:
        raise _corrupt(path, "vmdk", "the file is %d bytes, shorter than a sparse extent header" % reader.size)
    (version, flags, capacity, grain, desc_offset, desc_size, gtes_per_gt, _rgd, gd_offset,
     overhead) = struct.unpack_from("<IIQQQQIQQQ", head, 4)
    details: Dict[str, Any] = {"vmdk_version": version, "flags": flags, "grain_sectors": grain}
    if version not in (1, 2, 3):
        raise _corrupt(path, "vmdk", "sparse extent version %d" % version)
    if capacity == 0:
        raise UnsafeImageError(
            path, "it is a VMDK sparse extent with a capacity of 0, which makes qemu follow the extents named "
            "in its embedded descriptor (CVE-2022-47951)",
            "convert it to a single monolithicSparse/streamOptimized VMDK or to qcow2 on a trusted host")
    if grain == 0 or grain & (grain - 1) or grain > 0x10000:
        raise _corrupt(path, "vmdk", "grain size %d sectors" % grain)
    if gtes_per_gt == 0 or gtes_per_gt > 512:
        raise _corrupt(path, "vmdk", "%d grain table entries per table" % gtes_per_gt)
    if capacity * SECTOR > MAX_VIRTUAL_SIZE_ANY:
        raise _corrupt(path, "vmdk", "capacity %d sectors" % capacity)
    if desc_offset == 0 or desc_size == 0:
        raise UnsafeImageError(path, "it is a VMDK sparse extent without an embedded descriptor, so its type "
                               "cannot be checked", "convert it to qcow2 on a trusted host")
    if desc_size * SECTOR > MAX_VMDK_DESCRIPTOR_BYTES or (desc_offset + desc_size) * SECTOR > reader.size:
        raise _corrupt(path, "vmdk", "embedded descriptor at sector %d (%d sectors) lies outside the file or is "
                       "too large" % (desc_offset, desc_size))
    raw_text = reader.read(desc_offset * SECTOR, desc_size * SECTOR).split(b"\x00", 1)[0]
    keys, extents = _parse_vmdk_descriptor(raw_text.decode("latin-1"))
    create_type = keys.get("createType")
    details.update({"create_type": create_type, "extents": len(extents)})
    if create_type not in VMDK_SAFE_CREATE_TYPES:
        raise UnsafeImageError(
            path, "its VMDK createType is %r; only %s are accepted, because the other types read separate "
            "extent files" % (create_type, " and ".join(VMDK_SAFE_CREATE_TYPES)),
            "convert it to a single monolithicSparse/streamOptimized VMDK or to qcow2 on a trusted host",
            create_type=create_type)
    parent_cid = keys.get("parentCID", "ffffffff").lower()
    if "parentFileNameHint" in keys or parent_cid != "ffffffff":
        raise UnsafeImageError(path, "it is a VMDK delta disk naming a parent (%r)" % keys.get("parentFileNameHint"),
                               "flatten it on a trusted host and use the result")
    if len(extents) != 1 or extents[0]["type"] != "SPARSE" or not extents[0]["file"] \
            or "/" in extents[0]["file"] or "\\" in extents[0]["file"]:
        raise UnsafeImageError(
            path, "its embedded VMDK descriptor names extent files other than itself (%s) (CVE-2022-47951)"
            % ", ".join("%s %r" % (e["type"], e["file"]) for e in extents),
            "convert it to a single monolithicSparse/streamOptimized VMDK or to qcow2 on a trusted host",
            extent_files=[e["file"] for e in extents])
    details["gd_at_end"] = gd_offset == 0xFFFFFFFFFFFFFFFF
    details["overhead_sectors"] = overhead
    return capacity * SECTOR, details


def _vhd_checksum_ok(footer: bytes) -> bool:
    expected = struct.unpack_from(">I", footer, 64)[0]
    total = sum(footer[:64]) + sum(footer[68:512])
    return (~total & 0xFFFFFFFF) == expected


def _inspect_vhd(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    footer = reader.read(0, SECTOR)
    footer_at_start = footer[:8] == VHD_COOKIE
    if not footer_at_start:
        footer = reader.read(reader.size - SECTOR, SECTOR)
    if len(footer) < SECTOR:
        raise _corrupt(path, "vhd", "footer shorter than 512 bytes")
    if not _vhd_checksum_ok(footer):
        raise _corrupt(path, "vhd", "footer checksum mismatch")
    data_offset, = struct.unpack_from(">Q", footer, 16)
    creator_app = footer[28:32]
    current_size, = struct.unpack_from(">Q", footer, 48)
    cylinders, heads, sectors_per_track = struct.unpack_from(">HBB", footer, 56)
    disk_type, = struct.unpack_from(">I", footer, 60)
    details: Dict[str, Any] = {"vhd_type": {2: "fixed", 3: "dynamic", 4: "differencing"}.get(disk_type, disk_type),
                               "creator_app": creator_app.decode("latin-1")}
    if disk_type == VHD_TYPE_DIFFERENCING:
        raise UnsafeImageError(path, "it is a differencing VHD, which reads a parent disk file",
                               "merge it into a fixed or dynamic VHD on a trusted host")
    if disk_type not in (VHD_TYPE_FIXED, VHD_TYPE_DYNAMIC):
        raise _corrupt(path, "vhd", "disk type %d" % disk_type)
    # Mirror qemu's vpc driver: most creators size the disk by CHS geometry, a few by current_size.
    chs_sectors = cylinders * heads * sectors_per_track
    uses_chs = creator_app not in (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\x00")
    virtual_sectors = chs_sectors if uses_chs and chs_sectors != VHD_MAX_GEOMETRY_SECTORS else current_size // SECTOR
    virtual_size = virtual_sectors * SECTOR
    if disk_type == VHD_TYPE_FIXED:
        if virtual_size > reader.size - SECTOR:
            raise _corrupt(path, "vhd", "fixed disk of %d bytes in a %d-byte file" % (virtual_size, reader.size))
    else:
        if not footer_at_start:
            raise _corrupt(path, "vhd", "dynamic disk without the footer copy at the start of the file")
        dyn = reader.read(data_offset, 1024) if data_offset < reader.size else b""
        if len(dyn) < 1024 or dyn[:8] != b"cxsparse":
            raise _corrupt(path, "vhd", "dynamic disk header missing at offset %d" % data_offset)
        table_offset, = struct.unpack_from(">Q", dyn, 16)
        max_entries, block_size = struct.unpack_from(">II", dyn, 28)
        if block_size == 0 or block_size & (block_size - 1) or block_size < SECTOR:
            raise _corrupt(path, "vhd", "block size %d" % block_size)
        if max_entries * block_size < virtual_size or table_offset + max_entries * 4 > reader.size:
            raise _corrupt(path, "vhd", "block table of %d entries does not cover the disk or lies outside the file"
                           % max_entries)
        details["block_size"] = block_size
    return virtual_size, details


def _inspect_vhdx(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    metadata_offset = metadata_length = None
    for region_table_offset in (192 * 1024, 256 * 1024):
        table = reader.read(region_table_offset, 64 * 1024)
        if len(table) < 16 or table[:4] != b"regi":
            continue
        count, = struct.unpack_from("<I", table, 8)
        if count > 2047 or 16 + 32 * count > len(table):
            raise _corrupt(path, "vhdx", "%d region table entries" % count)
        for i in range(count):
            guid = table[16 + 32 * i:32 + 32 * i]
            offset, length, required = struct.unpack_from("<QII", table, 32 + 32 * i)
            if guid == VHDX_REGION_METADATA:
                metadata_offset, metadata_length = offset, length
            elif guid != VHDX_REGION_BAT and required & 1:
                raise UnsafeImageError(path, "its VHDX region table requires an unknown region",
                                       "convert it to qcow2 on a trusted host")
        break
    if metadata_offset is None or metadata_length is None:
        raise _corrupt(path, "vhdx", "no metadata region")
    meta = reader.read(metadata_offset, min(metadata_length, 64 * 1024))
    if len(meta) < 32 or meta[:8] != b"metadata":
        raise _corrupt(path, "vhdx", "metadata table missing at offset %d" % metadata_offset)
    entry_count, = struct.unpack_from("<H", meta, 10)
    if entry_count > 2047 or 32 + 32 * entry_count > len(meta):
        raise _corrupt(path, "vhdx", "%d metadata entries" % entry_count)
    virtual_size = None
    details: Dict[str, Any] = {}
    for i in range(entry_count):
        base = 32 + 32 * i
        item = meta[base:base + 16]
        item_offset, item_length = struct.unpack_from("<II", meta, base + 16)
        if item == VHDX_META_PARENT_LOCATOR:
            raise UnsafeImageError(path, "it is a differencing VHDX with a parent locator, which reads another file",
                                   "merge it into a standalone VHDX or qcow2 on a trusted host")
        if item in (VHDX_META_VIRTUAL_SIZE, VHDX_META_FILE_PARAMETERS):
            value = reader.read(metadata_offset + item_offset, 8)
            if len(value) < 8 or item_length < 8:
                raise _corrupt(path, "vhdx", "metadata item outside the file")
            if item == VHDX_META_VIRTUAL_SIZE:
                virtual_size, = struct.unpack("<Q", value)
            else:
                block_size, flags = struct.unpack("<II", value)
                details["block_size"] = block_size
                if flags & 2:
                    raise UnsafeImageError(path, "its VHDX file parameters say it has a parent disk",
                                           "merge it into a standalone VHDX or qcow2 on a trusted host")
    if virtual_size is None or virtual_size > MAX_VIRTUAL_SIZE_ANY:
        raise _corrupt(path, "vhdx", "no usable virtual disk size")
    return virtual_size, details


def _inspect_vdi(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    header = reader.read(0, 0x200)
    if len(header) < 0x1C8:
        raise _corrupt(path, "vdi", "header shorter than 456 bytes")
    version, _header_size, image_type = struct.unpack_from("<III", header, 0x44)
    offset_bmap, offset_data = struct.unpack_from("<II", header, 0x154)
    disk_size, block_size, _block_extra, blocks_in_image = struct.unpack_from("<QIII", header, 0x170)
    if image_type == 4 or header[0x1B8:0x1C8].strip(b"\x00"):
        raise UnsafeImageError(path, "it is a differencing VDI that refers to a parent image",
                               "merge it on a trusted host and use the result")
    if image_type not in (1, 2):
        raise _corrupt(path, "vdi", "image type %d" % image_type)
    if disk_size > MAX_VIRTUAL_SIZE_ANY:
        raise _corrupt(path, "vdi", "disk size %d" % disk_size)
    if block_size == 0 or block_size & (block_size - 1) or blocks_in_image * block_size < disk_size:
        raise _corrupt(path, "vdi", "%d blocks of %d bytes do not cover a disk of %d bytes"
                       % (blocks_in_image, block_size, disk_size))
    if offset_bmap < 0x200 or offset_data < offset_bmap + blocks_in_image * 4:
        raise _corrupt(path, "vdi", "block map at %d and data at %d overlap" % (offset_bmap, offset_data))
    return disk_size, {"vdi_version": "%d.%d" % (version >> 16, version & 0xFFFF), "block_size": block_size,
                       "vdi_type": "dynamic" if image_type == 1 else "static"}


def _inspect_luks(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    header = reader.read(0, 4096)
    if len(header) < 592:
        raise _corrupt(path, "luks", "the file is %d bytes, shorter than a LUKS header" % reader.size)
    version, = struct.unpack_from(">H", header, 6)
    if version == 1:
        payload_sectors, = struct.unpack_from(">I", header, 104)
        payload = payload_sectors * SECTOR
    elif version == 2:
        hdr_size, = struct.unpack_from(">Q", header, 8)
        if not 4096 < hdr_size <= MAX_LUKS2_HEADER_BYTES:
            raise _corrupt(path, "luks", "LUKS2 header size %d" % hdr_size)
        try:
            meta = json.loads(reader.read(4096, hdr_size - 4096).split(b"\x00", 1)[0].decode("utf-8"))
            payload = min(int(seg["offset"]) for seg in meta["segments"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _corrupt(path, "luks", "LUKS2 JSON metadata unreadable")
    else:
        raise _corrupt(path, "luks", "LUKS version %d" % version)
    if payload > reader.size:
        raise _corrupt(path, "luks", "payload offset %d beyond the end of the file" % payload)
    return reader.size - payload, {"luks_version": version, "payload_offset": payload}


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def _normalise_declared(path: str, declared: Optional[str]) -> Optional[str]:
    if declared is None or declared == "":
        return None
    name = _DECLARED_ALIASES.get(str(declared).lower(), str(declared).lower())
    if name not in KNOWN_FORMATS:
        raise VirtfleetError("unknown image format %r declared for %s; use one of %s"
                             % (declared, path, ", ".join(KNOWN_FORMATS)))
    return name


def _resolve_format(path: str, declared: Optional[str], detected: str) -> str:
    """The format to report, after checking that the declaration matches the content."""
    if declared is None or declared == detected:
        return detected
    if declared == "raw" and detected in RAW_LAYOUTS:
        return "raw"
    raise UnsafeImageError(
        path, "it was declared as %s but its content is %s; opening it as declared would let crafted %s "
        "metadata steer qemu (CVE-2024-40767)" % (declared, detected, detected) if declared == "raw" else
        "it was declared as %s but its content is %s" % (declared, detected),
        "declare the image's real format only if you trust its source, or fetch the intended image",
        declared_format=declared, detected_format=detected)


def inspect_file(path: str, declared_format: Optional[str] = None, max_virtual_size: Optional[int] = None,
                 allow_luks: bool = False) -> ImageInspection:
    """Detect and vet an untrusted image before any qemu-img call; raise UnsafeImageError when unsafe."""
    declared = _normalise_declared(path, declared_format)
    fd, st = _open_for_inspection(path)
    try:
        reader = _Reader(fd, st.st_size)
        head = reader.read(0, HEAD_BYTES)
        tail = reader.read(max(0, st.st_size - SECTOR), SECTOR)
        detected, where = _detect(path, head, tail, st.st_size)
        fmt = _resolve_format(path, declared, detected)
        partition_table = where["partition_table"] if detected in ("raw",) + RAW_LAYOUTS else None
        details: Dict[str, Any] = {"detected_format": detected}
        if detected in ("raw",) + RAW_LAYOUTS:
            virtual_size = st.st_size
        elif detected == "qcow2":
            virtual_size, extra = _inspect_qcow2(path, reader, allow_luks)
            details.update(extra)
        elif detected == "vmdk":
            virtual_size, extra = _inspect_vmdk(path, reader, head)
            details.update(extra)
        elif detected == "vhd":
            virtual_size, extra = _inspect_vhd(path, reader)
            details.update(extra)
        elif detected == "vhdx":
            virtual_size, extra = _inspect_vhdx(path, reader)
            details.update(extra)
        elif detected == "vdi":
            virtual_size, extra = _inspect_vdi(path, reader)
            details.update(extra)
        elif detected == "qed":
            raise UnsafeImageError(path, "it is a QED image; QED is deprecated and its backing-file handling is "
                                   "not trusted here", "convert it to qcow2 on a trusted host")
        elif detected == "luks":
            if not allow_luks:
                raise UnsafeImageError(path, "it is a LUKS-encrypted image and encrypted images were not allowed",
                                       "set allow_luks if the image is meant to be encrypted, or provide a plain "
                                       "image")
            virtual_size, extra = _inspect_luks(path, reader)
            details.update(extra)
        else:  # pragma: no cover - _detect only returns known names
            raise UnsafeImageError(path, "its format %s is not supported" % detected)
    finally:
        os.close(fd)
    if max_virtual_size is not None and virtual_size > max_virtual_size:
        raise UnsafeImageError(
            path, "its virtual size of %d bytes exceeds the allowed maximum of %d bytes" % (virtual_size,
                                                                                            max_virtual_size),
            "raise the maximum virtual size if this image is expected to be that large",
            virtual_size=virtual_size, max_virtual_size=max_virtual_size)
    return ImageInspection(format=fmt, virtual_size=virtual_size, actual_size=st.st_blocks * 512,
                           file_size=st.st_size, partition_table=partition_table, details=details)
