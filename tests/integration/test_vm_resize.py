"""vm_resize on real libvirtd with the real test guest (TCG), which testifies.

Guests are built as the boot role builds them (guest_disk, domain_xml with headroom, domain) and run in
stay mode with a heartbeat, so the guest reports every change it sees (vCPUs online, MemTotal, disk sizes,
its boot id) and the host sees every second it is up. What is asserted comes from those reports, from
libvirt and from the disk, not from the module's result alone.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time

import libvirt
import pytest

from tests.integration.conftest import wait_for_report
from tests.support.heartbeat import HeartbeatMonitor
from tests.support.runner import run_module

MIB = 1 << 20
KIB = 1 << 10
BASE_FLAVOR = {"vcpus": 1, "memory": "256M"}


class Booted:
    """A running test guest and everything a test needs to ask about it."""

    def __init__(self, sandbox, name, xml_args, disk_args):
        self.sandbox, self.name, self.xml_args, self.disk_args = sandbox, name, xml_args, disk_args
        self.dir = os.path.join(sandbox.instances, name)
        self.console = os.path.join(self.dir, "console.log")
        self.domain_xml = os.path.join(self.dir, "domain.xml")

    def resize(self, check=False, diff=False, env=None, **args):
        args.setdefault("instances_path", self.sandbox.instances)
        result = _run("vm_resize", dict(name=self.name, **args), check=check, diff=diff, env=env)
        assert "Traceback" not in result["_stderr"], result["_stderr"]
        return result

    def report(self, predicate=None, timeout=180):
        return wait_for_report(self.console, timeout=timeout, predicate=predicate)

    def dom(self):
        return self.sandbox.conn.lookupByName(self.name)

    def inactive(self):
        return self.dom().XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    def state(self):
        return {1: "running", 3: "paused", 5: "shutoff"}.get(self.dom().state()[0], "other")

    def file_bytes(self, name="domain.xml"):
        with open(os.path.join(self.dir, name), "rb") as handle:
            return handle.read()

    def files(self):
        """(size, mtime_ns) of every file of the guest but its console log: what a no-op must not touch."""
        found = {}
        for directory, _dirs, names in os.walk(self.dir):
            for name in names:
                if name != "console.log":
                    st = os.stat(os.path.join(directory, name))
                    found[os.path.join(directory, name)] = (st.st_size, st.st_mtime_ns)
        return found

    def rerun_boot_modules(self, flavor):
        """What the boot role runs for a guest of ``flavor``: its disks, its XML, its domain; the results."""
        disks = [_run("guest_disk", dict(self.disk_args[0], size=flavor["disk"]))]
        disks += [_run("guest_disk", dict(args, size=flavor["data"])) for args in self.disk_args[1:]]
        xml = _run("domain_xml", dict(self.xml_args, vcpus=flavor["vcpus"], memory=flavor["memory"]))
        domain = _run("domain", {"name": self.name, "instances_path": self.sandbox.instances, "xml": xml["xml"]})
        return disks, xml, domain


def _run(module, args, check=False, diff=False, env=None):
    old = dict(os.environ)
    try:
        os.environ.update(env or {})
        return run_module(module, args, check=check, diff=diff)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _boot(sandbox, guest_image, label="r", mode="stay", headroom=True, data_disk=True, data_bus=None, **flavor):
    """Boot a test guest like the boot role does: a qcow2 root overlay, a 64 MiB data disk (vdb, or on
    ``data_bus``, which the guest scribbles on), domain_xml with headroom, and the domain started."""
    name = sandbox.guest_name(label)
    flavor = dict(BASE_FLAVOR, **flavor)
    disk_args = [{"guest": name, "kind": "root", "size": "64M", "format": "qcow2", "base": guest_image["path"],
                  "base_format": "raw", "instances_path": sandbox.instances}]
    if data_disk:
        disk_args.append({"guest": name, "kind": "blank", "size": "64M", "format": "qcow2",
                          "instances_path": sandbox.instances})
    disks = []
    for args in disk_args:
        made = _run("guest_disk", args)
        assert made["_rc"] == 0, made
        disks.append(made["xml_disk"])
    disks[0]["boot_order"] = 1
    if data_bus:
        disks[1].update(bus=data_bus)
    fw_cfg = {"opt/org.virtfleet/mode": mode, "opt/org.virtfleet/heartbeat": "1"}
    if data_disk:
        fw_cfg["opt/org.virtfleet/scribble"] = "vdb" if not data_bus else "sda"
    xml_args = {"name": name, "virt_type": "qemu", "instances_path": sandbox.instances, "headroom": headroom,
                "fw_cfg": fw_cfg, "disks": disks}
    xml_args.update(flavor)
    written = _run("domain_xml", xml_args)
    assert written["_rc"] == 0, written
    started = _run("domain", {"name": name, "instances_path": sandbox.instances})
    assert started["_rc"] == 0, started
    guest = Booted(sandbox, name, xml_args, disk_args)
    guest.first = guest.report()
    return guest


@pytest.fixture
def boot(sandbox, guest_image):
    """A test's own guest: ``boot(label, mode=..., headroom=..., data_disk=..., data_bus=..., **flavor)``."""
    return functools.partial(_boot, sandbox, guest_image)


# Guests shared by the tests of this file, one after the other (each boot costs seconds of TCG). Each test
# starts from the guest's latest report, not from its first, so that it also runs alone (-k).

@pytest.fixture(scope="module")
def ide_guest(module_sandbox, guest_image):
    """Ignores the power button and has its data disk on IDE: refusals (while untouched), then live growth,
    then a cold resize whose shutdown times out."""
    return _boot(module_sandbox, guest_image, "ide", mode="stay-noacpi", data_bus="ide")


@pytest.fixture(scope="module")
def fault_guest(module_sandbox, guest_image):
    """Every failed cold resize leaves it as it was (that is what the fault tests assert)."""
    return _boot(module_sandbox, guest_image, "fault")


@pytest.fixture(scope="module")
def shrink_guest(module_sandbox, guest_image):
    """2 vCPUs and 320 MiB, no data disk: shrunk cold, then grown back while shut off."""
    return _boot(module_sandbox, guest_image, "shrink", vcpus=2, memory="320M", data_disk=False)


def _mem_grew_by(report, before, kib):
    """MemTotal moved by ``kib`` (plugged memory is all usable; a little slack for what the kernel keeps)."""
    return abs(report.mem_kib - before.mem_kib - kib) <= 4 * KIB


# ------------------------------------------------------------------------------- refusals, then live

def test_refusals_leave_the_guest_untouched(ide_guest):
    guest = ide_guest
    files, inactive, before = guest.files(), guest.inactive(), guest.report()
    with HeartbeatMonitor(guest.console) as beats:
        beats.wait_for_beats(2)
        cases = [
            ({"disks": {"root": "32M"}}, "refusing to shrink disk vda"),
            ({"vcpus": 3, "mode": "live"}, "mode live: guest"),
            ({"disks": {"hda": "96M"}, "mode": "live"}, "does not see a live size change"),
            ({"memory": "300M", "mode": "live"}, "128 MiB"),
            ({"disks": {"vdz": "1G"}}, "has no disk vdz"),
            ({"memory": "128M"}, "allow_decrease"),
            ({"vcpus": 400, "max_vcpus": 400}, "takes at most"),
            ({"disks": {"root": "1G"}, "vcpus": 0}, "vcpus must be between"),
        ]
        for args, expected in cases:
            result = guest.resize(**args)
            assert result["_rc"] != 0 and expected in result["msg"], (args, result)
            assert "internal error" not in result["msg"]
        beats.wait_for_beats(len(beats.beats) + 2)
    assert guest.files() == files and guest.inactive() == inactive
    assert not os.path.exists(os.path.join(guest.dir, "resize.json"))
    assert beats.boots() == [before.boot] and beats.longest_gap() < 3.0
    assert guest.report().disks["vda"]["size"] == before.disks["vda"]["size"]


def test_live_growth_of_vcpus_dimm_memory_and_root_disk_without_downtime(ide_guest):
    guest = ide_guest
    before = guest.report()
    assert (before.cpus, before.disks["vda"]["size"]) == (1, 64 * MIB)
    args = {"vcpus": 2, "memory": "384M", "disks": {"root": "96M"}, "headroom": True}
    inactive, files = guest.inactive(), guest.files()

    predicted = guest.resize(check=True, **args)
    assert predicted["_rc"] == 0 and predicted["changed"] and predicted["how"] == "live", predicted
    assert [(c["what"], c["how"]) for c in predicted["plan"]] == [
        ("vcpus", "live"), ("memory", "live"), ("disk vda", "live")]
    assert predicted["steps"] == ["prepare", "set_vcpus", "plug_dimms", "block_resize", "sync_definition",
                                  "write_domain_xml", "applied", "confirm"]
    assert guest.inactive() == inactive and guest.files() == files, "check mode touched the guest"

    with HeartbeatMonitor(guest.console) as beats:
        beats.wait_for_beats(3)
        done = guest.resize(**args)
        assert done["_rc"] == 0, done
        after = guest.report(lambda r: r.cpus == 2 and r.disks["vda"]["size"] == 96 * MIB
                             and _mem_grew_by(r, before, 128 * 1024), timeout=60)
        beats.wait_for_beats(len(beats.beats) + 3)
    assert after.boot == before.boot, "the guest restarted"
    assert done["downtime_seconds"] == 0 and done["resize_state"] == "confirmed" and done["backup"] == []
    assert beats.boots() == [before.boot] and beats.longest_gap() < 3.0, beats.longest_gap()
    assert guest.state() == "running"

    # Resizing to the size it has: nothing changes, nothing is written.
    files = guest.files()
    again = guest.resize(**args)
    assert again["_rc"] == 0 and not again["changed"] and again["plan"] == [] and again["how"] == "none", again
    assert guest.files() == files

    # What the boot role would run with the new flavor changes nothing either, and no restart is pending.
    disks, xml, domain = guest.rerun_boot_modules({"vcpus": 2, "memory": "384M", "disk": "96M", "data": "64M"})
    assert [d["changed"] for d in disks] == [False, False], disks
    assert xml["changed"] is False, xml
    assert domain["changed"] is False and domain["restart_pending"] is False, domain


def test_a_guest_that_does_not_shut_down_is_left_as_it_was(ide_guest):
    """The first step of a cold resize times out (the guest ignores the power button): nothing has changed."""
    guest = ide_guest
    before = guest.report()
    old_xml_file, old_inactive, old_files = guest.file_bytes(), guest.inactive(), guest.files()
    with HeartbeatMonitor(guest.console) as beats:
        beats.wait_for_beats(2)
        failed = guest.resize(vcpus=before.cpus + 1, max_vcpus=before.cpus + 2, disks={"blank": "96M"},
                              shutdown_timeout=3)
        beats.wait_for_beats(len(beats.beats) + 2)
    assert failed["_rc"] != 0 and "failed at step shutdown" in failed["msg"], failed
    assert "nothing had changed yet" in failed["msg"] and "internal error" not in failed["msg"], failed
    assert failed["resize_state"] == "reverted" and failed["rolled_back"] == [], failed
    assert beats.boots() == [before.boot] and guest.state() == "running"
    now = guest.report()
    assert (now.cpus, now.disks) == (before.cpus, before.disks)
    assert guest.file_bytes() == old_xml_file and guest.inactive() == old_inactive
    assert _not_resize_files(guest.files()) == _not_resize_files(old_files)
    assert not os.path.exists(os.path.join(guest.dir, "resize-backup"))


def test_live_balloon_growth_within_memory(boot, sandbox):
    guest = boot("balloon", headroom=False, data_disk=False, memory="384M")
    # A guest defined with room for its balloon (currentMemory below memory), as other tools define them.
    text = guest.inactive().replace("<currentMemory unit='KiB'>393216</currentMemory>",
                                    "<currentMemory unit='KiB'>262144</currentMemory>")
    guest.dom().destroy()
    sandbox.conn.defineXML(text)
    guest.dom().create()
    low = guest.report(lambda r: r.boot != guest.first.boot and r.mem_kib < guest.first.mem_kib - 100 * 1024)
    done = guest.resize(memory="320M")
    assert done["_rc"] == 0 and done["how"] == "live", done
    assert [(c["what"], c["before"], c["after"], c["how"]) for c in done["plan"]] == [
        ("memory", "256M", "320M", "live")]
    high = guest.report(lambda r: _mem_grew_by(r, low, 64 * 1024), timeout=60)
    assert high.boot == low.boot
    assert guest.dom().memoryStats()["actual"] == 320 * 1024
    assert "<currentMemory unit='KiB'>327680</currentMemory>" in guest.inactive()


# ---------------------------------------------------------------------------------------------- cold

def test_cold_resize_beyond_the_maxima_then_revert_restores_values_and_data(boot):
    guest = boot("cold")
    before = guest.first
    assert before.data["dev"] == "vdb"
    old_xml_file, old_inactive = guest.file_bytes(), guest.inactive()
    with HeartbeatMonitor(guest.console) as beats:
        beats.wait_for_beats(2)
        done = guest.resize(vcpus=3, disks={"blank": "96M"}, headroom=True, confirm=False)
        assert done["_rc"] == 0, done
        after = guest.report(lambda r: r.boot != before.boot, timeout=180)
        beats.wait_for_beats(3, boot=after.boot)
    assert done["how"] == "cold" and done["resize_state"] == "applied"
    assert ("max_vcpus", 2, 3, "cold") in [(c["what"], c["before"], c["after"], c["how"]) for c in done["plan"]]
    assert done["steps"] == ["prepare", "shutdown", "backup", "grow_disks", "redefine", "write_domain_xml", "start",
                             "applied"]
    assert (after.cpus, after.disks["vdb"]["size"], after.disks["vda"]["size"]) == (3, 96 * MIB, 64 * MIB)
    assert after.data["found"] == before.data["wrote"], "the data the guest wrote before the resize is gone"
    assert 0 < done["downtime_seconds"] < beats.longest_gap()
    assert beats.boots() == [before.boot, after.boot]
    assert [os.path.basename(p) for p in done["backup"]] == ["disk.blank"] and os.path.exists(done["backup"][0])

    # Unconfirmed: another resize is refused and says how to finish this one.
    refused = guest.resize(vcpus=2, allow_decrease=True)
    assert refused["_rc"] != 0 and "unfinished resize" in refused["msg"] and "state: reverted" in refused["msg"]

    predicted = guest.resize(check=True, state="reverted")
    assert predicted["changed"] and guest.report().boot == after.boot
    reverted = guest.resize(state="reverted")
    assert reverted["_rc"] == 0 and reverted["resize_state"] == "reverted", reverted
    back = guest.report(lambda r: r.boot not in (before.boot, after.boot), timeout=180)
    assert (back.cpus, back.disks["vdb"]["size"]) == (before.cpus, 64 * MIB)
    assert back.data["found"] == before.data["wrote"], "the revert did not put the disk back as it was"
    assert guest.file_bytes() == old_xml_file
    assert _canonical(guest.inactive()) == _canonical(old_inactive)
    assert not os.path.exists(os.path.join(guest.dir, "resize-backup"))
    assert guest.resize(state="reverted")["changed"] is False
    assert guest.resize(state="confirmed")["_rc"] != 0


def _not_resize_files(files):
    """The guest's files but its resize record and backups (which a failed resize leaves as its account)."""
    return {path for path in files if not os.path.basename(path).startswith("resize")}


def _canonical(xml):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model, normalize
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.memo import strip_memo

    return normalize.normalize_for_compare(model.Domain.from_xml(strip_memo(xml))).to_string()


def test_allow_decrease_shrinks_vcpus_and_memory_cold_then_confirmed(shrink_guest):
    guest = shrink_guest
    before = guest.report()
    assert (before.cpus, guest.state()) == (2, "running")
    refused = guest.resize(vcpus=1)
    assert refused["_rc"] != 0 and "allow_decrease" in refused["msg"] and "nothing was changed" in refused["msg"]
    done = guest.resize(vcpus=1, memory="256M", allow_decrease=True, confirm=False)
    assert done["_rc"] == 0 and done["how"] == "cold" and done["resize_state"] == "applied", done
    # No disk changed, so no disk backup: the old definition and domain.xml are in the resize record.
    assert done["backup"] == [] and os.path.exists(os.path.join(guest.dir, "resize.json")), done
    after = guest.report(lambda r: r.boot != before.boot)
    assert after.cpus == 1 and before.mem_kib - after.mem_kib >= 60 * 1024

    record = guest.file_bytes("resize.json")
    predicted = guest.resize(check=True, state="confirmed")
    assert predicted["changed"] and guest.file_bytes("resize.json") == record, predicted
    confirmed = guest.resize(state="confirmed")
    assert confirmed["_rc"] == 0 and confirmed["resize_state"] == "confirmed" and confirmed["backup"] == []
    assert not os.path.exists(os.path.join(guest.dir, "resize-backup"))
    assert guest.report().boot == after.boot, "confirming restarted the guest"
    assert guest.resize(state="confirmed")["changed"] is False
    assert guest.resize(state="reverted")["_rc"] != 0


def test_offline_resize_of_a_stopped_guest_keeps_it_off(shrink_guest):
    guest = shrink_guest
    before = guest.report()
    guest.dom().shutdown()
    guest.report(lambda r: r.poweroff is not None)
    for _attempt in range(100):
        if guest.state() == "shutoff":
            break
        time.sleep(0.2)
    done = guest.resize(vcpus=2, memory="320M", disks={"root": "80M"})
    assert done["_rc"] == 0 and done["how"] == "offline" and done["state"] == "shutoff", done
    assert {c["how"] for c in done["plan"]} == {"offline"} and done["downtime_seconds"] == 0
    assert guest.state() == "shutoff"
    guest.dom().create()
    after = guest.report(lambda r: r.boot != before.boot)
    assert (after.cpus, after.disks["vda"]["size"]) == (2, 80 * MIB)


# ----------------------------------------------------------------------------------- fault injection

QEMU_IMG_SHIM = """#!/bin/sh
if [ "$1" = resize ]; then echo "qemu-img: shim: refusing to resize (test)" >&2; exit 1; fi
exec /usr/bin/qemu-img "$@"
"""


# "start" stays last: the retry at its end leaves the shared guest resized.
@pytest.mark.parametrize("fault", ["backup_enospc", "grow_disks", "redefine", "write_domain_xml", "start"])
def test_every_cold_step_rolls_back_on_failure(fault_guest, fault):
    guest = fault_guest
    before = guest.report()
    old_xml_file, old_inactive, old_files = guest.file_bytes(), guest.inactive(), guest.files()
    env, args = {}, {"vcpus": 3, "headroom": True, "disks": {"blank": "96M"}}
    expected = {"backup_enospc": "No space left on device", "grow_disks": "refusing to resize (test)",
                "redefine": "failed at step redefine", "write_domain_xml": "failed at step write_domain_xml",
                "start": "failed at step start"}[fault]
    if fault == "backup_enospc":
        env["VIRTFLEET_RESIZE_FAULT"] = "backup"
    elif fault == "grow_disks":
        shim = os.path.join(guest.sandbox.root, "bin")
        os.makedirs(shim, exist_ok=True)
        with open(os.path.join(shim, "qemu-img"), "w") as handle:
            handle.write(QEMU_IMG_SHIM)
        os.chmod(os.path.join(shim, "qemu-img"), 0o755)
        env["PATH"] = shim + os.pathsep + os.environ["PATH"]
    else:
        env["VIRTFLEET_RESIZE_FAULT"] = fault
    failed = guest.resize(env=env, **args)
    assert failed["_rc"] != 0 and expected in failed["msg"], failed
    assert failed["resize_state"] == "reverted", failed
    assert "Rolled back" in failed["msg"] and "internal error" not in failed["msg"]
    assert "started the guest again" in failed["rolled_back"], failed
    now = guest.report(lambda r: r.boot != before.boot)
    assert guest.state() == "running"
    assert (now.cpus, now.disks["vdb"]["size"]) == (before.cpus, 64 * MIB)
    assert now.data["found"] == before.data["wrote"], "the data the guest wrote before the resize is gone"
    assert guest.file_bytes() == old_xml_file
    assert _canonical(guest.inactive()) == _canonical(old_inactive)
    assert not os.path.exists(os.path.join(guest.dir, "resize-backup"))
    assert _not_resize_files(guest.files()) == _not_resize_files(old_files)
    # The failure is over: the same resize works now.
    if fault == "start":
        retried = guest.resize(**args)
        assert retried["_rc"] == 0 and retried["resize_state"] == "confirmed", retried


@pytest.fixture
def small_instances(sandbox):
    """The sandbox's instances tree on a 96 MiB tmpfs (mode 0755: the qemu user traverses it), unmounted after
    the test's guests are gone."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96M,mode=0755", "tmpfs", sandbox.instances], check=True)
    try:
        yield sandbox.instances
    finally:
        from tests.integration.conftest import destroy_domains

        destroy_domains(sandbox.conn, sandbox.names)
        subprocess.run(["umount", "-l", sandbox.instances], check=False)


def test_no_room_for_the_backup_is_refused_before_anything_is_touched(small_instances, boot):
    guest = boot("full")
    stats = os.statvfs(small_instances)
    with open(os.path.join(small_instances, "filler"), "wb") as handle:
        handle.truncate(0)
        handle.write(b"\xff" * max(0, stats.f_bavail * stats.f_frsize - 8 * MIB))
    files, inactive = guest.files(), guest.inactive()
    with HeartbeatMonitor(guest.console) as beats:
        beats.wait_for_beats(2)
        refused = guest.resize(vcpus=3, headroom=True, disks={"blank": "96M"})
        beats.wait_for_beats(len(beats.beats) + 2)
    assert refused["_rc"] != 0 and "not enough space" in refused["msg"] and "nothing was changed" in refused["msg"]
    assert guest.files() == files and guest.inactive() == inactive
    assert beats.boots() == [guest.first.boot] and beats.longest_gap() < 3.0


# ------------------------------------------------------------------------------ the boot role after a resize

def test_boot_playbook_with_the_new_flavor_changes_nothing_after_a_resize(sandbox, guest_image, guest_image_url):
    """The per-guest boot role (which gives guests no headroom): a resize to the next flavor is cold, and
    playbooks/boot.yml run again with that flavor finds nothing to change."""
    from tests.integration.test_boot_playbook import FLAVORS, PLAYBOOK, write_inventory
    from tests.support.runner import run_playbook

    name = sandbox.guest_name("pb")
    first = run_playbook(PLAYBOOK, write_inventory(sandbox, {name: "t.one"}, guest_image_url))
    assert first.rc == 0, first.stdout[-3000:]
    console = os.path.join(sandbox.instances, name, "console.log")
    booted = wait_for_report(console)
    bigger = FLAVORS["t.two"]
    done = _run("vm_resize", {"name": name, "instances_path": sandbox.instances, "flavor": "t.two",
                              "vcpus": bigger["vcpus"],
                              "memory": bigger["memory"], "disks": {"root": bigger["disk"]}})
    assert done["_rc"] == 0 and done["how"] == "cold", done
    after = wait_for_report(console, predicate=lambda r: r.boot != booted.boot)
    assert (after.cpus, after.disks["vda"]["size"]) == (2, 96 * MIB)
    again = run_playbook(PLAYBOOK, write_inventory(sandbox, {name: "t.two"}, guest_image_url))
    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed() == 0, again.stdout[-4000:]
    assert "restart" not in again.stdout.lower(), again.stdout[-4000:]
    assert wait_for_report(console).boot == after.boot
