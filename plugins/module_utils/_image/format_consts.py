# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the inspector's version and format names, without the inspector.

A cached re-run compares a record's inspector version with the current one and must not load
``_image.format`` (38 KB of source, compiled on every run under AnsiballZ) to learn a number.
``_image.format`` takes both from here: bump ``INSPECTOR_VERSION`` here whenever an inspection rule
changes. The format-name table itself belongs to the host layer (``_host.qemu_formats``: qemu's
driver names are qemu-img's concern); it is named here for the inspector.
"""

from __future__ import annotations

from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.qemu_formats import (  # noqa: F401
    QEMU_FORMAT_NAMES,
)

__all__ = ["INSPECTOR_VERSION", "QEMU_FORMAT_NAMES"]

INSPECTOR_VERSION = 2
