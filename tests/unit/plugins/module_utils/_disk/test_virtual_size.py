"""The virtual size of our own disks, read in Python, is qemu-img's answer; anything unusual is left to qemu-img."""

import json
import shutil
import struct
import subprocess

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import virtual_size as vsize

MIB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _need_qemu_img():
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is required to compare with its answers (apt-get install qemu-utils)")


def qemu_virtual_size(path, fmt):
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["virtual-size"]


def make(path, fmt, size, *options):
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    if options:
        cmd += ["-o", ",".join(options)]
    subprocess.run(cmd + [str(path), str(size)], check=True)
    return str(path)


def patch(path, offset, fmt, value):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, value))


@pytest.mark.parametrize("size,options", [
    (64 * MIB, ()), (1000, ()), (64 * MIB + 512, ()), (1 << 40, ()), (10 * MIB, ("compat=0.10",)),
    (10 * MIB, ("cluster_size=512",)), (10 * MIB, ("cluster_size=2M",)), (10 * MIB, ("extended_l2=on",)),
    (10 * MIB, ("preallocation=metadata",)), (10 * MIB, ("lazy_refcounts=on",)), (10 * MIB, ("refcount_bits=64",)),
    (10 * MIB, ("compression_type=zstd",)),
])
def test_qcow2_size_is_qemu_imgs(tmp_path, size, options):
    path = make(tmp_path / "d.qcow2", "qcow2", size, *options)
    assert vsize.recorded_virtual_size(path, "qcow2") == qemu_virtual_size(path, "qcow2")


def test_qcow2_overlay_size_is_qemu_imgs_without_reading_the_base(tmp_path):
    base = make(tmp_path / "base.raw", "raw", 8 * MIB)
    path = str(tmp_path / "overlay")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", path, "24M"], check=True)
    (tmp_path / "base.raw").unlink()
    assert vsize.recorded_virtual_size(path, "qcow2") == 24 * MIB == qemu_virtual_size(path, "qcow2")


def test_qcow2_size_rounds_down_to_whole_sectors_as_qemu_does(tmp_path):
    path = make(tmp_path / "d.qcow2", "qcow2", 64 * MIB)
    patch(path, 24, ">Q", 64 * MIB + 100)
    assert vsize.recorded_virtual_size(path, "qcow2") == 64 * MIB == qemu_virtual_size(path, "qcow2")


def test_dirty_qcow2_of_a_running_guest_is_read(tmp_path):
    path = make(tmp_path / "d.qcow2", "qcow2", 32 * MIB, "lazy_refcounts=on")
    patch(path, 72, ">Q", 1)  # incompatible feature bit 0: dirty
    assert vsize.recorded_virtual_size(path, "qcow2") == 32 * MIB == qemu_virtual_size(path, "qcow2")


@pytest.mark.parametrize("length", [0, 1, 511, 512, 1000, MIB, MIB + 1])
def test_raw_size_is_qemu_imgs(tmp_path, length):
    path = tmp_path / "d.raw"
    with open(str(path), "wb") as handle:
        handle.truncate(length)
    assert vsize.recorded_virtual_size(str(path), "raw") == qemu_virtual_size(path, "raw")


def test_raw_size_comes_from_the_given_stat_without_opening(tmp_path):
    path = tmp_path / "d.raw"
    path.write_bytes(b"x" * 700)
    st = path.stat()
    path.unlink()
    assert vsize.recorded_virtual_size(str(path), "raw", st) == 1024


def test_format_is_never_guessed(tmp_path):
    """A qcow2 header inside a disk recorded as raw is data; a recorded qcow2 without one is left to qemu-img."""
    qcow2 = make(tmp_path / "d.qcow2", "qcow2", 64 * MIB)
    raw = make(tmp_path / "d.raw", "raw", 4 * MIB)
    assert vsize.recorded_virtual_size(qcow2, "raw") == qemu_virtual_size(qcow2, "raw") < 64 * MIB
    assert vsize.recorded_virtual_size(raw, "qcow2") is None
    assert vsize.recorded_virtual_size(raw, "vmdk") is None
    assert vsize.recorded_virtual_size(raw, "RAW") is None
    assert vsize.recorded_virtual_size(str(tmp_path / "missing"), "qcow2") is None
    assert vsize.recorded_virtual_size(str(tmp_path / "missing"), "raw") is None


def _header(**fields):
    """A version 3 qcow2 header of a 64 MiB image with 64 KiB clusters, with ``fields`` changed."""
    values = {"magic": 0x514649FB, "version": 3, "backing_offset": 0, "backing_size": 0, "cluster_bits": 16,
              "size": 64 * MIB, "crypt": 0, "l1_size": 1, "l1_offset": 3 << 16, "reftable_offset": 1 << 16,
              "reftable_clusters": 1, "nb_snapshots": 0, "snapshots_offset": 0, "incompatible": 0,
              "compatible": 0, "autoclear": 0, "refcount_order": 4, "header_length": 112}
    values.update(fields)
    return struct.pack(">IIQIIQIIQQIIQQQQII", *(values[k] for k in (
        "magic", "version", "backing_offset", "backing_size", "cluster_bits", "size", "crypt", "l1_size",
        "l1_offset", "reftable_offset", "reftable_clusters", "nb_snapshots", "snapshots_offset", "incompatible",
        "compatible", "autoclear", "refcount_order", "header_length")))


def test_ordinary_header():
    assert vsize.qcow2_virtual_size(_header(), 1 << 18) == 64 * MIB
    assert vsize.qcow2_virtual_size(_header(incompatible=1 | 8 | 16, l1_size=1), 1 << 18) == 64 * MIB
    assert vsize.qcow2_virtual_size(_header(version=2)[:72], 1 << 18) == 64 * MIB


@pytest.mark.parametrize("fields", [
    {"magic": 0x514649FC}, {"version": 1}, {"version": 4}, {"cluster_bits": 8}, {"cluster_bits": 22},
    {"header_length": 100}, {"header_length": 1 << 17}, {"backing_offset": (1 << 16) + 8},
    {"incompatible": 2}, {"incompatible": 4}, {"incompatible": 32}, {"refcount_order": 7}, {"crypt": 1},
    {"crypt": 2}, {"reftable_clusters": 0}, {"reftable_offset": 4096}, {"l1_offset": 3 << 15},
    {"snapshots_offset": 512, "nb_snapshots": 1}, {"l1_size": 0}, {"l1_size": (32 << 20) // 8 + 1},
    {"size": 1 << 40}, {"nb_snapshots": 65537}, {"reftable_clusters": 129},
])
def test_unusual_header_is_left_to_qemu_img(fields):
    assert vsize.qcow2_virtual_size(_header(**fields), 1 << 18) is None


def test_truncated_header_is_left_to_qemu_img():
    assert vsize.qcow2_virtual_size(_header()[:103], 1 << 18) is None
    assert vsize.qcow2_virtual_size(_header(), 100) is None
    assert vsize.qcow2_virtual_size(b"", 0) is None


def test_extended_l2_halves_what_one_l1_entry_maps():
    # 64 KiB clusters: one L1 entry maps 512 MiB (8-byte L2 entries) or 256 MiB (16-byte ones).
    assert vsize.qcow2_virtual_size(_header(size=512 * MIB), 1 << 18) == 512 * MIB
    assert vsize.qcow2_virtual_size(_header(size=512 * MIB, incompatible=16), 1 << 18) is None
    assert vsize.qcow2_virtual_size(_header(size=512 * MIB, incompatible=16, l1_size=2), 1 << 18) == 512 * MIB
