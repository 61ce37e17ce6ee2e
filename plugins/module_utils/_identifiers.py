# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: one validator per kind of identifier, shared by every module.

An identifier ends up in a file name, an XML attribute, a libvirt object name or a qemu option, so
each kind has exactly one rule, matched against the whole value (``re.fullmatch``: Python's ``$``
also matches before a final newline, which let ``name\\n`` through). Modules and cores never write
their own patterns; they call ``IDENTIFIER.check(value, what)``.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError


class Identifier:
    """A kind of identifier: its pattern, what it looks like in words, and extra forbidden values."""

    def __init__(self, pattern: str, looks_like: str, forbidden: tuple = (), flags: int = 0) -> None:
        self.regex = re.compile(pattern, flags)
        self.looks_like = looks_like
        self.forbidden = frozenset(forbidden)

    def matches(self, value: Any) -> bool:
        return isinstance(value, str) and self.regex.fullmatch(value) is not None and value not in self.forbidden

    def check(self, value: Any, what: str) -> str:
        """``value`` when it is such an identifier; else a VirtfleetError naming ``what`` and the rule."""
        if not self.matches(value):
            raise VirtfleetError("invalid %s %r: %s" % (what, value, self.looks_like))
        return value

    def check_optional(self, value: Any, what: str) -> Optional[str]:
        return None if value is None else self.check(value, what)


# Guests: a libvirt domain name and a directory under the instances path (see _layout for the reserved ones).
GUEST_NAME = Identifier(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
                        "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                        forbidden=(".", ".."))
# A disk's file inside its instance directory.
FILE_NAME = Identifier(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
                       "use a plain file name (letters, digits, '.', '_' or '-'), not a path")
# Filesystem and swap labels (each filesystem also has its own length limit, checked by mkfs's rules).
FS_LABEL = Identifier(r"[A-Za-z0-9._-]{0,16}", "use at most 16 letters, digits, '.', '_' or '-'")
# qemu's fw_cfg names users may set: qemu reserves everything outside opt/; at most 55 bytes.
FW_CFG_NAME = Identifier(r"opt/[A-Za-z0-9._/-]{1,51}",
                         "use opt/<reverse-domain>/<key> with letters, digits, '.', '_', '-', '/' (at most 55 "
                         "characters); qemu reserves names outside opt/")
MAC = Identifier(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}", "use six hex pairs separated by ':', such as "
                 "52:54:00:12:34:56")
# libvirt networks, host bridges and host interfaces (IFNAMSIZ is 16 with its NUL).
NETWORK_NAME = Identifier(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
                          "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
HOST_INTERFACE = Identifier(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,14}",
                            "use a host interface name of 1-15 letters, digits, '.', '_', ':' or '-'")
CPU_MODEL = Identifier(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "use a CPU model name such as Skylake-Client")
MACHINE = Identifier(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "use a machine type name such as pc or q35")
# An id of a QEMU object we name on QEMU's command line (a user NIC's -netdev): QEMU wants a letter first.
QEMU_ID = Identifier(r"[A-Za-z][A-Za-z0-9_-]{0,31}", "use 1-32 letters, digits, '_' or '-', starting with a letter")
# An IPv4 address in dotted-quad form, as it goes into a QEMU option (no leading zeros, each part 0-255).
_IPV4_PART = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_ADDRESS = Identifier(r"%s(?:\.%s){3}" % (_IPV4_PART, _IPV4_PART), "use an IPv4 address such as 127.0.0.1")
# One value of a QEMU option list (key=value,key=value): ',' '=' or a blank would start another option.
QEMU_OPTION_VALUE = Identifier(r"[A-Za-z0-9._:-]{1,128}", "use letters, digits, '.', '_', ':' or '-' only")
DISK_TARGET = Identifier(r"(?:vd|sd|hd)[a-z]{1,2}", "use a target device name such as vda, sdb or hdc")
# One component of a path on a config drive.
DRIVE_PATH_PART = Identifier(r"[A-Za-z0-9._@+=,-]{1,64}",
                             "each part may hold 1-64 letters, digits and . _ @ + = , -", forbidden=(".", ".."))
