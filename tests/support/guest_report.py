"""Parse what the test guest (tests/guest/init) says on its serial console.

The guest prints one ``VFREPORT <seq> <kind> key=value ...`` line per fact between
``VFREPORT <seq> begin mode=<mode> boot=<id>`` and ``VFREPORT <seq> end``. A console log is
appended to across boots, so a log may hold many reports; the last complete one is the
guest's current testimony. Kernel messages may share the serial line, so lines are found by
their prefix wherever they start.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

_LINE = re.compile(r"VFREPORT (\d+) (\S+)((?: \S+=\S*)*)")
_POWEROFF = re.compile(r"VFREPORT (acpi-poweroff|poweroff)\b")
_BEAT = re.compile(r"VFBEAT (\d+) boot=(\S+) up=([0-9.]+)")


@dataclass
class Report:
    seq: int
    mode: str = ""
    boot: str = ""
    cpus: Optional[int] = None
    mem_kib: Optional[int] = None
    disks: Dict[str, Dict[str, int]] = field(default_factory=dict)
    filesystems: Dict[str, Dict[str, str]] = field(default_factory=dict)
    swaps: Dict[str, Dict[str, str]] = field(default_factory=dict)
    nics: Dict[str, str] = field(default_factory=dict)
    ipv4: Dict[str, str] = field(default_factory=dict)  # NIC name -> address (DHCP, when asked for)
    uuid: Optional[str] = None
    tpms: Dict[str, str] = field(default_factory=dict)  # device (tpm0) -> TPM major version ("2", "1", "?")
    agent_port: Optional[str] = None  # the virtio-serial port qemu-ga runs on, while it runs
    data: Optional[Dict[str, str]] = None  # dev, found, wrote: the scribble hook's sha256s (see tests/guest)
    configdrive: Optional[Dict[str, str]] = None
    cdfiles: Dict[str, Dict[str, object]] = field(default_factory=dict)
    complete: bool = False
    garbled: bool = False  # a line of it was cut by other output; it never counts as complete
    poweroff: Optional[str] = None

    @property
    def mem_mib(self) -> float:
        return (self.mem_kib or 0) / 1024.0

    def disk_size(self, name: str) -> int:
        return self.disks[name]["size"]

    def cdfile_bytes(self, path: str) -> bytes:
        """The content of a small config drive file (the guest sends files up to 4 KiB)."""
        return base64.b64decode(self.cdfiles[path]["b64"])

    def macs(self) -> List[str]:
        return sorted(self.nics.values())


def _fields(text: str) -> Dict[str, str]:
    out = {}
    for item in text.split():
        key, _equals, value = item.partition("=")
        out[key] = value
    return out


def parse_reports(text: str) -> List[Report]:
    """Every report in a console log, in order; incomplete ones have ``complete=False``."""
    reports: List[Report] = []
    current: Optional[Report] = None
    for raw in text.splitlines():
        start = raw.find("VFREPORT ")
        if start < 0:
            continue
        line = raw[start:].rstrip("\r")
        off = _POWEROFF.match(line)
        if off:
            if reports:
                reports[-1].poweroff = off.group(1)
            continue
        match = _LINE.match(line)
        if not match:
            continue
        seq, kind, rest = int(match.group(1)), match.group(2), _fields(match.group(3))
        if kind == "begin":
            current = Report(seq=seq, mode=rest.get("mode", ""), boot=rest.get("boot", ""))
            reports.append(current)
            continue
        if current is None or current.seq != seq or current.complete or current.garbled:
            continue
        try:
            _take(current, kind, rest)
        except (KeyError, ValueError):
            current.garbled = True  # another writer's output inside a line: the report cannot be trusted
    return reports


def _take(current: Report, kind: str, rest: Dict[str, str]) -> None:
    """Add one fact line of ``kind`` to ``current``."""
    if kind == "end":
        current.complete = True
    elif kind == "cpus":
        current.cpus = int(rest["online"])
    elif kind == "mem":
        current.mem_kib = int(rest["total_kib"])
    elif kind == "disk":
        current.disks[rest["name"]] = {"size": int(rest["size"]), "ro": int(rest.get("ro", "0"))}
    elif kind == "fs":
        current.filesystems[rest["dev"]] = {"type": rest.get("type", ""), "label": rest.get("label", "")}
    elif kind == "swap":
        current.swaps[rest["dev"]] = {"active": rest.get("active", "0"), "label": rest.get("label", "")}
    elif kind == "nic":
        current.nics[rest["name"]] = rest["mac"]
    elif kind == "ipv4":
        current.ipv4[rest["nic"]] = rest["addr"]
    elif kind == "tpm":
        current.tpms[rest["dev"]] = rest.get("major", "?")
    elif kind == "agent":
        current.agent_port = rest.get("port")
    elif kind == "uuid":
        current.uuid = rest["value"]
    elif kind == "data":
        current.data = rest
    elif kind == "configdrive":
        current.configdrive = rest
    elif kind == "cdfile":
        current.cdfiles[rest["path"]] = {"size": int(rest["size"]), "sha256": rest["sha256"],
                                         "b64": rest.get("b64", "")}


def latest_complete(text: str) -> Optional[Report]:
    """The last complete report in a console log, or None."""
    for report in reversed(parse_reports(text)):
        if report.complete:
            return report
    return None


@dataclass(frozen=True)
class Beat:
    """One heartbeat line: its number within the boot, the boot id and the guest's uptime in seconds."""

    n: int
    boot: str
    uptime: float


def heartbeats(text: str) -> List[Beat]:
    """Every complete heartbeat line in a console log, in order."""
    found = []
    for raw in text.splitlines():
        start = raw.find("VFBEAT ")
        if start < 0:
            continue
        match = _BEAT.match(raw[start:].rstrip("\r"))
        if match:
            found.append(Beat(int(match.group(1)), match.group(2), float(match.group(3))))
    return found
