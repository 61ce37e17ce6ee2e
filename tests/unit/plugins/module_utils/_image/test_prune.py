"""Removing images from the cache: durations, and backing file names read without qemu."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import prune as prune
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError


# ---- durations --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [(0, 0), (90, 90), ("90", 90), ("30m", 1800), ("24h", 86400),
                                            ("2d", 172800), ("1w", 604800), ("1.5h", 5400)])
def test_parse_age(value, seconds):
    assert prune.parse_age(value) == seconds


@pytest.mark.parametrize("value", ["ten", "5y", "-1", True, -3])
def test_parse_age_refuses(value):
    with pytest.raises(VirtfleetError):
        prune.parse_age(value)


# ---- backing file names without qemu ------------------------------------------------------------------

def _fake_qcow2(path, backing=b""):
    header = bytearray(512)
    header[0:4] = b"QFI\xfb"
    header[4:8] = (3).to_bytes(4, "big")
    if backing:
        header[8:16] = (200).to_bytes(8, "big")
        header[16:20] = len(backing).to_bytes(4, "big")
        header[200:200 + len(backing)] = backing
    with open(path, "wb") as handle:
        handle.write(bytes(header))
    return str(path)


def test_qcow2_backing_name_reads_only_the_header(tmp_path):
    assert prune.qcow2_backing_name(_fake_qcow2(tmp_path / "a", b"/i/_base/abc")) == "/i/_base/abc"
    assert prune.qcow2_backing_name(_fake_qcow2(tmp_path / "b")) is None
    raw = tmp_path / "raw"
    raw.write_bytes(b"\0" * 1024)
    assert prune.qcow2_backing_name(str(raw)) is None
    assert prune.qcow2_backing_name(str(tmp_path / "missing")) is None


def test_unrecorded_disks_are_never_handed_to_qemu_img(tmp_path, monkeypatch):
    def no_qemu(*args, **kwargs):
        raise AssertionError("qemu-img must not run on an unrecorded disk")

    monkeypatch.setattr(prune.qemu_img, "info", no_qemu)
    disk = _fake_qcow2(tmp_path / "disk", b"../_base/abc")
    assert prune._backing_chain(disk, None) == [str(tmp_path / "../_base/abc")]
    assert prune._backing_chain(disk, "raw") == []
