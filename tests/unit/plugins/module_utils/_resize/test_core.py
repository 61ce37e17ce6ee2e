"""vm_resize's core over one (faked) libvirt guest with real files: live, cold and offline runs, the record,
confirm and revert, and the rollback of a failure at every step."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.core import ensure_resize
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.steps import FAULT_ENV

from .conftest import MIB, SHUTOFF, qemu_img_size


def resize(guest, check_mode=False, **args):
    return ensure_resize(guest.params(**args), check_mode=check_mode, hypervisor=guest.hypervisor)


def snapshot(guest):
    found = {}
    for directory, _dirs, names in os.walk(guest.layout.instance_dir):
        for name in names:
            path = os.path.join(directory, name)
            st = os.stat(path)
            found[path] = (st.st_size, st.st_mtime_ns)
    return found


def record_of(guest):
    with open(guest.layout.resize_record) as handle:
        return json.load(handle)


def test_live_resize_makes_only_live_calls_and_updates_definition_file_and_records(box):
    guest = box()
    result = resize(guest, vcpus=2, memory="384M", disks={"root": "96M"})
    assert result["changed"] and result["how"] == "live" and result["downtime_seconds"] == 0
    assert guest.dom.calls == ["setVcpus", "attach", "blockResize"], guest.dom.calls
    assert guest.dom.state_code == 1 and guest.dom.sizes["vda"] == 96 * MIB
    assert guest.conn.defined == [], "the live calls changed the persistent definition themselves"
    assert guest.file_text() == guest.design(vcpus=2, memory="384M")
    with open(guest.layout.disk_info) as handle:
        assert json.load(handle)["disk"]["virtual_size"] == 96 * MIB
    assert result["resize_state"] == "confirmed" and record_of(guest)["state"] == "confirmed"


def test_the_flavor_name_is_set_live_in_the_metadata_and_in_domain_xml(box):
    guest = box(metadata={"flavor": "m1.small", "owned_files": ["/srv/x"]})
    result = resize(guest, flavor="m1.medium", vcpus=2)
    assert [(c["what"], c["before"], c["after"], c["how"]) for c in result["plan"]] == [
        ("flavor", "m1.small", "m1.medium", "live"), ("vcpus", 1, 2, "live")]
    assert guest.dom.calls == ["setMetadata", "setVcpus"] and guest.conn.defined == []
    assert guest.dom.live.metadata.flavor == guest.dom.inactive.metadata.flavor == "m1.medium"
    assert guest.file_text() == guest.design(vcpus=2, metadata={"flavor": "m1.medium", "owned_files": ["/srv/x"]})
    assert not resize(guest, flavor="m1.medium", vcpus=2)["changed"]


def test_resizing_to_the_current_size_writes_nothing(box):
    guest = box()
    before = snapshot(guest)
    result = resize(guest, vcpus=1, memory="256M", disks={"root": "64M"})
    assert not result["changed"] and result["resize_state"] is None and guest.dom.calls == []
    assert snapshot(guest) == before and not os.path.exists(guest.layout.lock)


def test_check_mode_returns_the_plan_and_touches_nothing(box):
    guest = box()
    before, inactive = snapshot(guest), guest.dom.inactive.to_string()
    result = resize(guest, check_mode=True, vcpus=4, memory="1G", disks={"root": "96M"}, headroom=True)
    assert result["changed"] and result["how"] == "cold" and result["downtime_seconds"] is None
    assert guest.dom.calls == [] and guest.conn.defined == [] and snapshot(guest) == before
    assert guest.dom.inactive.to_string() == inactive


def test_cold_resize_unconfirmed_then_confirmed(box):
    guest = box()
    result = resize(guest, vcpus=3, headroom=True, disks={"blank": "96M"}, confirm=False)
    assert result["how"] == "cold" and result["resize_state"] == "applied" and result["state"] == "running"
    assert guest.dom.calls == ["shutdown", "create"] and len(guest.conn.defined) == 1
    assert qemu_img_size(guest.data_disk) == 96 * MIB
    backup = guest.layout.resize_backup("disk.blank")
    assert result["backup"] == [backup] and qemu_img_size(backup) == 64 * MIB
    assert os.stat(backup).st_blocks * 512 < 1 * MIB, "the backup keeps the disk's holes"
    with pytest.raises(VirtfleetError, match="unfinished resize .*state: confirmed, or go back with state: reverted"):
        resize(guest, vcpus=2, allow_decrease=True)
    confirmed = resize(guest, state="confirmed")
    assert confirmed["changed"] and confirmed["resize_state"] == "confirmed" and not os.path.exists(backup)
    assert not resize(guest, state="confirmed")["changed"]
    with pytest.raises(VirtfleetError, match="was confirmed already"):
        resize(guest, state="reverted")


def test_revert_restores_definition_disk_content_file_and_power_state(box):
    guest = box()
    old_file, old_definition = guest.file_text(), guest.dom.inactive.to_string()
    old_data = guest.disk_bytes(guest.data_disk)
    resize(guest, vcpus=3, memory="512M", headroom=True, disks={"blank": "96M"}, confirm=False)
    with open(guest.data_disk, "r+b") as handle:  # the resized guest writes
        handle.seek(48 * MIB)
        handle.write(b"written after the resize")
    result = resize(guest, state="reverted")
    assert result["changed"] and result["resize_state"] == "reverted" and result["state"] == "running"
    assert result["reverted"] == ["shut the guest down", "restored disk vdb from its backup",
                                  "defined the old definition", "wrote the old domain.xml back",
                                  "started the guest again"]
    assert guest.disk_bytes(guest.data_disk) == old_data and qemu_img_size(guest.data_disk) == 64 * MIB
    assert guest.file_text() == old_file and guest.dom.inactive.to_string() == old_definition
    assert not os.path.exists(guest.layout.resize_backup_dir)
    assert not resize(guest, state="reverted")["changed"]


def test_revert_of_a_live_resize_restarts_and_cuts_the_disk_back(box):
    guest = box()
    resize(guest, vcpus=2, disks={"root": "96M"}, confirm=False)
    with open(guest.root_disk, "r+b") as handle:  # blockResize is faked: grow the file as libvirt would
        handle.truncate(96 * MIB)
    result = resize(guest, state="reverted")
    assert "cut disk vda back to 64 MiB" in result["reverted"] and qemu_img_size(guest.root_disk) == 64 * MIB
    assert guest.dom.inactive.vcpu_current == 1 and guest.dom.state_code == 1


def test_offline_resize_keeps_the_guest_off(box):
    guest = box(state=SHUTOFF)
    result = resize(guest, vcpus=2, disks={"root": "80M"})
    assert result["how"] == "offline" and result["state"] == "shutoff" and "create" not in guest.dom.calls
    assert qemu_img_size(guest.root_disk) == 80 * MIB and result["backup"] == []


COLD_STEPS = ["shutdown", "backup", "grow_disks", "redefine", "write_domain_xml", "start"]


@pytest.mark.parametrize("step", COLD_STEPS + ["applied"])
def test_a_failure_at_any_cold_step_rolls_everything_back(box, monkeypatch, step):
    guest = box()
    old_file, old_definition, old_data = guest.file_text(), guest.dom.inactive.to_string(), \
        guest.disk_bytes(guest.data_disk)
    old_records = json.load(open(guest.layout.disk_info))
    if step == "applied":
        real_set_state = __import__("ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.record",
                                    fromlist=["ResizeRecord"]).ResizeRecord.set_state

        def failing(record, state, **facts):
            if state == "applied":
                raise VirtfleetError("cannot write the resize record: No space left on device")
            return real_set_state(record, state, **facts)
        monkeypatch.setattr("ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.record."
                            "ResizeRecord.set_state", failing)
    else:
        monkeypatch.setenv(FAULT_ENV, step)
    with pytest.raises(VirtfleetError, match="failed at step %s: .*Rolled back" % step) as failure:
        resize(guest, vcpus=3, headroom=True, disks={"blank": "96M"})
    details = failure.value.details
    assert details["resize_state"] == "reverted" and details["failed_step"] == step
    if step == "shutdown":
        assert details["rolled_back"] == [] and "nothing had changed yet" in failure.value.msg
    else:
        assert details["rolled_back"][-1] == "started the guest again"
    assert guest.dom.state_code == 1
    assert guest.dom.inactive.to_string() == old_definition or guest.dom.inactive.vcpu_current == 1
    assert guest.file_text() == old_file and guest.disk_bytes(guest.data_disk) == old_data
    assert qemu_img_size(guest.data_disk) == 64 * MIB and json.load(open(guest.layout.disk_info)) == old_records
    assert not os.path.exists(guest.layout.resize_backup_dir)
    assert record_of(guest)["state"] == "reverted" and record_of(guest)["failed_step"] == step
    monkeypatch.undo()
    assert resize(guest, vcpus=3, headroom=True, disks={"blank": "96M"})["resize_state"] == "confirmed"


@pytest.mark.parametrize("step", ["set_vcpus", "plug_dimms", "block_resize"])
def test_a_failed_live_step_puts_the_definition_back_and_says_what_stays_plugged(box, monkeypatch, step):
    guest = box()
    old_file, old_definition = guest.file_text(), guest.dom.inactive.to_string()
    monkeypatch.setenv(FAULT_ENV, step)
    with pytest.raises(VirtfleetError, match="failed at step %s" % step) as failure:
        resize(guest, vcpus=2, memory="384M", disks={"root": "96M"})
    assert guest.dom.state_code == 1 and "shutdown" not in guest.dom.calls, "a live resize never stops the guest"
    assert guest.dom.inactive.to_string() == old_definition and guest.file_text() == old_file
    if step != "set_vcpus":
        assert any("until its next restart" in left for left in failure.value.details["not_undone"])


def test_when_the_rollback_fails_too_the_message_says_where_everything_is(box, monkeypatch):
    guest = box()
    monkeypatch.setenv(FAULT_ENV, "start,restore")
    with pytest.raises(VirtfleetError, match="Rolling back failed too: .* Where things are: the guest is shutoff; "
                                             "disk vdb: grown to 96 MiB, backup at .*resize-backup/disk.blank; "
                                             "libvirt's definition: the new one .* state: reverted") as failure:
        resize(guest, vcpus=3, headroom=True, disks={"blank": "96M"})
    assert failure.value.details["resize_state"] == "prepared"
    assert os.path.exists(guest.layout.resize_backup("disk.blank"))
    # Finishing by hand, as the message says: once the cause is gone, a revert goes back from the record.
    monkeypatch.delenv(FAULT_ENV)
    with pytest.raises(VirtfleetError, match="interrupted before it was applied .* revert it"):
        resize(guest, state="confirmed")
    with pytest.raises(VirtfleetError, match="unfinished resize \\(prepared"):
        resize(guest, vcpus=2)
    reverted = resize(guest, state="reverted")
    assert reverted["resize_state"] == "reverted" and qemu_img_size(guest.data_disk) == 64 * MIB
    assert guest.dom.inactive.vcpu_current == 1 and guest.dom.state_code == 1


def test_a_corrupt_record_stops_everything(box):
    guest = box()
    with open(guest.layout.resize_record, "w") as handle:
        handle.write("{not json")
    with pytest.raises(VirtfleetError, match="resize record .* is unreadable .* nothing was changed"):
        resize(guest, vcpus=2)


@pytest.mark.parametrize("args, match", [
    ({"state": "confirmed", "vcpus": 2}, "state=confirmed finishes the resize in progress and takes no new size"),
    ({"disks": {"../x": "1G"}}, "invalid disk '../x'"),
    ({"disks": {"root": "1000"}}, "whole number of 512-byte sectors"),
    ({"disks": ["root"]}, "disks must be a dictionary"),
    ({"memory": "1.5M"}, "memory"),
    ({"vcpus": 2, "max_vcpus": 1}, "must not be smaller than vcpus"),
    ({"mode": "fast"}, "mode must be one of auto, live, cold"),
    ({"name": "../etc"}, "invalid guest name"),
])
def test_bad_arguments(box, args, match):
    guest = box()
    params = guest.params()
    params.update(args)
    with pytest.raises(VirtfleetError, match=match):
        ensure_resize(params, hypervisor=guest.hypervisor)


def test_state_reverted_without_a_record_is_an_error(box):
    with pytest.raises(VirtfleetError, match="has no resize to revert"):
        resize(box(), state="reverted")
    assert not resize(box(name="g2"), state="confirmed")["changed"]


def test_the_list_form_resizes_each_guest_and_names_each_failure(tmp_path, monkeypatch):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import shared
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.core import vm_resize_core

    from .conftest import FakeDomain, GuestBox

    first = GuestBox(str(tmp_path), name="g1")
    second = GuestBox(str(tmp_path), name="g2")
    first.conn.domains["g2"] = FakeDomain(first.conn, second.dom.inactive.to_string())
    first.conn.domains["g2"].sizes = dict(second.dom.sizes)
    params = {"instances_path": first.instances, "items": [{"name": "g1", "vcpus": 2}, {"name": "g2", "vcpus": 2},
                                                           {"name": "g2x"}], "memory": "384M", "batch_concurrency": 2}
    opened = []

    class Shared:  # the batch's one connection: the faked libvirt
        def __init__(self, uri):
            opened.append(uri)

        def __getattr__(self, name):
            return getattr(first.hypervisor, name)

        def close(self):
            pass

    monkeypatch.setattr(shared, "SharedHypervisor", Shared)
    result = vm_resize_core(params)
    assert opened == ["qemu:///system"], "one connection for the whole batch"
    assert result["failed"] and result["changed"]
    assert result["msg"].startswith("1 of 3 items failed: g2x: domain g2x is not defined"), result["msg"]
    assert [(r["item"], r["changed"], r["failed"]) for r in result["results"]] == [
        ("g1", True, False), ("g2", True, False), ("g2x", False, True)]
    assert first.dom.calls == ["setVcpus", "attach"] and first.conn.domains["g2"].calls == ["setVcpus", "attach"]
    assert first.dom.live.vcpu_current is None and first.dom.live.memory_kib == 384 * 1024
    again = vm_resize_core(dict(params, items=params["items"][:2]))
    assert not again["changed"] and not again.get("failed")


def test_the_core_loads_the_step_handlers_and_qemu_img_only_when_something_changes():
    import subprocess
    import sys

    code = ("import sys; from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize import core; "
            "print(any(m.endswith('_resize.steps') or m.endswith('_host.qemu_img') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.stdout.strip() == "False"
