"""The resize role end to end (playbooks/resize.yml): real guests grow live, a failed health check reverts its
guest alone, a re-run changes nothing, and the boot role with the new flavor changes nothing either."""

from __future__ import annotations

import json
import os

from tests.integration.conftest import wait_for_report
from tests.support.runner import REPO, run_playbook

BOOT = os.path.join(REPO, "playbooks", "boot.yml")
RESIZE = os.path.join(REPO, "playbooks", "resize.yml")
MIB = 1 << 20
# t.small leaves room for a second vCPU (max_vcpus), so that growing to t.wide is live: a vCPU hot-plugged and
# the root disk grown by blockResize while the guest runs.
FLAVORS = {
    "t.small": {"vcpus": 1, "max_vcpus": 2, "memory": "160M", "disk": "64M"},
    "t.wide": {"vcpus": 2, "max_vcpus": 2, "memory": "160M", "disk": "96M"},
}


def inventory(sandbox, guests, image_url):
    """guests: name -> host variables (virtfleet_flavor and the resize role's options)."""
    data = {"all": {"children": {
        "hypervisors": {"hosts": {"hv": {"ansible_connection": "local",
                                         "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}},
        "guests": {"hosts": guests, "vars": {
            "virtfleet_hypervisor": "hv", "virtfleet_image_url": image_url, "virtfleet_image_format": "raw",
            "virtfleet_instances_path": sandbox.instances, "virtfleet_virt_type": "qemu",
            "virtfleet_flavors": FLAVORS, "virtfleet_fw_cfg": {"opt/org.virtfleet/mode": "stay"}}},
    }}}
    path = os.path.join(sandbox.root, "inventory-%d.json" % len(os.listdir(sandbox.root)))
    with open(path, "w") as handle:
        json.dump(data, handle)
    return path


def test_guests_grow_live_a_failed_check_reverts_alone_and_reruns_change_nothing(sandbox, guest_image_url):
    good, bad = sandbox.guest_name("ok"), sandbox.guest_name("revert")
    consoles = {n: os.path.join(sandbox.instances, n, "console.log") for n in (good, bad)}
    booted = run_playbook(BOOT, inventory(sandbox, {good: {"virtfleet_flavor": "t.small"},
                                                    bad: {"virtfleet_flavor": "t.small"}}, guest_image_url))
    assert booted.rc == 0, booted.stdout[-4000:]
    before = {n: wait_for_report(c) for n, c in consoles.items()}
    assert all(r.cpus == 1 and r.disk_size("vda") == 64 * MIB for r in before.values()), before

    grown = {good: {"virtfleet_flavor": "t.wide", "resize_health_command": "true"},
             bad: {"virtfleet_flavor": "t.wide", "resize_health_timeout": 4,
                   "resize_health_command": ["sh", "-c", "echo db down >&2; exit 3"]}}
    run = run_playbook(RESIZE, inventory(sandbox, grown, guest_image_url))
    assert run.rc != 0 and run.recap[bad]["failed"] == 1 and run.recap[good]["failed"] == 0, run.stdout[-6000:]
    # one summary line per guest: what changed, live or cold, the downtime, the check and its verdict
    assert ("%s: running, resized live (flavor t.small -> t.wide, vcpus 1 -> 2, disk vda 64 MiB -> 96 MiB), "
            "downtime 0 s, health passed, confirmed" % good) in run.stdout, run.stdout[-6000:]
    assert ("health check failed after the resize (health command failed (rc=3): db down): reverted to the "
            "previous size") in run.stdout, run.stdout[-6000:]

    # The confirmed guest testifies: two CPUs and the bigger disk, in the same boot (live, no restart).
    after = wait_for_report(consoles[good], predicate=lambda r: r.cpus == 2 and r.disk_size("vda") == 96 * MIB)
    assert after.boot == before[good].boot
    # The reverted one is back to one CPU (and its definition to the old flavor).
    reverted = wait_for_report(consoles[bad], predicate=lambda r: r.cpus == 1)
    assert reverted.cpus == 1
    assert "<vcpu placement='static' current='1'>2</vcpu>" in sandbox.conn.lookupByName(bad).XMLDesc(0)

    again = run_playbook(RESIZE, inventory(sandbox, grown, guest_image_url), limit=good)
    assert again.rc == 0 and again.changed() == 0, again.stdout[-4000:]
    assert "%s: running, unchanged" % good in again.stdout, again.stdout[-4000:]
    reboot = run_playbook(BOOT, inventory(sandbox, grown, guest_image_url), limit=good)
    assert reboot.rc == 0 and reboot.changed() == 0, reboot.stdout[-4000:]
    assert wait_for_report(consoles[good]).boot == before[good].boot
