"""guest_disk against real qemu-img: root overlays and flat copies, growth, refusals, check mode."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.runner import run_module

MIB = 1 << 20


def qemu_info(path, fmt):
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture
def base(sandbox):
    """A 32 MiB raw base in the sandbox's cache directory."""
    base_dir = os.path.join(sandbox.instances, "_base")
    os.makedirs(base_dir)
    path = os.path.join(base_dir, "base.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "32M"], check=True)
    return path


def disk_args(sandbox, base, guest, **extra):
    args = {"guest": guest, "kind": "root", "base": base, "base_format": "raw", "size": "64M",
            "instances_path": sandbox.instances}
    args.update(extra)
    return args


def test_overlay_root_is_created_once_with_explicit_backing_format(sandbox, base):
    guest = sandbox.guest_name()
    first = run_module("guest_disk", disk_args(sandbox, base, guest))
    assert first["changed"] is True and first["_rc"] == 0, first
    path = os.path.join(sandbox.instances, guest, "disk")
    info = qemu_info(path, "qcow2")
    assert info["virtual-size"] == 64 * MIB
    assert info["backing-filename"] == base
    assert info["backing-filename-format"] == "raw"
    record = json.load(open(os.path.join(sandbox.instances, guest, "disk.info.json")))
    assert record["disk"]["format"] == "qcow2"

    mtime = os.stat(path).st_mtime_ns
    second = run_module("guest_disk", disk_args(sandbox, base, guest))
    assert second["changed"] is False and second["actions"] == []
    assert os.stat(path).st_mtime_ns == mtime


def test_grow_then_refuse_shrink(sandbox, base):
    guest = sandbox.guest_name()
    run_module("guest_disk", disk_args(sandbox, base, guest))
    path = os.path.join(sandbox.instances, guest, "disk")
    grown = run_module("guest_disk", disk_args(sandbox, base, guest, size="96M"), diff=True)
    assert grown["changed"] and grown["actions"] == ["grow"]
    assert grown["diff"]["before"]["virtual_size"] == 64 * MIB and grown["diff"]["after"]["virtual_size"] == 96 * MIB
    assert qemu_info(path, "qcow2")["virtual-size"] == 96 * MIB

    shrink = run_module("guest_disk", disk_args(sandbox, base, guest, size="64M"))
    assert shrink.get("failed") and "refusing to shrink" in shrink["msg"]
    assert qemu_info(path, "qcow2")["virtual-size"] == 96 * MIB


def test_flat_raw_copy_grown_to_size(sandbox, base):
    with open(base, "r+b") as handle:
        handle.write(b"BOOTSECTOR")
    guest = sandbox.guest_name()
    result = run_module("guest_disk", disk_args(sandbox, base, guest, backing="flat", format="raw"))
    assert result["changed"] and result["actions"] == ["create", "grow"], result
    path = os.path.join(sandbox.instances, guest, "disk")
    assert os.path.getsize(path) == 64 * MIB
    with open(path, "rb") as handle:
        assert handle.read(10) == b"BOOTSECTOR"
    assert "backing-filename" not in qemu_info(path, "raw")


def test_check_mode_predicts_and_writes_nothing(sandbox, base):
    guest = sandbox.guest_name()
    result = run_module("guest_disk", disk_args(sandbox, base, guest), check=True, diff=True)
    assert result["changed"] is True and result["actions"] == ["create"]
    assert result["diff"]["before"]["exists"] is False
    assert not os.path.exists(os.path.join(sandbox.instances, guest))


@pytest.mark.parametrize("case,args,expected", [
    ("base larger than size", {"size": "16M"}, "larger than the requested root disk size"),
    ("missing base", {"base": "/nonexistent/base.raw"}, "does not exist"),
    ("raw overlay", {"format": "raw"}, "overlay root disk is always qcow2"),
    ("bad size", {"size": "12 parsecs"}, "unknown unit"),
    ("hostile name", {"guest": "../../etc"}, "invalid guest name"),
])
def test_refusals_are_clear_and_leave_nothing(sandbox, base, case, args, expected):
    guest = sandbox.guest_name()
    result = run_module("guest_disk", disk_args(sandbox, base, guest, **args))
    assert result.get("failed"), case
    assert expected in result["msg"]
    assert "Traceback" not in result["msg"]
    assert not os.path.exists(os.path.join(sandbox.instances, guest))


def test_disk_without_format_record_is_never_probed(sandbox, base):
    """CVE-2026-24708: a guest that wrote a qcow2 header into its raw disk must not change how we treat it."""
    guest = sandbox.guest_name()
    run_module("guest_disk", disk_args(sandbox, base, guest, backing="flat", format="raw"))
    os.unlink(os.path.join(sandbox.instances, guest, "disk.info.json"))
    result = run_module("guest_disk", disk_args(sandbox, base, guest, backing="flat", format="raw", size="96M"))
    assert result.get("failed") and "no format record" in result["msg"]
    assert os.path.getsize(os.path.join(sandbox.instances, guest, "disk")) == 64 * MIB
