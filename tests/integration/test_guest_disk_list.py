"""guest_disk's list form (items) against real qemu-img: what the single form guarantees, for many disks."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess

import pytest

from tests.support.runner import run_module


@pytest.fixture
def base(sandbox):
    base_dir = os.path.join(sandbox.instances, "_base")
    os.makedirs(base_dir)
    path = os.path.join(base_dir, "base.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "32M"], check=True)
    return path


def batch(sandbox, base, guests, **top):
    items = []
    for guest in guests:
        items.append({"guest": guest, "kind": "root", "base": base, "base_format": "raw"})
        items.append({"guest": guest, "kind": "swap", "size": "16M"})
        items.append({"guest": guest, "kind": "blank", "size": "8M", "file_name": "scratch"})
    args = {"instances_path": sandbox.instances, "items": items, "size": "64M", "batch_concurrency": 3}
    args.update(top)
    return args


def tree_state(root):
    """Every file under ``root`` with its size and mtime: a run that changes nothing leaves it equal."""
    state = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(directory, name))
            state[os.path.join(directory, name)] = (st.st_size, st.st_mtime_ns)
    return state


def test_one_call_builds_every_disk_of_every_guest_and_a_rerun_changes_nothing(sandbox, base):
    guests = [sandbox.guest_name("l") for _guest in range(4)]
    predicted = run_module("guest_disk", batch(sandbox, base, guests), check=True)
    assert predicted["changed"] is True and not os.listdir(sandbox.instances) == []
    assert [r["actions"] for r in predicted["results"]][:3] == [["create"], ["create_base", "create"], ["create"]]
    assert sorted(os.listdir(sandbox.instances)) == ["_base"]  # check mode touched nothing
    first = run_module("guest_disk", batch(sandbox, base, guests))
    assert first["_rc"] == 0 and first["changed"] is True, first
    assert [r["item"] for r in first["results"]] == [g for g in guests for _disk in range(3)]
    assert all(not r["failed"] for r in first["results"])
    for guest in guests:
        info = json.load(open(os.path.join(sandbox.instances, guest, "disk.info.json")))
        assert sorted(info) == ["disk", "disk.swap", "scratch"]  # no record lost to the concurrent builds
        top = json.loads(subprocess.run(["qemu-img", "info", "-U", "-f", "qcow2", "--output=json",
                                         os.path.join(sandbox.instances, guest, "disk")],
                                        check=True, capture_output=True, text=True).stdout)
        assert top["virtual-size"] == 64 << 20 and top["backing-filename"] == base
    before = tree_state(sandbox.instances)
    again = run_module("guest_disk", batch(sandbox, base, guests), diff=True)
    assert again["changed"] is False and again["diff"] == [] and tree_state(sandbox.instances) == before


def test_a_bad_item_fails_alone_with_its_own_message(sandbox, base):
    good, bad = sandbox.guest_name("ok"), sandbox.guest_name("bad")
    args = batch(sandbox, base, [good])
    args["items"].append({"guest": bad, "kind": "root", "base": base, "base_format": "raw", "size": "16M"})
    result = run_module("guest_disk", args)
    assert result["failed"] is True and result["_rc"] != 0
    assert result["msg"].startswith("1 of 4 items failed: %s root: " % bad)
    assert "larger than the requested root disk size" in result["msg"]
    assert [r["failed"] for r in result["results"]] == [False, False, False, True]
    assert os.path.exists(os.path.join(sandbox.instances, good, "disk"))
    assert not os.path.exists(os.path.join(sandbox.instances, bad, "disk"))


def test_two_overlapping_batch_runs_end_consistent(sandbox, base):
    guests = [sandbox.guest_name("o") for _guest in range(3)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _run: run_module("guest_disk", batch(sandbox, base, guests)), range(2)))
    assert all(r["_rc"] == 0 for r in runs), runs
    created = [r["actions"] for run in runs for r in run["results"] if "create" in r["actions"]]
    assert len(created) == 3 * len(guests)  # each disk made once, by one of the two runs
    assert run_module("guest_disk", batch(sandbox, base, guests))["changed"] is False


def test_the_top_level_name_and_items_exclude_each_other(sandbox, base):
    args = batch(sandbox, base, [sandbox.guest_name()], guest="x")
    result = run_module("guest_disk", args)
    assert result["failed"] is True and "mutually exclusive: guest|items" in result["msg"]
    assert "one of the following is required: guest, items" in run_module(
        "guest_disk", {"instances_path": sandbox.instances})["msg"]
