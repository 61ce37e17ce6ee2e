# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the inspector's version and format names, without the inspector.

A cached re-run compares a record's inspector version with the current one and must not load
``_image_format`` (38 KB of source, compiled on every run under AnsiballZ) to learn a number.
``_image_format`` takes both from here: bump ``INSPECTOR_VERSION`` here whenever an inspection rule
changes.
"""

INSPECTOR_VERSION = 2

# Our format names -> qemu-img driver names. iso/gpt/mbr are raw bytes with a recognised layout.
QEMU_FORMAT_NAMES = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "qed": "qed",
    "luks": "luks",
    "iso": "raw",
    "gpt": "raw",
    "mbr": "raw",
}
