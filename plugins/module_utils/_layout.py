# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the names we accept for guests.

A guest name becomes a libvirt domain name and a directory under the instances path, so it must
not be able to climb out of it or smuggle anything into XML. Kept apart from the modules that use
it so that each imports only this small file.
"""

from __future__ import annotations

import re

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

GUEST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_guest_name(name: str) -> str:
    """``name`` when it is a safe guest name, else a VirtfleetError saying what is allowed."""
    if not isinstance(name, str) or not GUEST_NAME_RE.match(name) or name in (".", ".."):
        raise VirtfleetError("invalid guest name %r: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit" % (name,))
    return name
