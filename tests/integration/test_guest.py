"""The guest module: a whole guest (image, disks, domain XML, domain) per item, on real libvirtd, real guests."""

from __future__ import annotations

import os
import threading

from tests.integration.conftest import wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20


def _snapshot(root):
    state = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            st = os.stat(path)
            state[path] = (st.st_size, st.st_mtime_ns)
    return state


def _item(name, url, vcpus, **extra):
    item = {"name": name, "image": {"url": url, "format": "raw"},
            "disks": [{"kind": "root", "size": "96M"}],
            "xml": {"vcpus": vcpus, "memory": "128M", "metadata": {"flavor": "t.%d" % vcpus}}}
    item.update(extra)
    return item


def test_one_call_boots_many_whole_guests_and_a_rerun_reads_only_state(sandbox, guest_image_url):
    names = [sandbox.guest_name("w%d" % i) for i in range(3)]
    vcpus = dict(zip(names, (1, 2, 1)))
    args = {"instances_path": sandbox.instances, "items": [
        _item(n, guest_image_url, vcpus[n], xml={"vcpus": vcpus[n], "memory": "128M", "virt_type": "qemu",
                                                 "fw_cfg": {"opt/org.virtfleet/mode": "stay"}})
        for n in names]}
    args["items"][2]["disks"].append({"kind": "swap", "size": "8M"})

    predicted = run_module("guest", args, check=True)
    assert predicted["_rc"] == 0 and predicted["changed"] is True, predicted
    assert [r["domain"]["actions"] for r in predicted["results"]] == [["define", "start"]] * 3
    assert not set(names) & {d.name() for d in sandbox.conn.listAllDomains()}
    assert not any(os.path.exists(os.path.join(sandbox.instances, n)) for n in names)

    booted = run_module("guest", args)
    assert booted["_rc"] == 0 and booted["changed"] is True, booted
    results = {r["item"]: r for r in booted["results"]}
    assert [r["state"] for r in booted["results"]] == ["running"] * 3
    # one download for the three guests' common image; the others found it cached
    assert sum(1 for r in booted["results"] if r["image"]["changed"]) == 1
    assert [d["kind"] for d in results[names[2]]["disks"]] == ["root", "swap"]
    for name in names:
        report = wait_for_report(results[name]["console_log"])
        assert report.cpus == vcpus[name] and report.mem_kib * 1024 <= 128 * MIB
    swap_disk = os.path.join(sandbox.instances, names[2], "disk.swap")
    assert swap_disk in sandbox.conn.lookupByName(names[2]).XMLDesc(0)

    before = _snapshot(sandbox.instances)
    again = run_module("guest", args)
    assert again["_rc"] == 0 and again["changed"] is False, again
    assert all(r["domain"]["actions"] == [] for r in again["results"])
    assert _snapshot(sandbox.instances) == before, "a re-run wrote files"


def test_a_failing_part_stops_its_guest_alone_and_says_which(sandbox, guest_image_url):
    good, bad = sandbox.guest_name("ok"), sandbox.guest_name("bad")
    xml = {"vcpus": 1, "memory": "128M", "virt_type": "qemu", "fw_cfg": {"opt/org.virtfleet/mode": "stay"}}
    items = [_item(good, guest_image_url, 1, xml=xml),
             _item(bad, guest_image_url, 1, xml=xml,
                   disks=[{"kind": "root", "size": "96M"}, {"kind": "ephemeral", "size": "20T"}])]
    result = run_module("guest", {"instances_path": sandbox.instances, "items": items})
    assert result["_rc"] != 0 and result["msg"].startswith("1 of 2 items failed: %s: disk ephemeral: " % bad), result
    failed = result["results"][1]
    assert failed["failed_part"] == "disks" and failed["image"]["path"] and len(failed["disks"]) == 1, failed
    assert "domain" not in failed and bad not in {d.name() for d in sandbox.conn.listAllDomains()}
    assert result["results"][0]["failed"] is False and result["results"][0]["state"] == "running"


def test_two_overlapping_batch_runs_end_consistent(sandbox, guest_image_url):
    """Two calls for the same guests at once (two playbooks, say): the per-guest and image locks keep them apart;
    both succeed, the guests are as described once, and a third run changes nothing."""
    names = [sandbox.guest_name("lap%d" % i) for i in range(2)]
    xml = {"vcpus": 1, "memory": "128M", "virt_type": "qemu", "fw_cfg": {"opt/org.virtfleet/mode": "stay"}}
    args = {"instances_path": sandbox.instances, "items": [_item(n, guest_image_url, 1, xml=xml) for n in names]}
    results = [None, None]

    def run(index):
        results[index] = run_module("guest", args)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert all(r is not None and r["_rc"] == 0 for r in results), results
    # each guest was defined and started by exactly one of the two runs
    for index in range(2):
        starts = [r["results"][index]["domain"]["actions"] for r in results]
        assert sorted(starts, key=len) == [[], ["define", "start"]], starts
    assert sum(1 for r in results for one in r["results"] if one["image"]["changed"]) == 1  # one download
    for name in names:
        assert wait_for_report(os.path.join(sandbox.instances, name, "console.log")).cpus == 1
    again = run_module("guest", args)
    assert again["_rc"] == 0 and again["changed"] is False, again
