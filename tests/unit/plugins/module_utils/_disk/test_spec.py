"""guest_disk's spec: choices said once, and the typed DiskSpec that refuses what Ansible's types cannot."""

from __future__ import annotations

import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, INSTANCES
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive, mkfs
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import spec as disk_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.apply import HANDLERS
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import DiskSpec


def test_module_spec_is_the_shared_options_the_item_spec_and_its_list_form():
    spec = disk_spec.MODULE_SPEC.argument_spec
    assert spec["uri"] == CONNECTION.argument_spec["uri"]
    assert spec["instances_path"] == INSTANCES.argument_spec["instances_path"]
    assert set(spec) == {"uri", "instances_path", "items", "batch_concurrency"} | set(disk_spec.ITEM_SPEC.argument_spec)
    assert set(spec["items"]["options"]) == set(disk_spec.ITEM_SPEC.argument_spec)
    assert disk_spec.ITEM_SPEC.as_list_option()["options"]["kind"]["choices"] == list(disk_spec.KINDS)


def test_choices_are_the_constants_every_part_uses():
    item = disk_spec.ITEM_SPEC.argument_spec
    assert item["format"]["choices"] == list(disk_spec.DISK_FORMATS + disk_spec.DRIVE_FORMATS)
    assert item["fs_type"]["choices"] == list(disk_spec.FS_TYPES)
    assert set(mkfs.FS_TOOLS) == set(disk_spec.FS_TYPES) | {disk_spec.SWAP_FS}
    assert set(config_drive.LABELS) == set(disk_spec.DRIVE_FORMATS)
    assert item["preallocation"]["choices"] == list(disk_spec.PREALLOCATIONS)
    assert item["backing"]["choices"] == list(disk_spec.BACKINGS)


def test_every_action_the_module_documents_has_a_handler():
    from ansible_collections.virtfleet.libvirt.plugins.modules import guest_disk

    for action in ("create_base", "create", "grow", "rebuild", "chmod", "chown", "remove", "forget", "adopt"):
        assert "C(%s)" % action in guest_disk.RETURN, action
        assert action in HANDLERS, action


def test_from_params_builds_the_layout_and_the_kind_defaults(tmp_path):
    spec = DiskSpec.from_params({"guest": "g1", "instances_path": str(tmp_path) + "/./x/..", "kind": "swap",
                                 "size": "1G", "mode": "0640", "owner": "0", "group": "0"})
    assert spec.path == os.path.join(str(tmp_path), "g1", "disk.swap") and spec.file_name == "disk.swap"
    assert (spec.format, spec.drive_format, spec.size) == ("qcow2", None, 1 << 30)
    assert spec.wants == disk_spec.Ownership(0o640, 0, 0) and spec.created_mode == 0o640
    drive = DiskSpec.from_params({"guest": "g1", "instances_path": str(tmp_path), "kind": "config_drive",
                                  "format": "nocloud", "hostname": "h"})
    assert (drive.format, drive.drive_format, drive.created_mode) == ("raw", "nocloud", 0o600)
    assert drive.drive_params()["hostname"] == "h" and drive.drive_params()["guest"] == "g1"


@pytest.mark.parametrize("params,words", [
    ({"kind": "cdrom"}, "kind must be one of"),
    ({"state": "gone"}, "state must be one of"),
    ({"preallocation": "some"}, "preallocation must be one of"),
    ({"guest": "../x"}, "invalid guest name"),
    ({"guest": "locks"}, "reserved"),
    ({"instances_path": "relative/dir"}, "must be an absolute path"),
    ({"file_name": "a/b"}, "invalid file_name"),
    ({"file_name": "console.log"}, "instance directory's own records"),
    ({"format": "vmdk"}, "format must be one of"),
    ({"size": "ten"}, "cannot parse"),
    ({"mode": "rw"}, "octal"),
    ({"owner": "no-such-user-vf"}, "not a user"),
    ({"group": "no-such-group-vf"}, "not a group"),
    ({"backing": "thin"}, "backing must be one of"),
])
def test_from_params_refuses(tmp_path, params, words):
    with pytest.raises(VirtfleetError, match=words):
        DiskSpec.from_params(dict({"guest": "g1", "instances_path": str(tmp_path)}, **params))
