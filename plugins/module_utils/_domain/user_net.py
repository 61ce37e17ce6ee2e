# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: a user NIC given to QEMU directly, as arguments of its command line.

libvirt forwards host ports to a user-mode NIC only through passt, and Debian 12's libvirt 9.0.0 is built
without it (``<backend type='passt'/>`` is refused, ``<portForward>`` alone is silently ignored). QEMU's own
user networking does forward ports, so such a NIC goes into the domain's ``<qemu:commandline>``::

    -netdev user,id=vfnet0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22
    -device virtio-net-pci,netdev=vfnet0,mac=52:54:00:..,bus=pci.0,addr=0x1f

``restrict=on`` isolates the guest: it reaches nothing, not even the host, while the forwards still bring
connections in. The device needs an explicit PCI address (libvirt does not know it and would give its slot
to another device); which slot, and which MAC, is the designer's policy. This file only writes the
arguments and reads them back (``domain_info`` reports such NICs).

QEMU splits an option list at ``,`` and ``=``: a value holding either, or a blank, could add options of its
own (``restrict=off``, another ``hostfwd``, ``romfile``). So every value is checked against a whole-value
pattern (``_identifiers``) before it is placed, and once more as an option value (``QEMU_OPTION_VALUE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import IPV4_ADDRESS, MAC, QEMU_ID, \
    QEMU_OPTION_VALUE

# The NIC models of domain_xml, as QEMU names their devices.
DEVICE_DRIVERS = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139"}
MODEL_OF_DRIVER = {driver: name for name, driver in DEVICE_DRIVERS.items()}
PROTOCOLS = ("tcp", "udp")
ROOT_BUSES = ("pci.0", "pcie.0")   # i440fx, q35
MAX_SLOT = 0x1f
_HOSTFWD = re.compile(r"(tcp|udp):([0-9.]*):([0-9]{1,5})-([0-9.]*):([0-9]{1,5})")


@dataclass(frozen=True)
class Forward:
    """Connections to the host's ``address:host_port`` go to the guest's ``guest_port``."""

    proto: str
    address: str
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class UserNic:
    """One NIC on QEMU's user networking: its backend's id, the guest's view (MAC, model) and its PCI place."""

    netdev_id: str
    mac: str
    model: str
    bus: str
    slot: int
    forwards: Tuple[Forward, ...] = ()


def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        _fail("%s must be a port number from 1 to 65535, got %r" % (what, value))
    return value


def _options(head: str, pairs: Sequence[Tuple[str, str]]) -> str:
    """``head,key=value,...``, every value checked to be one option value."""
    for key, value in pairs:
        if not QEMU_OPTION_VALUE.matches(value):
            _fail("the QEMU option %s=%r would not be one option value (%s)"
                  % (key, value, QEMU_OPTION_VALUE.looks_like))
    return ",".join([head] + ["%s=%s" % pair for pair in pairs])


def _hostfwd(forward: Forward, what: str) -> str:
    if forward.proto not in PROTOCOLS:
        _fail("%s.proto must be one of %s, got %r" % (what, ", ".join(PROTOCOLS), forward.proto))
    IPV4_ADDRESS.check(forward.address, what + ".address")
    return "%s:%s:%d-:%d" % (forward.proto, forward.address, _port(forward.host_port, what + ".host_port"),
                             _port(forward.guest_port, what + ".guest_port"))


def nic_arguments(nic: UserNic, what: str) -> List[str]:
    """``-netdev`` and ``-device`` for ``nic`` (``what`` names it in errors)."""
    QEMU_ID.check(nic.netdev_id, what + " netdev id")
    MAC.check(nic.mac, what + ".mac")
    driver = DEVICE_DRIVERS.get(nic.model)
    if driver is None:
        _fail("%s.model must be one of %s, got %r" % (what, ", ".join(DEVICE_DRIVERS), nic.model))
    if nic.bus not in ROOT_BUSES:
        _fail("%s: PCI bus %r is not a root bus (%s)" % (what, nic.bus, ", ".join(ROOT_BUSES)))
    if isinstance(nic.slot, bool) or not isinstance(nic.slot, int) or not 1 <= nic.slot <= MAX_SLOT:
        _fail("%s: PCI slot %r is not one of 0x01-0x1f" % (what, nic.slot))
    netdev = [("id", nic.netdev_id), ("restrict", "on")]
    netdev += [("hostfwd", _hostfwd(f, "%s.port_forwards[%d]" % (what, i))) for i, f in enumerate(nic.forwards)]
    device = [("netdev", nic.netdev_id), ("mac", nic.mac.lower()), ("bus", nic.bus), ("addr", "0x%02x" % nic.slot)]
    return ["-netdev", _options("user", netdev), "-device", _options(driver, device)]


# ------------------------------------------------------------------------------------------ reading back

def _split(value: str) -> Tuple[str, Dict[str, List[str]]]:
    """(first item, key -> values) of a QEMU option list; ``,,`` (an escaped comma) is never ours: no keys."""
    if ",," in value:
        return "", {}
    head, *rest = value.split(",")
    pairs: Dict[str, List[str]] = {}
    for item in rest:
        key, _sep, val = item.partition("=")
        pairs.setdefault(key, []).append(val)
    return head, pairs


def _forward(text: str) -> Optional[Forward]:
    found = _HOSTFWD.fullmatch(text)
    if found is None:
        return None
    proto, address, host_port, _guest_address, guest_port = found.groups()
    return Forward(proto=proto, address=address or "0.0.0.0", host_port=int(host_port), guest_port=int(guest_port))


def read_user_nics(args: Sequence[str]) -> List[UserNic]:
    """The user NICs in QEMU arguments: each ``-device`` of a NIC model whose ``netdev`` is a ``-netdev user``.

    Reads what ``nic_arguments`` writes (in any option order); other arguments are ignored.
    """
    netdevs: Dict[str, Tuple[Forward, ...]] = {}
    devices: List[Tuple[str, Dict[str, List[str]]]] = []
    for flag, value in zip(args, args[1:]):
        head, pairs = _split(value)
        if flag == "-netdev" and head in ("user", "type=user") and pairs.get("id"):
            forwards = (_forward(text) for text in pairs.get("hostfwd", []))
            netdevs[pairs["id"][0]] = tuple(f for f in forwards if f is not None)
        elif flag == "-device" and head in MODEL_OF_DRIVER:
            devices.append((head, pairs))
    found = []
    for driver, pairs in devices:
        first = {key: values[0] for key, values in pairs.items()}
        netdev, slot = first.get("netdev", ""), first.get("addr", "")
        if netdev not in netdevs:
            continue
        found.append(UserNic(netdev_id=netdev, mac=first.get("mac", "").lower(), model=MODEL_OF_DRIVER[driver],
                             bus=first.get("bus", ""), forwards=netdevs[netdev],
                             slot=int(slot, 16) if re.fullmatch(r"0x[0-9a-fA-F]{1,2}", slot) else 0))
    return found
