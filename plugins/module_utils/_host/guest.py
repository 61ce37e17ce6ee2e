# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: every libvirt call the collection makes (the role Nova's guest.py plays).

``Hypervisor`` wraps one libvirt connection (look up, define and list guests, capabilities, and the
one scan of which files the host's domains use); ``Guest`` wraps one domain (state, definitions,
lifecycle with waits, metadata, addresses, device and resize calls). Upper layers never touch
libvirt-python directly: they get plain values, and libvirt's own errors as ``LibvirtError``.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import (
    agent_command, connect, libvirt, libvirt_error_text,
)

if libvirt is not None:
    LibvirtError = libvirt.libvirtError
else:  # pragma: no cover - modules fail with missing_required_lib before any call

    class LibvirtError(Exception):  # type: ignore[no-redef]
        """Stands in for libvirt.libvirtError when libvirt-python is missing."""

# virDomainState -> the names our modules use.
STATE_NAMES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended",
}
MAX_BACKING_DEPTH = 16


def _flag(name: str, default: int = 0) -> int:
    return getattr(libvirt, name, default) if libvirt is not None else default


def vanished(exc: Exception) -> bool:
    """Whether ``exc`` says the domain does not exist (any more)."""
    return isinstance(exc, LibvirtError) and exc.get_error_code() == _flag("VIR_ERR_NO_DOMAIN", 42)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` was waited for."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise VirtfleetError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(poll)


class Guest:
    """One libvirt domain."""

    def __init__(self, dom) -> None:
        self._dom = dom

    # ---- identity and state

    @property
    def name(self) -> str:
        return self._dom.name()

    @property
    def uuid(self) -> str:
        return self._dom.UUIDString()

    def raw_state(self) -> Tuple[str, int]:
        """(libvirt's state name, reason code); a domain that vanished meanwhile is 'absent'."""
        try:
            state, reason = self._dom.state()
        except LibvirtError as exc:
            if vanished(exc):
                return "absent", 0
            raise
        return STATE_NAMES.get(state, "nostate"), reason

    def status(self) -> str:
        """The states a user asks for: running, paused, shutoff, absent."""
        name, _reason = self.raw_state()
        if name in ("running", "blocked", "shutdown", "pmsuspended"):
            return "running"
        if name == "crashed":
            return "shutoff"
        return name

    def is_persistent(self) -> bool:
        return bool(self._dom.isPersistent())

    def autostart(self) -> bool:
        return bool(self._dom.autostart())

    def set_autostart(self, enabled: bool) -> None:
        self._dom.setAutostart(1 if enabled else 0)

    # ---- definitions

    def inactive_xml(self) -> str:
        """The persistent definition, secrets included (it is compared with the desired one)."""
        return self._dom.XMLDesc(_flag("VIR_DOMAIN_XML_INACTIVE", 2) | _flag("VIR_DOMAIN_XML_SECURE", 1))

    def live_xml(self) -> str:
        """The definition the guest runs with (the persistent one when it is shut off)."""
        return self._dom.XMLDesc(0)

    def set_metadata(self, element: Optional[str], prefix: Optional[str], namespace: str, live: bool = False) -> None:
        """Write (element) or remove (None) our metadata element, in the persistent definition (and with ``live``
        in the running guest's too)."""
        self._dom.setMetadata(_flag("VIR_DOMAIN_METADATA_ELEMENT", 2), element, prefix, namespace,
                              self._affect(live, True))

    # ---- lifecycle

    def wait_for_state(self, wanted: Iterable[str], timeout: float) -> str:
        """Wait until ``status()`` is one of ``wanted``; the error names the guest and the state it is in."""
        wanted = set(wanted)
        seen = {"state": None}

        def reached() -> bool:
            seen["state"] = self.status()
            return seen["state"] in wanted

        try:
            wait_for(reached, timeout, "domain %s to be %s" % (self.name, " or ".join(sorted(wanted))))
        except VirtfleetError as exc:
            raise VirtfleetError("%s (it is %s)" % (exc.msg, seen["state"]))
        return seen["state"]

    def start(self, timeout: float, paused: bool = False) -> str:
        """Start the guest and wait until it runs (or is paused); a guest that powers itself off quickly is
        its own business. A guest that pauses right after a normal start cannot run here."""
        self._dom.createWithFlags(_flag("VIR_DOMAIN_START_PAUSED", 1) if paused else 0)
        reached = self.wait_for_state({"paused" if paused else "running", "shutoff"}, timeout)
        if not paused:
            state, reason = self.raw_state()
            if state == "paused":
                raise VirtfleetError(
                    "domain %s paused right after start (reason %d): the hypervisor cannot run it. With virt type "
                    "kvm this usually means KVM does not work on this host; use virt_type qemu." % (self.name, reason))
        return reached

    def resume(self, timeout: float) -> None:
        self._dom.resume()
        self.wait_for_state({"running"}, timeout)

    def suspend(self, timeout: float) -> None:
        self._dom.suspend()
        self.wait_for_state({"paused"}, timeout)

    def shutdown(self, timeout: float, force_off: bool) -> List[str]:
        """ACPI shutdown, waiting up to ``timeout``; then a hard power-off only with ``force_off``.
        Returns what was done (``shutdown``, then ``destroy`` when forced)."""
        done: List[str] = []
        if self.status() == "shutoff":
            return done
        if self.status() == "paused":
            self._dom.resume()
        self._dom.shutdown()
        done.append("shutdown")
        try:
            self.wait_for_state({"shutoff"}, timeout)
        except VirtfleetError as exc:
            if not force_off:
                raise VirtfleetError(
                    "%s after an ACPI shutdown request; the guest ignored it. Set force_off: true to power it off "
                    "hard after shutdown_timeout, or raise shutdown_timeout." % exc.msg)
            self.destroy()
            done.append("destroy")
            self.wait_for_state({"shutoff"}, 30)
        return done

    def destroy(self) -> None:
        """Hard power-off (nothing when it is already off)."""
        if self.status() != "shutoff":
            self._dom.destroy()

    def undefine(self) -> None:
        """Remove the definition with everything libvirt keeps for it: NVRAM, TPM state, managed save,
        snapshot and checkpoint metadata."""
        common = _flag("VIR_DOMAIN_UNDEFINE_MANAGED_SAVE") | _flag("VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA")
        flags = common | _flag("VIR_DOMAIN_UNDEFINE_NVRAM") | _flag("VIR_DOMAIN_UNDEFINE_TPM") \
            | _flag("VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA")
        try:
            self._dom.undefineFlags(flags)
        except LibvirtError as exc:
            # A driver without firmware or TPM state (test, lxc) refuses those flags; it has none to remove.
            if exc.get_error_code() != _flag("VIR_ERR_INVALID_ARG", 8) or "unsupported flags" not in str(exc):
                raise
            self._dom.undefineFlags(common)

    # ---- what a running guest tells

    def interface_addresses(self, source: str) -> Dict:
        """libvirt's interfaceAddresses answer from ``lease`` (libvirt networks' DHCP) or ``agent``."""
        flag = {"lease": _flag("VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE", 1),
                "agent": _flag("VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT", 2)}[source]
        return self._dom.interfaceAddresses(flag)

    def agent_ping(self, timeout: int = 5) -> Optional[str]:
        """None when the guest agent answers ``guest-ping`` within ``timeout`` seconds, else libvirt's reason."""
        try:
            agent_command(self._dom, '{"execute": "guest-ping"}', timeout)
        except LibvirtError as exc:
            return libvirt_error_text(exc)
        return None

    def memory_stats(self) -> Dict[str, int]:
        return dict(self._dom.memoryStats())

    def vcpus_count(self, live: bool = True, maximum: bool = False) -> int:
        flags = _flag("VIR_DOMAIN_AFFECT_LIVE", 1) if live else _flag("VIR_DOMAIN_AFFECT_CONFIG", 2)
        if maximum:
            flags |= _flag("VIR_DOMAIN_VCPU_MAXIMUM", 4)
        return int(self._dom.vcpusFlags(flags))

    def block_size(self, target: str) -> int:
        """The virtual size in bytes of the disk ``target`` (vda) as the running guest has it."""
        return int(self._dom.blockInfo(target)[0])

    # ---- changes while it runs, or to its persistent definition

    @staticmethod
    def _affect(live: bool, config: bool) -> int:
        live_flag = _flag("VIR_DOMAIN_AFFECT_LIVE", 1) if live else 0
        return live_flag | (_flag("VIR_DOMAIN_AFFECT_CONFIG", 2) if config else 0)

    def set_vcpus(self, count: int, live: bool = True, config: bool = True, maximum: bool = False) -> None:
        flags = self._affect(live, config) | (_flag("VIR_DOMAIN_VCPU_MAXIMUM", 4) if maximum else 0)
        self._dom.setVcpusFlags(count, flags)

    def set_memory(self, kib: int, live: bool = True, config: bool = True, maximum: bool = False) -> None:
        flags = self._affect(live, config) | (_flag("VIR_DOMAIN_MEM_MAXIMUM", 4) if maximum else 0)
        self._dom.setMemoryFlags(kib, flags)

    def block_resize(self, target: str, size_bytes: int) -> None:
        """Grow the running guest's disk ``target`` to ``size_bytes`` (callers refuse shrinks first:
        libvirt accepts them silently)."""
        self._dom.blockResize(target, size_bytes, _flag("VIR_DOMAIN_BLOCK_RESIZE_BYTES", 1))

    def attach_device(self, xml: str, live: bool = True, config: bool = True) -> None:
        self._dom.attachDeviceFlags(xml, self._affect(live, config))

    def detach_device(self, xml: str, live: bool = True, config: bool = True) -> None:
        self._dom.detachDeviceFlags(xml, self._affect(live, config))

    def update_device(self, xml: str, live: bool = True, config: bool = True) -> None:
        self._dom.updateDeviceFlags(xml, self._affect(live, config))


def disk_sources(xml: str) -> List[Tuple[str, Optional[str]]]:
    """(file or block device, driver format) of every disk of a domain XML, and every layer of a
    ``<backingStore>`` chain libvirt shows for a running guest."""
    # imported here: only the in-use scan parses XML; a guest's lifecycle calls never do
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    found: List[Tuple[str, Optional[str]]] = []
    for disk in root.iter("disk"):
        driver = disk.find("driver")
        layer, fmt = disk, driver.get("type") if driver is not None else None
        while layer is not None:
            source = layer.find("source")
            path = source.get("file") or source.get("dev") if source is not None else None
            if path:
                found.append((path, fmt))
            layer = layer.find("backingStore")
            if layer is not None:
                layer_format = layer.find("format")
                fmt = layer_format.get("type") if layer_format is not None else None
    return found


def backing_chain(path: str, fmt: Optional[str]) -> List[str]:
    """``path`` and the files its qcow2 headers name as backing files, read in Python (never qemu-img)."""
    # imported here: only the in-use scan reads image headers
    from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2

    chain = [os.path.normpath(path)]
    current, current_format = path, fmt
    for _depth in range(MAX_BACKING_DEPTH):
        if current_format not in (None, "qcow2"):
            break
        backing = qcow2.backing_file_of(current)
        if backing is None or backing in chain:
            break
        chain.append(backing)
        header = qcow2.read(current)
        current, current_format = backing, (header.backing_format if header is not None else None)
    return chain


class Hypervisor:
    """One libvirt connection: the guests on it and what the host offers them."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def lookup(self, name: str) -> Optional[Guest]:
        """The guest called ``name``, or None."""
        try:
            return Guest(self._conn.lookupByName(name))
        except LibvirtError as exc:
            if vanished(exc):
                return None
            raise VirtfleetError("cannot look up domain %s: %s" % (name, libvirt_error_text(exc)))

    def define(self, xml: str) -> Guest:
        return Guest(self._conn.defineXML(xml))

    def guests(self) -> List[Guest]:
        """Every defined or running guest."""
        try:
            return [Guest(dom) for dom in self._conn.listAllDomains(0)]
        except LibvirtError as exc:
            raise VirtfleetError("cannot list the domains: %s" % libvirt_error_text(exc))

    def capabilities(self) -> str:
        return self._conn.getCapabilities()

    def domain_capabilities(self, machine: str, virt_type: str, arch: str = "x86_64") -> str:
        return self._conn.getDomainCapabilities(None, arch, machine, virt_type, 0)

    def host_resources(self) -> Tuple[int, int]:
        """(logical CPUs, memory in KiB) of the host: what hot-plug headroom is capped by."""
        info = self._conn.getInfo()
        return int(info[2]), int(info[1]) * 1024

    def lib_version(self) -> int:
        """1000000 * major + 1000 * minor + micro of the libvirt daemon."""
        return int(self._conn.getLibVersion())

    def disks_in_use(self, except_guest: Optional[str] = None) -> Dict[str, Set[str]]:
        """{real path: names of the guests using it}: every disk of every defined or running guest (its
        persistent and live definitions) and every file of their backing chains, wherever they live."""
        used: Dict[str, Set[str]] = {}
        for guest in self.guests():
            try:
                name = guest.name
                if name == except_guest:
                    continue
                texts = [guest.inactive_xml()] if guest.is_persistent() else []
                if guest.status() in ("running", "paused"):
                    texts.append(guest.live_xml())
            except LibvirtError:
                continue  # vanished meanwhile
            for text in texts:
                for path, fmt in disk_sources(text):
                    for layer in backing_chain(path, fmt):
                        used.setdefault(os.path.realpath(layer), set()).add(name)
        return used

    def guests_using(self, path: str, except_guest: Optional[str] = None) -> List[str]:
        """Sorted names of the guests whose disks or backing chains use ``path``."""
        return sorted(self.disks_in_use(except_guest).get(os.path.realpath(path), set()))


@contextlib.contextmanager
def open_hypervisor(uri: str) -> Iterator[Hypervisor]:
    """A ``Hypervisor`` on ``uri``, closed afterwards."""
    with connect(uri) as conn:
        yield Hypervisor(conn)


@contextlib.contextmanager
def shared_or_opened(uri: str, hypervisor: Optional[Hypervisor]) -> Iterator[Hypervisor]:
    """``hypervisor`` when a caller (a batch) shares one, else one opened on ``uri`` for this call."""
    if hypervisor is not None:
        yield hypervisor
        return
    with open_hypervisor(uri) as opened:
        yield opened
