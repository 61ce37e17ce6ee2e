# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: what guest_disk accepts, said once.

``ITEM_SPEC`` is the argument spec of one disk (its choices come from the constants below, which the
planner uses too); ``MODULE_SPEC`` adds the shared connection and instances options. ``DiskSpec`` is
the typed, validated form of one disk's options that the planner works from: everything Ansible's
types cannot check (names, paths, sizes, modes, owners, formats per kind) is refused here, before
anything is read from disk.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, DEFAULT_URI, INSTANCES
from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import list_form_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import GuestLayout, guest_layout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size

KINDS = ("root", "ephemeral", "swap", "blank", "config_drive")
FORMATTED_KINDS = ("ephemeral", "swap")  # made from a cached formatted base
STATES = ("present", "absent")
DISK_FORMATS = ("qcow2", "raw")           # what a disk file is
DRIVE_FORMATS = ("config-2", "nocloud")   # what a config drive's layout is (the file is a raw ISO)
FORMATS = DISK_FORMATS + DRIVE_FORMATS
PREALLOCATIONS = ("off", "metadata", "falloc", "full")
FS_TYPES = ("ext4", "ext3", "ext2", "xfs", "vfat")
SWAP_FS = "swap"                          # the "filesystem" of a swap disk
BACKINGS = ("overlay", "flat")
DEFAULT_FS_TYPE = "ext4"
DEFAULT_EPHEMERAL_LABEL = "ephemeral0"
# Guest data stays private on the host: libvirt (dynamic_ownership) hands the file to the qemu user while
# the guest runs. With a group (such as kvm) the group may read and write it too.
DEFAULT_MODE = 0o600
DEFAULT_GROUP_MODE = 0o660
MAX_SIZE = (1 << 63) - 512   # qemu's and the kernel's file sizes are signed 64-bit numbers of bytes
MAX_ID = (1 << 32) - 2        # uid_t/gid_t; (1 << 32) - 1 means "unchanged" to chown
# Options that fill a config drive (passed to _disk.config_drive.drive_files as they are).
DRIVE_OPTIONS = ("hostname", "instance_uuid", "public_keys", "user_data", "admin_pass", "network_data",
                 "vendor_data", "metadata", "files", "extra_files")
# The options each kind takes besides those every disk has (guest, kind, state, file_name, mode, ...);
# any other is refused rather than silently ignored.
KIND_OPTIONS = {
    "root": ("format", "size", "preallocation", "base", "base_format", "backing"),
    "ephemeral": ("format", "size", "preallocation", "backing", "fs_type", "label"),
    "swap": ("format", "size", "preallocation", "backing", "label"),
    "blank": ("format", "size", "preallocation"),
    "config_drive": ("format",) + DRIVE_OPTIONS,
}
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

ITEM_SPEC = ArgumentSpec({
    "guest": {"type": "str", "required": True},
    "kind": {"type": "str", "default": "root", "choices": list(KINDS)},
    "state": {"type": "str", "default": "present", "choices": list(STATES)},
    "force": {"type": "bool", "default": False},
    "adopt": {"type": "bool", "default": False},
    "instance_dir": {"type": "path"},
    "file_name": {"type": "str"},
    "format": {"type": "str", "choices": list(FORMATS)},
    "size": {"type": "str"},
    "preallocation": {"type": "str", "choices": list(PREALLOCATIONS)},
    "base": {"type": "path"},
    "base_format": {"type": "str", "choices": list(DISK_FORMATS)},
    "backing": {"type": "str", "choices": list(BACKINGS)},
    "fs_type": {"type": "str", "choices": list(FS_TYPES)},
    "label": {"type": "str"},
    "mode": {"type": "raw"},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "hostname": {"type": "str"},
    "instance_uuid": {"type": "str"},
    # Only whole secret strings are no_log: Ansible masks every value of a no_log option wherever it appears
    # in the output, so a short value of a dict ("1") would corrupt the paths this module returns.
    "public_keys": {"type": "raw", "no_log": False},
    "user_data": {"type": "str", "no_log": True},
    "admin_pass": {"type": "str", "no_log": True},
    "network_data": {"type": "dict"},
    "vendor_data": {"type": "dict", "no_log": False},
    "metadata": {"type": "dict"},
    "files": {"type": "list", "elements": "dict", "options": {
        "path": {"type": "str", "required": True},
        "content": {"type": "str", "required": True, "no_log": True},
    }},
    "extra_files": {"type": "dict", "no_log": False},
})
# The module: one disk (the options above at the top level), or many in ``items`` (see _batch).
MODULE_SPEC = list_form_spec(CONNECTION.merge(INSTANCES), ITEM_SPEC, "guest")


def _choice(params: Mapping[str, Any], name: str, choices: Tuple[str, ...], default: Optional[str]) -> Optional[str]:
    value = params.get(name)
    if value is None:
        return default
    if value not in choices:
        raise VirtfleetError("%s must be one of %s (got %r)" % (name, ", ".join(choices), value))
    return value


def resolve_format(kind: str, fmt: Optional[str]) -> Tuple[str, Optional[str]]:
    """(disk file format, config drive layout) for ``kind`` from the ``format`` option."""
    if kind == "config_drive":
        if fmt is None or fmt in DRIVE_FORMATS:
            return "raw", fmt or DRIVE_FORMATS[0]
        raise VirtfleetError("a config drive's format is config-2 (OpenStack layout) or nocloud (label cidata); "
                             "the file itself is always a raw ISO9660 image (got format: %s)" % fmt)
    if fmt in DRIVE_FORMATS:
        raise VirtfleetError("format %s is for kind: config_drive only; a %s disk is qcow2 or raw" % (fmt, kind))
    if fmt is not None and fmt not in DISK_FORMATS:
        raise VirtfleetError("format must be one of %s (got %r)" % (", ".join(FORMATS), fmt))
    return fmt or DISK_FORMATS[0], None


def parse_size_option(value: Any) -> Optional[int]:
    """Bytes of a ``size`` option; None when it is not given."""
    if value is None or value == "":
        return None
    try:
        size = parse_size(value, "size")
    except SizeError as exc:
        raise VirtfleetError(str(exc))
    except (ValueError, OverflowError):  # a float that is no number (nan, inf)
        raise VirtfleetError("size: expected a size such as 10G, 512M or a number of bytes, got %r" % (value,))
    if size <= 0:
        raise VirtfleetError("size must be more than 0 bytes (got %r)" % (value,))
    if size > MAX_SIZE:
        raise VirtfleetError("size %r is too large: a disk holds at most %d bytes" % (value, MAX_SIZE))
    return size


# What the options are when they are given, for callers that bypass Ansible's type checks (a list item, a test).
_OPTION_TYPES = {"str": (str,), "path": (str,), "dict": (dict,), "list": (list,), "bool": (bool,)}


def _check_types(params: Mapping[str, Any]) -> None:
    for name, option in ITEM_SPEC.argument_spec.items():
        value, wanted = params.get(name), _OPTION_TYPES.get(option["type"])
        if name == "size":
            wanted = (str, int, float)  # a number of bytes is a size too
        if value is not None and wanted is not None and not isinstance(value, wanted):
            raise VirtfleetError("%s must be a %s, got %r" % (name, option["type"], value))
    for index, item in enumerate(params.get("files") or []):
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("path", "content")):
            raise VirtfleetError("files[%d] must be a dict with the strings path and content" % index)
    keys = params.get("public_keys")
    if keys is not None and not isinstance(keys, (str, list, dict)):
        raise VirtfleetError("public_keys must be a key, a list of keys or a dict of name to key, got %r" % (keys,))


def _refuse_other_kinds_options(params: Mapping[str, Any], kind: str) -> None:
    """Options of other kinds are refused: silently ignoring them would leave the user believing them applied."""
    taken = KIND_OPTIONS[kind]
    stray = sorted({name for options in KIND_OPTIONS.values() for name in options
                    if name not in taken and params.get(name) is not None})
    if stray:
        raise VirtfleetError("%s %s not apply to a %s disk; remove %s (a %s disk takes %s)" % (
            ", ".join(stray), "does" if len(stray) == 1 else "do", kind, "it" if len(stray) == 1 else "them",
            kind, ", ".join(taken)))


def validate_instance_uuid(value: Any) -> Optional[str]:
    """A config drive's instance UUID: the canonical 8-4-4-4-12 hex form, not the nil UUID."""
    if value is None:
        return None
    if not isinstance(value, str) or not UUID_RE.fullmatch(value) or not value.strip("0-"):
        raise VirtfleetError("invalid instance_uuid %r: use a UUID such as 5f6a1c2e-0b9d-4e7a-8c3f-2a1b0c9d8e7f "
                             "(the domain's UUID, so that both agree), not the nil UUID" % (value,))
    return value


def _sensible_mode(mode: int) -> bool:
    """Whether ``mode`` reads like permissions someone meant: no setuid/setgid/sticky bits on a disk, and the
    owner allowed at least what the group is, the group at least what others are, nobody writing what
    they cannot read (ansible-lint's risky-octal idea). A YAML ``mode: 644`` arrives as the number 644, that is 0o1204, and is not."""
    user, group, other = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    write_without_read = any(bits & 2 and not bits & 4 for bits in (user, group, other))
    return mode <= 0o777 and user & group == group and group & other == other and not write_without_read


def parse_mode(value: Any) -> Optional[int]:
    """An octal mode ('0600', '600', 0o600 as an int); None when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise VirtfleetError("mode must be an octal number such as '0600', got %r" % (value,))
    if isinstance(value, int):
        if not 0 <= value <= 0o7777 or not _sensible_mode(value):
            raise VirtfleetError(
                "mode %d was given as a number, which YAML and Ansible read as decimal (%d is octal %s); quote "
                "the octal mode you meant, such as mode: '0%d'" % (value, value, oct(value)[2:], value))
        return value
    text = str(value).strip()
    if not re.fullmatch(r"0?[0-7]{3,4}", text):
        raise VirtfleetError("mode must be an octal number such as '0600' (quote it in YAML), got %r" % (value,))
    return int(text, 8)


def _resolve_id(value: Any, lookup: Callable[[str], int], what: str) -> Optional[int]:
    """A uid or gid from a number or a name (``lookup``); None when not given."""
    if value is None or value == "":
        return None
    text = str(value)
    account = "user" if what == "owner" else "group"
    if text.isdigit():
        number = int(text)
        if number > MAX_ID:
            raise VirtfleetError("%s %s is out of range: a %s id is at most %d" % (what, text, account, MAX_ID))
        return number
    try:
        return lookup(text)
    except KeyError:
        raise VirtfleetError("%s %r is not a %s on the hypervisor" % (what, value, account))


def resolve_owner(owner: Any) -> Optional[int]:
    return _resolve_id(owner, lambda name: pwd.getpwnam(name).pw_uid, "owner")


def resolve_group(group: Any) -> Optional[int]:
    return _resolve_id(group, lambda name: grp.getgrnam(name).gr_gid, "group")


@dataclass(frozen=True)
class Ownership:
    """Mode and owner a disk file must have; None leaves that attribute as it is."""

    mode: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None


@dataclass(frozen=True)
class DiskSpec:
    """One disk of one guest, as asked for, validated."""

    layout: GuestLayout
    kind: str
    state: str
    file_name: str
    format: str                  # the file's format (a config drive is raw)
    drive_format: Optional[str]  # a config drive's layout
    size: Optional[int]
    preallocation: Optional[str]  # None for off
    base: Optional[str]
    base_format: Optional[str]
    backing: Optional[str]       # None: the kind's default
    fs_type: Optional[str]
    label: Optional[str]
    wants: Ownership
    created_mode: int
    force: bool = False
    adopt: bool = False          # record an existing file that has no (matching) record, as the options say
    format_given: bool = False
    uri: str = DEFAULT_URI
    drive_options: Dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.layout.file(self.file_name)

    @property
    def present(self) -> bool:
        return self.state == "present"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "DiskSpec":
        """The spec of the module's (or a list item's) parameters; a VirtfleetError says what is wrong."""
        _check_types(params)
        kind = _choice(params, "kind", KINDS, "root")
        state = _choice(params, "state", STATES, "present")
        preallocation = _choice(params, "preallocation", PREALLOCATIONS, None)
        if preallocation == "off":
            params = dict(params, preallocation=None)  # the same as not asking
        layout = guest_layout(params.get("instances_path"), params.get("guest"), params.get("instance_dir"))
        file_name = params.get("file_name") or None
        path = layout.disk(kind, file_name)
        _refuse_other_kinds_options(params, kind)
        if params.get("force") and state == "present":
            raise VirtfleetError("force applies to state: absent only (it removes a disk that a domain still names)")
        fmt, drive_format = resolve_format(kind, params.get("format"))
        wants = Ownership(parse_mode(params.get("mode")), resolve_owner(params.get("owner")),
                          resolve_group(params.get("group")))
        created_mode = wants.mode if wants.mode is not None else (
            DEFAULT_MODE if wants.gid is None else DEFAULT_GROUP_MODE)
        validate_instance_uuid(params.get("instance_uuid"))
        return cls(
            layout=layout, kind=kind, state=state, file_name=os.path.basename(path), format=fmt,
            drive_format=drive_format, size=parse_size_option(params.get("size")),
            preallocation=None if preallocation in (None, "off") else preallocation,
            base=params.get("base") or None, base_format=_choice(params, "base_format", DISK_FORMATS, None),
            backing=_choice(params, "backing", BACKINGS, None), fs_type=params.get("fs_type"),
            label=params.get("label"), wants=wants, created_mode=created_mode, force=bool(params.get("force")),
            adopt=bool(params.get("adopt")), format_given=params.get("format") is not None,
            uri=params.get("uri") or DEFAULT_URI,
            drive_options={name: params.get(name) for name in DRIVE_OPTIONS})

    def drive_params(self) -> Dict[str, Any]:
        """What _disk.config_drive.drive_files reads."""
        return dict(self.drive_options, guest=self.layout.name, drive_format=self.drive_format)
