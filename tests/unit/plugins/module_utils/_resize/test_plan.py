"""The resize plan: which change is live, cold or offline and why, and what is refused before anything."""

from __future__ import annotations

import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize import plan as plan_mod
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.plan import plan_resize
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.spec import ResizeSpec

from .conftest import MIB, SHUTOFF


def plan_of(guest, **args):
    return plan_resize(guest.hypervisor, ResizeSpec.from_params(guest.params(**args)))


def summary(plan):
    return [(c.what, c.before, c.after, c.how) for c in plan.changes]


def test_nothing_to_change_is_an_empty_plan(box):
    guest = box()
    plan = plan_of(guest, vcpus=1, memory="256M", disks={"root": "64M"})
    assert not plan.changed and plan.steps == [] and plan.path == ""


def test_growth_within_the_maxima_is_live(box):
    guest = box()
    plan = plan_of(guest, vcpus=2, memory="384M", disks={"root": "96M", "vdb": "80M"})
    assert summary(plan) == [("vcpus", 1, 2, "live"), ("memory", "256M", "384M", "live"),
                             ("disk vda", 64 * MIB, 96 * MIB, "live"), ("disk vdb", 64 * MIB, 80 * MIB, "live")]
    assert plan.path == "live" and plan.vcpus == 2 and plan.new_dimms_kib == (128 * 1024,)
    assert plan.steps == ["prepare", "set_vcpus", "plug_dimms", "block_resize", "sync_definition",
                          "write_domain_xml", "applied", "confirm"]


def test_the_new_domain_xml_is_what_domain_xml_renders_for_the_new_flavor(box):
    """Live (DIMMs kept in the layout) and cold alike, so that the boot role's next run changes nothing."""
    guest = box()
    live = plan_of(guest, vcpus=2, memory="384M")
    with open(guest.layout.domain_xml, "wb") as handle:
        handle.write(live.new_file)
    assert guest.design(vcpus=2, memory="384M").encode() == live.new_file
    assert "<memory model=\"dimm\">" in live.new_file.decode()
    guest.dom.inactive = model.Domain.from_xml(live.new_definition)
    guest.dom.live = guest.dom.inactive.copy()
    cold = plan_of(guest, vcpus=4, memory="1G", headroom=True)
    assert cold.path == "cold"
    with open(guest.layout.domain_xml, "wb") as handle:
        handle.write(cold.new_file)
    assert guest.design(vcpus=4, memory="1G").encode() == cold.new_file
    assert "dimm" not in cold.new_file.decode(), "a cold resize gives all memory to the boot cell"


def test_above_the_maxima_is_cold_and_takes_the_live_changes_along(box):
    guest = box()
    plan = plan_of(guest, vcpus=3, memory="384M", headroom=True)
    assert summary(plan) == [("max_vcpus", 2, 6, "cold"), ("vcpus", 1, 3, "cold"), ("memory", "256M", "384M", "cold")]
    assert "applied in the cold resize that max_vcpus, vcpus needs" in plan.changes[2].why
    assert plan.steps == ["prepare", "shutdown", "redefine", "write_domain_xml", "start", "applied", "confirm"]
    assert plan.vcpus is None and plan.new_dimms_kib == ()


def test_without_headroom_the_maximum_is_the_new_value(box):
    guest = box(headroom=False)
    plan = plan_of(guest, vcpus=2)
    assert summary(plan) == [("max_vcpus", 1, 2, "cold"), ("vcpus", 1, 2, "cold")]


def test_mode_live_refuses_what_needs_a_restart_and_says_why(box):
    guest = box()
    with pytest.raises(VirtfleetError, match=r"mode live: guest g1 cannot take all of this live.*memory 256M -> 300M "
                                             r"\(cold: a hot-plugged DIMM is a whole number of 128 MiB"):
        plan_of(guest, memory="300M", mode="live")


def test_mode_cold_makes_everything_cold(box):
    plan = plan_of(box(), vcpus=2, mode="cold")
    assert summary(plan) == [("vcpus", 1, 2, "cold")] and "mode cold" in plan.changes[0].why


@pytest.mark.parametrize("args, match", [
    ({"vcpus": 2, "memory": "128M"}, "refusing to decrease memory of guest g1 from 256M to 128M"),
    ({"disks": {"root": "32M"}}, "refusing to shrink disk vda .* nothing was changed"),
    ({"disks": {"vdz": "1G"}}, "guest g1 has no disk vdz"),
    ({"disks": {"swap": "1G"}}, "its swap disk"),
    ({"vcpus": 300, "max_vcpus": 300}, "machine pc-i440fx-7.2 takes at most 255"),
    ({"max_memory": "300M", "memory": "256M"}, "refusing to decrease the memory maximum"),
])
def test_refusals_before_anything(box, args, match):
    with pytest.raises(VirtfleetError, match=match):
        plan_of(box(vcpus=2), **args)


def test_decreases_are_cold_with_allow_decrease(box):
    plan = plan_of(box(vcpus=2), vcpus=1, memory="128M", allow_decrease=True)
    assert summary(plan) == [("vcpus", 2, 1, "cold"), ("memory", "256M", "128M", "cold")]


def test_smm_with_secure_boot_grows_vcpus_cold(box):
    guest = box()
    guest.dom.live.features.smm = True
    guest.dom.live.os.loader = model.Loader(path="/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", readonly=True,
                                            type="pflash", secure=True)
    assert summary(plan_of(guest, vcpus=2)) == [("vcpus", 1, 2, "cold")]


def test_ide_disks_grow_cold(box):
    plan = plan_of(box(bus="ide"), disks={"hda": "96M"})
    assert summary(plan) == [("disk hda", 64 * MIB, 96 * MIB, "cold")]
    assert plan.steps[:4] == ["prepare", "shutdown", "backup", "grow_disks"] and "redefine" not in plan.steps


def test_balloon_within_memory(box):
    guest = box(headroom=False)
    guest.dom.live.current_memory_kib = 128 * 1024
    plan = plan_of(guest, memory="200M")
    assert summary(plan) == [("memory", "128M", "200M", "live")] and plan.balloon_kib == 200 * 1024
    assert plan.steps == ["prepare", "balloon", "sync_definition", "write_domain_xml", "applied", "confirm"]


def test_a_stopped_guest_is_resized_offline(box):
    guest = box(state=SHUTOFF)
    plan = plan_of(guest, vcpus=2, disks={"root": "96M"})
    assert {c.how for c in plan.changes} == {"offline"} and plan.path == "offline"
    assert plan.steps == ["prepare", "backup", "grow_disks", "redefine", "write_domain_xml", "applied", "confirm"]


def test_disks_need_their_recorded_format(box):
    guest = box()
    os.unlink(guest.layout.disk_info)
    with pytest.raises(VirtfleetError, match="has no format record.*never probed"):
        plan_of(guest, disks={"root": "96M"})


def test_no_room_for_the_backup_is_refused(box, monkeypatch):
    guest = box(state=SHUTOFF)
    real = os.statvfs
    monkeypatch.setattr(plan_mod.os, "statvfs", lambda p: type("S", (), {"f_bavail": 10, "f_frsize": 4096})()
                        if p == guest.layout.instance_dir else real(p))
    with pytest.raises(VirtfleetError, match="not enough space .* for the backup"):
        plan_of(guest, disks={"root": "96M"})
