"""The disk records: read without a lock, changed only under the guest's lock, never losing an entry."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import record as records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.core import ensure_disk
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import guest_layout

MIB = 1 << 20


def test_records_round_trip_and_missing_file_is_empty(tmp_path):
    layout = guest_layout(str(tmp_path), "g1")
    assert records.read_disk_records(layout) == {}
    os.makedirs(layout.instance_dir)
    with records.locked(layout) as book:
        book.set("disk", {"format": "qcow2", "kind": "root"})
        book.set("disk.swap", {"format": "raw", "kind": "swap"})
        book.drop("disk.swap")
        book.drop("never-there")
    assert records.read_disk_records(layout) == {"disk": {"format": "qcow2", "kind": "root"}}
    assert os.path.exists(layout.lock) and os.path.dirname(layout.lock) == str(tmp_path / "locks")


def test_a_corrupt_record_is_refused_not_overwritten(tmp_path):
    layout = guest_layout(str(tmp_path), "g1")
    os.makedirs(layout.instance_dir)
    with open(layout.disk_info, "w") as handle:
        handle.write("{not json")
    with pytest.raises(VirtfleetError, match="disk format record .* is corrupt"):
        records.read_disk_records(layout)
    with pytest.raises(VirtfleetError, match="is corrupt"):
        with records.locked(layout):
            pass
    assert open(layout.disk_info).read() == "{not json"


def test_an_unchanged_entry_is_not_written_again(tmp_path):
    layout = guest_layout(str(tmp_path), "g1")
    os.makedirs(layout.instance_dir)
    with records.locked(layout) as book:
        book.set("disk", {"format": "raw", "kind": "blank"})
    mtime = os.stat(layout.disk_info).st_mtime_ns
    with records.locked(layout) as book:
        book.set("disk", {"format": "raw", "kind": "blank"})
        book.drop("other")
    assert os.stat(layout.disk_info).st_mtime_ns == mtime


def _set_entries(instances, worker, count):
    layout = guest_layout(instances, "g1")
    for index in range(count):
        with records.locked(layout) as book:
            book.set("w%d-%d" % (worker, index), {"format": "raw", "kind": "blank"})


def test_concurrent_updates_keep_every_entry(tmp_path):
    layout = guest_layout(str(tmp_path), "g1")
    os.makedirs(layout.instance_dir)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_set_entries, args=(str(tmp_path), worker, 20)) for worker in range(4)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(60)
        assert proc.exitcode == 0
    assert sorted(records.read_disk_records(layout)) == sorted("w%d-%d" % (w, i) for w in range(4) for i in range(20))


# ---- six disks of one guest built at once, by the real core (qemu-img, mkfs, pycdlib) ----------------

DISKS = {
    "disk": {"kind": "root", "size": "16M"},
    "disk.local": {"kind": "ephemeral", "size": "8M", "fs_type": "vfat", "label": "EPH"},
    "disk.swap": {"kind": "swap", "size": "8M"},
    "disk.blank": {"kind": "blank", "size": "8M"},
    "scratch": {"kind": "blank", "size": "4M", "format": "raw", "file_name": "scratch"},
    "disk.config": {"kind": "config_drive", "user_data": "#cloud-config\n"},
}


def _build_one(params, barrier, results):
    barrier.wait(30)
    try:
        result = ensure_disk(params, check_mode=False)
        results.put((params.get("file_name") or params["kind"], result["changed"], None))
    except Exception as exc:  # reported to the test, which fails with it
        results.put((params.get("file_name") or params["kind"], None, repr(exc)))


@pytest.mark.parametrize("round_number", range(4))
def test_six_disks_of_one_guest_built_at_once_all_keep_their_records(tmp_path, round_number):
    instances = str(tmp_path / "instances")
    base = os.path.join(instances, "_base", "base.raw")
    os.makedirs(os.path.dirname(base))
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", base, "16M"], check=True)
    guest = "g%d" % round_number
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(DISKS)), context.Queue()
    workers = []
    for name, options in DISKS.items():
        params = dict(options, guest=guest, instances_path=instances, state="present")
        if options["kind"] == "root":
            params.update(base=base, base_format="raw")
        workers.append(context.Process(target=_build_one, args=(params, barrier, results)))
    for proc in workers:
        proc.start()
    outcomes = [results.get(timeout=120) for _worker in workers]
    for proc in workers:
        proc.join(60)
    assert [error for _name, _changed, error in outcomes if error] == []
    assert all(changed for _name, changed, _error in outcomes)
    layout = guest_layout(instances, guest)
    with open(layout.disk_info) as handle:
        recorded = json.load(handle)
    assert sorted(recorded) == sorted(DISKS)
    for name, options in DISKS.items():
        assert recorded[name]["kind"] == options["kind"], name
        assert os.path.isfile(layout.file(name)), name
    # and each is recognised as made: a re-run changes nothing
    for name, options in DISKS.items():
        params = dict(options, guest=guest, instances_path=instances, state="present")
        if options["kind"] == "root":
            params.update(base=base, base_format="raw")
        assert ensure_disk(params, check_mode=False)["changed"] is False, name
