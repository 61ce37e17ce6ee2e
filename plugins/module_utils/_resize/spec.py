# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what vm_resize accepts, said once.

``ITEM_SPEC`` is the argument spec of one guest's resize (choices from the constants below, which the
planner uses too); ``MODULE_SPEC`` adds the shared connection and instances options and the list
form (``items``: many guests in one call, see ``_batch``). ``ResizeSpec``
is the typed, validated form the planner works from. Sizes and counts follow ``domain_xml``'s rules
(the same validators), so a flavor means the same to both modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import (
    CONNECTION, DEFAULT_URI, INSTANCES, ArgumentSpec,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import list_form_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import DISK_TARGET
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout, guest_layout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import (
    MAX_VCPUS, bool_value, choice_value, int_value, text_value, timeout_value,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import memory_kib

MODES = ("auto", "live", "cold")
STATES = ("resized", "confirmed", "reverted")
# Disks named by what they are (guest_disk's kinds a resize can grow); others by target device (vda).
DISK_KINDS = ("root", "ephemeral", "swap", "blank")
MAX_DISK_BYTES = (1 << 63) - 1
SECTOR = 512

ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str", "required": True},
    "flavor": {"type": "str"},
    "vcpus": {"type": "int"},
    "memory": {"type": "raw"},
    "max_vcpus": {"type": "int"},
    "max_memory": {"type": "raw"},
    "headroom": {"type": "bool", "default": False},
    "disks": {"type": "dict"},
    "mode": {"type": "str", "default": "auto", "choices": list(MODES)},
    "state": {"type": "str", "default": "resized", "choices": list(STATES)},
    "confirm": {"type": "bool", "default": True},
    "allow_decrease": {"type": "bool", "default": False},
    "shutdown_timeout": {"type": "int", "default": 120},
    "start_timeout": {"type": "int", "default": 60},
    "force_off": {"type": "bool", "default": False},
})
# The single form, and the list form: ``items`` of the same options (each defaulting to the top-level value).
MODULE_SPEC = list_form_spec(CONNECTION.merge(INSTANCES), ITEM_SPEC, "name")
# What a resize to a new size is made of; a ``state`` other than resized takes none of them.
TARGET_OPTIONS = ("flavor", "vcpus", "memory", "max_vcpus", "max_memory", "disks")


def _fail(msg: str) -> None:
    raise VirtfleetError(msg)


def _value(params: Dict[str, Any], key: str) -> Any:
    """The option as given, else its declared default (cores are also called with plain dicts)."""
    value = params.get(key)
    return ITEM_SPEC.argument_spec[key].get("default") if value is None else value


def disk_size(value: Any, what: str) -> int:
    """Bytes of a disk size (binary units, as guest_disk takes them): positive and whole sectors."""
    try:
        size = parse_size(value, what)
    except SizeError as exc:
        raise VirtfleetError(str(exc))
    if not 0 < size <= MAX_DISK_BYTES:
        _fail("%s must be more than 0 and at most %d bytes, got %r" % (what, MAX_DISK_BYTES, value))
    if size % SECTOR:
        _fail("%s must be a whole number of 512-byte sectors (qemu rounds otherwise), got %r" % (what, value))
    return size


def _disks(value: Any) -> Tuple[Tuple[str, int], ...]:
    """((target dev or kind, bytes), ...) in a stable order."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        _fail("disks must be a dictionary of disk (a target device such as vda, or one of %s) to size, got %s"
              % (", ".join(DISK_KINDS), type(value).__name__))
    found = []
    for key in sorted(value, key=str):
        if key not in DISK_KINDS and not DISK_TARGET.matches(key):
            _fail("disks: invalid disk %r: name a target device such as vda or sdb, or one of %s"
                  % (key, ", ".join(DISK_KINDS)))
        found.append((key, disk_size(value[key], "disks.%s" % key)))
    return tuple(found)


def _optional(value: Any, check, *args) -> Any:
    return None if value is None else check(value, *args)


@dataclass(frozen=True)
class ResizeSpec:
    """One guest's resize as asked for, validated. None for a value means: keep it as it is."""

    name: str
    layout: GuestLayout
    uri: str
    state: str
    mode: str
    flavor: Optional[str]
    vcpus: Optional[int]
    memory_kib: Optional[int]
    max_vcpus: Optional[int]
    max_memory_kib: Optional[int]
    headroom: bool
    disks: Tuple[Tuple[str, int], ...]
    confirm: bool
    allow_decrease: bool
    shutdown_timeout: int
    start_timeout: int
    force_off: bool

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "ResizeSpec":
        """The spec of the module's (or a list item's) parameters; a VirtfleetError says what is wrong."""
        if not isinstance(params, dict):
            _fail("parameters must be a dictionary")
        layout = guest_layout(params.get("instances_path"), params.get("name"))
        state = choice_value(_value(params, "state"), STATES, "state")
        if state != "resized":
            given = [key for key in TARGET_OPTIONS if params.get(key) is not None]
            if given:
                _fail("state=%s finishes the resize in progress and takes no new size; leave out %s"
                      % (state, ", ".join(given)))
        vcpus = _optional(params.get("vcpus"), int_value, "vcpus", 1, MAX_VCPUS)
        max_vcpus = _optional(params.get("max_vcpus"), int_value, "max_vcpus", 1, MAX_VCPUS)
        memory = _optional(params.get("memory"), memory_kib, "memory")
        max_memory = _optional(params.get("max_memory"), memory_kib, "max_memory")
        if vcpus is not None and max_vcpus is not None and max_vcpus < vcpus:
            _fail("max_vcpus (%d) must not be smaller than vcpus (%d)" % (max_vcpus, vcpus))
        if memory is not None and max_memory is not None and max_memory < memory:
            _fail("max_memory must not be smaller than memory")
        return cls(
            name=layout.name, layout=layout, state=state,
            uri=text_value(params.get("uri") or DEFAULT_URI, "uri", allow_empty=False, max_len=4096),
            mode=choice_value(_value(params, "mode"), MODES, "mode"),
            flavor=_optional(params.get("flavor"), text_value, "flavor", True, 256),
            vcpus=vcpus, memory_kib=memory, max_vcpus=max_vcpus, max_memory_kib=max_memory,
            headroom=bool_value(_value(params, "headroom"), "headroom"),
            disks=_disks(params.get("disks")),
            confirm=bool_value(_value(params, "confirm"), "confirm"),
            allow_decrease=bool_value(_value(params, "allow_decrease"), "allow_decrease"),
            shutdown_timeout=timeout_value(_value(params, "shutdown_timeout"), "shutdown_timeout"),
            start_timeout=timeout_value(_value(params, "start_timeout"), "start_timeout"),
            force_off=bool_value(_value(params, "force_off"), "force_off"))
