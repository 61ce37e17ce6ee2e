# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: formatting a raw image file with a filesystem or a swap signature.

The mkfs tools write straight into a regular file (sparse, of the wanted size): no loop device, no
mount, nothing that needs a kernel module or leaves state behind. Tools are looked up in ``PATH``
only, so the message for a missing tool names the tool and the package that provides it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import FS_LABEL
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.qemu_img import child_preexec

MKFS_TIMEOUT = 1800

# fs type (_disk.spec.FS_TYPES and swap) -> (candidate tools in order of preference, Debian package,
# maximum label length)
FS_TOOLS: Dict[str, Dict] = {
    "ext4": {"tools": ["mkfs.ext4", "mke2fs"], "package": "e2fsprogs", "label_max": 16},
    "ext3": {"tools": ["mkfs.ext3", "mke2fs"], "package": "e2fsprogs", "label_max": 16},
    "ext2": {"tools": ["mkfs.ext2", "mke2fs"], "package": "e2fsprogs", "label_max": 16},
    "xfs": {"tools": ["mkfs.xfs"], "package": "xfsprogs", "label_max": 12, "min_size": 300 * 1000 * 1000},
    "vfat": {"tools": ["mkfs.vfat", "mkfs.fat"], "package": "dosfstools", "label_max": 11},
    "swap": {"tools": ["mkswap"], "package": "util-linux", "label_max": 16},
}
MIN_SIZE = 1 << 20


def validate_label(fs_type: str, label: Optional[str]) -> str:
    """``label`` ('' for none) if ``fs_type`` can hold it; else a VirtfleetError saying why."""
    label = label or ""
    spec = _spec(fs_type)
    if len(label) > spec["label_max"]:
        raise VirtfleetError("the label %r is too long for %s: at most %d characters"
                             % (label, fs_type, spec["label_max"]))
    # A label goes into superblocks and into cache file names: one safe character set (_identifiers).
    return FS_LABEL.check(label, "label")


def validate_size(fs_type: str, size: int) -> None:
    spec = _spec(fs_type)
    if size < MIN_SIZE:
        raise VirtfleetError("a %s disk needs at least 1 MiB (asked for %d bytes)" % (fs_type, size))
    if size % 512:
        raise VirtfleetError("the size of a %s disk must be a multiple of 512 bytes (asked for %d bytes)"
                             % (fs_type, size))
    if spec.get("min_size") and size < spec["min_size"]:
        raise VirtfleetError("mkfs.%s cannot make a filesystem smaller than 300 MB (%d bytes); ask for a larger "
                             "size or another fs_type" % (fs_type, spec["min_size"]))


def _spec(fs_type: str) -> Dict:
    spec = FS_TOOLS.get(fs_type)
    if spec is None:
        raise VirtfleetError("unsupported filesystem %r; use one of %s" % (fs_type, ", ".join(FS_TOOLS)))
    return spec


def find_tool(fs_type: str) -> str:
    """Absolute path of the tool that makes ``fs_type``; a clear message when none is installed."""
    spec = _spec(fs_type)
    for tool in spec["tools"]:
        found = shutil.which(tool)
        if found:
            return found
    raise VirtfleetError(
        "cannot make a %s %s: %s is not installed on the hypervisor (not found in PATH=%s). Install the %s "
        "package, or choose another fs_type." % (fs_type, "signature" if fs_type == "swap" else "filesystem",
                                                 " or ".join(spec["tools"]), os.environ.get("PATH", ""),
                                                 spec["package"]),
        missing_tool=spec["tools"][0])


def command(tool: str, fs_type: str, path: str, label: str) -> List[str]:
    """The command line that formats the file ``path`` (forced: it is a file, not a device)."""
    name = os.path.basename(tool)
    if fs_type == "swap":
        cmd = [tool]
        if label:
            cmd += ["-L", label]
        return cmd + [path]
    if fs_type in ("ext2", "ext3", "ext4"):
        cmd = [tool, "-q", "-F"]
        if name == "mke2fs":
            cmd += ["-t", fs_type]
        # lazy init: the inode tables and journal of a sparse file are already zero.
        cmd += ["-E", "lazy_itable_init=1,lazy_journal_init=1"]
        if label:
            cmd += ["-L", label]
        return cmd + [path]
    if fs_type == "xfs":
        cmd = [tool, "-q", "-f"]
        if label:
            cmd += ["-L", label]
        return cmd + [path]
    if fs_type == "vfat":
        cmd = [tool]
        if label:
            cmd += ["-n", label]
        return cmd + [path]
    raise VirtfleetError("unsupported filesystem %r" % fs_type)  # pragma: no cover - _spec refuses first


def _error_lines(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    interesting = [line for line in lines if not line.startswith(("/*", "<", "Usage:", "\t"))]
    return "; ".join((interesting or lines)[:3])


def make_filesystem(path: str, size: int, fs_type: str, label: str) -> None:
    """Create ``path`` as a sparse file of ``size`` bytes and format it with ``fs_type``."""
    label = validate_label(fs_type, label)
    validate_size(fs_type, size)
    tool = find_tool(fs_type)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    cmd = command(tool, fs_type, path, label)
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, timeout=MKFS_TIMEOUT, check=False, close_fds=True,
                              preexec_fn=child_preexec())
    except subprocess.TimeoutExpired:
        raise VirtfleetError("%s did not finish within %d seconds on %s" % (" ".join(cmd), MKFS_TIMEOUT, path))
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace") + proc.stdout.decode("utf-8", "replace")
        raise VirtfleetError("%s failed with exit code %d: %s" % (" ".join(cmd), proc.returncode,
                                                                  _error_lines(text) or "no error output"),
                             cmd=cmd, returncode=proc.returncode)
    if os.path.getsize(path) != size:
        raise VirtfleetError("%s changed the size of %s to %d bytes (expected %d)"
                             % (cmd[0], path, os.path.getsize(path), size))
