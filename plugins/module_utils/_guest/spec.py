# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the arguments of the ``guest`` module, one whole guest per item.

A guest is its image, its disks, its domain XML and its domain: the options of ``image_cache``,
``guest_disk``, ``domain_xml`` and ``domain`` for one guest, nested, without the ones the guest fills in
itself (its name, the image a root disk is built on, the disks of its XML, the XML of its domain).
"""

from __future__ import annotations

import copy
from typing import Dict, Iterable

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, INSTANCES, ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import list_form_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import ITEM_SPEC as DISK_ITEM_SPEC
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import (
    DOMAIN_ITEM_SPEC, DOMAIN_XML_ITEM_SPEC,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import ITEM_SPEC as IMAGE_ITEM_SPEC
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import hide_url_passwords

# What the guest sets in each part, so that its items cannot: the part's options minus these.
FILLED_IN: Dict[str, Iterable[str]] = {
    "image": ("state", "force", "min_unused_age"),  # cached for this guest: present
    "disks": ("guest", "state", "base", "base_format"),  # the root disk's base is the cached image
    "xml": ("name",),  # its disks are the built ones (then any given here)
    "domain": ("name", "xml", "xml_file"),  # defined from the written XML
}


def _part(spec: ArgumentSpec, part: str) -> Dict[str, Dict]:
    options = {k: copy.deepcopy(v) for k, v in spec.argument_spec.items() if k not in FILLED_IN[part]}
    return options


def _constraints(spec: ArgumentSpec, part: str) -> Dict:
    """The part's constraints that name none of the options the guest fills in."""
    gone = set(FILLED_IN[part])
    kept = {}
    for key, value in spec.constraints().items():
        if key == "required_by":
            value = {k: v for k, v in value.items() if k not in gone and not gone & set(v)}
        else:
            value = [c for c in value if not gone & {x for x in c if isinstance(x, str)}]
        if value:
            kept[key] = value
    return kept


_IMAGE = _part(IMAGE_ITEM_SPEC, "image")
_IMAGE["url"]["required"] = True
ITEM_SPEC = ArgumentSpec({
    "name": {"type": "str", "required": True},
    "image": dict({"type": "dict", "options": _IMAGE}, **_constraints(IMAGE_ITEM_SPEC, "image")),
    "disks": dict({"type": "list", "elements": "dict", "options": _part(DISK_ITEM_SPEC, "disks")},
                  **_constraints(DISK_ITEM_SPEC, "disks")),
    "xml": dict({"type": "dict", "options": _part(DOMAIN_XML_ITEM_SPEC, "xml")},
                **_constraints(DOMAIN_XML_ITEM_SPEC, "xml")),
    "domain": dict({"type": "dict", "default": {}, "options": _part(DOMAIN_ITEM_SPEC, "domain")},
                   **_constraints(DOMAIN_ITEM_SPEC, "domain")),
})
# The module: one guest (the options above at the top level), or many in ``items`` (see _batch). image, disks
# and xml are required; the core says so (a list element may take them from the top level).
MODULE_SPEC = list_form_spec(CONNECTION.merge(INSTANCES), ITEM_SPEC, "name")


def hide_image_url_passwords(module) -> None:
    """run_core's ``prepare``: a password in an image part's url or checksum URL never comes back in the output."""
    hide_url_passwords(module, part="image")
