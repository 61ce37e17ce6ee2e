"""Disk planning without libvirt: names, modes, formats, mkfs commands, config drives end to end."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import plan as disks
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import mkfs
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import record as records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import spec as disk_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.core import ensure_disk
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import (
    DIGEST_SUFFIX, guest_layout, validate_disk_file_name,
)

MIB = 1 << 20


def plan_of(params, check_mode=False):
    return disks.plan_disk(disk_spec.DiskSpec.from_params(params), check_mode)


@pytest.mark.parametrize("size,token", [(1 << 30, "1G"), (10 << 30, "10G"), (512 * MIB, "512M"), (1536 * MIB, "1536M"),
                                        (64 << 10, "64K"), (1000, "1000")])
def test_size_token(size, token):
    assert disks.size_token(size) == token


def test_formatted_base_names():
    assert disks.formatted_base_name("ephemeral", 1 << 30, "ext4", "ephemeral0") == "ephemeral_1G_ext4_ephemeral0"
    assert disks.formatted_base_name("ephemeral", 1 << 30, "vfat", "") == "ephemeral_1G_vfat"
    assert disks.formatted_base_name("swap", 512 * MIB, "swap", "") == "swap_512M"
    assert disks.formatted_base_name("swap", 512 * MIB, "swap", "sw") == "swap_512M_sw"


@pytest.mark.parametrize("value,mode", [("0600", 0o600), ("644", 0o644), (0o640, 0o640), (None, None), ("", None),
                                        ("01777", 0o1777)])
def test_parse_mode(value, mode):
    assert disk_spec.parse_mode(value) == mode


@pytest.mark.parametrize("value", ["rwx", "0999", "12", True, 0o17777, "u+rw"])
def test_parse_mode_refuses(value):
    with pytest.raises(VirtfleetError, match="^mode (must be an octal number such as '0600'|%s was given as a number)"
                       % value):
        disk_spec.parse_mode(value)


@pytest.mark.parametrize("kind,fmt,expected", [
    ("root", None, ("qcow2", None)), ("blank", "raw", ("raw", None)), ("config_drive", None, ("raw", "config-2")),
    ("config_drive", "nocloud", ("raw", "nocloud")),
])
def test_resolve_format(kind, fmt, expected):
    assert disk_spec.resolve_format(kind, fmt) == expected


@pytest.mark.parametrize("kind,fmt", [("config_drive", "qcow2"), ("config_drive", "raw"), ("swap", "config-2"),
                                      ("root", "nocloud")])
def test_resolve_format_refuses(kind, fmt):
    with pytest.raises(VirtfleetError, match="^(a config drive's format is config-2 .OpenStack layout. or nocloud|"
                                             "format %s is for kind: config_drive only; a %s disk is qcow2 or raw)"
                       % (fmt, kind)):
        disk_spec.resolve_format(kind, fmt)


@pytest.mark.parametrize("name", ["../disk", "a/b", "disk.info.json", "x.json", "domain.xml", ".hidden",
                                  "disk.virtfleet-tmp-1-ab"])
def test_file_names_refused(name):
    with pytest.raises(VirtfleetError, match="^invalid file_name %s: " % re.escape(repr(name))):
        validate_disk_file_name(name)


def test_mkfs_labels_and_sizes():
    assert mkfs.validate_label("ext4", "ephemeral0") == "ephemeral0"
    assert mkfs.validate_label("swap", None) == ""
    for fs, label in (("xfs", "x" * 13), ("vfat", "x" * 12), ("ext4", "x" * 17), ("ext4", "a b"), ("ext4", "a/b")):
        named = re.escape(repr(label))
        with pytest.raises(VirtfleetError, match="^(the label %s is too long for %s: at most|invalid label %s: use "
                                                 "at most 16)" % (named, fs, named)):
            mkfs.validate_label(fs, label)
    with pytest.raises(VirtfleetError, match="300 MB") as err:
        mkfs.validate_size("xfs", 64 * MIB)
    assert "300 MB" in err.value.msg
    with pytest.raises(VirtfleetError, match=r"^the size of a ext4 disk must be a multiple of 512 bytes \(asked for "
                                             r"1048577 bytes\)$"):
        mkfs.validate_size("ext4", MIB + 1)
    with pytest.raises(VirtfleetError, match="^unsupported filesystem 'ntfs'; use one of "):
        mkfs.validate_size("ntfs", MIB)


def test_mkfs_commands_force_a_file_and_label():
    assert mkfs.command("/sbin/mkfs.ext4", "ext4", "/f", "eph")[:3] == ["/sbin/mkfs.ext4", "-q", "-F"]
    assert mkfs.command("/sbin/mke2fs", "ext3", "/f", "")[3:5] == ["-t", "ext3"]
    assert mkfs.command("/sbin/mkfs.xfs", "xfs", "/f", "d") == ["/sbin/mkfs.xfs", "-q", "-f", "-L", "d", "/f"]
    assert mkfs.command("/sbin/mkfs.fat", "vfat", "/f", "E") == ["/sbin/mkfs.fat", "-n", "E", "/f"]
    assert mkfs.command("/sbin/mkswap", "swap", "/f", "") == ["/sbin/mkswap", "/f"]


def test_missing_tool_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VirtfleetError, match="mkfs.xfs is not installed") as err:
        mkfs.find_tool("xfs")
    assert "mkfs.xfs is not installed" in err.value.msg and "xfsprogs" in err.value.msg
    assert err.value.details["missing_tool"] == "mkfs.xfs"


@pytest.mark.parametrize("fs_type,offset,magic", [("ext4", 1080, b"\x53\xef"), ("swap", 4086, b"SWAPSPACE2"),
                                                  ("vfat", 54, b"FAT16")])
def test_make_filesystem_on_a_plain_file(tmp_path, fs_type, offset, magic):
    if not any(os.access(os.path.join(d, t), os.X_OK) for d in os.environ.get("PATH", "").split(":")
               for t in mkfs.FS_TOOLS[fs_type]["tools"]):
        pytest.fail("%s tools are missing on this host" % fs_type)
    out = str(tmp_path / "fs.img")
    mkfs.make_filesystem(out, 32 * MIB, fs_type, "LBL0")
    assert os.path.getsize(out) == 32 * MIB
    with open(out, "rb") as handle:
        handle.seek(offset)
        assert handle.read(len(magic)) == magic
    assert os.stat(out).st_blocks * 512 < 8 * MIB, "stays sparse"


def _cd_params(tmp_path, **extra):
    params = {"guest": "g1", "instances_path": str(tmp_path), "kind": "config_drive", "state": "present",
              "user_data": "#cloud-config\n", "admin_pass": "pw", "extra_files": {"virtfleet/mode": "once"}}
    params.update(extra)
    return params


def test_config_drive_plan_apply_and_idempotency(tmp_path):
    predicted = ensure_disk(_cd_params(tmp_path), check_mode=True)
    assert predicted["changed"] and predicted["actions"] == ["create"]
    assert not os.path.exists(tmp_path / "g1")
    done = ensure_disk(_cd_params(tmp_path), check_mode=False)
    assert done["actions"] == ["create"] and done["diff"] == predicted["diff"]
    assert done["xml_disk"] == {"path": str(tmp_path / "g1" / "disk.config"), "format": "raw", "device": "cdrom",
                                "readonly": True}
    path = done["path"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    digest_file = path + DIGEST_SUFFIX
    assert stat.S_IMODE(os.stat(digest_file).st_mode) == 0o600
    record = json.load(open(str(tmp_path / "g1" / "disk.info.json")))
    assert record["disk.config"] == {"format": "raw", "kind": "config_drive", "drive_format": "config-2",
                                     "label": "config-2"}
    assert "pw" not in json.dumps(done) and "cloud-config" not in json.dumps(done)
    mtimes = {n: os.stat(str(tmp_path / "g1" / n)).st_mtime_ns for n in os.listdir(str(tmp_path / "g1"))}
    again = ensure_disk(_cd_params(tmp_path), check_mode=False)
    assert again["changed"] is False
    assert mtimes == {n: os.stat(str(tmp_path / "g1" / n)).st_mtime_ns for n in os.listdir(str(tmp_path / "g1"))}
    changed = ensure_disk(_cd_params(tmp_path, admin_pass="pw2"), check_mode=True)
    assert changed["actions"] == ["rebuild"]


def test_existing_file_without_record_is_not_trusted(tmp_path):
    os.makedirs(str(tmp_path / "g1"))
    (tmp_path / "g1" / "disk.blank").write_bytes(b"QFI\xfb")
    with pytest.raises(VirtfleetError, match="no format record"):
        plan_of({"guest": "g1", "instances_path": str(tmp_path), "kind": "blank", "size": "8M"})


def test_recorded_kind_must_match(tmp_path):
    os.makedirs(str(tmp_path / "g1"))
    (tmp_path / "g1" / "disk.blank").write_bytes(b"")
    records.write_disk_records(guest_layout(str(tmp_path), "g1"), {"disk.blank": {"format": "raw", "kind": "swap"}})
    with pytest.raises(VirtfleetError, match="recorded as a swap disk"):
        plan_of({"guest": "g1", "instances_path": str(tmp_path), "kind": "blank", "size": "8M"})


def test_new_ephemeral_plans_base_then_overlay(tmp_path):
    plan = plan_of({"guest": "g1", "instances_path": str(tmp_path), "kind": "ephemeral", "size": "64M",
                    "fs_type": "ext4"})
    assert plan.actions == ["create_base", "create"]
    assert plan.base == str(tmp_path / "_base" / "ephemeral_64M_ext4_ephemeral0")
    assert plan.base_lock == str(tmp_path / "locks" / "ephemeral_64M_ext4_ephemeral0.lock")
    assert plan.new_record["base"] == plan.base and plan.backing == "overlay"
    raw = plan_of({"guest": "g1", "instances_path": str(tmp_path), "kind": "swap", "size": "64M",
                   "format": "raw"})
    assert raw.backing == "flat" and raw.new_record["copied_from"].endswith("swap_64M")
    with pytest.raises(VirtfleetError, match="^an overlay is always qcow2; use format: qcow2, or backing: flat for a "
                                             "raw disk$"):
        plan_of({"guest": "g1", "instances_path": str(tmp_path), "kind": "swap", "size": "64M",
                 "format": "raw", "backing": "overlay"})


def test_base_record_must_match(tmp_path):
    base = str(tmp_path / "ephemeral_1M_ext4")
    assert records.formatted_base_problem(base, "ephemeral", MIB, "ext4", "") == "missing"
    with open(base, "wb") as handle:
        handle.truncate(MIB)
    assert records.formatted_base_problem(base, "ephemeral", MIB, "ext4", "") == "no record"
    with open(base + ".info.json", "w") as handle:
        json.dump(records.formatted_base_record("ephemeral", MIB, "ext4", ""), handle)
    assert records.formatted_base_problem(base, "ephemeral", MIB, "ext4", "") is None
    assert records.formatted_base_problem(base, "ephemeral", MIB, "ext4", "x") == "record mismatch"


def test_absent_of_nothing_is_no_change(tmp_path):
    result = ensure_disk({"guest": "g1", "instances_path": str(tmp_path), "kind": "swap", "state": "absent"},
                         check_mode=False)
    assert result["changed"] is False and result["referenced_by"] == []


# ---------------------------------------------------------------------------------------------
# Re-runs read state only, in Python: no qemu-img, and none of the modules that make disks loaded
# ---------------------------------------------------------------------------------------------

FAKE_QEMU_IMG = """#!/bin/sh
echo "$@" >> "$FAKE_QEMU_IMG_LOG"
echo "fake qemu-img: a re-run must not run qemu-img" >&2
exit 1
"""

# Run in a fresh interpreter, so that sys.modules shows what a module run would load.
RERUN = r"""
import json, subprocess, sys
spawned = []
real_init = subprocess.Popen.__init__
def recording_init(self, args, *rest, **kwargs):
    spawned.append(args if isinstance(args, str) else [str(a) for a in args])
    real_init(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = recording_init
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import core as _disks
result = _disks.ensure_disk(json.loads(sys.argv[1]), check_mode=sys.argv[2] == "check")
prefix = "ansible_collections.virtfleet.libvirt.plugins.module_utils."
print(json.dumps({"result": result, "spawned": spawned,
                  "modules": sorted(m[len(prefix):] for m in sys.modules if m.startswith(prefix))}))
"""

# Loaded only when a disk must be made, grown or checked by qemu-img (or for a config drive's content).
HEAVY_MODULES = {"_image.format", "_host.qemu_img", "_disk.mkfs", "_disk.config_drive", "_disk.apply",
                 "_host.libvirt_conn"}

RERUN_CASES = {
    "root-overlay": {"kind": "root", "size": "24M"},
    "root-flat-raw": {"kind": "root", "size": "24M", "backing": "flat", "format": "raw"},
    "ephemeral-overlay": {"kind": "ephemeral", "size": "32M"},
    "ephemeral-flat-raw": {"kind": "ephemeral", "size": "32M", "format": "raw", "label": ""},
    "swap": {"kind": "swap", "size": "16M", "label": "sw"},
    "blank-qcow2": {"kind": "blank", "size": "8M"},
    "blank-raw": {"kind": "blank", "size": "8M", "format": "raw", "mode": "0640"},
    "config-drive": {"kind": "config_drive", "user_data": "#cloud-config\n", "admin_pass": "pw"},
}


def _qemu_info_size(path, fmt):
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["virtual-size"]


def _rerun_params(tmp_path, case):
    params = dict(RERUN_CASES[case], guest="g1", instances_path=str(tmp_path / "instances"), state="present")
    if params["kind"] == "root":
        base = tmp_path / "instances" / "_base" / "base.raw"
        if not base.exists():
            base.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), "16M"], check=True)
        params.update(base=str(base), base_format="raw")
    return params


def _tree_state(instances_path):
    return {os.path.join(d, n): (os.stat(os.path.join(d, n)).st_mtime_ns, os.stat(os.path.join(d, n)).st_mode)
            for d, _dirs, names in os.walk(instances_path) for n in names}


def _rerun_in_fresh_python(tmp_path, params, check_mode):
    from tests.support.runner import COLLECTIONS

    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    script = fake_bin / "qemu-img"
    script.write_text(FAKE_QEMU_IMG)
    script.chmod(0o755)
    log = tmp_path / "fake-qemu-img.log"
    env = dict(os.environ, PYTHONPATH=COLLECTIONS, FAKE_QEMU_IMG_LOG=str(log),
               PATH="%s:%s" % (fake_bin, os.environ.get("PATH", "")))
    proc = subprocess.run([sys.executable, "-c", RERUN, json.dumps(params), "check" if check_mode else "run"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    out["qemu_img_calls"] = log.read_text().splitlines() if log.exists() else []
    return out


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("case", sorted(RERUN_CASES))
def test_rerun_runs_nothing_and_loads_nothing_heavy(tmp_path, case, check_mode):
    params = _rerun_params(tmp_path, case)
    made = ensure_disk(dict(params), check_mode=False)
    assert made["changed"] is True
    state = _tree_state(params["instances_path"])

    out = _rerun_in_fresh_python(tmp_path, params, check_mode)
    again = out["result"]
    assert again["changed"] is False and again["actions"] == []
    assert out["qemu_img_calls"] == [] and out["spawned"] == []
    assert HEAVY_MODULES & set(out["modules"]) == ({"_disk.config_drive"} if case == "config-drive" else set())
    assert _tree_state(params["instances_path"]) == state
    assert again["diff"]["before"] == again["diff"]["after"]
    for key in ("kind", "path", "format", "xml_disk", "owned_files", "backing_file", "base", "fs_type", "label"):
        assert again.get(key) == made.get(key), key
    if case != "config-drive":
        assert again["virtual_size"] == _qemu_info_size(made["path"], made["format"]) == made["virtual_size"]


@pytest.mark.parametrize("case", sorted(RERUN_CASES))
def test_rerun_result_is_the_one_qemu_img_info_gives(tmp_path, monkeypatch, case):
    """Reading the size in Python changes nothing in the result, the diff or the warnings."""
    params = _rerun_params(tmp_path, case)
    ensure_disk(dict(params), check_mode=False)
    read_in_python = ensure_disk(dict(params), check_mode=False)
    monkeypatch.setattr(disks, "recorded_virtual_size", lambda path, fmt, st=None: None)
    asked_qemu_img = ensure_disk(dict(params), check_mode=False)
    assert read_in_python == asked_qemu_img


GROW_CASES = {"root-overlay": "24M", "root-flat-raw": "24M", "blank-qcow2": "8M", "blank-raw": "8M"}


@pytest.mark.parametrize("case", sorted(GROW_CASES))
def test_growth_is_still_seen_and_applied(tmp_path, case):
    params = _rerun_params(tmp_path, case)
    made = ensure_disk(dict(params), check_mode=False)
    old = made["virtual_size"]
    bigger = dict(params, size="40M")
    predicted = ensure_disk(dict(bigger), check_mode=True)
    assert predicted["actions"] == ["grow"] and predicted["virtual_size"] == 40 * MIB
    assert predicted["diff"]["before"]["virtual_size"] == old and predicted["diff"]["after"]["virtual_size"] == 40 * MIB
    assert _qemu_info_size(made["path"], made["format"]) == old
    grown = ensure_disk(dict(bigger), check_mode=False)
    assert grown["actions"] == ["grow"] and grown["diff"] == predicted["diff"]
    assert _qemu_info_size(made["path"], made["format"]) == 40 * MIB
    assert ensure_disk(dict(bigger), check_mode=False)["changed"] is False
    with pytest.raises(VirtfleetError, match="refusing to shrink") as err:
        ensure_disk(dict(params), check_mode=False)
    assert "refusing to shrink" in err.value.msg and "(41943040 bytes)" in err.value.msg


def test_unusual_qcow2_header_is_left_to_qemu_img(tmp_path, monkeypatch):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img

    params = _rerun_params(tmp_path, "blank-qcow2")
    made = ensure_disk(dict(params), check_mode=False)
    calls = []
    real_info = qemu_img.info
    monkeypatch.setattr(qemu_img, "info", lambda *a, **k: calls.append((a, k)) or real_info(*a, **k))
    with open(made["path"], "r+b") as handle:  # the corrupt flag: qemu-img still reads the image
        handle.seek(72)
        handle.write((2).to_bytes(8, "big"))
    assert ensure_disk(dict(params), check_mode=False)["virtual_size"] == 8 * MIB
    assert calls == [((made["path"], "qcow2"), {})]
    with open(made["path"], "r+b") as handle:  # an unknown version: qemu-img's own error
        handle.seek(4)
        handle.write((4).to_bytes(4, "big"))
    with pytest.raises(qemu_img.QemuImgError, match=r"^qemu-img info of .* \(format qcow2\) failed") as err:
        ensure_disk(dict(params), check_mode=False)
    assert "qemu-img info of %s (format qcow2) failed" % made["path"] in err.value.msg
    assert "version" in err.value.msg


def test_existing_ephemeral_options_are_still_validated_first(tmp_path):
    params = _rerun_params(tmp_path, "ephemeral-overlay")
    ensure_disk(dict(params), check_mode=False)
    for extra, words in (({"size": "1000"}, "needs at least 1 MiB"), ({"size": "16M"}, "refusing to shrink"),
                         ({"size": "64M"}, "refusing to grow"), ({"label": "x" * 17}, "too long for ext4"),
                         ({"fs_type": "vfat", "label": "waytoolonglabel"}, "too long for vfat"),
                         ({"fs_type": "xfs"}, "smaller than 300 MB"), ({"label": "other"}, "refusing to reformat")):
        with pytest.raises(VirtfleetError, match=re.escape(words)) as err:
            plan_of(dict(params, **extra))
        assert words in err.value.msg, (extra, err.value.msg)
