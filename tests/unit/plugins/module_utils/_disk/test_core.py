"""guest_disk's core against real files and real qemu-img: what issue 10 found wrong, each pinned here.

Every test makes real disks in tmp_path (ext4 on this host and in CI) and asserts on what is on disk.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import stat
import subprocess
import time

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.core import ensure_disk
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import cache_layout, guest_layout

MIB = 1 << 20


@pytest.fixture
def instances(tmp_path):
    path = tmp_path / "instances"
    path.mkdir()
    return str(path)


@pytest.fixture
def base(instances):
    """A 16 MiB raw base in the cache, with image_cache's record."""
    path = os.path.join(instances, "_base", "base.raw")
    os.makedirs(os.path.dirname(path))
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "16M"], check=True)
    with open(path + ".info.json", "w") as handle:
        json.dump({"format": "raw"}, handle)
    return path


def disk(instances, **params):
    params.setdefault("guest", "g1")
    params.setdefault("state", "present")
    return dict(params, instances_path=instances)


def record_of(instances, guest="g1"):
    with open(guest_layout(instances, guest).disk_info) as handle:
        return json.load(handle)


def qemu_size(path, fmt):
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["virtual-size"]


# ---- item 2: a disk without a record is answered with how to re-record it, never with "remove it" -------

def test_a_disk_without_record_is_refused_with_how_to_record_it_safely(instances):
    made = ensure_disk(disk(instances, kind="blank", size="8M", format="raw"))
    os.unlink(guest_layout(instances, "g1").disk_info)
    with pytest.raises(VirtfleetError, match="adopt: true and format") as err:
        ensure_disk(disk(instances, kind="blank", size="16M", format="raw"))
    assert "Remove the file" not in err.value.msg and "remove" not in err.value.msg.lower()
    assert os.path.getsize(made["path"]) == 8 * MIB


def test_adopt_records_the_file_as_the_options_say_and_then_it_is_unchanged(instances):
    made = ensure_disk(disk(instances, kind="blank", size="8M"))
    os.unlink(guest_layout(instances, "g1").disk_info)
    with pytest.raises(VirtfleetError, match="adopt needs format"):
        ensure_disk(disk(instances, kind="blank", size="8M", adopt=True))
    predicted = ensure_disk(disk(instances, kind="blank", size="8M", format="qcow2", adopt=True), check_mode=True)
    assert predicted["actions"] == ["adopt"] and not os.path.exists(guest_layout(instances, "g1").disk_info)
    adopted = ensure_disk(disk(instances, kind="blank", size="8M", format="qcow2", adopt=True))
    assert adopted["actions"] == ["adopt"] and adopted["virtual_size"] == 8 * MIB
    assert record_of(instances)["disk.blank"] == {"format": "qcow2", "kind": "blank", "adopted": True,
                                                  "virtual_size": 8 * MIB}
    assert ensure_disk(disk(instances, kind="blank", size="8M", adopt=True))["changed"] is False
    assert ensure_disk(disk(instances, kind="blank", size="8M"))["changed"] is False
    assert os.path.getsize(made["path"]) == os.path.getsize(adopted["path"])


def test_adopt_refuses_a_qcow2_that_names_another_backing_file(instances, base, tmp_path):
    victim = str(tmp_path / "host-secret")
    with open(victim, "wb") as handle:
        handle.write(b"not for guests")
    layout = guest_layout(instances, "g1")
    os.makedirs(layout.instance_dir)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", victim, "-F", "raw", layout.file("disk"),
                    "16M"], check=True)
    with pytest.raises(VirtfleetError, match="names the backing file .*host-secret.*refusing to record it"):
        ensure_disk(disk(instances, kind="root", base=base, format="qcow2", adopt=True))
    with pytest.raises(VirtfleetError, match="no readable qcow2 header"):
        with open(layout.file("disk"), "wb") as handle:
            handle.write(b"\0" * 4096)
        ensure_disk(disk(instances, kind="root", base=base, format="qcow2", adopt=True))
    assert not os.path.exists(layout.disk_info)


def test_a_corrupt_record_says_how_to_recover_without_removing_disks(instances):
    ensure_disk(disk(instances, kind="blank", size="8M"))
    with open(guest_layout(instances, "g1").disk_info, "w") as handle:
        handle.write("{")
    with pytest.raises(VirtfleetError, match="is corrupt.*move it aside.*adopt: true") as err:
        ensure_disk(disk(instances, kind="blank", size="8M"))
    assert "remove the guest's disks" not in err.value.msg


# ---- item 3: making a disk on a cached base holds the base's lock shared --------------------------------

def _hold_exclusive(lock_path, ready, release):
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(60)
    os.close(fd)


@pytest.mark.parametrize("backing", ["overlay", "flat"])
def test_a_root_disk_waits_while_the_base_is_locked_for_removal(instances, base, backing):
    lock = cache_layout(instances).lock("base.raw")
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_exclusive, args=(lock, ready, release))
    holder.start()
    assert ready.wait(10)
    params = disk(instances, kind="root", base=base, size="32M", backing=backing,
                  format="qcow2" if backing == "overlay" else "raw")
    builder = context.Process(target=ensure_disk, args=(params,))
    builder.start()
    time.sleep(1.5)
    path = guest_layout(instances, "g1").file("disk")
    assert not os.path.exists(path), "the disk was made while image_cache held the base for removal"
    assert builder.is_alive()
    release.set()
    builder.join(60)
    holder.join(10)
    assert builder.exitcode == 0 and os.path.isfile(path)


def test_the_shared_base_lock_lets_disks_of_many_guests_be_made_at_once(instances, base):
    lock = cache_layout(instances).lock("base.raw")
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # another guest's overlay being made
    try:
        made = ensure_disk(disk(instances, kind="root", base=base, size="32M"))
    finally:
        os.close(fd)
    assert made["changed"] and os.path.isfile(made["path"])


# ---- item 5: one rule for the instances tree --------------------------------------------------------------

def test_a_symlink_planted_as_the_instance_directory_is_never_followed(instances, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(str(target), os.path.join(instances, "g1"))
    for check_mode in (True, False):
        with pytest.raises(VirtfleetError, match="is a symbolic link .*refusing to work through it"):
            ensure_disk(disk(instances, kind="blank", size="8M"), check_mode=check_mode)
    (target / "disk.blank").write_bytes(b"someone else's")
    with pytest.raises(VirtfleetError, match="symbolic link"):
        ensure_disk(disk(instances, kind="blank", state="absent"))
    assert sorted(os.listdir(str(target))) == ["disk.blank"]


@pytest.mark.parametrize("path", ["relative/instances", "", "."])
def test_relative_or_empty_instances_path_is_refused(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VirtfleetError, match="instances_path must be an absolute path"):
        ensure_disk({"guest": "g1", "kind": "blank", "size": "8M", "instances_path": path})
    assert os.listdir(str(tmp_path)) == []


def test_instances_path_and_instance_dir_are_normalised(instances):
    made = ensure_disk(disk(instances + "/x/../", kind="blank", size="8M", instance_dir=instances + "//g1/./"))
    assert made["path"] == os.path.join(instances, "g1", "disk.blank")


# ---- item 11: ranges are checked up front -----------------------------------------------------------------

@pytest.mark.parametrize("params,words", [
    ({"kind": "blank", "size": "8M", "owner": "99999999999"}, "owner 99999999999 is out of range"),
    ({"kind": "blank", "size": "8M", "group": "4294967295"}, "group 4294967295 is out of range"),
    ({"kind": "blank", "size": str((1 << 63) - 1)}, "is too large: a disk holds at most"),
    ({"kind": "blank", "size": "0"}, "more than 0 bytes"),
    ({"kind": "ephemeral", "size": "20T"}, "larger than the ext4 filesystem .* allows"),
    ({"kind": "blank", "size": "17T", "format": "raw"}, "larger than the ext4 filesystem .* allows"),
])
def test_out_of_range_values_are_refused_before_anything_is_written(instances, params, words):
    for check_mode in (True, False):
        with pytest.raises(VirtfleetError, match=words):
            ensure_disk(disk(instances, **params), check_mode=check_mode)
    assert os.listdir(instances) in ([], ["locks"])


def test_a_large_qcow2_blank_is_still_made(instances):
    assert ensure_disk(disk(instances, kind="blank", size="20T"))["virtual_size"] == 20 << 40


# ---- item 12: no silent surprises ---------------------------------------------------------------------------

@pytest.mark.parametrize("params,words", [
    ({"kind": "blank", "size": "8M", "mode": 644}, r"mode 644 was given as a number.*'0644'"),
    ({"kind": "blank", "size": "8M", "mode": 400}, r"octal 620"),
    ({"kind": "root", "admin_pass": "x"}, "admin_pass does not apply to a root disk"),
    ({"kind": "config_drive", "size": "1M"}, "size does not apply to a config_drive disk"),
    ({"kind": "swap", "size": "8M", "fs_type": "ext4"}, "fs_type does not apply to a swap disk"),
    ({"kind": "config_drive", "preallocation": "full"}, "preallocation does not apply to a config_drive disk"),
    ({"kind": "blank", "size": "8M", "base": "/x", "label": "y"}, "base, label do not apply to a blank disk"),
    ({"kind": "blank", "size": "8M", "force": True}, "force applies to state: absent only"),
    ({"kind": "config_drive", "instance_uuid": "abc"}, "invalid instance_uuid 'abc'"),
    ({"kind": "config_drive", "instance_uuid": "00000000-0000-0000-0000-000000000000"}, "not the nil UUID"),
    ({"kind": "config_drive", "instance_uuid": "5f6a1c2e-0b9d-4e7a-8c3f-2a1b0c9d8e7f\n"}, "invalid instance_uuid"),
    ({"kind": "blank", "size": 0}, "more than 0 bytes"),
])
def test_surprising_options_are_refused(instances, params, words):
    with pytest.raises(VirtfleetError, match=words):
        ensure_disk(disk(instances, **params), check_mode=True)


def test_a_mode_number_that_reads_as_a_mode_is_taken(instances):
    made = ensure_disk(disk(instances, kind="blank", size="8M", mode=0o640))
    assert stat.S_IMODE(os.stat(made["path"]).st_mode) == 0o640


# ---- item 13: a re-run notices a disk that no longer matches its record -------------------------------------

def test_a_truncated_qcow2_root_is_noticed_not_reported_unchanged(instances, base):
    made = ensure_disk(disk(instances, kind="root", base=base, size="32M"))
    assert record_of(instances)["disk"]["virtual_size"] == 32 * MIB
    with open(made["path"], "r+b") as handle:
        handle.truncate(4096)
    for check_mode in (True, False):
        with pytest.raises(VirtfleetError, match="no longer matches its record.*cut short"):
            ensure_disk(disk(instances, kind="root", base=base, size="32M"), check_mode=check_mode)
    assert os.path.getsize(made["path"]) == 4096


def test_a_qcow2_without_its_header_is_noticed(instances):
    made = ensure_disk(disk(instances, kind="blank", size="8M"))
    with open(made["path"], "r+b") as handle:
        handle.write(b"\0" * 512)
    with pytest.raises(VirtfleetError, match="no longer matches its record in .*: it has no qcow2 header any more"):
        ensure_disk(disk(instances, kind="blank", size="8M"))


def test_a_raw_disk_of_another_length_than_recorded_is_noticed_and_can_be_adopted(instances):
    made = ensure_disk(disk(instances, kind="blank", size="8M", format="raw"))
    with open(made["path"], "r+b") as handle:
        handle.truncate(4 * MIB)
    with pytest.raises(VirtfleetError, match=r"virtual size is 4 MiB .* its record says 8 MiB"):
        ensure_disk(disk(instances, kind="blank", size="8M", format="raw"))
    adopted = ensure_disk(disk(instances, kind="blank", size="8M", format="raw", adopt=True))
    assert adopted["actions"] == ["adopt", "grow"] and os.path.getsize(made["path"]) == 8 * MIB
    assert record_of(instances)["disk.blank"]["virtual_size"] == 8 * MIB


def test_a_truncated_config_drive_is_rebuilt_and_says_so(instances):
    params = disk(instances, kind="config_drive", user_data="#cloud-config\n")
    made = ensure_disk(params)
    size = os.path.getsize(made["path"])
    with open(made["path"], "r+b") as handle:
        handle.truncate(0)
    again = ensure_disk(params)
    assert again["actions"] == ["rebuild"] and os.path.getsize(made["path"]) == size
    assert any("was damaged (it is 0 bytes long" in warning for warning in again["_warnings"])
    assert ensure_disk(params)["changed"] is False


def test_growth_updates_the_recorded_virtual_size(instances, base):
    ensure_disk(disk(instances, kind="root", base=base, size="32M"))
    grown = ensure_disk(disk(instances, kind="root", base=base, size="48M"))
    assert grown["actions"] == ["grow"] and qemu_size(grown["path"], "qcow2") == 48 * MIB
    assert record_of(instances)["disk"]["virtual_size"] == 48 * MIB
    assert ensure_disk(disk(instances, kind="root", base=base, size="48M"))["changed"] is False


# ---- item 14: guest data is not world-readable on the host ---------------------------------------------------

@pytest.mark.parametrize("params", [
    {"kind": "root", "size": "32M"}, {"kind": "root", "size": "32M", "backing": "flat", "format": "raw"},
    {"kind": "ephemeral", "size": "8M", "fs_type": "vfat"}, {"kind": "swap", "size": "8M"},
    {"kind": "blank", "size": "8M"}, {"kind": "config_drive"},
], ids=["root-overlay", "root-flat", "ephemeral", "swap", "blank", "config-drive"])
def test_new_disks_are_private_by_default(instances, base, params):
    if params["kind"] == "root":
        params = dict(params, base=base)
    made = ensure_disk(disk(instances, **params))
    assert stat.S_IMODE(os.stat(made["path"]).st_mode) == 0o600
    assert made["diff"]["after"]["mode"] == "0600"


def test_a_group_gets_read_and_write_by_default(instances):
    made = ensure_disk(disk(instances, kind="blank", size="8M", group="0"))
    assert stat.S_IMODE(os.stat(made["path"]).st_mode) == 0o660


# ---- item 11: whatever the arguments, a clear message or a result, never another exception ------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-2, 1 << 70), st.floats(allow_nan=True),
                     st.text(max_size=12), st.lists(st.text(max_size=3), max_size=2),
                     st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))
SIZES = st.one_of(st.sampled_from(["1M", "8M", "0", "-1", "20T", "17T", "1.5M", "12 parsecs", "1000001", "8M\n",
                                   str(1 << 63), "8 MiB"]), ANYTHING)
DISK_ARGS = st.fixed_dictionaries({"kind": st.one_of(st.sampled_from(["root", "ephemeral", "swap", "blank",
                                                                      "config_drive"]), ANYTHING)}, optional={
    "guest": st.one_of(st.sampled_from(["g1", "locks", "_base", "a\n", "../x", "", "é"]), ANYTHING),
    "state": st.one_of(st.sampled_from(["present", "absent"]), ANYTHING),
    "size": st.one_of(st.none(), SIZES), "format": st.one_of(st.sampled_from(["qcow2", "raw", "nocloud", "vmdk"]), ANYTHING),
    "mode": st.one_of(st.sampled_from(["0600", "644", 644, 0o640, "0o640", 99999]), ANYTHING),
    "owner": st.one_of(st.sampled_from(["0", "99999999999", "root", "nobody-vf"]), ANYTHING),
    "group": ANYTHING, "label": ANYTHING, "fs_type": st.one_of(st.sampled_from(["ext4", "vfat", "ntfs"]), ANYTHING),
    "file_name": st.one_of(st.sampled_from(["disk", "x.json", "a/b", "scratch", "console.log"]), ANYTHING),
    "preallocation": ANYTHING, "backing": ANYTHING, "base_format": ANYTHING, "base": ANYTHING,
    "instance_uuid": ANYTHING, "extra_files": ANYTHING, "public_keys": ANYTHING, "user_data": ANYTHING,
    "hostname": ANYTHING, "metadata": ANYTHING, "network_data": ANYTHING, "vendor_data": ANYTHING,
    "admin_pass": ANYTHING, "files": st.one_of(ANYTHING, st.lists(st.dictionaries(
        st.sampled_from(["path", "content"]), st.one_of(st.text(max_size=4), st.integers())), max_size=2)),
    "adopt": ANYTHING, "force": ANYTHING, "instance_dir": ANYTHING,
})


def _too_big_to_format(args):
    try:
        size = int(str(args.get("size")).rstrip("M")) << 20 if str(args.get("size")).endswith("M") else None
    except ValueError:
        return True
    return args.get("kind") in ("ephemeral", "swap") and (size is None or size > 64 * MIB)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(args=DISK_ARGS, check_mode=st.booleans())
def test_any_arguments_end_in_a_result_or_a_clear_message(tmp_path_factory, args, check_mode):
    instances = str(tmp_path_factory.mktemp("instances"))
    params = dict(args, instances_path=instances, uri="test:///default")
    params.setdefault("guest", "g1")
    try:
        result = ensure_disk(params, check_mode=check_mode or _too_big_to_format(args))
    except VirtfleetError as exc:
        assert exc.msg and "Traceback" not in exc.msg and "internal error" not in exc.msg
        return
    json.dumps(result)
    assert isinstance(result["changed"], bool)
