# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what an untrusted image file really is, read from its header bytes.

qemu-img follows references written inside an image: a qcow2 backing file or external data file
(CVE-2024-32498), VMDK extents named by a descriptor (CVE-2022-47951), a VMDK parent named
anywhere in the descriptor, a VHD/VHDX parent. Asked to probe, it trusts the first bytes of a
file a guest may have written (CVE-2024-40767, CVE-2026-24708). So before qemu-img ever touches
a downloaded or user-supplied image, this module reads only the few header bytes it needs (no
whole-file reads: a sparse 10 GiB image inspects in well under a millisecond), works out the
format, and refuses anything that could make qemu open another file, anything ambiguous, and
anything whose header does not add up.

Each format is read the way the host's qemu (7.2, block/*.c and crypto/block-luks.c) reads it:
the same header fields, the same copy of them (a streamOptimized VMDK's footer, the VHD footer
qemu picks), the same virtual size (rounded as qemu rounds it), and qemu's own refusals, so that
what passes here is what qemu-img will open and the size it will report. On top of that the
rules are deliberately strict: an image we cannot fully explain is refused, with a message
saying which file, why, and what to do. Bump ``INSPECTOR_VERSION`` whenever a rule changes, so
that cached verdicts recorded with an older version are re-checked.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import sys
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

# The version and the format-name table live in a tiny module of their own so that a cached re-run can
# compare versions without loading the inspector; they are this module's names all the same.
# pylint: disable-next=unused-import
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format_consts import (  # noqa: F401
    INSPECTOR_VERSION, QEMU_FORMAT_NAMES,
)

# Formats whose content qemu reads as plain bytes.
RAW_LAYOUTS = ("iso", "gpt", "mbr")
KNOWN_FORMATS = tuple(QEMU_FORMAT_NAMES)
# Formats qemu can read that this collection never accepts; detected so that they are refused by name
# instead of passing as raw bytes (or, declared as raw, handed to a guest as a disk full of metadata).
FOREIGN_FORMATS = {"parallels": "Parallels", "bochs": "Bochs", "cloop": "cloop", "dmg": "Apple DMG"}
# Accepted spellings of a declared format besides our own names.
_DECLARED_ALIASES = {"vpc": "vhd", "img": "raw"}

SECTOR = 512
HEAD_BYTES = 64 * 1024  # covers every magic we look for, including ISO's at 0x8001..0x9001
INT64_MAX = (1 << 63) - 1
MAX_VIRTUAL_SIZE_ANY = INT64_MAX

QED_MAGIC = b"QED\x00"
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_COWD_MAGIC = b"COWD"
VHD_COOKIE = b"conectix"
VHDX_SIGNATURE = b"vhdxfile"
VDI_SIGNATURE = 0xBEDA107F
LUKS_MAGIC = b"LUKS\xba\xbe"
PARALLELS_MAGICS = (b"WithoutFreeSpace", b"WithouFreSpacExt")
BOCHS_MAGIC = b"Bochs Virtual HD Image"
CLOOP_MAGIC = b"#!/bin/sh\n#V2.0 Format\n"
DMG_TRAILER = b"koly" + struct.pack(">II", 4, 512)
ISO_OFFSETS = (0x8001, 0x8801, 0x9001)
ISO_SIGNATURES = (b"CD001", b"NSR02", b"NSR03")

# qcow2 (block/qcow2.c, qcow2.h)
MAX_QCOW2_CLUSTER_BITS = 21
MIN_QCOW2_CLUSTER_BITS = 9
MAX_QCOW2_L1_BYTES = 32 * 1024 * 1024  # QCOW_MAX_L1_SIZE
MAX_QCOW2_REFTABLE_BYTES = 8 * 1024 * 1024  # QCOW_MAX_REFTABLE_SIZE
MAX_QCOW2_SNAPSHOTS = 65536
QCOW2_SNAPSHOT_HEADER_BYTES = 40
QCOW2_EXTL2_SUBCLUSTERS = 32
QCOW2_AUTOCLEAR_BITMAPS = 1 << 0
QCOW2_MAX_BITMAPS = 65535
QCOW2_MAX_BITMAP_DIRECTORY_BYTES = 1024 * QCOW2_MAX_BITMAPS
QCOW2_MAX_BACKING_FORMAT = 15  # bs->backing_format is 16 bytes with its NUL
QCOW2_COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}
QCOW2_CRYPT_AES = 1
QCOW2_CRYPT_LUKS = 2

# VMDK (block/vmdk.c)
VMDK_GD_AT_END = 0xFFFFFFFFFFFFFFFF
VMDK_COMPRESSION_DEFLATE = 1
VMDK_MARKER_EOS = 0
VMDK_MARKER_FOOTER = 3
VMDK_QEMU_DESC_OFFSET = 0x200  # where qemu looks for CID, parentCID and parentFileNameHint in a sparse extent
VMDK_QEMU_DESC_BYTES = 20 * SECTOR  # DESC_SIZE
VMDK_MAX_L1_ENTRIES = 32 * 1024 * 1024
VMDK_MAX_GTES_PER_GT = 512
VMDK_MAX_GRAIN_SECTORS = 0x10000  # stricter than qemu's 0x200000: no real VMDK has grains above 32 MiB
MAX_VMDK_DESCRIPTOR_BYTES = 1024 * 1024
VMDK_SAFE_CREATE_TYPES = ("monolithicSparse", "streamOptimized")
# What qemu accepts as a descriptor file's createType (vmdk_open_desc_file); anything else it refuses.
VMDK_QEMU_DESCRIPTOR_TYPES = ("monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
                              "twoGbMaxExtentFlat")
VMDK_QEMU_EXTENT_TYPES = ("FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE")
_VMDK_EXTENT_RE = re.compile(r'(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?(?:\s+(\d+))?\s*')
_VMDK_EXTENT_START_RE = re.compile(r"(RW|RDONLY|NOACCESS)\b")
_VMDK_KEY_RE = re.compile(r'([A-Za-z][A-Za-z0-9_.]*)\s*=\s*"?([^"]*)"?\s*')

# VHD (block/vpc.c)
VHD_TYPE_FIXED = 2
VHD_TYPE_DYNAMIC = 3
VHD_TYPE_DIFFERENCING = 4
VHD_MAX_GEOMETRY_SECTORS = 65535 * 16 * 255
VHD_MAX_SECTORS = 0xFF000000  # 2040 GiB
VHD_CURRENT_SIZE_CREATORS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\x00")
MAX_VHD_BAT_BYTES = 16 * 1024 * 1024  # 4 Mi blocks: 8 TiB of 2 MiB blocks, four times VHD's own limit

# VHDX (block/vhdx.c, vhdx.h)
VHDX_HEADER_OFFSETS = (64 * 1024, 128 * 1024)
VHDX_HEADER_BYTES = 4 * 1024
VHDX_REGION_TABLE_OFFSET = 192 * 1024
VHDX_REGION_TABLE_BYTES = 64 * 1024
VHDX_METADATA_TABLE_BYTES = 64 * 1024
VHDX_BLOCK_SIZE_MIN = 1024 * 1024
VHDX_BLOCK_SIZE_MAX = 256 * 1024 * 1024
VHDX_MAX_IMAGE_SIZE = 64 * 1024 ** 4
VHDX_PARAMS_HAS_PARENT = 1 << 1
VHDX_REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VHDX_REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
VHDX_META_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
VHDX_META_VIRTUAL_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
VHDX_META_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746").bytes_le
VHDX_META_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le
VHDX_META_PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556").bytes_le
VHDX_META_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le
VHDX_REQUIRED_METADATA = {VHDX_META_FILE_PARAMETERS: "file parameters", VHDX_META_VIRTUAL_SIZE: "virtual disk size",
                          VHDX_META_PAGE83: "page 83 data", VHDX_META_LOGICAL_SECTOR: "logical sector size",
                          VHDX_META_PHYSICAL_SECTOR: "physical sector size"}

# VDI (block/vdi.c)
VDI_VERSION_1_1 = 0x00010001
VDI_BLOCK_SIZE = 1024 * 1024
VDI_BLOCKS_IN_IMAGE_MAX = 0x3FFFFFFF
VDI_DISK_SIZE_MAX = VDI_BLOCKS_IN_IMAGE_MAX * VDI_BLOCK_SIZE
VDI_TYPES = {1: "dynamic", 2: "static"}
VDI_TYPE_DIFFERENCING = 4

# LUKS1 (crypto/block-luks.c): what the host's qemu can open. It reads LUKS version 1 only.
LUKS_HEADER_BYTES = 592
LUKS_KEY_SLOT_OFFSET = 4096
LUKS_KEY_SLOTS = 8
LUKS_STRIPES = 4000
LUKS_SLOT_ENABLED = 0x00AC71F3
LUKS_SLOT_DISABLED = 0x0000DEAD
LUKS_CIPHER_KEY_BYTES = {"aes": (16, 24, 32), "cast5": (16,), "serpent": (16, 24, 32), "twofish": (16, 24, 32)}
LUKS_ESSIV_CIPHERS = ("aes", "serpent", "twofish")
LUKS_CIPHER_MODES = ("ecb", "cbc", "xts", "ctr")
LUKS_IV_GENERATORS = ("plain", "plain64", "essiv")
LUKS_HASH_DIGEST_BYTES = {"md5": 16, "sha1": 20, "sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64,
                          "ripemd160": 20}

# Boot sectors (MBR, GPT's protective MBR, filesystem boot sectors)
MBR_SIGNATURE = b"\x55\xaa"
MBR_TABLE_OFFSET = 446
MBR_TYPE_GPT_PROTECTIVE = 0xEE
MBR_BOOT_FLAGS = (0x00, 0x80)
GPT_SIGNATURE = b"EFI PART"
GPT_PROTECTIVE_START_CHS = b"\x00\x02\x00"

_CONVERT_ADVICE = "convert it to qcow2 or raw with a trusted qemu-img and use the result"
_SINGLE_VMDK_ADVICE = "convert it to a single monolithicSparse/streamOptimized VMDK or to qcow2 on a trusted host"


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

    def read_padded(self, offset: int, length: int) -> bytes:
        """What qemu's block layer returns: bytes past the end of the file read as zeros."""
        return self.read(offset, length).ljust(length, b"\x00")

    @property
    def qemu_length(self) -> int:
        """The file's length as qemu's block layer counts it: in whole 512-byte sectors, rounded up."""
        return -(-self.size // SECTOR) * SECTOR


def _corrupt(path: str, fmt: str, what: str) -> UnsafeImageError:
    return UnsafeImageError(path, "its %s header is truncated or corrupt (%s)" % (fmt, what),
                            "download the image again and compare its checksum, or convert it from a trusted "
                            "copy")


def _qemu_cannot_open(path: str, fmt: str, what: str, advice: str = "") -> UnsafeImageError:
    """An image the host's qemu-img refuses to open: say qemu's reason instead of letting qemu-img fail later."""
    return UnsafeImageError(path, "the host's qemu cannot open this %s image: %s" % (fmt, what),
                            advice or "re-create or convert the image with a tool that writes a standard %s file, "
                            "or %s" % (fmt, _CONVERT_ADVICE), qemu_refusal=what)


def _c_string(data: bytes) -> bytes:
    """The bytes qemu's string functions see: up to the first NUL."""
    return data.split(b"\x00", 1)[0]


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


def _signatures(head: bytes, tail: bytes, file_size: int) -> Tuple[List[str], Dict[str, Any]]:
    """Every non-raw format whose signature is present."""
    found: List[str] = []
    where: Dict[str, Any] = {}
    if qcow2.is_qcow2(head):
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
    if head[:16] in PARALLELS_MAGICS:
        found.append("parallels")
    if head[:len(BOCHS_MAGIC)] == BOCHS_MAGIC:
        found.append("bochs")
    if head[:len(CLOOP_MAGIC)] == CLOOP_MAGIC:
        found.append("cloop")
    if file_size >= 1024 and tail[-512:][:len(DMG_TRAILER)] == DMG_TRAILER:
        found.append("dmg")
    return found, where


def _is_iso(head: bytes) -> bool:
    return any(head[off:off + 5] in ISO_SIGNATURES for off in ISO_OFFSETS)


def _filesystem_boot_sector(sector: bytes) -> Optional[str]:
    """The filesystem whose boot sector (not an MBR) this is, if it is one: FAT, NTFS and exFAT end it with
    55 AA too, and mkfs.vfat may even write a partition entry for the whole disk into it."""
    if sector[3:11] == b"NTFS    ":
        return "ntfs"
    if sector[3:11] == b"EXFAT   ":
        return "exfat"
    jump = (sector[0] == 0xEB and sector[2] == 0x90) or sector[0] == 0xE9
    bytes_per_sector, sectors_per_cluster, reserved, fats = struct.unpack_from("<HBHB", sector, 11)
    media = sector[21]
    if (jump and bytes_per_sector in (512, 1024, 2048, 4096) and sectors_per_cluster
            and not sectors_per_cluster & (sectors_per_cluster - 1) and reserved >= 1 and fats in (1, 2)
            and (media == 0xF0 or media >= 0xF8)):
        return "fat"
    return None


def _partition_table(path: str, head: bytes) -> Tuple[Optional[str], Optional[str]]:
    """('gpt' or 'mbr' or None, filesystem or None) for a raw image's first sector.

    The MBR rules are Nova's and Glance's (oslo.utils format_inspector): boot flags 0x00/0x80; a GPT's
    protective MBR holds exactly one entry, the first, of type 0xEE, starting at CHS 0/2/0 and LBA 1.
    A protective MBR that breaks them (a hybrid MBR, whose partitions differ from the GPT's) is refused.
    A whole-disk filesystem's boot sector is not a partition table, and neither is a 55 AA sector whose
    entries are not an MBR's: both stay plain raw.
    """
    if len(head) < 1024 or head[510:512] != MBR_SIGNATURE:
        return None, None
    filesystem = _filesystem_boot_sector(head)
    if filesystem:
        return None, filesystem
    entries = [struct.unpack_from("<B3sB3sII", head, MBR_TABLE_OFFSET + 16 * i) for i in range(4)]
    used = [i for i, entry in enumerate(entries) if entry[2] != 0]
    if not any(entry[2] == MBR_TYPE_GPT_PROTECTIVE for entry in entries):
        if used and all(entry[0] in MBR_BOOT_FLAGS for entry in entries):
            return "mbr", None
        return None, None
    problems = []
    bad_flags = [i for i, entry in enumerate(entries) if entry[0] not in MBR_BOOT_FLAGS]
    if bad_flags:
        problems.append("entry %d has boot flag 0x%02x (only 0x00 and 0x80 are valid)"
                        % (bad_flags[0], entries[bad_flags[0]][0]))
    if used != [0]:
        problems.append("partition entries %s are in use where a protective MBR has only its first entry, of "
                        "type 0xEE (a hybrid MBR: MBR and GPT describe different partitions)"
                        % ", ".join(str(i) for i in used))
    else:
        _boot, start_chs, _type, _end_chs, start_lba, _sectors = entries[0]
        if start_chs != GPT_PROTECTIVE_START_CHS:
            problems.append("the 0xEE entry starts at CHS %s instead of 00 02 00" % start_chs.hex(" "))
        if start_lba != 1:
            problems.append("the 0xEE entry starts at LBA %d instead of 1" % start_lba)
    if not problems and GPT_SIGNATURE not in (head[512:520], head[4096:4104]):
        problems.append("no GPT header ('EFI PART') follows it at LBA 1")
    if problems:
        raise UnsafeImageError(
            path, "its protective MBR is malformed: %s" % "; ".join(problems),
            "repair the partition table (gdisk or sgdisk, which rewrite a standard protective MBR) or re-create "
            "the disk image", partition_table_problems=problems)
    return "gpt", None


def _detect(path: str, head: bytes, tail: bytes, file_size: int) -> Tuple[str, Dict[str, Any]]:
    found, where = _signatures(head, tail, file_size)
    if len(found) > 1:
        raise UnsafeImageError(
            path, "its header matches several formats at once (%s): a polyglot file that different tools "
            "would read differently" % ", ".join(found),
            "re-create the image with a single format, e.g. qemu-img convert -f <its real format> -O qcow2",
            matched_formats=found)
    iso = _is_iso(head)
    if found:
        fmt = found[0]
        # A fixed VHD is raw data plus a footer, so the data may legitimately look like an ISO;
        # any other container format has its own header where an ISO descriptor would sit.
        if iso and not (fmt == "vhd" and where.get("vhd_footer_only")):
            raise UnsafeImageError(
                path, "it carries both a %s header and an ISO 9660 volume descriptor (a polyglot file)" % fmt,
                "re-create the image with a single format", matched_formats=[fmt, "iso"])
        return fmt, where
    if iso:
        return "iso", where
    where["partition_table"], where["filesystem"] = _partition_table(path, head)
    return where["partition_table"] or "raw", where


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
    """The format the header bytes show (raw, qcow2, vmdk, vhd, vhdx, vdi, qed, iso, luks, gpt, mbr, or one of
    the formats this collection refuses: parallels, bochs, cloop, dmg).

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
# qcow2 (fields from the shared reader _qcow2; every rule here)
# ---------------------------------------------------------------------------------------------

def _qcow2_fixed_header(path: str, reader: _Reader) -> Tuple[qcow2.Header, bytes]:
    """The fixed header and the first cluster, as qemu reads them (zeros past the end of the file)."""
    head = reader.read(0, qcow2.V3_HEADER_BYTES)
    if len(head) < qcow2.V2_HEADER_BYTES:
        raise _corrupt(path, "qcow2", "the file is %d bytes, shorter than a qcow2 header" % reader.size)
    version, = struct.unpack_from(">I", head, 4)
    if version not in (2, 3):
        raise UnsafeImageError(
            path, "qcow2 version %d is not supported (only versions 2 and 3 are%s)"
            % (version, "; version 1 is the old qcow format" if version == 1 else ""),
            "convert the image with a trusted qemu-img to a current qcow2 (compat=1.1)", qcow2_version=version)
    if version == 3 and len(head) < qcow2.V3_HEADER_BYTES:
        raise _corrupt(path, "qcow2", "the file is %d bytes, shorter than a version 3 header" % reader.size)
    header = qcow2.parse_fixed(head)
    if not MIN_QCOW2_CLUSTER_BITS <= header.cluster_bits <= MAX_QCOW2_CLUSTER_BITS:
        raise _corrupt(path, "qcow2", "cluster_bits %d outside %d..%d"
                       % (header.cluster_bits, MIN_QCOW2_CLUSTER_BITS, MAX_QCOW2_CLUSTER_BITS))
    if version == 3 and (header.header_length < qcow2.V3_HEADER_BYTES or header.header_length % 8
                         or header.header_length > header.cluster_size):
        raise _corrupt(path, "qcow2", "header_length %d (must be a multiple of 8 from 104 to the cluster size)"
                       % header.header_length)
    if reader.size < header.header_length:
        raise _corrupt(path, "qcow2", "the file is %d bytes, shorter than its %d-byte header"
                       % (reader.size, header.header_length))
    cluster = reader.read_padded(0, header.cluster_size)
    return qcow2.parse_fixed(cluster), cluster


def _qcow2_references(path: str, header: qcow2.Header, cluster: bytes) -> None:
    """Refuse a qcow2 that makes qemu open another file."""
    if header.backing_file_offset or header.backing_file_size:
        name = ""
        start, length = header.backing_file_offset, header.backing_file_size
        if 0 < length <= qcow2.MAX_BACKING_NAME and start + length <= len(cluster):
            name = cluster[start:start + length].decode("utf-8", "replace")
        raise UnsafeImageError(
            path, "it is a qcow2 overlay with a backing file%s: qemu would read that file too"
            % (" (%r)" % name if name else ""),
            "flatten it first (qemu-img convert -f qcow2 -O qcow2 on a trusted host) and use the result",
            backing_file=name)
    if header.incompatible_features & qcow2.INCOMPAT_DATA_FILE:
        raise UnsafeImageError(
            path, "it is a qcow2 image whose data lives in an external data file (incompatible feature bit 2): "
            "qemu would read that file (CVE-2024-32498)",
            "convert it to a self-contained qcow2 on a trusted host")


def _qcow2_features(path: str, header: qcow2.Header, allow_luks: bool) -> None:
    """Feature bits, compression, sub-clusters, refcount width and encryption, as qcow2_do_open checks them."""
    incompatible = header.incompatible_features
    unknown = incompatible & ~qcow2.INCOMPAT_KNOWN
    if unknown:
        raise UnsafeImageError(path, "it sets unknown qcow2 incompatible feature bits 0x%x" % unknown,
                               "convert it with a trusted qemu-img to a plain qcow2")
    if incompatible & qcow2.INCOMPAT_CORRUPT:
        raise UnsafeImageError(path, "qemu has marked this qcow2 image corrupt (incompatible feature bit 1)",
                               "repair it with qemu-img check -r all on a trusted host, or fetch a fresh copy")
    compression = header.compression_type if header.header_length > qcow2.V3_HEADER_BYTES else 0
    if compression not in QCOW2_COMPRESSION_TYPES:
        raise _corrupt(path, "qcow2", "unknown compression type %d" % compression)
    if bool(compression) != bool(incompatible & qcow2.INCOMPAT_COMPRESSION):
        raise _qemu_cannot_open(path, "qcow2", "its compression type is %s but the compression-type feature bit "
                                "(incompatible bit 3) is %s" % (QCOW2_COMPRESSION_TYPES[compression],
                                                                "clear" if compression else "set"))
    if incompatible & qcow2.INCOMPAT_EXTL2 and header.cluster_size // QCOW2_EXTL2_SUBCLUSTERS < SECTOR:
        raise _qemu_cannot_open(path, "qcow2", "extended L2 entries need clusters of at least 16 KiB, and its "
                                "clusters are %d bytes" % header.cluster_size)
    if header.refcount_order > 6:
        raise _corrupt(path, "qcow2", "refcount_order %d above 6" % header.refcount_order)
    if header.crypt_method == QCOW2_CRYPT_AES:
        raise UnsafeImageError(path, "it uses qcow2's legacy AES encryption, which is broken and unsupported",
                               "re-encrypt it with LUKS or provide an unencrypted image")
    if header.crypt_method == QCOW2_CRYPT_LUKS and not allow_luks:
        raise UnsafeImageError(path, "it is an encrypted (LUKS) qcow2 image and encrypted images were not allowed",
                               "set allow_luks if the image is meant to be encrypted, or provide a plain image")
    if header.crypt_method > QCOW2_CRYPT_LUKS:
        raise _corrupt(path, "qcow2", "unknown crypt_method %d" % header.crypt_method)


def _qcow2_extension_rules(path: str, header: qcow2.Header, cluster: bytes, reader: _Reader) -> Dict[str, Any]:
    """qemu reads header extensions (version 2 images too) up to the end of the first cluster."""
    details: Dict[str, Any] = {}
    try:
        extensions = qcow2.parse_extensions(cluster, header.header_length)
    except qcow2.HeaderError as exc:
        raise _corrupt(path, "qcow2", str(exc))
    crypto = None
    for ext_type, data in extensions:
        if ext_type == qcow2.EXT_DATA_FILE:
            raise UnsafeImageError(
                path, "it names an external data file %r in a qcow2 header extension (CVE-2024-32498)"
                % data.decode("utf-8", "replace"), "convert it to a self-contained qcow2 on a trusted host")
        if ext_type == qcow2.EXT_BACKING_FORMAT:
            if len(data) > QCOW2_MAX_BACKING_FORMAT:
                raise _qemu_cannot_open(path, "qcow2", "its backing-format header extension is %d bytes long "
                                        "(at most %d)" % (len(data), QCOW2_MAX_BACKING_FORMAT))
            details["backing_format_extension"] = data.decode("utf-8", "replace")
        elif ext_type == qcow2.EXT_BITMAPS:
            _qcow2_bitmaps_rules(path, header, data)
        elif ext_type == qcow2.EXT_CRYPTO:
            crypto = data
    if crypto is not None or header.crypt_method == QCOW2_CRYPT_LUKS:
        _qcow2_luks_rules(path, header, crypto, reader)
    return details


def _qcow2_bitmaps_rules(path: str, header: qcow2.Header, data: bytes) -> None:
    if len(data) != 24:
        raise _qemu_cannot_open(path, "qcow2", "its bitmaps header extension is %d bytes (must be 24)" % len(data))
    if not header.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS:
        return  # qemu ignores bitmaps a program without bitmap support may have left stale
    count, reserved, directory_size, directory_offset = struct.unpack(">IIQQ", data)
    problem = None
    if reserved:
        problem = "its bitmaps extension has a non-zero reserved field"
    elif not 0 < count <= QCOW2_MAX_BITMAPS:
        problem = "its bitmaps extension lists %d bitmaps (1 to %d)" % (count, QCOW2_MAX_BITMAPS)
    elif directory_offset % header.cluster_size:
        problem = "its bitmap directory offset %d is not cluster-aligned" % directory_offset
    elif directory_size > QCOW2_MAX_BITMAP_DIRECTORY_BYTES:
        problem = "its bitmap directory of %d bytes exceeds qemu's %d" % (directory_size,
                                                                          QCOW2_MAX_BITMAP_DIRECTORY_BYTES)
    if problem:
        raise _qemu_cannot_open(path, "qcow2", problem)


def _qcow2_luks_rules(path: str, header: qcow2.Header, crypto: Optional[bytes], reader: _Reader) -> None:
    """A LUKS-encrypted qcow2 keeps a LUKS1 header in its own clusters, named by the crypto extension."""
    if header.crypt_method != QCOW2_CRYPT_LUKS:
        raise _qemu_cannot_open(path, "qcow2", "it has a crypto header extension but crypt_method %d (the "
                                "extension belongs to LUKS encryption only)" % header.crypt_method)
    if crypto is None:
        raise _qemu_cannot_open(path, "qcow2", "it is LUKS-encrypted but has no crypto header extension")
    if len(crypto) != 16:
        raise _qemu_cannot_open(path, "qcow2", "its crypto header extension is %d bytes (must be 16)" % len(crypto))
    offset, length = struct.unpack(">QQ", crypto)
    if offset % header.cluster_size:
        raise _qemu_cannot_open(path, "qcow2", "its LUKS header offset %d is not cluster-aligned" % offset)
    if length < LUKS_HEADER_BYTES or offset + LUKS_HEADER_BYTES > reader.size:
        raise _corrupt(path, "qcow2", "LUKS header of %d bytes at offset %d lies outside the file or is too short"
                       % (length, offset))
    problem = _luks1_problem(reader.read(offset, LUKS_HEADER_BYTES))
    if problem:
        raise _qemu_cannot_open(path, "qcow2", "its embedded LUKS header: %s" % problem)


def _qcow2_table_rules(path: str, header: qcow2.Header, reader: _Reader) -> None:
    """qcow2_validate_table's limits and alignment for every table, plus the L1 table inside the file."""
    cluster_size = header.cluster_size
    tables = (("L1 table", header.l1_table_offset, header.l1_size, 8, MAX_QCOW2_L1_BYTES),
              ("refcount table", header.refcount_table_offset, header.refcount_table_clusters, cluster_size,
               MAX_QCOW2_REFTABLE_BYTES),
              ("snapshot table", header.snapshots_offset, header.nb_snapshots, QCOW2_SNAPSHOT_HEADER_BYTES,
               QCOW2_SNAPSHOT_HEADER_BYTES * MAX_QCOW2_SNAPSHOTS))
    for name, offset, entries, entry_bytes, max_bytes in tables:
        if entries > max_bytes // entry_bytes:
            raise _corrupt(path, "qcow2", "%s of %d entries exceeds qemu's %d-byte limit" % (name, entries,
                                                                                             max_bytes))
        if INT64_MAX - entries * entry_bytes < offset or offset % cluster_size:
            raise _corrupt(path, "qcow2", "%s at offset %d is misaligned or out of range" % (name, offset))
    if header.size > MAX_VIRTUAL_SIZE_ANY:
        raise _corrupt(path, "qcow2", "virtual size %d does not fit a signed 64-bit integer" % header.size)
    l2_entry_bytes = 16 if header.incompatible_features & qcow2.INCOMPAT_EXTL2 else 8
    bytes_per_l1_entry = cluster_size * (cluster_size // l2_entry_bytes)
    needed_l1 = -(-header.size // bytes_per_l1_entry)
    if header.l1_size < needed_l1:
        raise _corrupt(path, "qcow2", "L1 table of %d entries is too small for a virtual size of %d bytes"
                       % (header.l1_size, header.size))
    if header.l1_size and (header.l1_table_offset < cluster_size
                           or header.l1_table_offset + header.l1_size * 8 > reader.size):
        raise _corrupt(path, "qcow2", "L1 table at offset %d (%d entries) lies outside the %d-byte file or is "
                       "misaligned" % (header.l1_table_offset, header.l1_size, reader.size))
    if (header.refcount_table_offset < cluster_size or header.refcount_table_clusters == 0
            or header.refcount_table_offset + header.refcount_table_clusters * cluster_size
            > reader.size + cluster_size):
        raise _corrupt(path, "qcow2", "refcount table at offset %d (%d clusters) is misplaced"
                       % (header.refcount_table_offset, header.refcount_table_clusters))
    if header.nb_snapshots and header.snapshots_offset >= reader.size:
        raise _corrupt(path, "qcow2", "snapshot table (%d snapshots at offset %d) is misplaced"
                       % (header.nb_snapshots, header.snapshots_offset))


def _inspect_qcow2(path: str, reader: _Reader, allow_luks: bool) -> Tuple[int, Dict[str, Any]]:
    header, cluster = _qcow2_fixed_header(path, reader)
    _qcow2_references(path, header, cluster)
    _qcow2_features(path, header, allow_luks)
    details: Dict[str, Any] = {
        "qcow2_version": header.version, "cluster_bits": header.cluster_bits,
        "incompatible_features": header.incompatible_features, "compatible_features": header.compatible_features,
        "autoclear_features": header.autoclear_features, "refcount_order": header.refcount_order,
        "header_length": header.header_length}
    if header.header_length > qcow2.V3_HEADER_BYTES:
        details["compression_type"] = QCOW2_COMPRESSION_TYPES[header.compression_type or 0]
    details.update(_qcow2_extension_rules(path, header, cluster, reader))
    _qcow2_table_rules(path, header, reader)
    details.update({"l1_size": header.l1_size, "snapshots": header.nb_snapshots,
                    "encrypted": header.crypt_method == QCOW2_CRYPT_LUKS,
                    "extended_l2": bool(header.incompatible_features & qcow2.INCOMPAT_EXTL2)})
    # qemu sizes a qcow2 in whole sectors: bs->total_sectors = header.size / 512.
    return header.size // SECTOR * SECTOR, details


# ---------------------------------------------------------------------------------------------
# VMDK
# ---------------------------------------------------------------------------------------------

@dataclass
class _VmdkDescriptor:
    """An embedded or separate VMDK descriptor, parsed strictly."""

    keys: Dict[str, str]
    extents: List[Dict[str, Any]]
    unreadable: List[str]


def _parse_vmdk_descriptor(text: str) -> _VmdkDescriptor:
    descriptor = _VmdkDescriptor({}, [], [])
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        extent = _VMDK_EXTENT_RE.fullmatch(line)
        if extent:
            descriptor.extents.append({"access": extent.group(1), "sectors": int(extent.group(2)),
                                       "type": extent.group(3), "file": extent.group(4),
                                       "offset": extent.group(5)})
            continue
        if _VMDK_EXTENT_START_RE.match(line):
            # Looks like an extent line we cannot parse: qemu might still read it.
            descriptor.extents.append({"access": "?", "sectors": 0, "type": "unparsed", "file": line,
                                       "offset": None})
            continue
        pair = _VMDK_KEY_RE.fullmatch(line)
        if pair:
            descriptor.keys[pair.group(1)] = pair.group(2)
        else:
            descriptor.unreadable.append(line)
    return descriptor


def _qemu_descriptor_extents(text: str) -> List[str]:
    """The extent files qemu's vmdk_parse_extents would open: RW lines of a known type and a positive size."""
    names = []
    for extent in _parse_vmdk_descriptor(text).extents:
        if extent["access"] == "RW" and extent["type"] in VMDK_QEMU_EXTENT_TYPES and extent["sectors"] > 0 \
                and extent["file"]:
            names.append(extent["file"])
    return names


def _vmdk_text_refusal(path: str, text: str) -> UnsafeImageError:
    """A descriptor file: qemu opens the extent files it names, or refuses it."""
    descriptor = _parse_vmdk_descriptor(text)
    create_type = descriptor.keys.get("createType")
    advice = "convert the disk to a single monolithicSparse/streamOptimized VMDK or to qcow2 on a trusted host"
    if create_type is None:
        return UnsafeImageError(path, "it is a VMDK descriptor file without a createType, which qemu refuses as "
                                "an invalid VMDK image descriptor", advice, create_type=None, extent_files=[])
    if create_type not in VMDK_QEMU_DESCRIPTOR_TYPES:
        return UnsafeImageError(path, "it is a VMDK descriptor file of createType %r, which qemu does not open "
                                "(it opens %s)" % (create_type, ", ".join(VMDK_QEMU_DESCRIPTOR_TYPES)), advice,
                                create_type=create_type, extent_files=[])
    names = _qemu_descriptor_extents(text)
    if not names:
        return UnsafeImageError(path, "it is a VMDK descriptor file (createType %s) that names no extent qemu "
                                "would read, so it holds no disk data" % create_type, advice,
                                create_type=create_type, extent_files=[])
    return UnsafeImageError(
        path, "it is a VMDK descriptor file (createType %s) that makes qemu open other files: %s "
        "(CVE-2022-47951)" % (create_type, ", ".join(repr(n) for n in names)), advice,
        create_type=create_type, extent_files=names)


@dataclass
class _Vmdk4Header:
    """The fields of a VMDK4 sparse extent header (block/vmdk.c VMDK4Header), after the magic."""

    version: int
    flags: int
    capacity: int
    granularity: int
    desc_offset: int
    desc_size: int
    num_gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    grain_offset: int
    compress_algorithm: int

    @classmethod
    def unpack(cls, sector: bytes) -> "_Vmdk4Header":
        fields = struct.unpack_from("<IIQQQQIQQQ", sector, 4)
        compress, = struct.unpack_from("<H", sector, 77)
        return cls(*fields, compress_algorithm=compress)


def _vmdk_footer(path: str, reader: _Reader) -> _Vmdk4Header:
    """The footer's copy of the header, which qemu takes instead of the header when the grain directory is
    "at the end" (streamOptimized): footer marker, footer sector, end-of-stream marker, checked as
    vmdk_open_vmdk4 checks them."""
    # qemu reads 1536 bytes at bs->file's total_sectors * 512 - 1536, the file size rounded up to a sector.
    start = reader.qemu_length - 3 * SECTOR
    if start < 0:
        raise _qemu_cannot_open(path, "vmdk", "its header says the grain directory is in a footer, but the file "
                                "(%d bytes) is too short to hold one" % reader.size)
    footer = reader.read_padded(start, 3 * SECTOR)
    _marker_value, marker_size, marker_type = struct.unpack_from("<QII", footer, 0)
    eos_value, eos_size, eos_type = struct.unpack_from("<QII", footer, 2 * SECTOR)
    problems = []
    if marker_size != 0 or marker_type != VMDK_MARKER_FOOTER:
        problems.append("no footer marker (size %d, type %d) 1536 bytes before the end"
                        % (marker_size, marker_type))
    if footer[SECTOR:SECTOR + 4] != VMDK_SPARSE_MAGIC:
        problems.append("the footer does not start with the KDMV magic")
    if eos_value != 0 or eos_size != 0 or eos_type != VMDK_MARKER_EOS:
        problems.append("no end-of-stream marker in the last sector")
    if problems:
        raise _qemu_cannot_open(path, "vmdk", "its streamOptimized footer is invalid (%s), which qemu refuses as "
                                "'Invalid footer'" % "; ".join(problems))
    return _Vmdk4Header.unpack(footer[SECTOR:2 * SECTOR])


def _vmdk_header_rules(path: str, reader: _Reader, header: _Vmdk4Header) -> None:
    """vmdk_open_vmdk4's and vmdk_add_extent's checks on the header in force, plus ours."""
    if header.version not in (1, 2, 3):
        raise _corrupt(path, "vmdk", "sparse extent version %d" % header.version)
    if header.gd_offset == VMDK_GD_AT_END:
        raise _corrupt(path, "vmdk", "the footer says its grain directory is at the end of the file too")
    if header.num_gtes_per_gt == 0 or header.num_gtes_per_gt > VMDK_MAX_GTES_PER_GT:
        raise _corrupt(path, "vmdk", "%d grain table entries per table" % header.num_gtes_per_gt)
    grain = header.granularity
    if grain == 0 or grain & (grain - 1) or grain > VMDK_MAX_GRAIN_SECTORS:
        raise _corrupt(path, "vmdk", "grain size %d sectors" % grain)
    if header.capacity * SECTOR > MAX_VIRTUAL_SIZE_ANY:
        raise _corrupt(path, "vmdk", "capacity %d sectors" % header.capacity)
    l1_entries = -(-header.capacity // (header.num_gtes_per_gt * grain))
    if l1_entries > VMDK_MAX_L1_ENTRIES:
        raise _qemu_cannot_open(path, "vmdk", "its grain directory would need %d entries, more than qemu's %d"
                                % (l1_entries, VMDK_MAX_L1_ENTRIES))
    if reader.qemu_length // SECTOR < header.grain_offset:
        raise _qemu_cannot_open(path, "vmdk", "the file is truncated: its grains start at sector %d but the file "
                                "is %d bytes" % (header.grain_offset, reader.size))
    if header.compress_algorithm not in (0, VMDK_COMPRESSION_DEFLATE):
        raise _corrupt(path, "vmdk", "unknown compression algorithm %d (qemu would read compressed grains as "
                       "plain data)" % header.compress_algorithm)


def _vmdk_qemu_descriptor_rules(path: str, reader: _Reader) -> None:
    """What qemu itself reads of the descriptor of a sparse extent: 10 KiB from offset 0x200, whatever the header
    says, searched with strstr (comments included) for parentFileNameHint, CID and parentCID."""
    text = _c_string(reader.read(VMDK_QEMU_DESC_OFFSET, VMDK_QEMU_DESC_BYTES - 1))
    if b"parentFileNameHint" in text:
        hint = text.split(b"parentFileNameHint", 1)[1][2:].split(b'"', 1)[0].decode("latin-1")
        raise UnsafeImageError(
            path, "it is a VMDK delta disk naming a parent (%r): qemu finds parentFileNameHint anywhere in the "
            "descriptor, comments included, and would open that file as a backing file" % hint,
            "flatten it on a trusted host and use the result", backing_file=hint)
    for key in (b"CID", b"parentCID"):
        found = text.find(key)
        # vmdk_read_cid: strstr, skip the key and one character, then sscanf("%x").
        if found < 0 or not re.match(rb"\s*[0-9a-fA-F]", text[found + len(key) + 1:]):
            raise _qemu_cannot_open(path, "vmdk", "the descriptor qemu reads at offset 0x200 has no %s=<hex> "
                                    "value" % key.decode("ascii"))


def _vmdk_embedded_descriptor_rules(path: str, reader: _Reader, header: _Vmdk4Header) -> Dict[str, Any]:
    """Our own rule: the embedded descriptor says this is one self-contained sparse extent, and nothing else."""
    if header.desc_offset == 0 or header.desc_size == 0:
        raise UnsafeImageError(path, "it is a VMDK sparse extent without an embedded descriptor, so its type "
                               "cannot be checked", "convert it to qcow2 on a trusted host")
    if header.desc_size * SECTOR > MAX_VMDK_DESCRIPTOR_BYTES \
            or (header.desc_offset + header.desc_size) * SECTOR > reader.size:
        raise _corrupt(path, "vmdk", "embedded descriptor at sector %d (%d sectors) lies outside the file or is "
                       "too large" % (header.desc_offset, header.desc_size))
    raw_text = _c_string(reader.read(header.desc_offset * SECTOR, header.desc_size * SECTOR))
    if not raw_text.strip():
        raise UnsafeImageError(path, "its embedded VMDK descriptor is empty (it is one extent of a multi-file "
                               "VMDK, or the descriptor was wiped)", _SINGLE_VMDK_ADVICE)
    descriptor = _parse_vmdk_descriptor(raw_text.decode("latin-1"))
    create_type = descriptor.keys.get("createType")
    if descriptor.unreadable:
        raise UnsafeImageError(path, "its embedded VMDK descriptor has a line that is not a VMDK descriptor line: "
                               "%r" % descriptor.unreadable[0][:80], _SINGLE_VMDK_ADVICE)
    if create_type is None:
        raise UnsafeImageError(path, "its embedded VMDK descriptor has no createType", _SINGLE_VMDK_ADVICE)
    if create_type not in VMDK_SAFE_CREATE_TYPES:
        raise UnsafeImageError(
            path, "its VMDK createType is %r; only %s are accepted, because the other types read separate "
            "extent files" % (create_type, " and ".join(VMDK_SAFE_CREATE_TYPES)), _SINGLE_VMDK_ADVICE,
            create_type=create_type)
    if "parentFileNameHint" in descriptor.keys or descriptor.keys.get("parentCID", "ffffffff").lower() != "ffffffff":
        raise UnsafeImageError(path, "it is a VMDK delta disk naming a parent (%r)"
                               % descriptor.keys.get("parentFileNameHint"),
                               "flatten it on a trusted host and use the result")
    extents = descriptor.extents
    if not extents:
        raise UnsafeImageError(path, "its embedded VMDK descriptor lists no extent", _SINGLE_VMDK_ADVICE)
    unparsed = [e["file"] for e in extents if e["type"] == "unparsed"]
    if unparsed:
        raise UnsafeImageError(path, "its embedded VMDK descriptor has an extent line that cannot be read: %r"
                               % unparsed[0][:80], _SINGLE_VMDK_ADVICE)
    if len(extents) != 1 or extents[0]["type"] != "SPARSE" or not extents[0]["file"] \
            or "/" in extents[0]["file"] or "\\" in extents[0]["file"]:
        raise UnsafeImageError(
            path, "its embedded VMDK descriptor names extent files other than itself (%s) (CVE-2022-47951)"
            % ", ".join("%s %r" % (e["type"], e["file"]) for e in extents), _SINGLE_VMDK_ADVICE,
            extent_files=[e["file"] for e in extents])
    return {"create_type": create_type, "extents": len(extents)}


def _inspect_vmdk(path: str, reader: _Reader, head: bytes) -> Tuple[int, Dict[str, Any]]:
    if head[:4] == VMDK_COWD_MAGIC:
        raise UnsafeImageError(path, "it is a VMDK3 (COWD/vmfsSparse) extent, which may refer to a parent disk",
                               "convert it to a monolithicSparse or streamOptimized VMDK on a trusted host")
    if head[:4] != VMDK_SPARSE_MAGIC:
        raise _vmdk_text_refusal(path, _c_string(head[:MAX_VMDK_DESCRIPTOR_BYTES]).decode("latin-1"))
    if len(head) < SECTOR:
        raise _corrupt(path, "vmdk", "the file is %d bytes, shorter than a sparse extent header" % reader.size)
    header = _Vmdk4Header.unpack(head)
    if header.capacity == 0:
        if header.desc_offset:
            raise UnsafeImageError(
                path, "it is a VMDK sparse extent with a capacity of 0, which makes qemu follow the extents named "
                "in its embedded descriptor (CVE-2022-47951)", _SINGLE_VMDK_ADVICE)
        raise _corrupt(path, "vmdk", "a sparse extent with a capacity of 0 and no descriptor")
    details: Dict[str, Any] = {"gd_at_end": header.gd_offset == VMDK_GD_AT_END}
    if header.gd_offset == VMDK_GD_AT_END:
        footer = _vmdk_footer(path, reader)
        if (footer.desc_offset, footer.desc_size) != (header.desc_offset, header.desc_size):
            raise _corrupt(path, "vmdk", "the footer puts the descriptor at sector %d (%d sectors), the header at "
                           "sector %d (%d sectors)" % (footer.desc_offset, footer.desc_size, header.desc_offset,
                                                       header.desc_size))
        details["header_capacity_sectors"] = header.capacity
        header = footer
    _vmdk_header_rules(path, reader, header)
    details.update(_vmdk_embedded_descriptor_rules(path, reader, header))
    _vmdk_qemu_descriptor_rules(path, reader)
    details.update({"vmdk_version": header.version, "flags": header.flags, "grain_sectors": header.granularity,
                    "overhead_sectors": header.grain_offset,
                    "compressed": header.compress_algorithm == VMDK_COMPRESSION_DEFLATE})
    return header.capacity * SECTOR, details


# ---------------------------------------------------------------------------------------------
# VHD (vpc)
# ---------------------------------------------------------------------------------------------

def _vhd_checksum_ok(footer: bytes) -> bool:
    expected = struct.unpack_from(">I", footer, 64)[0]
    total = sum(footer[:64]) + sum(footer[68:512])
    return (~total & 0xFFFFFFFF) == expected


def _vhd_dynamic_rules(path: str, reader: _Reader, data_offset: int, virtual_size: int) -> int:
    """vpc_open's dynamic-disk checks: the cxsparse header, the block size and the block table (BAT), whose
    allocated blocks must all lie inside the file. Returns the block size."""
    dyn = reader.read(data_offset, 1024) if data_offset < reader.size else b""
    if len(dyn) < 1024 or dyn[:8] != b"cxsparse":
        raise _corrupt(path, "vhd", "dynamic disk header missing at offset %d" % data_offset)
    table_offset, = struct.unpack_from(">Q", dyn, 16)
    max_entries, block_size = struct.unpack_from(">II", dyn, 28)
    if block_size & (block_size - 1) or block_size < SECTOR:
        raise _corrupt(path, "vhd", "block size %d" % block_size)
    if virtual_size // block_size > 0xFFFFFFFF or max_entries * block_size < virtual_size \
            or max_entries > 0x7FFFFFFF // 4:
        raise _corrupt(path, "vhd", "block table of %d entries does not cover the disk" % max_entries)
    if max_entries * 4 > MAX_VHD_BAT_BYTES:
        raise UnsafeImageError(path, "its VHD block table of %d entries is larger than this inspector reads (%d "
                               "bytes)" % (max_entries, MAX_VHD_BAT_BYTES), _CONVERT_ADVICE)
    bitmap_bytes = ((block_size // (8 * SECTOR)) + 511) & ~511
    data_end = (table_offset + max_entries * 4 + 511) & ~511
    if data_end <= reader.size:
        table = array("I", reader.read_padded(table_offset, max_entries * 4))
        if sys.byteorder == "little":
            table.byteswap()
        allocated = [entry for entry in table if entry != 0xFFFFFFFF]
        if allocated:
            data_end = max(data_end, SECTOR * max(allocated) + bitmap_bytes + block_size)
    if data_end > reader.size:
        raise _qemu_cannot_open(path, "vhd", "its block table or the blocks it lists end at offset %d, past the "
                                "end of the %d-byte file (the image has been truncated)" % (data_end, reader.size))
    return block_size


def _inspect_vhd(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    # Like qemu: the copy at the start of the file if there is one (then the disk is dynamic), else the footer
    # in the last sector, counting the file's length in whole sectors as qemu's block layer does.
    footer = reader.read(0, SECTOR)
    footer_at_start = footer[:8] == VHD_COOKIE
    if reader.size < SECTOR:
        raise _corrupt(path, "vhd", "footer shorter than 512 bytes")
    if not footer_at_start:
        footer = reader.read_padded(reader.qemu_length - SECTOR, SECTOR)
        if footer[:8] != VHD_COOKIE:
            raise _qemu_cannot_open(path, "vhd", "its footer ends the %d-byte file, but qemu reads the footer from the "
                                    "last whole sector (the file is not a whole number of 512-byte sectors)"
                                    % reader.size)
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
        raise UnsafeImageError(path, "it is a differencing VHD, which reads a parent disk file (qemu would read it "
                               "without its parent, an incomplete disk)",
                               "merge it into a fixed or dynamic VHD on a trusted host")
    if disk_type not in (VHD_TYPE_FIXED, VHD_TYPE_DYNAMIC):
        raise _corrupt(path, "vhd", "disk type %d" % disk_type)
    # Mirror qemu's vpc driver: most creators size the disk by CHS geometry, a few by current_size, and a
    # disk whose geometry is at its maximum by current_size.
    chs_sectors = cylinders * heads * sectors_per_track
    uses_chs = creator_app not in VHD_CURRENT_SIZE_CREATORS
    virtual_sectors = chs_sectors if uses_chs and chs_sectors != VHD_MAX_GEOMETRY_SECTORS else current_size // SECTOR
    if virtual_sectors > VHD_MAX_SECTORS:
        raise _qemu_cannot_open(path, "vhd", "its size of %d sectors exceeds VHD's limit of %d (2040 GiB)"
                                % (virtual_sectors, VHD_MAX_SECTORS))
    virtual_size = virtual_sectors * SECTOR
    if footer_at_start:
        if disk_type == VHD_TYPE_FIXED:
            raise _corrupt(path, "vhd", "a fixed disk with a footer copy at the start of the file, which qemu reads "
                           "as a dynamic disk")
        details["block_size"] = _vhd_dynamic_rules(path, reader, data_offset, virtual_size)
    elif disk_type == VHD_TYPE_DYNAMIC:
        raise _corrupt(path, "vhd", "dynamic disk without the footer copy at the start of the file")
    elif virtual_size > reader.size - SECTOR:
        raise _corrupt(path, "vhd", "fixed disk of %d bytes in a %d-byte file" % (virtual_size, reader.size))
    return virtual_size, details


# ---------------------------------------------------------------------------------------------
# VHDX
# ---------------------------------------------------------------------------------------------

def _crc32c_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE: List[int] = []


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers and tables."""
    if not _CRC32C_TABLE:
        _CRC32C_TABLE.extend(_crc32c_table())
    table = _CRC32C_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _vhdx_checksum_ok(block: bytes) -> bool:
    """The checksum at offset 4 covers the whole block with the checksum field zeroed."""
    expected, = struct.unpack_from("<I", block, 4)
    return _crc32c(block[:4] + b"\x00" * 4 + block[8:]) == expected


def _vhdx_current_header(path: str, reader: _Reader) -> bytes:
    """vhdx_parse_header: of the two headers, the valid one with the higher sequence number."""
    valid = []
    for offset in VHDX_HEADER_OFFSETS:
        block = reader.read_padded(offset, VHDX_HEADER_BYTES)
        version, = struct.unpack_from("<H", block, 66)
        if block[:4] == b"head" and version == 1 and _vhdx_checksum_ok(block):
            valid.append((struct.unpack_from("<Q", block, 8)[0], block))
    if not valid:
        raise _qemu_cannot_open(path, "vhdx", "neither of its two headers is valid (signature, version or "
                                "checksum)")
    if len(valid) == 2 and valid[0][0] == valid[1][0] and valid[0][1][:80] != valid[1][1][:80]:
        raise _qemu_cannot_open(path, "vhdx", "its two headers differ but carry the same sequence number")
    return max(valid, key=lambda item: item[0])[1]


def _vhdx_regions(path: str, reader: _Reader) -> Tuple[int, int, int]:
    """(metadata offset, BAT offset, BAT length) from the region table qemu reads, at 192 KiB."""
    table = reader.read_padded(VHDX_REGION_TABLE_OFFSET, VHDX_REGION_TABLE_BYTES)
    if table[:4] != b"regi" or not _vhdx_checksum_ok(table):
        raise _qemu_cannot_open(path, "vhdx", "its region table at 192 KiB is missing or fails its checksum")
    count, = struct.unpack_from("<I", table, 8)
    if count > 2047:
        raise _corrupt(path, "vhdx", "%d region table entries" % count)
    regions: Dict[bytes, Tuple[int, int]] = {}
    for i in range(count):
        guid = table[16 + 32 * i:32 + 32 * i]
        offset, length, flags = struct.unpack_from("<QII", table, 32 + 32 * i)
        if guid in regions:
            raise _corrupt(path, "vhdx", "a region listed twice")
        if guid in (VHDX_REGION_METADATA, VHDX_REGION_BAT):
            regions[guid] = (offset, length)
        elif flags & 1:
            raise UnsafeImageError(path, "its VHDX region table requires an unknown region",
                                   "convert it to qcow2 on a trusted host")
    if VHDX_REGION_METADATA not in regions or VHDX_REGION_BAT not in regions:
        raise _corrupt(path, "vhdx", "no metadata region" if VHDX_REGION_METADATA not in regions else "no BAT region")
    return regions[VHDX_REGION_METADATA][0], regions[VHDX_REGION_BAT][0], regions[VHDX_REGION_BAT][1]


def _vhdx_metadata(path: str, reader: _Reader, metadata_offset: int) -> Dict[bytes, bytes]:
    """The metadata items qemu reads, by GUID (each item's first 8 bytes)."""
    meta = reader.read_padded(metadata_offset, VHDX_METADATA_TABLE_BYTES)
    if meta[:8] != b"metadata":
        raise _corrupt(path, "vhdx", "metadata table missing at offset %d" % metadata_offset)
    entry_count, = struct.unpack_from("<H", meta, 10)
    if 32 + 32 * entry_count > VHDX_METADATA_TABLE_BYTES:
        raise _corrupt(path, "vhdx", "%d metadata entries" % entry_count)
    items: Dict[bytes, bytes] = {}
    for i in range(entry_count):
        base = 32 + 32 * i
        item = meta[base:base + 16]
        item_offset, _item_length, flags = struct.unpack_from("<III", meta, base + 16)
        if item == VHDX_META_PARENT_LOCATOR:
            raise UnsafeImageError(path, "it is a differencing VHDX with a parent locator, which reads another file",
                                   "merge it into a standalone VHDX or qcow2 on a trusted host")
        if item in items:
            raise _corrupt(path, "vhdx", "metadata item listed twice")
        if item in VHDX_REQUIRED_METADATA:
            items[item] = reader.read_padded(metadata_offset + item_offset, 8)
        elif flags & (1 << 2):
            raise _qemu_cannot_open(path, "vhdx", "its metadata requires an item qemu does not know")
    missing = [name for guid, name in VHDX_REQUIRED_METADATA.items() if guid not in items]
    if missing:
        raise _qemu_cannot_open(path, "vhdx", "its metadata lacks the %s item" % " and ".join(missing))
    return items


def _inspect_vhdx(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    header = _vhdx_current_header(path, reader)
    if header[48:64].strip(b"\x00"):
        raise UnsafeImageError(path, "its VHDX log must be replayed first (the image was not closed cleanly), and "
                               "qemu-img would have to write to it", "open and close it once in Hyper-V or qemu on a "
                               "trusted host (qemu-img check -r all), then use the result")
    metadata_offset, bat_offset, bat_length = _vhdx_regions(path, reader)
    items = _vhdx_metadata(path, reader, metadata_offset)
    block_size, flags = struct.unpack("<II", items[VHDX_META_FILE_PARAMETERS])
    virtual_size, = struct.unpack("<Q", items[VHDX_META_VIRTUAL_SIZE])
    logical_sector, = struct.unpack_from("<I", items[VHDX_META_LOGICAL_SECTOR])
    if flags & VHDX_PARAMS_HAS_PARENT:
        raise UnsafeImageError(path, "its VHDX file parameters say it has a parent disk",
                               "merge it into a standalone VHDX or qcow2 on a trusted host")
    if not VHDX_BLOCK_SIZE_MIN <= block_size <= VHDX_BLOCK_SIZE_MAX or block_size & (block_size - 1):
        raise _qemu_cannot_open(path, "vhdx", "block size %d (a power of two from 1 MiB to 256 MiB)" % block_size)
    if logical_sector not in (512, 4096):
        raise _qemu_cannot_open(path, "vhdx", "logical sector size %d (512 or 4096)" % logical_sector)
    if virtual_size > VHDX_MAX_IMAGE_SIZE:
        raise _qemu_cannot_open(path, "vhdx", "virtual size %d above VHDX's 64 TiB" % virtual_size)
    chunk_ratio = (1 << 23) * logical_sector // block_size
    data_blocks = -(-virtual_size // block_size)
    bat_entries = data_blocks + ((data_blocks - 1) // chunk_ratio if data_blocks else 0)
    if bat_entries * 8 > bat_length or bat_offset + bat_length > reader.size:
        raise _qemu_cannot_open(path, "vhdx", "its block table (%d entries needed) does not fit its BAT region or "
                                "the file" % bat_entries)
    return virtual_size // SECTOR * SECTOR, {"block_size": block_size, "logical_sector_size": logical_sector}


# ---------------------------------------------------------------------------------------------
# VDI
# ---------------------------------------------------------------------------------------------

def _inspect_vdi(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    header = reader.read(0, 0x200)
    if len(header) < 0x1C8:
        raise _corrupt(path, "vdi", "header shorter than 456 bytes")
    version, _header_size, image_type = struct.unpack_from("<III", header, 0x44)
    offset_bmap, offset_data = struct.unpack_from("<II", header, 0x154)
    sector_size, = struct.unpack_from("<I", header, 0x168)
    disk_size, block_size, _block_extra, blocks_in_image = struct.unpack_from("<QIII", header, 0x170)
    link_uuid, parent_uuid = header[0x1A8:0x1B8], header[0x1B8:0x1C8]
    if image_type == VDI_TYPE_DIFFERENCING or parent_uuid.strip(b"\x00"):
        raise UnsafeImageError(path, "it is a differencing VDI that refers to a parent image",
                               "merge it on a trusted host and use the result")
    if image_type not in VDI_TYPES:
        raise _corrupt(path, "vdi", "image type %d" % image_type)
    # vdi_open's checks, in its order.
    problem = None
    if disk_size > VDI_DISK_SIZE_MAX:
        problem = "disk size %d above qemu's %d" % (disk_size, VDI_DISK_SIZE_MAX)
    elif version != VDI_VERSION_1_1:
        problem = "version %d.%d (only 1.1 is read)" % (version >> 16, version & 0xFFFF)
    elif offset_bmap % SECTOR or offset_data % SECTOR:
        problem = "block map at %d or data at %d not sector-aligned" % (offset_bmap, offset_data)
    elif sector_size != SECTOR:
        problem = "sector size %d" % sector_size
    elif block_size != VDI_BLOCK_SIZE:
        problem = "block size %d (qemu reads 1 MiB blocks only)" % block_size
    elif -(-disk_size // SECTOR) * SECTOR > blocks_in_image * block_size:
        problem = "%d blocks of %d bytes do not cover a disk of %d bytes" % (blocks_in_image, block_size, disk_size)
    elif link_uuid.strip(b"\x00"):
        problem = "a non-null link UUID (a snapshot of another image)"
    elif blocks_in_image > VDI_BLOCKS_IN_IMAGE_MAX:
        problem = "%d blocks, above qemu's %d" % (blocks_in_image, VDI_BLOCKS_IN_IMAGE_MAX)
    if problem:
        raise _qemu_cannot_open(path, "vdi", problem)
    if offset_bmap < 0x200 or offset_data < offset_bmap + blocks_in_image * 4:
        raise _corrupt(path, "vdi", "block map at %d and data at %d overlap" % (offset_bmap, offset_data))
    # qemu rounds an odd disk size up to whole sectors.
    return -(-disk_size // SECTOR) * SECTOR, {"vdi_version": "%d.%d" % (version >> 16, version & 0xFFFF),
                                              "block_size": block_size, "vdi_type": VDI_TYPES[image_type]}


# ---------------------------------------------------------------------------------------------
# LUKS
# ---------------------------------------------------------------------------------------------

def _luks1_key_slot_problem(header: bytes, key_bytes: int, payload_sectors: int) -> Optional[str]:
    slots = [struct.unpack_from(">II32sII", header, 208 + 48 * i) for i in range(LUKS_KEY_SLOTS)]
    extents = []
    for index, (active, iterations, _salt, start, stripes) in enumerate(slots):
        length = -(-key_bytes * stripes // SECTOR)
        if stripes != LUKS_STRIPES:
            return "key slot %d is corrupted (stripes %d != %d)" % (index, stripes, LUKS_STRIPES)
        if active not in (LUKS_SLOT_ENABLED, LUKS_SLOT_DISABLED):
            return "key slot %d state (active/disabled) is corrupted" % index
        if active == LUKS_SLOT_ENABLED and iterations == 0:
            return "key slot %d iteration count is zero" % index
        if start < LUKS_KEY_SLOT_OFFSET // SECTOR:
            return "key slot %d overlaps the LUKS header" % index
        if start + length > payload_sectors:
            return "key slot %d overlaps the encrypted payload" % index
        for other, (other_start, other_length) in enumerate(extents):
            if start < other_start + other_length and other_start < start + length:
                return "key slots %d and %d overlap" % (other, index)
        extents.append((start, length))
    return None


def _luks1_cipher_problem(cipher: str, mode_spec: str, hash_spec: str, key_bytes: int) -> Optional[str]:
    """qcrypto_block_luks_parse_header: cipher name and key size, mode, IV generator, hashes."""
    mode, _dash, ivgen_spec = mode_spec.partition("-")
    if not _dash:
        return "unexpected cipher mode string %r (mode-ivgen[:hash])" % mode_spec
    ivgen, _colon, ivhash = ivgen_spec.partition(":")
    if _colon and ivhash not in LUKS_HASH_DIGEST_BYTES:
        return "IV hash algorithm %r is not supported" % ivhash
    if mode not in LUKS_CIPHER_MODES:
        return "cipher mode %r is not supported" % mode
    cipher_key_bytes = key_bytes // 2 if mode == "xts" else key_bytes
    if cipher_key_bytes not in LUKS_CIPHER_KEY_BYTES.get(cipher, ()):
        return "cipher %r with a %d-byte key is not supported" % (cipher, cipher_key_bytes)
    if hash_spec not in LUKS_HASH_DIGEST_BYTES:
        return "hash algorithm %r is not supported" % hash_spec
    if ivgen not in LUKS_IV_GENERATORS:
        return "IV generator %r is not supported" % ivgen
    if ivgen == "essiv":
        if not _colon:
            return "the essiv IV generator names no hash"
        if cipher not in LUKS_ESSIV_CIPHERS or LUKS_HASH_DIGEST_BYTES[ivhash] not in LUKS_CIPHER_KEY_BYTES[cipher]:
            return "cipher %r does not work with essiv:%s" % (cipher, ivhash)
    return None


def _luks1_problem(header: bytes) -> Optional[str]:
    """Why the host's qemu would refuse this LUKS header (qcrypto_block_luks_check_header and parse_header),
    or None."""
    if len(header) < LUKS_HEADER_BYTES:
        return "the header is %d bytes, shorter than LUKS's %d" % (len(header), LUKS_HEADER_BYTES)
    if header[:6] != LUKS_MAGIC:
        return "no LUKS magic"
    version, = struct.unpack_from(">H", header, 6)
    if version != 1:
        return ("it is LUKS version %d; qemu reads LUKS version 1 only (LUKS2 is what cryptsetup writes by "
                "default)" % version)
    strings = {}
    for name, offset in (("cipher name", 8), ("cipher mode", 40), ("hash spec", 72)):
        value = header[offset:offset + 32]
        if b"\x00" not in value:
            return "its %s is not NUL-terminated" % name
        strings[name] = _c_string(value).decode("latin-1")
    payload_sectors, key_bytes = struct.unpack_from(">II", header, 104)
    if payload_sectors < LUKS_KEY_SLOT_OFFSET // SECTOR:
        return "its payload (sector %d) overlaps the header" % payload_sectors
    return (_luks1_key_slot_problem(header, key_bytes, payload_sectors)
            or _luks1_cipher_problem(strings["cipher name"], strings["cipher mode"], strings["hash spec"],
                                     key_bytes))


def _inspect_luks(path: str, reader: _Reader) -> Tuple[int, Dict[str, Any]]:
    header = reader.read(0, LUKS_HEADER_BYTES)
    if len(header) < LUKS_HEADER_BYTES:
        raise _corrupt(path, "luks", "the file is %d bytes, shorter than a LUKS header" % reader.size)
    version, = struct.unpack_from(">H", header, 6)
    problem = _luks1_problem(header)
    if problem:
        advice = ("convert it to LUKS1 (cryptsetup convert --type luks1, or re-encrypt it with qemu-img convert "
                  "-O luks) on a trusted host" if version != 1 else "")
        raise _qemu_cannot_open(path, "luks", problem, advice)
    payload = struct.unpack_from(">I", header, 104)[0] * SECTOR
    if payload > reader.qemu_length:
        raise _corrupt(path, "luks", "payload offset %d beyond the end of the file" % payload)
    details = {"luks_version": version, "payload_offset": payload, "cipher": _c_string(header[8:40]).decode("latin-1")}
    return reader.qemu_length - payload, details


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


def _inspect_container(path: str, detected: str, reader: _Reader, head: bytes,
                       allow_luks: bool) -> Tuple[int, Dict[str, Any]]:
    """Virtual size and details of a non-raw format, or the refusal."""
    if detected == "qcow2":
        return _inspect_qcow2(path, reader, allow_luks)
    if detected == "vmdk":
        return _inspect_vmdk(path, reader, head)
    if detected == "vhd":
        return _inspect_vhd(path, reader)
    if detected == "vhdx":
        return _inspect_vhdx(path, reader)
    if detected == "vdi":
        return _inspect_vdi(path, reader)
    if detected == "qed":
        raise UnsafeImageError(path, "it is a QED image; QED is deprecated and its backing-file handling is "
                               "not trusted here", "convert it to qcow2 on a trusted host")
    if detected == "luks":
        if not allow_luks:
            raise UnsafeImageError(path, "it is a LUKS-encrypted image and encrypted images were not allowed",
                                   "set allow_luks if the image is meant to be encrypted, or provide a plain "
                                   "image")
        return _inspect_luks(path, reader)
    if detected in FOREIGN_FORMATS:
        raise UnsafeImageError(path, "it is a %s image, a format this collection does not accept"
                               % FOREIGN_FORMATS[detected], _CONVERT_ADVICE)
    raise UnsafeImageError(path, "its format %s is not supported" % detected)  # pragma: no cover


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
        details: Dict[str, Any] = {"detected_format": detected}
        partition_table = None
        if detected in ("raw",) + RAW_LAYOUTS:
            virtual_size = reader.qemu_length
            partition_table = where.get("partition_table")
            if where.get("filesystem"):
                details["filesystem"] = where["filesystem"]
        else:
            virtual_size, extra = _inspect_container(path, detected, reader, head, allow_luks)
            details.update(extra)
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
