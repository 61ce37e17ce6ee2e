# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the virtual size of a disk file we made, read in Python.

A re-run compares an existing disk's virtual size with the one asked for. ``qemu-img info`` would
cost a process; the answer is in the file: a raw disk's size is its length, a qcow2 disk's size is a
field of its header (offset 24, big-endian). Only for disks whose format we recorded when we made
them: the format is never guessed from the bytes (a guest can write any header into its raw disk),
and a downloaded image goes through ``_image.format``'s inspector instead. The header's fields come
from ``_qcow2`` (the one reader); the rules that say whether qemu would open it as is stay here.

The answer is qemu-img's own: qemu counts whole 512-byte sectors, rounding a raw file's length up
and a qcow2 header's size down. A qcow2 header that is anything but ordinary (not qcow2 version 2
or 3, unknown, corrupt or external-data feature bits, encryption, tables qemu would refuse to open)
gives None, and the caller asks qemu-img (with ``-f``), which says what is wrong in its own words.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2

SECTOR = 512
# Incompatible feature bits read here: dirty (a running guest with lazy refcounts), compression
# type, extended L2 entries. Corrupt (1) and external data file (4) are left to qemu-img.
INCOMPAT_READ_HERE = qcow2.INCOMPAT_DIRTY | qcow2.INCOMPAT_COMPRESSION | qcow2.INCOMPAT_EXTL2
# qemu's limits when it opens a qcow2 file (block/qcow2.h).
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_REFTABLE_BYTES = 8 << 20
MAX_L1_BYTES = 32 << 20
SNAPSHOT_HEADER_BYTES = 40
MAX_SNAPSHOTS = 65536
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
        head = os.pread(fd, qcow2.V3_HEADER_BYTES, 0)
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
    try:
        header = qcow2.parse_fixed(head)
    except qcow2.HeaderError:
        return None
    if header.version not in (2, 3) or not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
        return None
    cluster_size = header.cluster_size
    if header.version == 3 and header.header_length < qcow2.V3_HEADER_BYTES:
        return None
    if header.header_length > cluster_size or header.header_length > file_size:
        return None
    incompatible = header.incompatible_features
    if header.backing_file_offset > cluster_size or incompatible & ~INCOMPAT_READ_HERE \
            or header.refcount_order > 6 or header.crypt_method or not header.refcount_table_clusters:
        return None
    if not (_table_ok(header.refcount_table_offset, header.refcount_table_clusters, cluster_size,
                      MAX_REFTABLE_BYTES, cluster_size)
            and _table_ok(header.snapshots_offset, header.nb_snapshots, SNAPSHOT_HEADER_BYTES,
                          SNAPSHOT_HEADER_BYTES * MAX_SNAPSHOTS, cluster_size)
            and _table_ok(header.l1_table_offset, header.l1_size, 8, MAX_L1_BYTES, cluster_size)):
        return None
    # The L1 table must cover the virtual size: each entry maps one L2 table of clusters.
    l2_bits = header.cluster_bits - (4 if incompatible & qcow2.INCOMPAT_EXTL2 else 3)
    shift = header.cluster_bits + l2_bits
    l1_needed = (header.size + (1 << shift) - 1) >> shift
    if l1_needed > INT_MAX or header.l1_size < l1_needed:
        return None
    return header.size // SECTOR * SECTOR


def qcow2_damage(path: str, file_size: int) -> Optional[str]:
    """Why the qcow2 disk ``path`` (``file_size`` bytes long) cannot be the file that was made: no qcow2 header
    any more, or a header whose tables lie past the end of the file (it was cut short). None when it looks
    whole; a cheap look at the header only, never a read of the data."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return "it cannot be read (%s)" % (exc.strerror or exc)
    try:
        head = os.pread(fd, qcow2.V3_HEADER_BYTES, 0)
    except OSError as exc:
        return "it cannot be read (%s)" % (exc.strerror or exc)
    finally:
        os.close(fd)
    if not qcow2.is_qcow2(head):
        return "it has no qcow2 header any more (%d bytes long)" % file_size
    try:
        header = qcow2.parse_fixed(head)
    except qcow2.HeaderError:
        return "its qcow2 header is cut short (%d bytes long)" % file_size
    ends = (header.l1_table_offset + header.l1_size * 8,
            header.refcount_table_offset + header.refcount_table_clusters * header.cluster_size)
    if max(ends) > file_size:
        return ("its qcow2 header names tables up to byte %d, but the file is only %d bytes long (it was cut short)"
                % (max(ends), file_size))
    return None
