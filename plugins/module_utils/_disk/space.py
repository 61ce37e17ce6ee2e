# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: whether a disk fits where it is written, and what to say when it does not.

A full filesystem (ENOSPC, EDQUOT) or a file larger than the filesystem takes (EFBIG) must end in a
message that names the file, the space it needs and the space there is, never in a traceback. The
largest file an ext4 filesystem takes is known from its block size, so a disk that cannot fit there
is refused while planning (in check mode too); any other filesystem says so when it is written.
"""

from __future__ import annotations

import errno
import os
from typing import Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import format_size

NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# How qemu-img and the mkfs tools say the same (with LC_ALL=C).
NO_ROOM_WORDS = ("No space left on device", "Disk quota exceeded", "File too large", "image size is too large")
MOUNTINFO = "/proc/self/mountinfo"
EXT4_MAX_BLOCKS = (1 << 32) - 1  # a file's logical block numbers are 32-bit (extents)


def existing_dir(path: str) -> str:
    """The nearest directory above ``path`` that exists (where a new file's filesystem is)."""
    directory = os.path.dirname(path)
    while directory and not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory or "/"


def filesystem_type(directory: str) -> Optional[str]:
    """The type of the filesystem holding ``directory`` (from the kernel's mount table), or None."""
    try:
        dev = os.stat(directory).st_dev
        with open(MOUNTINFO, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    wanted = "%d:%d" % (os.major(dev), os.minor(dev))
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and " - " in line:
            return line.split(" - ", 1)[1].split()[0]
    return None


def max_file_size(directory: str) -> Optional[int]:
    """The largest file the filesystem holding ``directory`` takes, when it is known (ext4); else None."""
    if filesystem_type(directory) != "ext4":
        return None
    try:
        return EXT4_MAX_BLOCKS * os.statvfs(directory).f_bsize
    except OSError:
        return None


def check_file_fits(path: str, size: int) -> None:
    """Refuse, before anything is written, a file of ``size`` bytes that the filesystem of ``path`` cannot hold."""
    directory = existing_dir(path)
    limit = max_file_size(directory)
    if limit is not None and size > limit:
        raise VirtfleetError(
            "cannot make %s: a file of %s (%d bytes) is larger than the %s filesystem holding %s allows (%s); ask "
            "for a smaller size, or keep instances_path on a filesystem that takes larger files. Nothing was written."
            % (path, format_size(size), size, filesystem_type(directory), directory, format_size(limit)))


def free_bytes(directory: str) -> Optional[int]:
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def is_no_room(exc: BaseException) -> bool:
    """Whether ``exc`` says the filesystem is full or the file too large (an OSError, or a tool's message)."""
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM_ERRNOS
    text = "%s %s" % (getattr(exc, "msg", "") or exc, getattr(exc, "stderr", "") or "")
    return any(words in text for words in NO_ROOM_WORDS)


def no_room_error(path: str, needed: Optional[int], exc: BaseException) -> VirtfleetError:
    """The message for a disk that did not fit: which file, what it needs, what there is, and that nothing was
    left behind under its name."""
    directory = existing_dir(path)
    free = free_bytes(directory)
    too_large = (isinstance(exc, OSError) and exc.errno == errno.EFBIG) or "too large" in str(exc)
    if too_large:
        what = "the file is larger than the filesystem holding %s allows" % directory
    else:
        shown = "unknown" if free is None else format_size(free)
        what = "the filesystem holding %s is full (%s free)" % (directory, shown)
    need = "" if needed is None else "; it needs about %s" % format_size(needed)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:  # a tool's own words: its first line about it
        lines = [line.strip() for line in (getattr(exc, "stderr", "") or str(exc)).splitlines() if line.strip()]
        reason = next((line for line in lines if any(words in line for words in NO_ROOM_WORDS)), lines[0] if lines
                      else str(exc))
    return VirtfleetError(
        "cannot write %s: %s%s (%s). Nothing was left under its name and its record is unchanged; free space "
        "there (or ask for a smaller disk, or use another instances_path) and run again."
        % (path, what, need, reason), path=path, needed_bytes=needed, free_bytes=free)
