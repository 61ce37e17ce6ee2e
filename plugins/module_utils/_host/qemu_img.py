# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the only place that runs qemu-img.

Rules every call follows, because each closes a known hole:

- the format is always given with ``-f`` (and ``-F`` for a backing file): qemu-img never
  probes a file a guest or a download could have shaped (CVE-2024-40767, CVE-2026-24708);
- paths are made absolute, so a name like ``json:{...}`` or ``nbd:...`` cannot be read as a
  qemu protocol, and a name starting with ``-`` cannot be read as an option;
- read-only inspection (info, check, measure) runs under resource limits like Nova's
  (1 GiB address space, 30 s CPU), so a crafted image cannot exhaust the host;
- ``LC_ALL=C`` so messages are stable enough to match (lock errors), and every call has a
  timeout;
- the child dies with us (``PR_SET_PDEATHSIG``): a module killed with SIGKILL in the middle of a
  copy leaves no qemu-img writing on (its temporary file is removed under the lock by the next run).

Callers pass our format names (``vhd``) or qemu's (``vpc``); both are accepted.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.qemu_formats import (
    QEMU_DRIVERS, QEMU_FORMAT_NAMES,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size

QEMU_IMG_BINARY = "qemu-img"
# Nova's limits for qemu-img on untrusted input.
INSPECT_ADDRESS_SPACE = 1024 * 1024 * 1024
INSPECT_CPU_SECONDS = 30
INSPECT_TIMEOUT = 120
WRITE_TIMEOUT = 3600
STDERR_LINES = 5
_LOCK_RE = re.compile(r'Failed to get "?\w*"? ?lock|Is another process using the image', re.IGNORECASE)
_OPTION_KEY_RE = re.compile(r"[a-z][a-z0-9_.-]*")


class QemuImgError(VirtfleetError):
    """qemu-img failed; ``cmd``, ``returncode`` and ``stderr`` say how."""

    def __init__(self, msg: str, cmd: Sequence[str], returncode: Optional[int], stderr: str) -> None:
        super().__init__(msg, cmd=list(cmd), returncode=returncode, stderr=stderr)
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr


def qemu_format(fmt: Optional[str]) -> str:
    """qemu's driver name for ``fmt``; refuses a missing format so that qemu-img never probes."""
    if not fmt or not isinstance(fmt, str):
        raise ValueError("a qemu-img call needs an explicit image format (-f); refusing to let qemu-img probe "
                         "the format (got %r)" % (fmt,))
    name = QEMU_FORMAT_NAMES.get(fmt.lower(), fmt.lower())
    if name not in QEMU_DRIVERS:
        raise ValueError("unsupported image format %r for qemu-img; use one of %s"
                         % (fmt, ", ".join(sorted(QEMU_DRIVERS))))
    return name


def _abs(path: str) -> str:
    if not path or not isinstance(path, str):
        raise ValueError("a qemu-img call needs a file path (got %r)" % (path,))
    return os.path.abspath(path)


def _size_arg(size: Union[int, str]) -> str:
    try:
        value = parse_size(size, "size")
    except SizeError as exc:
        raise VirtfleetError(str(exc))
    if value < 0:
        raise VirtfleetError("size must not be negative (got %r)" % (size,))
    return str(value)


def _options_arg(options: Optional[Mapping[str, Any]]) -> List[str]:
    """``-o key=value,...`` with qemu's comma escaping (a literal comma is written twice)."""
    if not options:
        return []
    parts = []
    for key, value in sorted(options.items()):
        if not _OPTION_KEY_RE.fullmatch(str(key)):
            raise ValueError("invalid qemu-img option name %r" % (key,))
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append("%s=%s" % (key, str(value).replace(",", ",,")))
    return ["-o", ",".join(parts)]


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl_function: List[Any] = []


def _prctl():
    """libc's prctl, looked up in the parent (a forked child should call, not load)."""
    if not _prctl_function:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).prctl
            function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            function.restype = ctypes.c_int
        except (ImportError, OSError, AttributeError):
            function = None
        _prctl_function.append(function)
    return _prctl_function[0]


def child_preexec(limited: bool = False) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child die with this process (SIGKILL when we die, even by SIGKILL),
    and, when ``limited``, puts it under the inspection limits."""
    parent, prctl = os.getpid(), _prctl()

    def setup() -> None:  # pragma: no cover - runs in the child process
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # we died before the signal was armed
                os._exit(111)
        if limited:
            _limit_resources()
    return setup


def _limit_resources() -> None:  # pragma: no cover - runs in the child process
    resource.setrlimit(resource.RLIMIT_AS, (INSPECT_ADDRESS_SPACE, INSPECT_ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (INSPECT_CPU_SECONDS, INSPECT_CPU_SECONDS))


def _first_lines(text: str, count: int = STDERR_LINES) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    shown = "; ".join(line.strip().rstrip(".") for line in lines[:count])
    if len(lines) > count:
        shown += "; ..."
    return shown


def _advice(operation: str, stderr: str) -> str:
    if _LOCK_RE.search(stderr):
        return ("the image is in use by another process (qemu's image lock, usually a running guest); shut the "
                "guest down or use a live operation")
    if "No such file" in stderr or "Could not open" in stderr:
        return "check that the file exists, is readable, and is in the format given"
    if operation == "resize" and "shrink" in stderr.lower():
        return "shrinking loses data; ask for a size at least as large as the current one"
    if "No space left" in stderr:
        return "free space on the target filesystem"
    return "check that the file is a valid image in the format given"


def _run(operation: str, args: List[str], path: str, fmt: str, limited: bool, timeout: int) -> str:
    """Run qemu-img; on any failure raise QemuImgError naming the operation, file and qemu's words."""
    cmd = [QEMU_IMG_BINARY] + args
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, timeout=timeout, check=False, close_fds=True,
                              preexec_fn=child_preexec(limited))
    except FileNotFoundError:
        raise QemuImgError("qemu-img is not installed (needed to %s %s); install the qemu-utils package"
                           % (operation, path), cmd, None, "")
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise QemuImgError("qemu-img %s of %s (format %s) did not finish within %d seconds and was stopped; check "
                           "the storage and the image" % (operation, path, fmt, timeout), cmd, None, stderr)
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 and not (operation == "check" and proc.returncode in (2, 3)):
        if proc.returncode < 0 and limited:
            stderr = stderr or "killed by signal %d (resource limit reached?)" % -proc.returncode
        raise QemuImgError("qemu-img %s of %s (format %s) failed with exit code %d: %s. What to do: %s"
                           % (operation, path, fmt, proc.returncode, _first_lines(stderr) or "no error output",
                              _advice(operation, stderr)), cmd, proc.returncode, stderr)
    return stdout


def _parse_json(operation: str, stdout: str, cmd: List[str], path: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError:
        raise QemuImgError("qemu-img %s of %s printed output that is not JSON: %s" % (operation, path,
                                                                                      _first_lines(stdout)),
                           cmd, 0, "")


def info(path: str, fmt: str, backing_chain: bool = False, force_share: bool = True) -> Dict[str, Any]:
    """``qemu-img info`` as a dict; ``force_share`` (-U) lets it read disks of running guests.

    With ``backing_chain`` the top image's dict gets a ``chain`` key holding every layer.
    """
    qfmt, apath = qemu_format(fmt), _abs(path)
    args = ["info", "-f", qfmt, "--output=json"]
    if force_share:
        args.append("-U")
    if backing_chain:
        args.append("--backing-chain")
    args.append(apath)
    stdout = _run("info", args, apath, qfmt, limited=True, timeout=INSPECT_TIMEOUT)
    data = _parse_json("info", stdout, [QEMU_IMG_BINARY] + args, apath)
    if backing_chain:
        layers = data if isinstance(data, list) else [data]
        top = dict(layers[0]) if layers else {}
        top["chain"] = layers
        return top
    return data


def check(path: str, fmt: str) -> Dict[str, Any]:
    """``qemu-img check`` as a dict (``corruptions``/``leaks`` say what it found).

    Formats without a consistency check (raw) give ``{"supported": False}`` rather than an error.
    """
    qfmt, apath = qemu_format(fmt), _abs(path)
    args = ["check", "-f", qfmt, "--output=json", "-U", apath]
    try:
        stdout = _run("check", args, apath, qfmt, limited=True, timeout=INSPECT_TIMEOUT)
    except QemuImgError as exc:
        if exc.returncode == 63:
            return {"filename": apath, "format": qfmt, "supported": False}
        raise
    data = _parse_json("check", stdout, [QEMU_IMG_BINARY] + args, apath)
    if isinstance(data, dict):
        data.setdefault("supported", True)
    return data


def measure(path: str, fmt: str, out_fmt: str) -> Dict[str, Any]:
    """``qemu-img measure``: bytes ``out_fmt`` would need (``required``, ``fully-allocated``)."""
    qfmt, ofmt, apath = qemu_format(fmt), qemu_format(out_fmt), _abs(path)
    args = ["measure", "-f", qfmt, "-O", ofmt, "--output=json", apath]
    stdout = _run("measure", args, apath, qfmt, limited=True, timeout=INSPECT_TIMEOUT)
    return _parse_json("measure", stdout, [QEMU_IMG_BINARY] + args, apath)


def create(path: str, fmt: str, size: Optional[Union[int, str]], backing_file: Optional[str] = None,
           backing_fmt: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
           preallocation: Optional[str] = None) -> None:
    """``qemu-img create``; a backing file always comes with its format (-F), never probed."""
    qfmt, apath = qemu_format(fmt), _abs(path)
    opts = dict(options or {})
    if preallocation:
        opts["preallocation"] = preallocation
    args = ["create", "-f", qfmt] + _options_arg(opts)
    if backing_file:
        if not backing_fmt:
            raise ValueError("a backing file needs its format (backing_fmt, passed as -F); qemu-img must not "
                             "probe %s" % backing_file)
        args += ["-b", _abs(backing_file), "-F", qemu_format(backing_fmt)]
    elif backing_fmt:
        raise ValueError("backing_fmt given without backing_file")
    args.append(apath)
    if size is not None:
        args.append(_size_arg(size))
    elif not backing_file:
        raise ValueError("creating %s needs a size (only an overlay can take its backing file's size)" % apath)
    _run("create", args, apath, qfmt, limited=False, timeout=WRITE_TIMEOUT)


def convert(src: str, src_fmt: str, dst: str, dst_fmt: str, options: Optional[Mapping[str, Any]] = None,
            sparse: bool = True) -> None:
    """``qemu-img convert`` from ``src`` (read as ``src_fmt``) to a new ``dst``; zeros stay holes when sparse."""
    sfmt, dfmt, asrc, adst = qemu_format(src_fmt), qemu_format(dst_fmt), _abs(src), _abs(dst)
    args = ["convert", "-f", sfmt, "-O", dfmt] + _options_arg(options)
    if not sparse:
        args += ["-S", "0"]
    args += [asrc, adst]
    _run("convert", args, asrc, sfmt, limited=False, timeout=WRITE_TIMEOUT)


def resize(path: str, fmt: str, size: Union[int, str], shrink: bool = False) -> None:
    """``qemu-img resize`` to an absolute size; shrinking must be asked for explicitly."""
    qfmt, apath = qemu_format(fmt), _abs(path)
    args = ["resize", "-f", qfmt]
    if shrink:
        args.append("--shrink")
    args += [apath, _size_arg(size)]
    _run("resize", args, apath, qfmt, limited=False, timeout=WRITE_TIMEOUT)


def is_locked_error(exc: BaseException) -> bool:
    """True when qemu-img failed because another process (a running guest) holds the image lock."""
    stderr = getattr(exc, "stderr", None) or ""
    return isinstance(exc, QemuImgError) and bool(_LOCK_RE.search(stderr))
