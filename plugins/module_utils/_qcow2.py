# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the one reader of qcow2 headers (fields as qemu's block/qcow2.c reads them).

Pure parsing, no policy: the image inspector decides what it refuses, a disk's virtual size is read
from here without starting qemu-img, and the in-use checks follow backing files named here. Nothing
here ever asks qemu-img: a guest can write a qcow2 header into a raw disk, and qemu-img must never be
made to follow the names such a header gives.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

MAGIC = b"QFI\xfb"
V2_HEADER_BYTES = 72
V3_HEADER_BYTES = 104
MAX_BACKING_NAME = 1023  # qemu refuses longer backing file names
MAX_EXTENSIONS = 64

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441


class HeaderError(ValueError):
    """The bytes are a qcow2 header that cannot be read (truncated, or extensions that run off)."""


@dataclass
class Header:
    """The fixed qcow2 header fields (version 3 fields are qemu's defaults for version 2)."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = V2_HEADER_BYTES
    compression_type: Optional[int] = None
    extensions: List[Tuple[int, bytes]] = field(default_factory=list)
    backing_file: Optional[str] = None

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def backing_format(self) -> Optional[str]:
        for ext_type, data in self.extensions:
            if ext_type == EXT_BACKING_FORMAT:
                return data.decode("utf-8", "replace")
        return None


def is_qcow2(head: bytes) -> bool:
    return head[:4] == MAGIC


def parse_fixed(head: bytes) -> Header:
    """The fixed fields from the first 72 (version 2) or 104 (version 3) bytes."""
    if len(head) < V2_HEADER_BYTES or head[:4] != MAGIC:
        raise HeaderError("not a qcow2 header (%d bytes)" % len(head))
    fields = struct.unpack_from(">IIQIIQIIQQIIQ", head)
    header = Header(*fields[1:])
    if header.version >= 3:
        if len(head) < V3_HEADER_BYTES:
            raise HeaderError("a version 3 qcow2 header needs %d bytes, got %d" % (V3_HEADER_BYTES, len(head)))
        (header.incompatible_features, header.compatible_features, header.autoclear_features,
         header.refcount_order, header.header_length) = struct.unpack_from(">QQQII", head, V2_HEADER_BYTES)
        if header.header_length > V3_HEADER_BYTES and len(head) > V3_HEADER_BYTES:
            header.compression_type = head[V3_HEADER_BYTES]
    return header


def parse_extensions(cluster: bytes, start: int) -> List[Tuple[int, bytes]]:
    """Header extensions (type, data) from ``start`` up to the end marker, within ``cluster``."""
    extensions: List[Tuple[int, bytes]] = []
    offset = start
    for _extension in range(MAX_EXTENSIONS):
        if offset + 8 > len(cluster):
            raise HeaderError("header extensions run past the first cluster")
        ext_type, ext_len = struct.unpack_from(">II", cluster, offset)
        if ext_type == EXT_END:
            return extensions
        data_start = offset + 8
        if data_start + ext_len > len(cluster):
            raise HeaderError("header extension 0x%08x of %d bytes runs past the first cluster" % (ext_type, ext_len))
        extensions.append((ext_type, cluster[data_start:data_start + ext_len]))
        offset = data_start + ((ext_len + 7) & ~7)
    raise HeaderError("more than %d header extensions" % MAX_EXTENSIONS)


def parse(cluster: bytes) -> Header:
    """The whole header from the file's first cluster (or as much of it as exists): fixed fields,
    extensions (version 3) and the backing file name."""
    header = parse_fixed(cluster)
    if header.version >= 3 and header.header_length >= V3_HEADER_BYTES:
        header.extensions = parse_extensions(cluster, header.header_length)
    if header.backing_file_offset and 0 < header.backing_file_size <= MAX_BACKING_NAME:
        end = header.backing_file_offset + header.backing_file_size
        if end <= len(cluster):
            header.backing_file = cluster[header.backing_file_offset:end].decode("utf-8", "replace")
    return header


def read(path: str, max_bytes: int = 2 << 20) -> Optional[Header]:
    """The header of the regular file ``path`` (not followed through a symlink); None when it is not a
    readable qcow2 file. Opened non-blocking: a FIFO planted under a disk's name must not hang the run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, V3_HEADER_BYTES, 0)
        if not is_qcow2(head):
            return None
        try:
            cluster_bits = parse_fixed(head).cluster_bits
        except HeaderError:
            return None
        cluster = os.pread(fd, min(1 << min(cluster_bits, 30), max_bytes), 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return parse(cluster)
    except HeaderError:
        return None


def backing_file_of(path: str) -> Optional[str]:
    """The backing file a qcow2 file names, made absolute against its directory; None for anything else."""
    header = read(path)
    if header is None or not header.backing_file:
        return None
    backing = header.backing_file
    if not os.path.isabs(backing):
        backing = os.path.join(os.path.dirname(path), backing)
    return os.path.normpath(backing)
