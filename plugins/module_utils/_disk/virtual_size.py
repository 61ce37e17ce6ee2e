# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the virtual size of a disk file we made, read in Python.

A re-run compares an existing disk's virtual size with the one asked for. ``qemu-img info`` would
cost a process; the answer is in the file: a raw disk's size is its length, a qcow2 disk's size is a
field of its header (offset 24, big-endian). Only for disks whose format we recorded when we made
them: the format is never guessed from the bytes (a guest can write any header into its raw disk),
and a downloaded image goes through ``_image_format``'s inspector instead.

The answer is qemu-img's own: qemu counts whole 512-byte sectors, rounding a raw file's length up
and a qcow2 header's size down. A qcow2 header that is anything but ordinary (not qcow2 version 2
or 3, unknown, corrupt or external-data feature bits, encryption, tables qemu would refuse to open)
gives None, and the caller asks qemu-img (with ``-f``), which says what is wrong in its own words.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Optional

SECTOR = 512
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_V2_HEADER = 72
QCOW2_V3_HEADER = 104
# Incompatible feature bits read here: dirty (a running guest with lazy refcounts), compression
# type, extended L2 entries. Corrupt (1) and external data file (4) are left to qemu-img.
QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_COMPRESSION = 1 << 3
QCOW2_INCOMPAT_EXTL2 = 1 << 4
QCOW2_INCOMPAT_READ_HERE = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2
# qemu's limits when it opens a qcow2 file (block/qcow2.h).
QCOW2_MIN_CLUSTER_BITS = 9
QCOW2_MAX_CLUSTER_BITS = 21
QCOW2_MAX_REFTABLE_BYTES = 8 << 20
QCOW2_MAX_L1_BYTES = 32 << 20
QCOW2_SNAPSHOT_HEADER_BYTES = 40
QCOW2_MAX_SNAPSHOTS = 65536
INT64_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1


def recorded_virtual_size(path: str, fmt: str, st: Optional[os.stat_result] = None) -> Optional[int]:
    """Virtual size of our disk ``path`` in its recorded format ``fmt``, as qemu-img info reports it.

    ``st`` is the file's stat when the caller has it (a raw disk then needs no further read). None
    when this cannot vouch for the answer: ask qemu-img.
    """
    if fmt == "raw":
        if st is None:
            try:
                st = os.stat(path)
            except OSError:
                return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return -(-st.st_size // SECTOR) * SECTOR
    if fmt == "qcow2":
        return _qcow2_file_virtual_size(path)
    return None


def _qcow2_file_virtual_size(path: str) -> Optional[int]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        head = os.pread(fd, QCOW2_V3_HEADER, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    return qcow2_virtual_size(head, st.st_size)


def _table_ok(offset: int, entries: int, entry_bytes: int, max_bytes: int, cluster_size: int) -> bool:
    """qemu's qcow2_validate_table: not too many entries, cluster-aligned, no overflow."""
    if entries > max_bytes // entry_bytes:
        return False
    return offset % cluster_size == 0 and offset <= INT64_MAX - entries * entry_bytes


def qcow2_virtual_size(head: bytes, file_size: int) -> Optional[int]:
    """Virtual size from the first bytes of a qcow2 file (at least 104 for version 3); None if unusual."""
    if len(head) < QCOW2_V2_HEADER or head[:4] != QCOW2_MAGIC:
        return None
    (_magic, version, backing_offset, _backing_size, cluster_bits, size, crypt_method, l1_size, l1_offset,
     reftable_offset, reftable_clusters, nb_snapshots, snapshots_offset) = struct.unpack_from(">IIQIIQIIQQIIQ", head)
    if version not in (2, 3) or not QCOW2_MIN_CLUSTER_BITS <= cluster_bits <= QCOW2_MAX_CLUSTER_BITS:
        return None
    cluster_size = 1 << cluster_bits
    incompatible, refcount_order, header_length = 0, 4, QCOW2_V2_HEADER
    if version == 3:
        if len(head) < QCOW2_V3_HEADER:
            return None
        incompatible, _compatible, _autoclear, refcount_order, header_length = struct.unpack_from(">QQQII", head, 72)
        if header_length < QCOW2_V3_HEADER:
            return None
    if header_length > cluster_size or header_length > file_size:
        return None
    if backing_offset > cluster_size or incompatible & ~QCOW2_INCOMPAT_READ_HERE or refcount_order > 6 \
            or crypt_method or not reftable_clusters:
        return None
    if not (_table_ok(reftable_offset, reftable_clusters, cluster_size, QCOW2_MAX_REFTABLE_BYTES, cluster_size)
            and _table_ok(snapshots_offset, nb_snapshots, QCOW2_SNAPSHOT_HEADER_BYTES,
                          QCOW2_SNAPSHOT_HEADER_BYTES * QCOW2_MAX_SNAPSHOTS, cluster_size)
            and _table_ok(l1_offset, l1_size, 8, QCOW2_MAX_L1_BYTES, cluster_size)):
        return None
    # The L1 table must cover the virtual size: each entry maps one L2 table of clusters.
    l2_bits = cluster_bits - (4 if incompatible & QCOW2_INCOMPAT_EXTL2 else 3)
    shift = cluster_bits + l2_bits
    l1_needed = (size + (1 << shift) - 1) >> shift
    if l1_needed > INT_MAX or l1_size < l1_needed:
        return None
    return size // SECTOR * SECTOR
