# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what ``domain_info`` reports about domains.

Two halves:

- pure functions (``describe_xml``, ``merge_addresses``) that turn a domain's XML and libvirt's
  ``interfaceAddresses`` answers into plain, JSON-serialisable data; unit tests call them with
  strings and dicts, without libvirt;
- ``gather_domains``, which reads the domains through the ``Hypervisor`` wrapper and never changes them,
  and ``wait_for_address``, which reads one running ``Guest`` until it has an address to reach it by.

``report_domains`` is the ``domain_info`` module's core.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import user_net
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DomainInfoSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import (
    Guest, Hypervisor, LibvirtError, open_hypervisor, vanished,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import libvirt_error_text

# libvirt's VIR_IP_ADDR_TYPE_* -> family names.
ADDRESS_FAMILIES = {0: "ipv4", 1: "ipv6"}


# ------------------------------------------------------------------------------------- XML -> plain data

def _firmware(os_: Optional["model.Os"]) -> str:
    """``bios`` or ``uefi``, whether the XML names the firmware or gives an explicit pflash loader."""
    if os_ is None:
        return "bios"
    if os_.firmware == "efi":
        return "uefi"
    if os_.loader is not None and (os_.loader.type == "pflash" or "ovmf" in (os_.loader.path or "").lower()):
        return "uefi"
    return "bios"


def _secure_boot(os_: Optional["model.Os"]) -> bool:
    if os_ is None:
        return False
    if os_.loader is not None and os_.loader.secure:
        return True
    for child in os_.extra:
        if child.tag == "firmware":
            for feature in child:
                if feature.get("name") == "secure-boot" and feature.get("enabled") == "yes":
                    return True
    return False


def _metadata(meta: Optional["model.Metadata"]) -> Dict[str, Any]:
    if meta is None:
        return {"flavor": None, "image": None, "owned_files": []}
    return {"flavor": meta.flavor, "image": meta.image, "owned_files": list(meta.owned_files)}


def _fw_cfg(dom: "model.Domain") -> Dict[str, str]:
    entries: Dict[str, str] = {}
    for info in dom.sysinfo:
        if info.type == "fwcfg":
            entries.update(dict(info.entries))
    return entries


def _disk(disk: "model.Disk") -> Dict[str, Any]:
    source = disk.source or {}
    # A file, a block device, a directory, or a network/pool volume: say where the data is.
    path = source.get("file") or source.get("dev") or source.get("dir")
    if path is None and source.get("volume"):
        path = "%s/%s" % (source.get("pool", ""), source["volume"])
    elif path is None and source.get("name"):
        path = source["name"]
    return {
        "target": disk.target_dev,
        "bus": disk.target_bus,
        "device": disk.device or "disk",
        "type": disk.type,
        "file": path,
        "format": disk.driver_type,
        "readonly": bool(disk.readonly),
        "boot_order": disk.boot_order,
    }


def _port_number(text: Optional[str]) -> Optional[int]:
    return int(text) if text is not None and re.fullmatch(r"[0-9]{1,5}", text) else None


def _port_forwards(nic: "model.Interface") -> List[Dict[str, Any]]:
    """libvirt's ``<portForward>`` ranges of a user NIC (passt), one entry per forwarded port range start."""
    found = []
    for element in nic.extra:
        if element.tag != "portForward":
            continue
        for port_range in element.findall("range"):
            start = _port_number(port_range.get("start"))
            if start is None:
                continue
            found.append({"proto": element.get("proto", "tcp"), "address": element.get("address"),
                          "host_port": start, "guest_port": _port_number(port_range.get("to")) or start})
    return found


def _interface(nic: "model.Interface") -> Dict[str, Any]:
    source = nic.source or {}
    return {
        "type": nic.type,
        "source": source.get("network") or source.get("bridge") or source.get("dev"),
        "mac": nic.mac.lower() if nic.mac else None,
        "model": nic.model,
        "target": nic.target_dev,
        "addresses": [],
        "port_forwards": _port_forwards(nic) if nic.type == "user" else [],
    }


def _user_nics(dom: "model.Domain") -> List[Dict[str, Any]]:
    """The user NICs given to QEMU on its command line (domain_xml's user NICs with backend qemu)."""
    if dom.qemu_commandline is None:
        return []
    return [{"type": "user", "source": None, "mac": nic.mac or None, "model": nic.model, "target": None,
             "addresses": [],
             "port_forwards": [{"proto": f.proto, "address": f.address, "host_port": f.host_port,
                                "guest_port": f.guest_port} for f in nic.forwards]}
            for nic in user_net.read_user_nics(dom.qemu_commandline.args)]


def _console_log(dom: "model.Domain") -> Optional[str]:
    for cls in (model.Serial, model.Console):
        for dev in dom.devices_of(cls):
            if dev.log_file:
                return dev.log_file
    return None


def _has_guest_agent(dom: "model.Domain") -> bool:
    return any(ch.target_name == model.GUEST_AGENT_CHANNEL for ch in dom.devices_of(model.Channel))


def describe_xml(xml: str) -> Dict[str, Any]:
    """The plain-data view of a domain definition (no live facts such as state or addresses).

    Raises ``VirtfleetError`` when the text is not a domain definition.
    """
    try:
        dom = model.Domain.from_xml(xml)
    except (model.ModelError, ValueError) as exc:
        raise VirtfleetError("cannot parse the domain XML: %s" % exc)
    cpu = dom.cpu
    vcpus = dom.vcpu_current if dom.vcpu_current is not None else dom.vcpus
    return {
        "name": dom.name,
        "uuid": dom.uuid.lower() if dom.uuid else None,
        "vcpus": vcpus,
        "max_vcpus": dom.vcpus,
        "memory_kib": dom.memory_kib,
        "current_memory_kib": dom.current_memory_kib if dom.current_memory_kib is not None else dom.memory_kib,
        "model": {
            "virt_type": dom.type,
            "arch": dom.os.arch if dom.os is not None else None,
            "machine": dom.os.machine if dom.os is not None else None,
            "firmware": _firmware(dom.os),
            "secure_boot": _secure_boot(dom.os),
            "nvram": dom.os.nvram.path if dom.os is not None and dom.os.nvram is not None else None,
            "cpu_mode": cpu.mode if cpu is not None else None,
            "cpu_model": cpu.model if cpu is not None else None,
            "title": dom.title,
            "description": dom.description,
            "max_memory_kib": dom.max_memory_kib,
            "on_poweroff": dom.on_poweroff,
            "on_reboot": dom.on_reboot,
            "on_crash": dom.on_crash,
            "fw_cfg": _fw_cfg(dom),
            "guest_agent": _has_guest_agent(dom),
            "metadata": _metadata(dom.metadata),
        },
        "disks": [_disk(d) for d in dom.devices_of(model.Disk)],
        "interfaces": [_interface(n) for n in dom.devices_of(model.Interface)] + _user_nics(dom),
        "console_log": _console_log(dom),
    }


def merge_addresses(interfaces: List[Dict[str, Any]], answer: Optional[Dict[str, Any]], source: str) -> None:
    """Add the addresses of libvirt's ``interfaceAddresses`` ``answer`` to ``interfaces``, matched by MAC.

    ``answer`` maps a guest interface name to ``{"hwaddr": mac, "addrs": [{"type", "addr", "prefix"}]}``.
    Loopback entries and addresses already listed are skipped; interfaces are changed in place.
    """
    by_mac = {nic["mac"]: nic for nic in interfaces if nic.get("mac")}
    for ifname, entry in sorted((answer or {}).items()):
        mac = (entry.get("hwaddr") or "").lower()
        nic = by_mac.get(mac)
        if nic is None:
            continue  # "lo", or a NIC the definition does not list (hot-plugged and gone)
        for addr in entry.get("addrs") or []:
            if not addr.get("addr"):
                continue
            if any(a["address"] == addr["addr"] for a in nic["addresses"]):
                continue
            nic["addresses"].append({
                "address": addr["addr"],
                "prefix": addr.get("prefix"),
                "family": ADDRESS_FAMILIES.get(addr.get("type"), str(addr.get("type"))),
                "source": source,
                "guest_ifname": ifname if source == "agent" else None,
            })


def reachable_addresses(interfaces: List[Dict[str, Any]]) -> List[str]:
    """The addresses of ``interfaces`` a host could reach the guest by: IPv4, and IPv6 outside fe80::/10."""
    found = []
    for nic in interfaces:
        for addr in nic.get("addresses") or []:
            text = str(addr.get("address") or "")
            if text and not (addr.get("family") == "ipv6" and _is_link_local(text)):
                found.append(text)  # (every IPv6 NIC has a link-local one: it says nothing about the network)
    return found


def _is_link_local(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_link_local
    except ValueError:
        return False


def no_address_message(name: str, waited: int, info: Dict[str, Any]) -> str:
    """Why no address came, and where to look: which networks could lease one, whether an agent could answer."""
    networks = sorted({nic["source"] for nic in info["interfaces"] if nic["type"] == "network" and nic["source"]})
    if not info["interfaces"]:
        return "domain %s has no network interface, so it gets no IP address; define one or drop wait_for_address" \
            % name
    if all(nic["type"] == "user" for nic in info["interfaces"]):
        return ("domain %s has only user-mode NICs, which libvirt leases no address for: the host reaches the guest "
                "through their port_forwards (on 127.0.0.1 by default); drop wait_for_address and wait for the "
                "forwarded port instead" % name)
    lease = ("no DHCP lease on its libvirt network%s %s" % ("s" if len(networks) > 1 else "", ", ".join(networks))
             if networks else "no libvirt network that leases addresses (its NICs use bridges or macvtap)")
    agent = ("no address from the guest agent (is qemu-guest-agent running in the guest?)"
             if info["model"]["guest_agent"] else "no guest agent channel (domain_xml guest_agent: true adds one)")
    return ("domain %s has no IP address after %d s: %s, and %s. The guest is left running. Check that it runs "
            "a DHCP client on that network or the agent, or raise address_timeout." % (name, waited, lease, agent))


# ------------------------------------------------------------------------------------------- libvirt

ADDRESS_SOURCES = ("lease", "agent")


def _addresses(guest: Guest, info: Dict[str, Any]) -> None:
    """Leases of libvirt networks, then the guest agent when the guest has its channel.

    Both sources are optional: a guest on a bridge has no lease, and an agent that is not running
    (or not connected yet) is normal; such errors leave the addresses empty.
    """
    for source in ADDRESS_SOURCES:
        if source == "agent" and not info["model"]["guest_agent"]:
            continue
        try:
            answer = guest.interface_addresses(source)
        except LibvirtError:
            continue
        merge_addresses(info["interfaces"], answer, source)


def _agent(guest: Guest, info: Dict[str, Any], timeout: int) -> Dict[str, Any]:
    """Whether the guest's QEMU agent answers a ping now (a health check after a resize or a boot), and why not."""
    if info["state"] != "running":
        return {"responding": False, "error": "the domain is %s" % info["state"]}
    if not info["model"]["guest_agent"]:
        return {"responding": False, "error": "no guest agent channel (domain_xml guest_agent: true adds one)"}
    error = guest.agent_ping(timeout)
    return {"responding": error is None, "error": error}


def describe_domain(guest: Guest, include_xml: bool = False, ping_agent: bool = False,
                    agent_timeout: int = 5) -> Optional[Dict[str, Any]]:
    """Everything ``domain_info`` reports about ``guest``; None when it vanished meanwhile."""
    name = "?"
    try:
        name = guest.name
        state = guest.status()
        if state == "absent":
            return None
        # The live definition of a running guest (what it runs with), else the persistent one.
        xml = guest.live_xml()
        info = describe_xml(xml)
        info["name"] = name
        info["uuid"] = guest.uuid.lower()
        info["state"] = state
        info["persistent"] = guest.is_persistent()
        info["autostart"] = guest.autostart() if info["persistent"] else False
        if state in ("running", "paused"):
            _addresses(guest, info)
        if include_xml:
            info["xml"] = xml
        if ping_agent:
            info["agent"] = _agent(guest, info, agent_timeout)
    except LibvirtError as exc:
        if vanished(exc):
            return None
        raise VirtfleetError("cannot read domain %s: %s" % (name, libvirt_error_text(exc)))
    except VirtfleetError as exc:
        raise VirtfleetError("domain %s: %s" % (name, exc.msg))
    return info


def gather_domains(hypervisor: Hypervisor, name: Optional[str] = None, include_xml: bool = False,
                   ping_agent: bool = False, agent_timeout: int = 5) -> List[Dict[str, Any]]:
    """Domains of ``hypervisor`` (only ``name`` when given; an unknown name gives an empty list), by name."""
    if name is not None:
        guest = hypervisor.lookup(name)
        found = [guest] if guest is not None else []
    else:
        found = hypervisor.guests()
    domains = [info for info in (describe_domain(guest, include_xml, ping_agent, agent_timeout) for guest in found)
               if info is not None]
    return sorted(domains, key=lambda d: d["name"])


def wait_for_address(guest: Guest, timeout: int, poll: float = 1.0) -> List[Dict[str, Any]]:
    """The interfaces of running ``guest`` (as ``domain_info`` reports them) once one has a reachable address.

    Leases and the guest agent are read every ``poll`` seconds; raises ``VirtfleetError`` after ``timeout``
    seconds, when the domain stops running, or when it vanishes.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = describe_domain(guest)
        if info is None:
            raise VirtfleetError("the domain vanished while waiting for its IP address")
        if info["state"] != "running":
            raise VirtfleetError("domain %s is %s, not running, so it gets no IP address"
                                 % (info["name"], info["state"]))
        if reachable_addresses(info["interfaces"]):
            return info["interfaces"]
        if time.monotonic() >= deadline:
            raise VirtfleetError(no_address_message(info["name"], timeout, info))
        time.sleep(poll)


def interfaces_once_reachable(hypervisor: Hypervisor, name: str, timeout: int,
                              check_mode: bool) -> List[Dict[str, Any]]:
    """What ``domain`` returns with ``wait_for_address``: ``wait_for_address`` on the domain called ``name``.

    Check mode never waits (a guest it would start does not run yet): the interfaces as they are now.
    """
    guest = hypervisor.lookup(name)
    if check_mode:
        info = describe_domain(guest) if guest is not None else None
        return info["interfaces"] if info is not None else []
    if guest is None:
        raise VirtfleetError("domain %s vanished before it got an IP address" % name)
    return wait_for_address(guest, timeout)


def report_domains(params: Dict[str, Any], check_mode: bool = False, diff: bool = False,
                   hypervisor: Optional[Hypervisor] = None) -> Dict[str, Any]:
    """Core of the ``domain_info`` module (read-only: check and diff mode change nothing)."""
    spec = DomainInfoSpec.from_params(params)
    options = (spec.name, spec.include_xml, spec.ping_agent, spec.agent_timeout)
    if hypervisor is not None:
        return {"changed": False, "domains": gather_domains(hypervisor, *options)}
    with open_hypervisor(spec.uri) as opened:
        return {"changed": False, "domains": gather_domains(opened, *options)}
