import json

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import (
    CONNECTION_ARGS, INSTANCES_ARGS, VirtfleetError, merge_specs, run_module,
)


class FakeModule:
    """Records what run_module asks of an AnsibleModule."""

    _name = "virtfleet.libvirt.test"

    def __init__(self, diff=False):
        self._diff = diff
        self.exited = None
        self.failed = None

    def exit_json(self, **kwargs):
        self.exited = kwargs
        raise SystemExit(0)

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise SystemExit(1)


def test_merge_specs_composes_and_refuses_conflicts():
    merged = merge_specs(CONNECTION_ARGS, INSTANCES_ARGS, {"name": {"type": "str"}})
    assert set(merged) == {"uri", "instances_path", "name"}
    with pytest.raises(ValueError, match="^option 'a' defined twice with different specs$"):
        merge_specs({"a": {"type": "str"}}, {"a": {"type": "int"}})


def test_run_module_turns_errors_into_fail_json():
    module = FakeModule()

    def core(_params):
        raise VirtfleetError("disk is full: free space in /x", path="/x")

    with pytest.raises(SystemExit, match="^1$"):
        run_module(module, core)
    assert module.failed == {"msg": "disk is full: free space in /x", "path": "/x"}


def test_run_module_never_lets_a_traceback_escape():
    module = FakeModule()
    with pytest.raises(SystemExit, match="^1$"):
        run_module(module, lambda _: {}["missing"])
    assert module.failed["msg"].startswith("internal error in virtfleet.libvirt.test: KeyError")
    assert "Traceback" in module.failed["exception"]


@pytest.mark.parametrize("diff", [True, False])
def test_run_module_returns_diff_only_in_diff_mode(diff):
    module = FakeModule(diff=diff)
    with pytest.raises(SystemExit, match="^0$"):
        run_module(module, lambda _: {"changed": True, "diff": {"before": "a", "after": "b"}})
    assert ("diff" in module.exited) is diff
    json.dumps(module.exited)


def test_code_digest_hashes_sources_without_importing_them():
    import sys
    from ansible_collections.virtfleet.libvirt.plugins.module_utils import _common

    module = "ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.mkfs"
    sys.modules.pop(module, None)
    first = _common.code_digest(("_disk.mkfs", "_sizes"))
    assert first is not None and len(first) == 64
    assert module not in sys.modules  # read, not imported
    assert _common.code_digest(("_disk.mkfs", "_sizes")) == first
    assert _common.code_digest(("_sizes", "_disk.mkfs")) != first  # order and names are part of it
    assert _common.code_digest(("_no_such_module",)) is None
