# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: atomic file writes, exclusive locks and small JSON records.

A file we produce (downloaded image, disk, XML, config drive) appears under its final name
complete and fsync'ed, or not at all: it is written under a temporary name unique to this
process in the same directory, then renamed. On any failure the temporary file is removed.
Shared files (cached bases) are built under an exclusive flock, so concurrent runs build once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from typing import Any, Callable, Dict, Iterator, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import TEMP_MARKER


def temp_path_for(path: str) -> str:
    """A temporary sibling of ``path`` unique to this process (same filesystem, so rename is atomic)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, "%s%s%d-%s" % (name, TEMP_MARKER, os.getpid(), os.urandom(4).hex()))


def fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Optional[str]) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_output(path: str, mode: int = 0o644) -> Iterator[str]:
    """Yield a temporary path to fill; on success it is fsync'ed, chmod'ed and renamed to ``path``."""
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError("expected %s to be written" % tmp)
        os.chmod(tmp, mode)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path))
    except BaseException:
        remove_quietly(tmp)
        raise


def write_file_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` (set before any byte lands)."""
    with atomic_output(path, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def read_bytes(path: str) -> Optional[bytes]:
    """Content of ``path``, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


LOCK_POLL_MAX = 0.05


@contextlib.contextmanager
def file_lock(lock_path: str, timeout: float, what: str, advice: str = "", shared: bool = False) -> Iterator[None]:
    """flock on ``lock_path`` (shared: many readers, exclusive: one writer), waiting up to ``timeout`` seconds."""
    os.makedirs(os.path.dirname(lock_path), mode=0o755, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise VirtfleetError("timed out after %d s waiting for the lock %s held by another run working "
                                         "on %s%s" % (timeout, lock_path, what, "; " + advice if advice else ""))
                time.sleep(delay)
                # short polls: a batch's threads wait on each other's locks (one fetch of an image for many
                # guests), and a waiter that oversleeps the release delays its guest by that much
                delay = min(delay * 2, LOCK_POLL_MAX)
        yield
    finally:
        os.close(fd)


def exclusive_lock(lock_path: str, timeout: float, what: str, advice: str = ""):
    """Exclusive ``file_lock``: the one run that builds or removes what the lock guards."""
    return file_lock(lock_path, timeout, what, advice)


def read_json_record(path: str) -> Optional[Dict[str, Any]]:
    """A JSON object from ``path``; None when the file is missing, unreadable as JSON, or not an object."""
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


COPY_CHUNK = 1 << 20
_FICLONE = 0x40049409  # ioctl(dst, FICLONE, src): share the source's extents (btrfs, xfs, ...)


def copy_sparse(src: str, dst: str, mode: int, after_chunk: Optional[Callable[[int], None]] = None) -> None:
    """Publish at ``dst`` a copy of ``src`` (atomically, with ``mode`` and ``src``'s owner), sharing extents
    where the file system can (reflink) and otherwise copying only the data: holes stay holes.

    ``after_chunk(bytes copied so far)`` is called after each chunk written, or once after a reflink (a caller's
    progress or fault hook); what it raises leaves nothing behind.
    """
    with atomic_output(dst, mode) as tmp:
        with open(src, "rb") as source:
            info = os.fstat(source.fileno())
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as target:
                if _reflink(source.fileno(), target.fileno()):
                    if after_chunk is not None:
                        after_chunk(info.st_size)  # one shared "chunk"
                else:
                    _copy_data(source.fileno(), target.fileno(), info.st_size, after_chunk)
                    target.truncate(info.st_size)
        if os.geteuid() == 0:
            os.chown(tmp, info.st_uid, info.st_gid)


def _reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
    except OSError:
        return False
    return True


def _copy_data(src_fd: int, dst_fd: int, size: int, after_chunk: Optional[Callable[[int], None]]) -> None:
    """Copy the data extents of ``src_fd`` (SEEK_DATA/SEEK_HOLE), leaving the holes unwritten."""
    offset, copied = 0, 0
    while offset < size:
        try:
            start = os.lseek(src_fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        end = os.lseek(src_fd, start, os.SEEK_HOLE)
        position = start
        while position < end:
            count = min(COPY_CHUNK, end - position)
            data = os.pread(src_fd, count, position)
            if not data:
                return
            written = 0
            while written < len(data):
                written += os.pwrite(dst_fd, data[written:], position + written)
            position += len(data)
            copied += len(data)
            if after_chunk is not None:
                after_chunk(copied)
        offset = end


def allocated_bytes(path: str) -> int:
    """Bytes ``path`` occupies on its file system (its data, not its holes)."""
    return os.stat(path).st_blocks * 512
