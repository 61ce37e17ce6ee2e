import os
import struct
import subprocess

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2


def _qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_reads_what_qemu_img_wrote(tmp_path):
    base = tmp_path / "base.raw"
    _qemu_img("create", "-f", "raw", str(base), "1M")
    top = tmp_path / "top.qcow2"
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(top), "3M")
    header = qcow2.read(str(top))
    assert header.version == 3 and header.size == 3 << 20 and header.cluster_bits == 16
    assert header.backing_file == str(base) and header.backing_format == "raw"
    assert qcow2.backing_file_of(str(top)) == str(base)
    v2 = tmp_path / "v2.qcow2"
    _qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", str(v2), "2M")
    assert qcow2.read(str(v2)).version == 2 and qcow2.backing_file_of(str(v2)) is None


def test_anything_else_is_not_a_header(tmp_path):
    raw = tmp_path / "raw"
    raw.write_bytes(b"\0" * 4096)
    assert qcow2.read(str(raw)) is None
    assert qcow2.read(str(tmp_path / "missing")) is None
    link = tmp_path / "link"
    os.symlink(raw, link)
    assert qcow2.read(str(link)) is None  # never followed through a symlink
    with pytest.raises(qcow2.HeaderError):
        qcow2.parse_fixed(b"QFI\xfb" + b"\0" * 10)


def test_relative_backing_names_resolve_against_the_file(tmp_path):
    head = struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, 2, 72, 4, 16, 1 << 20, 0, 1, 65536, 131072, 1, 0, 0)
    (tmp_path / "over").write_bytes(head + b"base" + b"\0" * 100)
    assert qcow2.backing_file_of(str(tmp_path / "over")) == str(tmp_path / "base")


def test_extensions_that_run_off_the_cluster_are_an_error():
    cluster = bytearray(struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, 3, 0, 0, 9, 1 << 20, 0, 1, 512, 1024, 1, 0, 0))
    cluster += struct.pack(">QQQII", 0, 0, 0, 4, 104) + struct.pack(">II", qcow2.EXT_BACKING_FORMAT, 400)
    with pytest.raises(qcow2.HeaderError, match="runs past"):
        qcow2.parse(bytes(cluster) + b"\0" * 100)


def test_a_fifo_under_a_disk_name_is_not_a_header_and_does_not_block(tmp_path):
    import multiprocessing

    fifo = tmp_path / "disk"
    os.mkfifo(fifo)

    # in a child process: a blocking open of a FIFO without a writer would hang, and the child would not finish
    def probe():
        os._exit(0 if qcow2.read(str(fifo)) is None else 1)

    child = multiprocessing.get_context("fork").Process(target=probe)
    child.start()
    child.join(10)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0
    assert qcow2.backing_file_of(str(fifo)) is None
