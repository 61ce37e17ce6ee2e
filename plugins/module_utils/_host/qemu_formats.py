# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: our format names and the qemu-img driver each one is opened with.

qemu's driver names are qemu-img's concern, so they live in the host layer; this file is kept apart
from ``_host.qemu_img`` so that code which only needs a name (a cached image's re-run) does not load
the wrapper.
"""

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
# The qemu drivers any qemu-img call may name; anything else is a caller bug or an injection attempt.
QEMU_DRIVERS = frozenset(QEMU_FORMAT_NAMES.values())
