"""domain_xml's and domain's list forms (items) on real libvirtd with real guests that report their flavors."""

from __future__ import annotations

import os

from tests.integration.conftest import wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20


def _disks(sandbox, guest_image, names):
    made = run_module("guest_disk", {"instances_path": sandbox.instances, "base": guest_image["path"],
                                     "base_format": "raw", "items": [{"guest": n} for n in names]})
    assert made["_rc"] == 0, made
    return {r["item"]: r["xml_disk"] for r in made["results"]}


def _xml_items(names, disks, vcpus):
    return [{"name": n, "vcpus": vcpus[n], "memory": "128M", "disks": [disks[n]]} for n in names]


def test_one_call_defines_and_starts_many_guests_and_a_rerun_changes_nothing(sandbox, guest_image):
    names = [sandbox.guest_name("b") for _guest in range(3)]
    vcpus = dict(zip(names, (1, 2, 1)))
    disks = _disks(sandbox, guest_image, names)
    xml_args = {"instances_path": sandbox.instances, "virt_type": "qemu",
                "fw_cfg": {"opt/org.virtfleet/mode": "stay"}, "items": _xml_items(names, disks, vcpus)}
    written = run_module("domain_xml", xml_args)
    assert written["_rc"] == 0 and [r["item"] for r in written["results"]] == names, written
    dom_args = {"instances_path": sandbox.instances, "items": [{"name": n} for n in names]}
    predicted = run_module("domain", dom_args, check=True)
    assert [r["actions"] for r in predicted["results"]] == [["define", "start"]] * 3
    assert not set(names) & {d.name() for d in sandbox.conn.listAllDomains()}
    started = run_module("domain", dom_args)
    assert started["_rc"] == 0 and all(r["state"] == "running" for r in started["results"]), started
    for name in names:
        report = wait_for_report(os.path.join(sandbox.instances, name, "console.log"))
        assert report.cpus == vcpus[name] and report.mem_kib * 1024 <= 128 * MIB
    assert run_module("domain_xml", xml_args)["changed"] is False
    again = run_module("domain", dom_args)
    assert again["changed"] is False and all(r["actions"] == [] for r in again["results"])
    gone = run_module("domain", dict(dom_args, state="absent", remove_storage=True))
    assert gone["_rc"] == 0 and all(not os.path.exists(os.path.join(sandbox.instances, n)) for n in names), gone


def test_a_bad_guest_fails_alone_while_the_others_are_written(sandbox, guest_image):
    good = sandbox.guest_name("ok")
    disks = _disks(sandbox, guest_image, [good])
    items = _xml_items([good], disks, {good: 1}) + [{"name": "bad\n", "memory": "128M"},
                                                    {"name": sandbox.guest_name("mac"), "memory": "128M",
                                                     "nics": [{"network": "default", "mac": "00:00:00:00:00:00"}]}]
    result = run_module("domain_xml", {"instances_path": sandbox.instances, "virt_type": "qemu", "items": items})
    assert result["_rc"] != 0 and result["msg"].startswith("2 of 3 items failed: bad\n: invalid guest name"), result
    assert "00:00:00:00:00:00" in result["results"][2]["msg"]
    assert result["results"][0]["failed"] is False
    assert os.path.exists(os.path.join(sandbox.instances, good, "domain.xml"))
