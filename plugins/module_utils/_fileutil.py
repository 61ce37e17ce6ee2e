# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: atomic file writes.

A file we produce (downloaded image, disk, XML, config drive) appears under its final name
complete and fsync'ed, or not at all: it is written under a temporary name unique to this
process in the same directory, then renamed. On any failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator, Optional

TEMP_MARKER = ".virtfleet-tmp-"


def temp_path_for(path: str) -> str:
    """A temporary sibling of ``path`` unique to this process (same filesystem, so rename is atomic)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, "%s%s%d-%s" % (name, TEMP_MARKER, os.getpid(), uuid.uuid4().hex[:8]))


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
