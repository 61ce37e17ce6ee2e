"""vm_resize's options: the documentation says what the spec declares, and the typed spec validates."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize import spec
from tests.unit.plugins.module_utils._domain.test_spec import _compare, _documented


def test_the_documentation_says_what_the_spec_declares():
    _compare(_documented("vm_resize"), spec.MODULE_SPEC.argument_spec, "vm_resize")


def test_unchanged_values_are_none_and_sizes_are_typed():
    parsed = spec.ResizeSpec.from_params({"name": "web1", "memory": "2G", "disks": {"vdb": "1G", "root": 1 << 30}})
    assert (parsed.vcpus, parsed.memory_kib, parsed.max_vcpus) == (None, 2 << 20, None)
    assert parsed.disks == (("root", 1 << 30), ("vdb", 1 << 30))
    assert (parsed.mode, parsed.state, parsed.confirm, parsed.layout.resize_record) == (
        "auto", "resized", True, "/var/lib/virtfleet/instances/web1/resize.json")


@pytest.mark.parametrize("params, match", [
    ({"name": "web1", "disks": {"root": 0}}, "more than 0"),
    ({"name": "web1", "disks": {"config_drive": "1G"}}, "invalid disk 'config_drive'"),
    ({"name": "web1", "memory": "1G", "max_memory": "512M"}, "max_memory must not be smaller than memory"),
    ({"name": "web1", "state": "reverted", "disks": {"root": "1G"}}, "takes no new size; leave out disks"),
    ({"name": "web1", "shutdown_timeout": -1}, "shutdown_timeout must be a number of seconds"),
    ({"name": "web1", "confirm": "yes"}, "confirm must be a boolean"),
])
def test_refused(params, match):
    with pytest.raises(VirtfleetError, match=match):
        spec.ResizeSpec.from_params(params)
