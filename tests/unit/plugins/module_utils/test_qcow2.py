import os
import struct
import subprocess

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2


# qemu sizes a LUKS PBKDF by timing a first run on the thread's CPU clock and gives up when that clock shows no time
# spent (a loaded machine); only that failure is tried again, a bounded number of times.
PBKDF_TIMING_FAILURE = "Unable to get accurate CPU usage"


def _qemu_img(*args):
    for _attempt in range(5):
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
        if proc.returncode == 0 or PBKDF_TIMING_FAILURE not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr


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
    with pytest.raises(qcow2.HeaderError, match=r"^not a qcow2 header \(14 bytes\)$"):
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


# --- issue 10 item 21: every field where qemu reads it ---------------------------------------------------------

def _v3_header(version=3, backing=(0, 0), cluster_bits=16, size=1 << 30, crypt=0, l1=(16, 0x30000),
               refcount=(0x10000, 1), snapshots=(0, 0), incompatible=0, compatible=0, autoclear=0,
               refcount_order=4, header_length=104):
    """A qcow2 header with every field distinct, so that a field read from the wrong place shows."""
    fixed = struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, version, backing[0], backing[1], cluster_bits, size, crypt,
                        l1[0], l1[1], refcount[0], refcount[1], snapshots[0], snapshots[1])
    if version < 3:
        return fixed
    return fixed + struct.pack(">QQQII", incompatible, compatible, autoclear, refcount_order, header_length)


def _extension(ext_type, data):
    return struct.pack(">II", ext_type, len(data)) + data + b"\0" * (-len(data) % 8)


def test_every_fixed_field_is_read_from_its_place():
    head = _v3_header(backing=(0x1234, 9), cluster_bits=12, size=0x123456789, crypt=2, l1=(7, 0x7000),
                      refcount=(0x8000, 3), snapshots=(5, 0x9000), incompatible=0x11, compatible=0x22,
                      autoclear=0x33, refcount_order=6, header_length=112)
    header = qcow2.parse_fixed(head + b"\x01" + b"\0" * 7)
    assert (header.version, header.backing_file_offset, header.backing_file_size, header.cluster_bits,
            header.size, header.crypt_method, header.l1_size, header.l1_table_offset,
            header.refcount_table_offset, header.refcount_table_clusters, header.nb_snapshots,
            header.snapshots_offset) == (3, 0x1234, 9, 12, 0x123456789, 2, 7, 0x7000, 0x8000, 3, 5, 0x9000)
    assert (header.incompatible_features, header.compatible_features, header.autoclear_features,
            header.refcount_order, header.header_length, header.compression_type) == (0x11, 0x22, 0x33, 6, 112, 1)
    assert header.cluster_size == 4096


def test_version_2_takes_qemus_defaults_for_the_version_3_fields():
    header = qcow2.parse_fixed(_v3_header(version=2) + b"\xff" * 64)  # bytes after 72 are not v3 fields
    assert (header.incompatible_features, header.compatible_features, header.autoclear_features,
            header.refcount_order, header.header_length, header.compression_type) == (0, 0, 0, 4, 72, None)
    assert qcow2.parse_fixed(_v3_header(version=2)).version == 2  # 72 bytes are enough for version 2


def test_compression_type_is_read_only_from_a_header_that_holds_it():
    assert qcow2.parse_fixed(_v3_header() + b"\x01").compression_type is None         # header_length 104
    assert qcow2.parse_fixed(_v3_header(header_length=112)).compression_type is None  # not in the bytes given
    assert qcow2.parse_fixed(_v3_header(header_length=112) + b"\x00").compression_type == 0
    assert qcow2.parse_fixed(_v3_header(header_length=105) + b"\x01").compression_type == 1


def test_short_or_foreign_headers_are_errors():
    with pytest.raises(qcow2.HeaderError, match=r"^not a qcow2 header \(71 bytes\)$"):
        qcow2.parse_fixed(_v3_header()[:71])
    with pytest.raises(qcow2.HeaderError, match=r"^not a qcow2 header \(104 bytes\)$"):
        qcow2.parse_fixed(b"QFI\xfa" + _v3_header()[4:])
    with pytest.raises(qcow2.HeaderError, match=r"^a version 3 qcow2 header needs 104 bytes, got 103$"):
        qcow2.parse_fixed(_v3_header()[:103])
    assert qcow2.parse_fixed(_v3_header(version=4)).header_length == 104  # later versions read as version 3
    assert qcow2.is_qcow2(b"QFI\xfb") and not qcow2.is_qcow2(b"QFI") and not qcow2.is_qcow2(b"qfi\xfb")


def test_extensions_are_read_to_the_end_marker_with_their_padding():
    exts = _extension(qcow2.EXT_BACKING_FORMAT, b"raw") + _extension(0x12345678, b"12345678") + \
        _extension(qcow2.EXT_FEATURE_TABLE, b"") + _extension(qcow2.EXT_END, b"") + _extension(0x1, b"after")
    cluster = _v3_header() + exts
    assert qcow2.parse_extensions(cluster, 104) == [(qcow2.EXT_BACKING_FORMAT, b"raw"), (0x12345678, b"12345678"),
                                                    (qcow2.EXT_FEATURE_TABLE, b"")]
    header = qcow2.parse(cluster + b"\0" * 64)
    assert header.backing_format == "raw"
    assert qcow2.parse(_v3_header() + _extension(0, b"")).backing_format is None
    # an extension that ends exactly at the end of the cluster is whole; the marker after it must fit too
    exact = _v3_header() + _extension(0x99, b"x" * 8)
    with pytest.raises(qcow2.HeaderError, match=r"^header extensions run past the first cluster$"):
        qcow2.parse_extensions(exact, 104)
    assert qcow2.parse_extensions(exact + b"\0" * 8, 104) == [(0x99, b"x" * 8)]
    with pytest.raises(qcow2.HeaderError, match=r"^header extension 0x00000099 of 9 bytes runs past the first "
                       r"cluster$"):
        qcow2.parse_extensions(_v3_header() + struct.pack(">II", 0x99, 9) + b"x" * 8, 104)
    with pytest.raises(qcow2.HeaderError, match=r"^header extensions run past the first cluster$"):
        qcow2.parse_extensions(_v3_header() + b"\0" * 7, 104)


def test_a_bounded_number_of_extensions():
    # 64 reads of (type, length) include the end marker's: 63 extensions at most (the message says "more than 64").
    many = b"".join(_extension(0x100 + i, b"") for i in range(63))
    assert len(qcow2.parse_extensions(_v3_header() + many + b"\0" * 8, 104)) == 63
    with pytest.raises(qcow2.HeaderError, match=r"^more than 64 header extensions$"):
        qcow2.parse_extensions(_v3_header() + many + _extension(0x200, b"") + b"\0" * 8, 104)


def test_extensions_of_a_version_2_image_are_not_part_of_its_parsed_header():
    cluster = _v3_header(version=2) + _extension(qcow2.EXT_BACKING_FORMAT, b"raw") + b"\0" * 8
    assert qcow2.parse(cluster).extensions == []


@pytest.mark.parametrize("offset,size,cluster_bytes,expected", [
    (200, 4, 512, "base"), (200, 1023, 2048, "b" * 1023), (200, 1024, 2048, None), (200, 0, 512, None),
    (0, 4, 512, None), (200, 4, 203, None), (200, 4, 204, "base"),
])
def test_the_backing_file_name_is_read_only_within_qemus_limits(offset, size, cluster_bytes, expected):
    cluster = bytearray(_v3_header(backing=(offset, size)) + b"\0" * 8)
    name = b"base" if size == 4 else b"b" * size
    cluster[len(cluster):] = b"\0" * max(0, offset + len(name) - len(cluster))
    if offset:
        cluster[offset:offset + len(name)] = name
    assert qcow2.parse(bytes(cluster[:cluster_bytes]) if cluster_bytes >= 112 else bytes(cluster)).backing_file \
        == expected


def test_read_takes_the_whole_first_cluster_but_no_more_than_asked(tmp_path):
    path = tmp_path / "big-cluster.qcow2"
    ext = _extension(qcow2.EXT_BACKING_FORMAT, b"qcow2")
    head = _v3_header(cluster_bits=21) + b"\0" * (1 << 20) + ext + b"\0" * 8  # extensions 1 MiB in
    path.write_bytes(head)
    # The header's extensions start at header_length (104): a zero marker there ends them.
    assert qcow2.read(str(path)).extensions == []
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(struct.pack(">I", 104 + (1 << 20)))
    assert qcow2.read(str(path)).backing_format == "qcow2"                   # within 2 MiB by default
    assert qcow2.read(str(path), max_bytes=1 << 20) is None                  # the extensions run past what was read
    big = _v3_header(cluster_bits=31)                                         # 2 GiB clusters: read only 2 MiB
    (tmp_path / "huge").write_bytes(big + _extension(0, b""))
    assert qcow2.read(str(tmp_path / "huge")).cluster_bits == 31


def test_read_refuses_what_is_not_a_whole_qcow2_header(tmp_path):
    (tmp_path / "short").write_bytes(_v3_header()[:80])
    assert qcow2.read(str(tmp_path / "short")) is None                       # v3 magic, less than 104 bytes
    (tmp_path / "v2").write_bytes(_v3_header(version=2, backing=(72, 4)) + b"base")
    assert qcow2.read(str(tmp_path / "v2")).backing_file == "base"
    (tmp_path / "runoff").write_bytes(_v3_header() + struct.pack(">II", 0x99, 4000))
    assert qcow2.read(str(tmp_path / "runoff")) is None
    os.mkdir(tmp_path / "dir")
    assert qcow2.read(str(tmp_path / "dir")) is None
    assert qcow2.backing_file_of(str(tmp_path / "dir")) is None


def test_backing_file_of_absolute_and_normalised(tmp_path):
    (tmp_path / "abs").write_bytes(_v3_header(version=2, backing=(72, 14)) + b"/srv//b/../raw")
    assert qcow2.backing_file_of(str(tmp_path / "abs")) == "/srv/raw"
    (tmp_path / "rel").write_bytes(_v3_header(version=2, backing=(72, 9)) + b"../x/base")
    assert qcow2.backing_file_of(str(tmp_path / "rel")) == str(tmp_path.parent / "x" / "base")
    (tmp_path / "none").write_bytes(_v3_header(version=2) + b"\0" * 8)
    assert qcow2.backing_file_of(str(tmp_path / "none")) is None


def test_feature_bits_and_extension_types_are_the_ones_qemu_img_writes(tmp_path):
    """docs/interop/qcow2.txt numbers, checked against files the host's qemu-img writes."""
    assert (qcow2.INCOMPAT_DIRTY, qcow2.INCOMPAT_CORRUPT, qcow2.INCOMPAT_KNOWN) == (1, 2, 0x1F)
    cases = [
        (["compat=1.1"], 0, {qcow2.EXT_FEATURE_TABLE}),
        (["data_file=%s" % (tmp_path / "data.raw")], qcow2.INCOMPAT_DATA_FILE,
         {qcow2.EXT_FEATURE_TABLE, qcow2.EXT_DATA_FILE}),
        (["compression_type=zstd"], qcow2.INCOMPAT_COMPRESSION, {qcow2.EXT_FEATURE_TABLE}),
        (["extended_l2=on"], qcow2.INCOMPAT_EXTL2, {qcow2.EXT_FEATURE_TABLE}),
    ]
    for options, bits, extensions in cases:
        path = tmp_path / "img.qcow2"
        _qemu_img("create", "-f", "qcow2", "-o", ",".join(options), str(path), "1M")
        header = qcow2.read(str(path))
        assert header.incompatible_features == bits, options
        assert {ext_type for ext_type, _data in header.extensions} == extensions, options
        path.unlink()
    path = tmp_path / "bitmap.qcow2"
    _qemu_img("create", "-f", "qcow2", str(path), "1M")
    _qemu_img("bitmap", "--add", str(path), "b0")
    assert qcow2.EXT_BITMAPS in {ext_type for ext_type, _data in qcow2.read(str(path)).extensions}
    path = tmp_path / "luks.qcow2"
    _qemu_img("create", "-f", "qcow2", "--object", "secret,id=s0,data=x", "-o",
              "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", str(path), "1M")
    header = qcow2.read(str(path))
    assert header.crypt_method == 2 and qcow2.EXT_CRYPTO in {ext_type for ext_type, _data in header.extensions}


def test_names_that_are_not_utf8_are_read_with_replacement_characters():
    cluster = _v3_header(backing=(200, 4)) + _extension(qcow2.EXT_BACKING_FORMAT, b"r\xffw") + b"\0" * 8
    cluster = cluster.ljust(200, b"\0") + b"b\xfes\xe9"
    header = qcow2.parse(cluster)
    assert header.backing_format == "r\ufffdw"
    assert header.backing_file == "b\ufffds\ufffd"


def test_a_one_byte_backing_name_is_a_name():
    cluster = (_v3_header(backing=(200, 1)) + b"\0" * 8).ljust(200, b"\0") + b"b"
    assert qcow2.parse(cluster).backing_file == "b"


def test_a_version_3_header_too_short_for_its_fields_has_no_extensions():
    cluster = _v3_header(header_length=100) + _extension(qcow2.EXT_BACKING_FORMAT, b"raw") + b"\0" * 8
    assert qcow2.parse(cluster).extensions == []


def test_only_the_first_cluster_is_read(tmp_path):
    """Extensions past the end of a 512-byte first cluster are not the header's: the header is unreadable."""
    path = tmp_path / "small-cluster.qcow2"
    path.write_bytes((_v3_header(cluster_bits=9) + _extension(0x99, b"x" * 400)).ljust(520, b"\0")
                     + b"\0" * 1024)
    assert qcow2.read(str(path)) is None
    path.write_bytes((_v3_header(cluster_bits=9) + _extension(0x99, b"x" * 392)).ljust(520, b"\0"))
    assert qcow2.read(str(path)).extensions == [(0x99, b"x" * 392)]


def test_at_most_two_mib_are_read_by_default(tmp_path):
    path = tmp_path / "4m-cluster.qcow2"
    head = bytearray(_v3_header(cluster_bits=22, header_length=(2 << 20) + 8))
    head += b"\0" * ((2 << 20) + 8 - len(head)) + _extension(qcow2.EXT_BACKING_FORMAT, b"raw") + b"\0" * 8
    path.write_bytes(bytes(head))
    assert qcow2.read(str(path)) is None
    assert qcow2.read(str(path), max_bytes=4 << 20).backing_format == "raw"


def test_a_symlink_to_a_qcow2_file_is_not_followed(tmp_path):
    _qemu_img("create", "-f", "qcow2", str(tmp_path / "real.qcow2"), "1M")
    os.symlink(tmp_path / "real.qcow2", tmp_path / "link.qcow2")
    assert qcow2.read(str(tmp_path / "real.qcow2")) is not None
    assert qcow2.read(str(tmp_path / "link.qcow2")) is None
