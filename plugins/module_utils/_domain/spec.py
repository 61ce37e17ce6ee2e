# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the options of the domain layer's modules, declared once, and their typed specs.

``domain_xml``, ``domain`` and ``domain_info`` import their ``*_MODULE_SPEC`` from here; the choice lists
are the constants below, which the typed specs check against and the designer uses. ``DomainSpec``
and ``DomainInfoSpec`` (and ``_domain.xml_spec.DomainXmlSpec``, domain_xml's, which only a run that
renders needs) are what the cores work with: built by ``from_params`` from a module's parameters (or
from a plain dict: every value is checked, types included, because cores are also called without
Ansible's argument parsing) and raising ``VirtfleetError`` only.

This file is loaded on the re-run fast paths of ``domain`` and ``domain_xml``: it holds declarations
and the small specs only (building a dataclass costs milliseconds at import).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, INSTANCES, ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import list_form_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import (
    GuestLayout, absolute_path, guest_layout, validate_guest_name,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.virt_probe import VIRT_TYPES

# ------------------------------------------------------------------------------------------ choices

DISK_FORMATS = ("raw", "qcow2")
DISK_DEVICES = ("disk", "cdrom")
DISK_BUSES = ("virtio", "scsi", "sata", "ide", "usb")
DISK_CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe", "default")
DISK_IO_MODES = ("native", "threads", "io_uring")
DISK_DISCARD = ("unmap", "ignore")
NIC_SHORTHANDS = ("network", "bridge", "direct")  # also options naming the source: {network: default}
NIC_TYPES = NIC_SHORTHANDS + ("user",)            # user: user-mode networking, with port forwards
# How a user NIC is made: QEMU's own user networking on its command line (qemu; what auto picks, since
# Debian 12's libvirt has no passt), or libvirt's <interface type='user'> with the passt backend.
NIC_BACKENDS = ("auto", "qemu", "passt")
DEFAULT_NIC_BACKEND = "auto"
PORT_PROTOCOLS = ("tcp", "udp")
DEFAULT_FORWARD_ADDRESS = "127.0.0.1"
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
DIRECT_MODES = ("bridge", "vepa", "private", "passthrough")
CPU_MODES = ("host-model", "host-passthrough", "maximum", "custom")
FIRMWARES = ("bios", "uefi")
GRAPHICS = ("none", "vnc", "spice")
TPM_MODELS = ("tpm-tis", "tpm-crb")
WATCHDOG_MODELS = ("none", "i6300esb", "itco")
WATCHDOG_ACTIONS = ("reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi")
WANTED_STATES = ("running", "paused", "shutdown", "defined", "absent")
APPLY_MODES = ("none", "restart")

DEFAULT_NIC_TYPE = "network"
DEFAULT_NETWORK = "default"
DEFAULT_DIRECT_MODE = "bridge"
DEFAULT_MEMORY_SLOTS = 16
MAX_VCPUS = 4096
MAX_MEMORY_SLOTS = 255
MAX_BOOT_ORDER = 1024
MAX_TIMEOUT = 86400
# XML 1.0 allows these characters only; lxml refuses the rest with a ValueError.
_XML_BAD_CHARS = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# --------------------------------------------------------------------------------- argument specs

DISK_OPTIONS = ArgumentSpec({
    "path": {"type": "path"},
    "format": {"type": "str", "default": "raw", "choices": list(DISK_FORMATS)},
    "device": {"type": "str", "default": "disk", "choices": list(DISK_DEVICES)},
    "bus": {"type": "str", "choices": list(DISK_BUSES)},
    "dev": {"type": "str"},
    "readonly": {"type": "bool"},
    "boot_order": {"type": "int"},
    "cache": {"type": "str", "choices": list(DISK_CACHE_MODES)},
    "io": {"type": "str", "choices": list(DISK_IO_MODES)},
    "discard": {"type": "str", "choices": list(DISK_DISCARD)},
    "serial": {"type": "str"},
})

# ``type``, ``mode`` and ``backend`` have no Ansible default: a shorthand (network/bridge/direct) must not meet a
# filled-in type, and a mode or backend given to a NIC it does not apply to is refused rather than ignored.
# from_params applies the defaults.
NIC_OPTIONS = ArgumentSpec({
    "type": {"type": "str", "choices": list(NIC_TYPES)},
    "source": {"type": "str"},
    "network": {"type": "str"},
    "bridge": {"type": "str"},
    "direct": {"type": "str"},
    "mode": {"type": "str", "choices": list(DIRECT_MODES)},
    "mac": {"type": "str"},
    "model": {"type": "str", "default": "virtio", "choices": list(NIC_MODELS)},
    "boot_order": {"type": "int"},
    "backend": {"type": "str", "choices": list(NIC_BACKENDS)},
    "port_forwards": {"type": "list", "elements": "dict", "options": {
        "host_port": {"type": "int", "required": True},
        "guest_port": {"type": "int"},
        "address": {"type": "str", "default": DEFAULT_FORWARD_ADDRESS},
        "proto": {"type": "str", "default": "tcp", "choices": list(PORT_PROTOCOLS)},
    }},
})

METADATA_OPTIONS = ArgumentSpec({
    "flavor": {"type": "str"},
    "image": {"type": "str"},
    "owned_files": {"type": "list", "elements": "path"},
})

DOMAIN_XML_ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str", "required": True},
    "path": {"type": "path"},
    "instance_dir": {"type": "path"},
    "uuid": {"type": "str"},
    "title": {"type": "str"},
    "description": {"type": "str"},
    "vcpus": {"type": "int", "default": 1},
    "max_vcpus": {"type": "int"},
    "memory": {"type": "raw", "default": "512M"},
    "max_memory": {"type": "raw"},
    "max_memory_slots": {"type": "int"},
    "headroom": {"type": "bool", "default": False},
    "virt_type": {"type": "str", "default": "auto", "choices": list(VIRT_TYPES)},
    "machine": {"type": "str", "default": "pc"},
    "cpu_mode": {"type": "str", "choices": list(CPU_MODES)},
    "cpu_model": {"type": "str"},
    "firmware": {"type": "str", "default": "bios", "choices": list(FIRMWARES)},
    "secure_boot": {"type": "bool", "default": False},
    "graphics": {"type": "str", "default": "none", "choices": list(GRAPHICS)},
    "graphics_listen": {"type": "str", "default": "127.0.0.1"},
    "guest_agent": {"type": "bool", "default": False},
    "rng": {"type": "bool", "default": True},
    "tpm": {"type": "bool", "default": False},
    "tpm_model": {"type": "str", "default": "tpm-tis", "choices": list(TPM_MODELS)},
    "watchdog": {"type": "str", "default": "none", "choices": list(WATCHDOG_MODELS)},
    "watchdog_action": {"type": "str", "default": "reset", "choices": list(WATCHDOG_ACTIONS)},
    "memballoon": {"type": "bool", "default": True},
    "kernel": {"type": "path"},
    "initrd": {"type": "path"},
    "cmdline": {"type": "str"},
    "fw_cfg": {"type": "dict"},
    "disks": DISK_OPTIONS.as_list_option(),
    "nics": NIC_OPTIONS.as_list_option(),
    "extra_devices": {"type": "list", "elements": "str"},
    "metadata": {"type": "dict", "options": METADATA_OPTIONS.argument_spec},
})
# A module: one item (the options above at the top level), or many in ``items`` (see _batch).
DOMAIN_XML_MODULE_SPEC = list_form_spec(CONNECTION.merge(INSTANCES), DOMAIN_XML_ITEM_SPEC, "name")

DOMAIN_ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "running", "choices": list(WANTED_STATES)},
    "xml": {"type": "str"},
    "xml_file": {"type": "path"},
    "autostart": {"type": "bool"},
    "apply": {"type": "str", "default": "none", "choices": list(APPLY_MODES)},
    "shutdown_timeout": {"type": "int", "default": 120},
    "start_timeout": {"type": "int", "default": 60},
    "force_off": {"type": "bool", "default": False},
    "remove_storage": {"type": "bool", "default": False},
    "wait_for_address": {"type": "bool", "default": False},
    "address_timeout": {"type": "int", "default": 300},
}, mutually_exclusive=[("xml", "xml_file")])
DOMAIN_MODULE_SPEC = list_form_spec(CONNECTION.merge(INSTANCES), DOMAIN_ITEM_SPEC, "name")

DOMAIN_INFO_ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str"},
    "include_xml": {"type": "bool", "default": False},
    "ping_agent": {"type": "bool", "default": False},
    "agent_timeout": {"type": "int", "default": 5},
})
DOMAIN_INFO_MODULE_SPEC = CONNECTION.merge(DOMAIN_INFO_ITEM_SPEC)

DISK_KEYS = tuple(DISK_OPTIONS.argument_spec)
NIC_KEYS = tuple(NIC_OPTIONS.argument_spec)
METADATA_KEYS = tuple(METADATA_OPTIONS.argument_spec)


# ------------------------------------------------------------------------------------- validators

def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


def option_value(params: Dict[str, Any], spec: ArgumentSpec, key: str) -> Any:
    """The value of option ``key``: as given, else its declared default (a plain dict may leave it out)."""
    return params[key] if key in params else spec.argument_spec[key].get("default")


def text_value(value: Any, what: str, allow_empty: bool = True, max_len: int = 65536) -> str:
    """A string safe to place in XML text or attributes (lxml escapes markup; we refuse control chars)."""
    if not isinstance(value, str):
        _fail("%s must be a string, got %s" % (what, type(value).__name__))
    if not allow_empty and not value:
        _fail("%s must not be empty" % what)
    if _XML_BAD_CHARS.search(value):
        _fail("%s contains characters that XML cannot hold (control characters)" % what)
    if len(value) > max_len:
        _fail("%s is longer than %d characters" % (what, max_len))
    return value


def path_value(value: Any, what: str) -> str:
    """An absolute, normalised path that XML can hold."""
    return absolute_path(text_value(value, what, allow_empty=False, max_len=4096), what)


def int_value(value: Any, what: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool):
        _fail("%s must be an integer, got a boolean" % what)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        _fail("%s must be an integer, got %r" % (what, value))
    if not minimum <= value <= maximum:
        _fail("%s must be between %d and %d, got %d" % (what, minimum, maximum, value))
    return value


def bool_value(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        _fail("%s must be a boolean, got %r" % (what, value))
    return value


def choice_value(value: Any, choices: Tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail("%s must be one of %s, got %r" % (what, ", ".join(choices), value))
    return value


def optional(value: Any, check, *args) -> Any:
    """``check(value, *args)``, or None for a value not given."""
    return None if value is None else check(value, *args)


def timeout_value(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIMEOUT:
        _fail("%s must be a number of seconds from 0 to %d, got %r" % (what, MAX_TIMEOUT, value))
    return value


# ------------------------------------------------------------------------------------------- domain

@dataclass(eq=False)  # not frozen either: on the fast path every generated method costs import time
class DomainSpec:
    """One domain and the state it should be in. ``xml`` is the desired definition once known (given, or
    read from ``xml_file`` or the guest's ``domain.xml`` by the lifecycle); ``xml_source`` says where from."""

    name: str
    state: str
    layout: GuestLayout
    uri: str
    xml: Optional[str]
    xml_file: Optional[str]
    xml_source: Optional[str]
    autostart: Optional[bool]
    apply: str
    shutdown_timeout: int
    start_timeout: int
    force_off: bool
    remove_storage: bool
    wait_for_address: bool
    address_timeout: int

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "DomainSpec":
        """Reject what libvirt or the file system would choke on, before anything is looked up."""
        if not isinstance(params, dict):
            _fail("parameters must be a dictionary")

        def get(key: str) -> Any:
            return option_value(params, DOMAIN_ITEM_SPEC, key)

        name = get("name")
        if not isinstance(name, str) or not name.strip():
            _fail("name must be a non-empty string, got %r" % (name,))
        validate_guest_name(name)
        state = get("state")
        if state not in WANTED_STATES:
            _fail("state must be one of %s, got %r" % (", ".join(WANTED_STATES), state))
        wait = bool_value(get("wait_for_address"), "wait_for_address")
        if wait and state != "running":
            _fail("wait_for_address needs state=running (a guest that does not run gets no address), got state=%s"
                  % state)
        xml, xml_file = get("xml"), get("xml_file")
        if xml is not None and xml_file is not None:
            _fail("xml and xml_file are mutually exclusive; give one of them")
        return cls(
            name=name, state=state, wait_for_address=wait,
            layout=guest_layout(optional(params.get("instances_path"), text_value, "instances_path"), name),
            uri=text_value(params.get("uri") or CONNECTION.argument_spec["uri"]["default"], "uri"),
            xml=xml, xml_source="the xml option" if xml is not None else None,
            xml_file=optional(xml_file, path_value, "xml_file"),
            autostart=optional(get("autostart"), bool_value, "autostart"),
            apply=choice_value(get("apply"), APPLY_MODES, "apply"),
            shutdown_timeout=timeout_value(get("shutdown_timeout"), "shutdown_timeout"),
            start_timeout=timeout_value(get("start_timeout"), "start_timeout"),
            address_timeout=timeout_value(get("address_timeout"), "address_timeout"),
            force_off=bool_value(get("force_off"), "force_off"),
            remove_storage=bool_value(get("remove_storage"), "remove_storage"))

    @property
    def desired_file(self) -> str:
        """Where the desired XML is read from when ``xml`` is not given."""
        return self.xml_file or self.layout.domain_xml


# -------------------------------------------------------------------------------------- domain_info

@dataclass
class DomainInfoSpec:
    """Which domains ``domain_info`` reports, and how much of each."""

    uri: str
    name: Optional[str]
    include_xml: bool
    ping_agent: bool = False
    agent_timeout: int = 5

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "DomainInfoSpec":
        name = params.get("name")
        if name is not None and (not isinstance(name, str) or not name or _XML_BAD_CHARS.search(name)):
            _fail("name must be a domain name, got %r" % (name,))
        return cls(uri=text_value(params.get("uri") or CONNECTION.argument_spec["uri"]["default"], "uri"),
                   name=name,
                   include_xml=bool_value(option_value(params, DOMAIN_INFO_ITEM_SPEC, "include_xml"), "include_xml"),
                   ping_agent=bool_value(option_value(params, DOMAIN_INFO_ITEM_SPEC, "ping_agent"), "ping_agent"),
                   agent_timeout=int_value(option_value(params, DOMAIN_INFO_ITEM_SPEC, "agent_timeout"),
                                           "agent_timeout", 1, 300))
