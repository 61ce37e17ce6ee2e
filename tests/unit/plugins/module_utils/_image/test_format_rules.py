"""The inspector's rules one at a time, on images written byte by byte (no qemu-img: fast, so that a mutation run
can afford them for every mutant). test_format_vs_qemu.py checks the same kinds of files against qemu-img itself.
"""

from __future__ import annotations

import os
import re
import struct

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format as image_format
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format import UnsafeImageError, inspect_file

MIB = 1 << 20


def _write(tmp_path, data, name="image", size=None):
    path = tmp_path / name
    with open(path, "wb") as handle:
        handle.write(data)
        if size is not None and size > len(data):
            handle.truncate(size)
    return str(path)


def _refusal(path, **kwargs):
    with pytest.raises(UnsafeImageError, match="^refusing image ") as caught:
        inspect_file(path, **kwargs)
    return caught.value.msg


# --- qcow2 ----------------------------------------------------------------------------------------------------

def qcow2_image(version=3, cluster_bits=16, size=64 * MIB, l1_size=1, l1_offset=0x30000, refcount=(0x10000, 1),
                snapshots=(0, 0), incompatible=0, compatible=0, autoclear=0, refcount_order=4, header_length=104,
                crypt=0, backing=(0, 0), extensions=b"", compression=None, file_size=4 * 0x10000):
    """A qcow2 whose header says what the arguments say, laid out as qemu-img lays out a fresh image."""
    head = struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, version, backing[0], backing[1], cluster_bits, size, crypt,
                       l1_size, l1_offset, refcount[0], refcount[1], snapshots[0], snapshots[1])
    if version >= 3:
        head += struct.pack(">QQQII", incompatible, compatible, autoclear, refcount_order, header_length)
        if compression is not None:
            head += bytes([compression]) + b"\0" * 7
    head = head.ljust(header_length if version >= 3 else 72, b"\0") + extensions + b"\0" * 8
    return head, file_size


def qcow2_file(tmp_path, name="image.qcow2", **fields):
    head, size = qcow2_image(**fields)
    return _write(tmp_path, head, name, size)


def test_a_well_formed_crafted_qcow2_is_accepted_with_its_details(tmp_path):
    inspection = inspect_file(qcow2_file(tmp_path, size=64 * MIB + 700))
    assert inspection.format == "qcow2"
    assert inspection.virtual_size == 64 * MIB + 512  # whole sectors, as qemu counts them
    assert inspection.details == {
        "detected_format": "qcow2", "qcow2_version": 3, "cluster_bits": 16, "incompatible_features": 0,
        "compatible_features": 0, "autoclear_features": 0, "refcount_order": 4, "header_length": 104,
        "l1_size": 1, "snapshots": 0, "encrypted": False, "extended_l2": False}
    v2 = inspect_file(qcow2_file(tmp_path, "v2.qcow2", version=2))
    assert v2.details["qcow2_version"] == 2 and v2.details["header_length"] == 72


@pytest.mark.parametrize("cluster_bits,ok", [(8, False), (9, True), (21, True), (22, False)])
def test_cluster_bits_from_9_to_21(tmp_path, cluster_bits, ok):
    cluster = 1 << cluster_bits
    path = qcow2_file(tmp_path, cluster_bits=cluster_bits, size=cluster, l1_offset=3 * cluster,
                      refcount=(cluster, 1), file_size=4 * cluster)
    if ok:
        assert inspect_file(path).details["cluster_bits"] == cluster_bits
    else:
        assert "cluster_bits %d outside 9..21" % cluster_bits in _refusal(path)


@pytest.mark.parametrize("header_length,ok", [(104, True), (112, True), (96, False), (108, False),
                                              (0x10000 - 8, True), (0x10008, False)])
def test_header_length_is_a_multiple_of_8_from_104_to_the_cluster_size(tmp_path, header_length, ok):
    path = qcow2_file(tmp_path, header_length=header_length, compression=0 if header_length > 104 else None,
                      file_size=4 * 0x10000 + 0x10000)
    if ok:
        assert inspect_file(path).details["header_length"] == header_length
    else:
        assert "header_length %d (must be a multiple of 8 from 104 to the cluster size)" % header_length in \
            _refusal(path)


def test_a_file_shorter_than_its_header(tmp_path):
    head, _size = qcow2_image(header_length=112, compression=0)
    assert "the file is 108 bytes, shorter than its 112-byte header" in _refusal(_write(tmp_path, head[:108]))
    assert "shorter than a version 3 header" in _refusal(_write(tmp_path, head[:100], "v3short"))
    assert "the file is 71 bytes, shorter than a qcow2 header" in _refusal(_write(tmp_path, head[:71], "tiny"))


@pytest.mark.parametrize("bit,message", [
    (1 << 1, "qemu has marked this qcow2 image corrupt (incompatible feature bit 1)"),
    (1 << 2, "whose data lives in an external data file (incompatible feature bit 2)"),
    (1 << 5, "it sets unknown qcow2 incompatible feature bits 0x20"),
    (1 << 63, "it sets unknown qcow2 incompatible feature bits 0x8000000000000000"),
])
def test_incompatible_feature_bits(tmp_path, bit, message):
    assert message in _refusal(qcow2_file(tmp_path, incompatible=bit))


def test_dirty_and_extended_l2_bits_are_read_as_qemu_reads_them(tmp_path):
    assert inspect_file(qcow2_file(tmp_path, incompatible=1)).details["incompatible_features"] == 1
    extl2 = inspect_file(qcow2_file(tmp_path, "extl2", incompatible=1 << 4, cluster_bits=14, l1_offset=3 << 14,
                                    refcount=(1 << 14, 1), size=1 << 14, file_size=4 << 14))
    assert extl2.details["extended_l2"] is True
    msg = _refusal(qcow2_file(tmp_path, "small", incompatible=1 << 4, cluster_bits=13, l1_offset=3 << 13,
                              refcount=(1 << 13, 1), size=1 << 13, file_size=4 << 13))
    assert "extended L2 entries need clusters of at least 16 KiB, and its clusters are 8192 bytes" in msg


@pytest.mark.parametrize("compression,bit,outcome", [
    (0, 0, "zlib"), (1, 1 << 3, "zstd"),
    (1, 0, "its compression type is zstd but the compression-type feature bit (incompatible bit 3) is clear"),
    (0, 1 << 3, "its compression type is zlib but the compression-type feature bit (incompatible bit 3) is set"),
    (2, 1 << 3, "unknown compression type 2"),
])
def test_compression_type_and_its_feature_bit(tmp_path, compression, bit, outcome):
    path = qcow2_file(tmp_path, header_length=112, compression=compression, incompatible=bit)
    if outcome in ("zlib", "zstd"):
        assert inspect_file(path).details["compression_type"] == outcome
    else:
        assert outcome in _refusal(path)
    # without the field (header_length 104) the type is zlib, and the bit must be clear
    assert "is set" in _refusal(qcow2_file(tmp_path, "nofield", incompatible=1 << 3))


@pytest.mark.parametrize("order,ok", [(0, True), (6, True), (7, False)])
def test_refcount_order_up_to_6(tmp_path, order, ok):
    path = qcow2_file(tmp_path, refcount_order=order)
    if ok:
        assert inspect_file(path).details["refcount_order"] == order
    else:
        assert "refcount_order 7 above 6" in _refusal(path)


def test_encryption_methods(tmp_path):
    assert "legacy AES encryption" in _refusal(qcow2_file(tmp_path, "aes", crypt=1))
    assert "encrypted (LUKS) qcow2 image and encrypted images were not allowed" in _refusal(
        qcow2_file(tmp_path, "luks", crypt=2))
    assert "it is LUKS-encrypted but has no crypto header extension" in _refusal(
        qcow2_file(tmp_path, "luks", crypt=2), allow_luks=True)
    assert "unknown crypt_method 3" in _refusal(qcow2_file(tmp_path, "three", crypt=3), allow_luks=True)


def _ext(ext_type, data):
    return struct.pack(">II", ext_type, len(data)) + data + b"\0" * (-len(data) % 8)


def test_extension_rules(tmp_path):
    fmt = inspect_file(qcow2_file(tmp_path, "bf", extensions=_ext(0xE2792ACA, b"x" * 15)))
    assert fmt.details["backing_format_extension"] == "x" * 15
    assert "backing-format header extension is 16 bytes long (at most 15)" in _refusal(
        qcow2_file(tmp_path, "bf16", extensions=_ext(0xE2792ACA, b"x" * 16)))
    assert "names an external data file '/srv/d' in a qcow2 header extension" in _refusal(
        qcow2_file(tmp_path, "df", extensions=_ext(0x44415441, b"/srv/d")))
    assert "header extension 0x12345678 of 65536 bytes runs past the first cluster" in _refusal(
        qcow2_file(tmp_path, "run", extensions=struct.pack(">II", 0x12345678, 0x10000)))
    assert "it has a crypto header extension but crypt_method 0" in _refusal(
        qcow2_file(tmp_path, "crypto", extensions=_ext(0x0537BE77, b"\0" * 16)))


@pytest.mark.parametrize("data,autoclear,problem", [
    (b"\0" * 23, 1, "its bitmaps header extension is 23 bytes (must be 24)"),
    (b"\0" * 23, 0, "its bitmaps header extension is 23 bytes (must be 24)"),
    (struct.pack(">IIQQ", 0, 0, 0, 0), 0, None),  # stale bitmaps, ignored as qemu ignores them
    (struct.pack(">IIQQ", 1, 1, 8, 0x10000), 1, "its bitmaps extension has a non-zero reserved field"),
    (struct.pack(">IIQQ", 0, 0, 8, 0x10000), 1, "its bitmaps extension lists 0 bitmaps (1 to 65535)"),
    (struct.pack(">IIQQ", 65536, 0, 8, 0x10000), 1, "its bitmaps extension lists 65536 bitmaps (1 to 65535)"),
    (struct.pack(">IIQQ", 65535, 0, 8, 0x10000), 1, None),
    (struct.pack(">IIQQ", 1, 0, 8, 0x10200), 1, "its bitmap directory offset 66048 is not cluster-aligned"),
    (struct.pack(">IIQQ", 1, 0, 1024 * 65535 + 1, 0x10000), 1, "its bitmap directory of 67107841 bytes exceeds "
                                                               "qemu's 67107840"),
    (struct.pack(">IIQQ", 1, 0, 1024 * 65535, 0x10000), 1, None),
])
def test_bitmaps_extension_rules(tmp_path, data, autoclear, problem):
    path = qcow2_file(tmp_path, autoclear=autoclear, extensions=_ext(0x23852875, data))
    if problem is None:
        assert inspect_file(path).details["autoclear_features"] == autoclear
    else:
        assert "the host's qemu cannot open this qcow2 image: " + problem in _refusal(path)


@pytest.mark.parametrize("fields,problem", [
    ({"l1_size": 0}, "L1 table of 0 entries is too small for a virtual size of 67108864 bytes"),
    ({"size": 512 * MIB + 1}, "L1 table of 1 entries is too small for a virtual size of 536870913 bytes"),
    ({"size": 512 * MIB, "l1_size": 1}, None),
    ({"l1_size": 2, "size": 1 << 30}, None),
    ({"l1_size": 4 * MIB + 1, "size": 1 << 30}, "L1 table of 4194305 entries exceeds qemu's 33554432-byte limit"),
    ({"l1_offset": 0x30001}, "L1 table at offset 196609 is misaligned or out of range"),
    ({"l1_offset": 0}, "L1 table at offset 0 (1 entries) lies outside the 262144-byte file or is misaligned"),
    ({"l1_offset": 0x40000}, "L1 table at offset 262144 (1 entries) lies outside the 262144-byte file"),
    ({"l1_offset": 0x30000, "l1_size": 8192, "size": 1 << 40}, None),
    ({"l1_offset": 0x30000, "l1_size": 8193, "size": 1 << 40}, "L1 table at offset 196608 (8193 entries) lies "
                                                               "outside"),
    ({"refcount": (0, 1)}, "refcount table at offset 0 (1 clusters) is misplaced"),
    ({"refcount": (0x10000, 0)}, "refcount table at offset 65536 (0 clusters) is misplaced"),
    ({"refcount": (0x30000, 2)}, None),
    ({"refcount": (0x30000, 3)}, "refcount table at offset 196608 (3 clusters) is misplaced"),
    ({"refcount": (0x10000, 129)}, "refcount table of 129 entries exceeds qemu's 8388608-byte limit"),
    ({"refcount": (0x10100, 1)}, "refcount table at offset 65792 is misaligned or out of range"),
    ({"snapshots": (1, 0x20000)}, None),
    ({"snapshots": (1, 0x40000)}, "snapshot table (1 snapshots at offset 262144) is misplaced"),
    ({"snapshots": (0, 0x40000)}, None),
    ({"snapshots": (0, 0x10)}, "snapshot table at offset 16 is misaligned or out of range"),
    ({"snapshots": (65537, 0x20000)}, "snapshot table of 65537 entries exceeds qemu's 2621440-byte limit"),
    ({"snapshots": (65536, 0x20000)}, None),
    ({"l1_offset": (1 << 63) - 0x10000, "l1_size": 8192}, "L1 table at offset 9223372036854710272 is misaligned "
                                                          "or out of range"),
    ({"l1_offset": (1 << 63) - 0x10000, "l1_size": 8191}, "L1 table at offset 9223372036854710272 (8191 entries) "
                                                          "lies outside"),
    ({"size": 1 << 63, "l1_size": 0}, "virtual size 9223372036854775808 does not fit a signed 64-bit integer"),
])
def test_table_rules(tmp_path, fields, problem):
    path = qcow2_file(tmp_path, **fields)
    if problem is None:
        assert inspect_file(path).format == "qcow2"
    else:
        assert problem in _refusal(path)


def test_extended_l2_entries_halve_what_an_l1_entry_covers(tmp_path):
    # 64 KiB clusters: an L1 entry covers 512 MiB with 8-byte L2 entries, 256 MiB with 16-byte ones
    base = dict(size=256 * MIB + 512, l1_size=1)
    assert inspect_file(qcow2_file(tmp_path, "plain", **base)).format == "qcow2"
    assert "L1 table of 1 entries is too small" in _refusal(qcow2_file(tmp_path, "extl2", incompatible=1 << 4,
                                                                       **base))


def test_a_backing_file_is_named_when_it_can_be_read(tmp_path):
    head, size = qcow2_image(backing=(0x200, 6))
    path = _write(tmp_path, head.ljust(0x200, b"\0") + b"/e/pwd", "b1", size)
    assert "qcow2 overlay with a backing file ('/e/pwd'): qemu would read that file too" in _refusal(path)
    head, size = qcow2_image(backing=(0, 6))
    assert "qcow2 overlay with a backing file ('QFI" in _refusal(_write(tmp_path, head, "b2", size))
    head, size = qcow2_image(backing=(0x200, 0))
    assert "qcow2 overlay with a backing file: qemu would read" in _refusal(_write(tmp_path, head, "b3", size))
    head, size = qcow2_image(backing=(0xFFF8, 16))
    assert "qcow2 overlay with a backing file: qemu" in _refusal(_write(tmp_path, head, "b4", size))


# --- small helpers, exactly --------------------------------------------------------------------------------

def test_reader_reads_what_exists_and_pads_like_qemu(tmp_path):
    import os
    path = _write(tmp_path, bytes(range(256)) * 4)  # 1024 bytes
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = image_format._Reader(fd, 1000)
        assert reader.read(0, 4) == b"\x00\x01\x02\x03"
        assert reader.read(998, 10) == bytes([230, 231])   # bounded by the size given, not the file
        assert reader.read(1000, 1) == b"" and reader.read(-1, 4) == b"" and reader.read(0, 0) == b""
        assert reader.read_padded(998, 4) == bytes([230, 231, 0, 0])
        assert reader.qemu_length == 1024
        assert image_format._Reader(fd, 1024).qemu_length == 1024
        assert image_format._Reader(fd, 1025).qemu_length == 1536
        assert image_format._Reader(fd, 0).qemu_length == 0
    finally:
        os.close(fd)


def test_c_strings_end_at_the_first_nul():
    assert image_format._c_string(b"abc\0def\0") == b"abc"
    assert image_format._c_string(b"abc") == b"abc"
    assert image_format._c_string(b"\0abc") == b""


@pytest.mark.parametrize("text,is_descriptor", [
    (b"version=1\n", True), (b"version=2", True), (b"version=3\r\n", True), (b"  version=1  \n", True),
    (b"# comment\n\n\t\nversion=1\n", True), (b"version=4\n", False), (b"version = 1\n", False),
    (b"createType=x\nversion=1\n", False), (b"", False), (b"#only comments\n", False),
])
def test_vmdk_text_descriptor_detection(text, is_descriptor):
    assert image_format._is_vmdk_text_descriptor(text) is is_descriptor


def test_crc32c_is_castagnoli():
    assert image_format._crc32c(b"123456789") == 0xE3069283
    assert image_format._crc32c(b"") == 0


def test_declared_formats():
    assert image_format._normalise_declared("/x", None) is None
    assert image_format._normalise_declared("/x", "") is None
    assert image_format._normalise_declared("/x", "VPC") == "vhd"
    assert image_format._normalise_declared("/x", "IMG") == "raw"
    assert image_format._normalise_declared("/x", "QCOW2") == "qcow2"
    with pytest.raises(image_format.VirtfleetError, match=r"^unknown image format 'qcow' declared for /x; use one "
                       r"of raw, qcow2, vmdk, vhd, vhdx, vdi, qed, luks, iso, gpt, mbr$"):
        image_format._normalise_declared("/x", "qcow")


# --- detection of the formats refused by name, and of ISO descriptors --------------------------------------------

@pytest.mark.parametrize("head,name", [
    (b"WithoutFreeSpace", "Parallels"), (b"WithouFreSpacExt", "Parallels"),
    (b"Bochs Virtual HD Image", "Bochs"), (b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
])
def test_foreign_formats_are_refused_by_name(tmp_path, head, name):
    path = _write(tmp_path, head, size=MIB)
    detected = image_format.detect_format(path)
    assert image_format.FOREIGN_FORMATS[detected] == name
    assert "it is a %s image, a format this collection does not accept" % name in _refusal(path)


def test_an_apple_dmg_is_known_by_its_trailer(tmp_path):
    trailer = b"koly" + struct.pack(">II", 4, 512)
    path = _write(tmp_path, b"\0" * (MIB - 512) + trailer.ljust(512, b"\0"))
    assert image_format.detect_format(path) == "dmg"
    assert "it is a Apple DMG image" in _refusal(path)
    for other in (b"koly" + struct.pack(">II", 3, 512), b"koly" + struct.pack(">II", 4, 511), b"kolx" + trailer[4:]):
        assert image_format.detect_format(_write(tmp_path, b"\0" * (MIB - 512) + other.ljust(512, b"\0"),
                                                 "other")) == "raw"


def test_a_cowd_extent_is_a_refused_vmdk(tmp_path):
    path = _write(tmp_path, b"COWD" + b"\0" * 508, size=MIB)
    assert image_format.detect_format(path) == "vmdk"
    assert "it is a VMDK3 (COWD/vmfsSparse) extent, which may refer to a parent disk" in _refusal(path)


@pytest.mark.parametrize("offset", [0x8001, 0x8801, 0x9001])
@pytest.mark.parametrize("signature", [b"CD001", b"NSR02", b"NSR03"])
def test_iso_and_udf_descriptors_at_each_place_qemu_looks(tmp_path, offset, signature):
    data = bytearray(MIB)
    data[offset:offset + 5] = signature
    path = _write(tmp_path, bytes(data))
    assert image_format.detect_format(path) == "iso"
    assert inspect_file(path).format == "iso"
    data[offset:offset + 5] = b"CD002"
    assert image_format.detect_format(_write(tmp_path, bytes(data), "not-iso")) == "raw"


def test_detection_reads_the_first_64_kib_and_the_last_sector(tmp_path, bytes_read):
    path = _write(tmp_path, b"", size=10 * MIB)
    assert inspect_file(path).format == "raw"
    assert sum(bytes_read) == 64 * 1024 + 512


# --- VMDK sparse extent header fields (a qemu-img monolithicSparse image, patched) -------------------------------

def _vmdk_with(tmp_path, offset, fmt, value):
    from tests.support import hostile_images
    path = hostile_images.vmdk_monolithic_sparse(str(tmp_path))
    hostile_images.patch(path, offset, struct.pack(fmt, value))
    return path


@pytest.mark.parametrize("version,ok", [(1, True), (2, True), (3, True), (0, False), (4, False)])
def test_vmdk_sparse_extent_versions_1_to_3(tmp_path, version, ok):
    _vmdk_field_read_or_refused(tmp_path, (4, "<I", version), ok, "vmdk_version",
                                "its vmdk header is truncated or corrupt (sparse extent version %d)" % version)


def _vmdk_field_read_or_refused(tmp_path, field, ok, detail, refusal):
    """A VMDK whose header field (offset, struct format, value) is ``value``: read into ``detail``, or refused."""
    path = _vmdk_with(tmp_path, *field)
    if ok:
        assert inspect_file(path).details[detail] == field[2]
    else:
        assert refusal in _refusal(path)


@pytest.mark.parametrize("grain,ok", [(1, True), (128, True), (0x10000, True), (0, False), (3, False), (6, False),
                                      (0x20000, False)])
def test_vmdk_grains_are_a_power_of_two_up_to_32_mib(tmp_path, grain, ok):
    _vmdk_field_read_or_refused(tmp_path, (20, "<Q", grain), ok, "grain_sectors", "(grain size %d sectors)" % grain)


@pytest.mark.parametrize("gtes,ok", [(1, True), (512, True), (0, False), (513, False)])
def test_vmdk_grain_tables_of_1_to_512_entries(tmp_path, gtes, ok):
    path = _vmdk_with(tmp_path, 44, "<I", gtes)
    if ok:
        assert inspect_file(path).format == "vmdk"
    else:
        assert "(%d grain table entries per table)" % gtes in _refusal(path)


def test_vmdk_grain_directory_of_at_most_32_mi_entries(tmp_path):
    # capacity / (gtes * grain) entries, rounded up: 512 entries of 1-sector grains cover 512 sectors each
    fine = _vmdk_with(tmp_path, 12, "<Q", 32 * 1024 * 1024 * 512 * 128)
    assert inspect_file(fine).virtual_size == 32 * 1024 * 1024 * 512 * 128 * 512
    path = _vmdk_with(tmp_path, 12, "<Q", 32 * 1024 * 1024 * 512 * 128 + 1)
    assert "its grain directory would need 33554433 entries, more than qemu's 33554432" in _refusal(path)


def test_reader_reads_single_bytes(tmp_path):
    import os
    path = _write(tmp_path, b"ab")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert image_format._Reader(fd, 2).read(1, 1) == b"b"
        assert image_format._Reader(fd, 2).read(0, 2) == b"ab"
    finally:
        os.close(fd)


# --- VDI header fields (a qemu-img image, patched): qemu's vdi_open checks, each refusal word for word ---------

CORRUPT_ADVICE = "download the image again and compare its checksum, or convert it from a trusted copy"


def _vdi(tmp_path, *patches, size=None):
    from tests.support import hostile_images
    path = hostile_images.created(str(tmp_path), "image.vdi", "vdi")
    for offset, data in patches:
        hostile_images.patch(path, offset, data)
    if size is not None:
        os.truncate(path, size)
    return path


def _qemu_cannot(path, fmt, what):
    return ("refusing image %s: the host's qemu cannot open this %s image: %s; re-create or convert the image with "
            "a tool that writes a standard %s file, or " % (path, fmt, what, fmt))


def test_a_vdi_is_read_with_its_version_block_size_and_type(tmp_path):
    path = _vdi(tmp_path, (0x1C8, b"\x01"))  # the byte after the parent UUID (geometry) is not part of it
    inspection = inspect_file(path)
    assert (inspection.format, inspection.virtual_size) == ("vdi", 16 * MIB)
    assert inspection.details == {"detected_format": "vdi", "vdi_version": "1.1", "block_size": MIB,
                                  "vdi_type": "dynamic"}


@pytest.mark.parametrize("patches,size,message", [
    ((), 0x1C7, "its vdi header is truncated or corrupt (header shorter than 456 bytes); " + CORRUPT_ADVICE),
    (((0x4C, struct.pack("<I", 7)),), None, "its vdi header is truncated or corrupt (image type 7); " + CORRUPT_ADVICE),
    (((0x4C, struct.pack("<I", 4)),), None, "it is a differencing VDI that refers to a parent image; merge it on a "
                                            "trusted host and use the result"),
    (((0x1C7, b"\x01"),), None, "it is a differencing VDI that refers to a parent image; "),
    (((0x158, struct.pack("<I", 0x200)), (0x154, struct.pack("<I", 0x200))), None,
     "its vdi header is truncated or corrupt (block map at 512 and data at 512 overlap); " + CORRUPT_ADVICE),
])
def test_vdi_refusals(tmp_path, patches, size, message):
    path = _vdi(tmp_path, *patches, size=size)
    assert _refusal(path).startswith("refusing image %s: %s" % (path, message))


@pytest.mark.parametrize("offset,value,what", [
    (0x168, struct.pack("<I", 4096), "sector size 4096"),
    (0x44, struct.pack("<I", 0x00010002), "version 1.2 (only 1.1 is read)"),
])
def test_vdi_fields_qemu_refuses(tmp_path, offset, value, what):
    path = _vdi(tmp_path, (offset, value))
    assert _refusal(path).startswith(_qemu_cannot(path, "vdi", what))


# --- VHDX headers, regions and metadata (a qemu-img image, patched and re-checksummed) ------------------------

VHDX_HEADERS = (64 * 1024, 128 * 1024)
VHDX_REGIONS = 192 * 1024


def _vhdx(tmp_path):
    from tests.support import hostile_images
    return hostile_images.created(str(tmp_path), "image.vhdx", "vhdx")


def _refused_or_read(path, refused, reason):
    """Refused for ``reason``, or read as the 16 MiB image it is."""
    if refused:
        assert reason in _refusal(path)
    else:
        assert inspect_file(path).virtual_size == 16 * MIB


def _vhdx_block(path, offset, size, change):
    """Apply ``change`` (a function of a bytearray) to the checksummed block at ``offset``; checksum it again."""
    from tests.support import hostile_images
    block = bytearray(hostile_images.read_at(path, offset, size))
    change(block)
    block[4:8] = b"\x00" * 4
    block[4:8] = struct.pack("<I", image_format._crc32c(bytes(block)))
    hostile_images.patch(path, offset, bytes(block))


def _vhdx_metadata_table(path):
    from tests.support import hostile_images
    regions = hostile_images.read_at(path, VHDX_REGIONS, 64 * 1024)
    for index in range(struct.unpack_from("<I", regions, 8)[0]):
        if regions[16 + 32 * index:32 + 32 * index] == image_format.VHDX_REGION_METADATA:
            return struct.unpack_from("<Q", regions, 32 + 32 * index)[0]
    raise AssertionError("no metadata region")


def _vhdx_item(path, guid):
    """The file offset of metadata item ``guid``'s data and the offset of its table entry."""
    from tests.support import hostile_images
    metadata = _vhdx_metadata_table(path)
    table = hostile_images.read_at(path, metadata, 64 * 1024)
    for index in range(struct.unpack_from("<H", table, 10)[0]):
        entry = 32 + 32 * index
        if table[entry:entry + 16] == guid:
            return metadata + struct.unpack_from("<I", table, entry + 16)[0], metadata + entry
    raise AssertionError("no such item")


def test_a_vhdx_is_read_with_its_block_and_sector_size(tmp_path):
    inspection = inspect_file(_vhdx(tmp_path))
    assert (inspection.format, inspection.virtual_size) == ("vhdx", 16 * MIB)
    assert inspection.details == {"detected_format": "vhdx", "block_size": 8 * MIB, "logical_sector_size": 512}


def test_vhdx_takes_the_valid_header_of_the_two_at_64_and_128_kib(tmp_path):
    from tests.support import hostile_images
    for broken in VHDX_HEADERS:
        (tmp_path / str(broken)).mkdir()
        path = _vhdx(tmp_path / str(broken))
        hostile_images.patch(path, broken, b"HEAD")
        assert inspect_file(path).virtual_size == 16 * MIB
    (tmp_path / "both").mkdir()
    path = _vhdx(tmp_path / "both")
    for offset in VHDX_HEADERS:
        hostile_images.patch(path, offset, b"HEAD")
    assert _refusal(path).startswith(_qemu_cannot(path, "vhdx", "neither of its two headers is valid (signature, "
                                                                "version or checksum)"))


def test_vhdx_headers_that_differ_with_one_sequence_number_are_refused(tmp_path):
    path = _vhdx(tmp_path)
    first_sequence = []
    _vhdx_block(path, VHDX_HEADERS[0], 4096, lambda block: first_sequence.append(block[8:16]))
    _vhdx_block(path, VHDX_HEADERS[1], 4096, lambda block: block.__setitem__(slice(8, 40), first_sequence[0]
                                                                             + b"\x11" * 24))
    assert _refusal(path).startswith(_qemu_cannot(path, "vhdx", "its two headers differ but carry the same sequence "
                                                                "number"))


def test_a_vhdx_log_made_of_x_bytes_still_needs_replaying(tmp_path):
    path = _vhdx(tmp_path)
    for offset in VHDX_HEADERS:
        _vhdx_block(path, offset, 4096, lambda block: block.__setitem__(slice(48, 64), b"X" * 16))
    assert "its VHDX log must be replayed first (the image was not closed cleanly)" in _refusal(path)


@pytest.mark.parametrize("count,refused", [(2047, False), (2048, True)])
def test_vhdx_region_tables_of_up_to_2047_entries(tmp_path, count, refused):
    path = _vhdx(tmp_path)
    _vhdx_block(path, VHDX_REGIONS, 64 * 1024, lambda block: block.__setitem__(slice(8, 12), struct.pack("<I", count)))
    _refused_or_read(path, refused, "its vhdx header is truncated or corrupt (%d region table entries)" % count)


def test_a_vhdx_without_its_bat_region_is_refused(tmp_path):
    path = _vhdx(tmp_path)

    def drop_bat(block):
        for index in range(struct.unpack_from("<I", block, 8)[0]):
            if block[16 + 32 * index:32 + 32 * index] == image_format.VHDX_REGION_BAT:
                block[16 + 32 * index:32 + 32 * index] = b"\x01" * 16
    _vhdx_block(path, VHDX_REGIONS, 64 * 1024, drop_bat)
    assert _refusal(path).startswith("refusing image %s: its vhdx header is truncated or corrupt (no BAT region); "
                                     % path)


@pytest.mark.parametrize("count,refused", [(2047, False), (2048, True)])
def test_vhdx_metadata_tables_fit_64_kib(tmp_path, count, refused):
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    hostile_images.patch(path, _vhdx_metadata_table(path) + 10, struct.pack("<H", count))
    _refused_or_read(path, refused, "its vhdx header is truncated or corrupt (2048 metadata entries)")


def test_vhdx_metadata_lacking_a_required_item_is_refused_naming_it(tmp_path):
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    _data, entry = _vhdx_item(path, image_format.VHDX_META_VIRTUAL_SIZE)
    hostile_images.patch(path, entry, b"\x02" * 16)  # another (unknown) item in its place
    hostile_images.patch(path, entry + 24, struct.pack("<I", 0))  # and not a required one
    assert _refusal(path).startswith(_qemu_cannot(path, "vhdx", "its metadata lacks the %s item"
                                                  % image_format.VHDX_REQUIRED_METADATA[
                                                      image_format.VHDX_META_VIRTUAL_SIZE]))


def test_a_vhdx_whose_parameters_name_a_parent_is_refused(tmp_path):
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    data, _entry = _vhdx_item(path, image_format.VHDX_META_FILE_PARAMETERS)
    flags, = struct.unpack("<I", hostile_images.read_at(path, data + 4, 4))
    hostile_images.patch(path, data + 4, struct.pack("<I", flags | 2))
    assert _refusal(path).startswith("refusing image %s: its VHDX file parameters say it has a parent disk; merge it "
                                     "into a standalone VHDX or qcow2 on a trusted host" % path)


def test_a_vhdx_of_exactly_64_tib_passes_the_size_rule_and_its_block_table_must_fit(tmp_path):
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    data, _entry = _vhdx_item(path, image_format.VHDX_META_VIRTUAL_SIZE)
    hostile_images.patch(path, data, struct.pack("<Q", image_format.VHDX_MAX_IMAGE_SIZE))
    assert "its block table (" in _refusal(path)
    hostile_images.patch(path, data, struct.pack("<Q", image_format.VHDX_MAX_IMAGE_SIZE + 1))
    assert "virtual size %d above VHDX's 64 TiB" % (image_format.VHDX_MAX_IMAGE_SIZE + 1) in _refusal(path)


def test_a_vhdx_whose_bat_region_ends_at_the_end_of_the_file_is_read(tmp_path):
    path = _vhdx(tmp_path)
    size = os.path.getsize(path)

    def bat_to(end):
        def change(block):
            for index in range(struct.unpack_from("<I", block, 8)[0]):
                if block[16 + 32 * index:32 + 32 * index] == image_format.VHDX_REGION_BAT:
                    offset, = struct.unpack_from("<Q", block, 32 + 32 * index)
                    block[40 + 32 * index:44 + 32 * index] = struct.pack("<I", end - offset)
        return change
    _vhdx_block(path, VHDX_REGIONS, 64 * 1024, bat_to(size))
    assert inspect_file(path).virtual_size == 16 * MIB
    _vhdx_block(path, VHDX_REGIONS, 64 * 1024, bat_to(size + 1))
    assert "its block table (" in _refusal(path)


# --- LUKS1 headers (written by hand as qemu writes them) ------------------------------------------------------

def _luks(tmp_path, **fields):
    from tests.support import hostile_images
    return hostile_images.luks1_with(str(tmp_path), "image.luks", **fields)


@pytest.mark.parametrize("fields", [dict(cipher=b"aes", mode=b"cbc-essiv:sha256", key_bytes=32),
                                    dict(cipher=b"aes", mode=b"cbc-plain64", key_bytes=24),
                                    dict(cipher=b"serpent", mode=b"cbc-essiv:sha256", key_bytes=32),
                                    dict(cipher=b"twofish", mode=b"cbc-essiv:sha256", key_bytes=32)])
def test_luks1_ciphers_qemu_reads(tmp_path, fields):
    inspection = inspect_file(_luks(tmp_path, **fields), allow_luks=True)
    assert inspection.details == {"detected_format": "luks", "luks_version": 1, "payload_offset": 4096 * 512,
                                  "cipher": fields["cipher"].decode()}


@pytest.mark.parametrize("fields,what", [
    (dict(mode=b"xts"), "unexpected cipher mode string 'xts' (mode-ivgen[:hash])"),
    (dict(mode=b"xts-nonsense"), "IV generator 'nonsense' is not supported"),
    (dict(cipher=b"cast5", mode=b"cbc-essiv:sha256", key_bytes=16), "cipher 'cast5' does not work with essiv:sha256"),
])
def test_luks1_cipher_refusals(tmp_path, fields, what):
    path = _luks(tmp_path, **fields)
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "luks", what))


def test_luks1_key_slots_overlapping_the_header_or_each_other(tmp_path):
    from tests.support import hostile_images
    header = hostile_images.luks1_header()
    header[208 + 40:208 + 44] = struct.pack(">I", 7)  # slot 0 starts in the header's own 4 KiB
    path = hostile_images.luks_image(str(tmp_path), header, name="low.luks")
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "luks", "key slot 0 overlaps the LUKS "
                                                                                 "header"))
    header = hostile_images.luks1_header()
    start1, = struct.unpack_from(">I", header, 208 + 48 + 40)
    header[208 + 40:208 + 44] = struct.pack(">I", start1 - 1)  # slot 0 ends one sector into slot 1
    path = hostile_images.luks_image(str(tmp_path), header, name="overlap.luks")
    assert "key slots 0 and 1 overlap" in _refusal(path, allow_luks=True)
    header = hostile_images.luks1_header()
    length = -(-64 * 4000 // 512)
    header[208 + 40:208 + 44] = struct.pack(">I", start1 - length)  # slot 0 ends where slot 1 starts: fine
    assert inspect_file(hostile_images.luks_image(str(tmp_path), header, name="touch.luks"), allow_luks=True)


def test_luks1_strings_may_fill_31_bytes_and_a_short_file_is_refused(tmp_path):
    from tests.support import hostile_images
    header = hostile_images.luks1_header()
    header[72:104] = b"sha256".ljust(32, b"\x00")
    header[104] = header[104]  # the payload offset follows the hash spec directly
    path = hostile_images.luks_image(str(tmp_path), header, name="full.luks")
    assert inspect_file(path, allow_luks=True).details["luks_version"] == 1
    short = tmp_path / "short.luks"
    short.write_bytes(bytes(header[:500]))
    assert _refusal(str(short), allow_luks=True).startswith(
        "refusing image %s: its luks header is truncated or corrupt (the file is 500 bytes, shorter than a LUKS "
        "header); " % short)


# --- smaller rules at their boundaries -------------------------------------------------------------------------

@pytest.mark.parametrize("bpb,is_fat", [
    ((4096, 8, 1, 1, 0xF8), True), ((512, 128, 1, 2, 0xF0), True), ((1024, 1, 1, 2, 0xFF), True),
    ((8192, 8, 1, 2, 0xF8), False), ((512, 3, 1, 2, 0xF8), False), ((512, 0, 1, 2, 0xF8), False),
    ((512, 8, 0, 2, 0xF8), False), ((512, 8, 1, 3, 0xF8), False), ((512, 8, 1, 0, 0xF8), False),
    ((512, 8, 1, 2, 0xF7), False)])
def test_a_fat_boot_sector_is_known_by_its_bios_parameter_block(tmp_path, bpb, is_fat):
    """What makes 55 AA a whole-disk FAT filesystem rather than an MBR: sector size 512-4096, a power-of-two
    cluster, at least one reserved sector, one or two FATs, a media byte of F0 or F8-FF."""
    from tests.support import hostile_images
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x52\x90"
    sector[3:11] = b"mkfs.fat"
    sector[11:22] = struct.pack("<HBHBHHB", bpb[0], bpb[1], bpb[2], bpb[3], 0, 0, bpb[4])
    sector[446:462] = hostile_images.mbr_entry(0x80, 0x0C, 1, 8191)
    sector[510:512] = b"\x55\xaa"
    inspection = inspect_file(_write(tmp_path, bytes(sector), size=4 * MIB))
    assert (inspection.details.get("filesystem") == "fat") is is_fat


def test_an_apple_dmg_trailer_counts_in_a_file_of_1024_bytes_not_fewer(tmp_path):
    trailer = (b"koly" + struct.pack(">II", 4, 512)).ljust(512, b"\0")
    assert image_format.detect_format(_write(tmp_path, b"\0" * 512 + trailer, "a")) == "dmg"
    assert image_format.detect_format(_write(tmp_path, b"\0" * 511 + trailer, "b")) == "raw"


def test_an_image_that_cannot_be_opened_says_why(tmp_path):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
    missing = str(tmp_path / "missing")
    with pytest.raises(VirtfleetError, match="^cannot open image %s to inspect it: No such file or directory$"
                                             % re.escape(missing)):
        inspect_file(missing)


def test_qcow2_compression_and_encryption_refusals_word_for_word(tmp_path):
    corrupt = "refusing image %s: its qcow2 header is truncated or corrupt (%s); " + CORRUPT_ADVICE
    path = qcow2_file(tmp_path, "zstd2", header_length=112, compression=2, incompatible=1 << 3)
    assert _refusal(path) == corrupt % (path, "unknown compression type 2")
    path = qcow2_file(tmp_path, "three", crypt=3)
    assert _refusal(path, allow_luks=True) == corrupt % (path, "unknown crypt_method 3")
    path = qcow2_file(tmp_path, "luks", crypt=2)
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(
        path, "qcow2", "it is LUKS-encrypted but has no crypto header extension"))


@pytest.mark.parametrize("offset,length,problem", [
    (0x10001, 2 * MIB, "its LUKS header offset 65537 is not cluster-aligned"),
    (0x20000, 100, "LUKS header of 100 bytes at offset 131072 lies outside the file or is too short"),
    (0x100000, 2 * MIB, "LUKS header of 2097152 bytes at offset 1048576 lies outside the file or is too short"),
])
def test_qcow2_luks_header_placement(tmp_path, offset, length, problem):
    path = qcow2_file(tmp_path, crypt=2, header_length=104, extensions=_ext(0x0537BE77, struct.pack(">QQ", offset,
                                                                                                    length)))
    message = _refusal(path, allow_luks=True)
    if problem.startswith("LUKS header of"):
        assert message == ("refusing image %s: its qcow2 header is truncated or corrupt (%s); " + CORRUPT_ADVICE) % (
            path, problem)
    else:
        assert message.startswith(_qemu_cannot(path, "qcow2", problem))


# --- VMDK descriptors: the embedded one of a sparse extent, and descriptor files ------------------------------

SPARSE_EXTENT = 'RW 204800 SPARSE "sparse.vmdk"'


def _sparse_vmdk_describing(tmp_path, text):
    from tests.support import hostile_images
    path = hostile_images.vmdk_monolithic_sparse(str(tmp_path))
    hostile_images._rewrite_vmdk_descriptor(path, text)
    return path


def test_a_sparse_vmdk_reports_its_create_type_and_extent_count(tmp_path):
    from tests.support import hostile_images
    details = inspect_file(hostile_images.vmdk_monolithic_sparse(str(tmp_path))).details
    assert (details["create_type"], details["extents"]) == ("monolithicSparse", 1)


@pytest.mark.parametrize("text,reason", [
    ("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\n%s\n" % SPARSE_EXTENT,
     "its embedded VMDK descriptor has no createType"),
    ("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=0000abcd\ncreateType=\"monolithicSparse\"\n%s\n"
     % SPARSE_EXTENT, "it is a VMDK delta disk naming a parent (None)"),
    ("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n"
     "RW lots SPARSE\n", "its embedded VMDK descriptor has an extent line that cannot be read: 'RW lots SPARSE'"),
])
def test_embedded_descriptor_refusals(tmp_path, text, reason):
    path = _sparse_vmdk_describing(tmp_path, text)
    assert _refusal(path).startswith("refusing image %s: %s; " % (path, reason))


def test_a_descriptor_without_a_cid_is_refused_even_when_hex_follows_where_the_key_would_end(tmp_path):
    """vmdk_read_cid: no CID at all (the text after 'its' position three is hex here) is no CID."""
    path = _sparse_vmdk_describing(tmp_path, "#  a\nversion=1\ncreateType=\"monolithicSparse\"\n%s\n" % SPARSE_EXTENT)
    assert _refusal(path).startswith(_qemu_cannot(path, "vmdk", "the descriptor qemu reads at offset 0x200 has no "
                                                                "CID=<hex> value"))


def test_an_embedded_descriptor_reaching_past_the_end_of_the_file_is_refused(tmp_path):
    from tests.support import hostile_images
    path = hostile_images.vmdk_monolithic_sparse(str(tmp_path))
    last = os.path.getsize(path) // 512 - 1
    hostile_images.patch(path, 28, struct.pack("<QQ", last, 2))
    assert _refusal(path) == (
        "refusing image %s: its vmdk header is truncated or corrupt (embedded descriptor at sector %d (2 sectors) "
        "lies outside the file or is too large); %s" % (path, last, CORRUPT_ADVICE))


def test_a_descriptor_file_naming_two_extents_names_both(tmp_path):
    from tests.support import hostile_images
    path = str(tmp_path / "two.vmdk")
    with open(path, "w", encoding="ascii") as handle:
        handle.write(hostile_images._vmdk_descriptor("monolithicFlat", ['RW 2048 FLAT "a-flat.vmdk" 0',
                                                                        'RW 2048 FLAT "b-flat.vmdk" 0']))
    assert "that makes qemu open other files: 'a-flat.vmdk', 'b-flat.vmdk' (CVE-2022-47951)" in _refusal(path)


def test_a_luks1_cipher_name_of_32_bytes_has_no_terminating_nul(tmp_path):
    from tests.support import hostile_images
    header = hostile_images.luks1_header(cipher=b"a" * 32, mode=b"")
    path = hostile_images.luks_image(str(tmp_path), header)
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "luks", "its cipher name is not "
                                                                                 "NUL-terminated"))


# --- VHD: the dynamic header, its block table, a fixed disk's size (qemu-img images, patched) ------------------

def _vhd(tmp_path, subformat="dynamic"):
    from tests.support import hostile_images
    path = str(tmp_path / ("%s.vhd" % subformat))
    hostile_images.qemu_img("create", "-f", "vpc", "-o", "subformat=%s" % subformat, path, "16M")
    return path


def test_a_dynamic_vhd_without_its_cxsparse_header_is_refused(tmp_path):
    from tests.support import hostile_images
    path = _vhd(tmp_path)
    hostile_images.patch(path, 512, b"XXsparse")
    assert _refusal(path) == ("refusing image %s: its vhd header is truncated or corrupt (dynamic disk header "
                              "missing at offset 512); %s" % (path, CORRUPT_ADVICE))


def test_a_vhd_block_table_larger_than_the_inspector_reads_is_refused(tmp_path):
    from tests.support import hostile_images
    path = _vhd(tmp_path)
    entries = image_format.MAX_VHD_BAT_BYTES // 4 + 1
    hostile_images.patch(path, 512 + 28, struct.pack(">I", entries))
    assert _refusal(path).startswith("refusing image %s: its VHD block table of %d entries is larger than this "
                                     "inspector reads (%d bytes); " % (path, entries, image_format.MAX_VHD_BAT_BYTES))


def test_a_dynamic_vhd_cut_inside_its_block_table_names_where_the_table_ends(tmp_path):
    from tests.support import hostile_images
    path = _vhd(tmp_path)
    table_offset, = struct.unpack(">Q", hostile_images.read_at(path, 512 + 16, 8))
    max_entries, = struct.unpack(">I", hostile_images.read_at(path, 512 + 28, 4))
    os.truncate(path, table_offset + 100)
    end = (table_offset + max_entries * 4 + 511) // 512 * 512
    assert _refusal(path).startswith(_qemu_cannot(path, "vhd", "its block table or the blocks it lists end at "
                                                               "offset %d, past the end of the %d-byte file (the "
                                                               "image has been truncated)" % (end, table_offset + 100)))


def test_a_fixed_vhd_larger_than_its_file_is_refused(tmp_path):
    from tests.support import hostile_images
    path = _vhd(tmp_path, "fixed")
    size = os.path.getsize(path)
    footer = bytearray(hostile_images.read_at(path, size - 512, 512))
    footer[28:32] = b"qem2"  # sized by current_size
    footer[48:56] = struct.pack(">Q", 32 * MIB)
    hostile_images._vhd_checksum(footer)
    hostile_images.patch(path, size - 512, bytes(footer))
    assert _refusal(path) == ("refusing image %s: its vhd header is truncated or corrupt (fixed disk of %d bytes in "
                              "a %d-byte file); %s" % (path, 32 * MIB, size, CORRUPT_ADVICE))


def test_a_dynamic_vhd_with_an_iso_descriptor_is_a_polyglot_even_with_its_footer_at_the_end(tmp_path):
    """Only a fixed VHD (a footer alone) may hold raw data that looks like an ISO; a dynamic one starts with its
    footer copy, and its data is not where an ISO descriptor sits."""
    from tests.support import hostile_images
    path = _vhd(tmp_path)
    footer = hostile_images.read_at(path, 0, 512)
    hostile_images.patch(path, 0x8001, b"CD001")
    with open(path, "ab") as handle:
        handle.truncate(0x10000)
        handle.seek(0x10000)
        handle.write(footer)
    assert "it carries both a vhd header and an ISO 9660 volume descriptor (a polyglot file)" in _refusal(path)


def test_a_twogbmaxextentflat_descriptor_file_is_one_qemu_opens(tmp_path):
    from tests.support import hostile_images
    path = str(tmp_path / "split.vmdk")
    with open(path, "w", encoding="ascii") as handle:
        handle.write(hostile_images._vmdk_descriptor("twoGbMaxExtentFlat", ['RW 2048 FLAT "split-f001.vmdk" 0']))
    assert "(createType twoGbMaxExtentFlat) that makes qemu open other files: 'split-f001.vmdk'" in _refusal(path)


def test_a_vhdx_with_a_parent_locator_is_refused(tmp_path):
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    _data, entry = _vhdx_item(path, image_format.VHDX_META_LOGICAL_SECTOR)
    hostile_images.patch(path, entry, image_format.VHDX_META_PARENT_LOCATOR)
    assert _refusal(path).startswith("refusing image %s: it is a differencing VHDX with a parent locator, which "
                                     "reads another file; merge it into a standalone VHDX or qcow2 on a trusted host"
                                     % path)


@pytest.mark.parametrize("bat_bytes,fits", [(514 * 8, True), (514 * 8 - 1, False)])
def test_a_vhdx_bat_counts_one_bitmap_entry_per_chunk_after_the_first_block(tmp_path, bat_bytes, fits):
    """513 blocks of 8 MiB with 512-byte sectors: a chunk is 512 blocks, so the BAT holds 513 + 1 entries."""
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    data, _entry = _vhdx_item(path, image_format.VHDX_META_VIRTUAL_SIZE)
    hostile_images.patch(path, data, struct.pack("<Q", 513 * 8 * MIB))

    def bat_length(block):
        for index in range(struct.unpack_from("<I", block, 8)[0]):
            if block[16 + 32 * index:32 + 32 * index] == image_format.VHDX_REGION_BAT:
                block[40 + 32 * index:44 + 32 * index] = struct.pack("<I", bat_bytes)
    _vhdx_block(path, VHDX_REGIONS, 64 * 1024, bat_length)
    if fits:
        assert inspect_file(path).virtual_size == 513 * 8 * MIB
    else:
        assert "its block table (514 entries needed) does not fit its BAT region or the file" in _refusal(path)


def test_luks1_key_slots_may_touch_in_either_order(tmp_path):
    from tests.support import hostile_images
    header = hostile_images.luks1_header(payload_sectors=8192)
    start7, = struct.unpack_from(">I", header, 208 + 7 * 48 + 40)
    header[208 + 40:208 + 44] = struct.pack(">I", start7 + -(-64 * 4000 // 512))  # slot 0 right after slot 7
    assert inspect_file(hostile_images.luks_image(str(tmp_path), header), allow_luks=True).details["luks_version"] == 1


# --- more refusals word for word, and rules at their bounds ---------------------------------------------------

def _corrupt_prefix(path, fmt, what):
    return "refusing image %s: its %s header is truncated or corrupt (%s" % (path, fmt, what)


def test_qcow2_header_refusals_name_the_format(tmp_path):
    path = qcow2_file(tmp_path, "order", refcount_order=7)
    assert _refusal(path).startswith(_corrupt_prefix(path, "qcow2", "refcount_order 7 above 6)"))
    path = qcow2_file(tmp_path, "huge", size=1 << 63)
    assert _refusal(path).startswith(_corrupt_prefix(path, "qcow2", "virtual size %d does not fit a signed 64-bit "
                                                                    "integer)" % (1 << 63)))
    head, _size = qcow2_image(header_length=112)
    short = _write(tmp_path, head[:108], "short")
    assert _refusal(short).startswith(_corrupt_prefix(short, "qcow2", "the file is 108 bytes, shorter than its "))


def test_qcow2_crypto_extension_size_and_an_embedded_luks_header_of_exactly_its_size(tmp_path):
    path = qcow2_file(tmp_path, "eight", crypt=2, extensions=_ext(0x0537BE77, struct.pack(">Q", 0x10000)))
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "qcow2", "its crypto header extension is 8 "
                                                                                  "bytes (must be 16)"))
    path = qcow2_file(tmp_path, "exact", crypt=2, extensions=_ext(0x0537BE77, struct.pack(">QQ", 0x20000, 592)))
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "qcow2", "its embedded LUKS header: no LUKS "
                                                                                  "magic"))


def test_the_default_advice_is_a_plain_trusted_image():
    assert UnsafeImageError("/p", "it is odd").msg == ("refusing image /p: it is odd; use an image from a trusted "
                                                       "source in a plain format (raw or qcow2 without a backing "
                                                       "file)")


def test_a_fat_boot_sector_may_start_with_a_near_jump(tmp_path):
    from tests.support import hostile_images
    sector = bytearray(512)
    sector[0:3] = b"\xe9\x00\x00"
    sector[11:22] = struct.pack("<HBHBHHB", 512, 8, 1, 2, 0, 0, 0xF8)
    sector[446:462] = hostile_images.mbr_entry(0x80, 0x0C, 1, 8191)
    sector[510:512] = b"\x55\xaa"
    assert inspect_file(_write(tmp_path, bytes(sector), size=4 * MIB)).details.get("filesystem") == "fat"


def test_a_protective_mbr_with_two_problems_names_both(tmp_path):
    from tests.support import hostile_images
    path = hostile_images.write_gpt_disk(str(tmp_path / "two.raw"), mbr_entries=[
        hostile_images.mbr_entry(0, 0xEE, 2, 16382, start_chs=b"\x00\x01\x00")])
    assert ("its protective MBR is malformed: the 0xEE entry starts at CHS 00 01 00 instead of 00 02 00; the 0xEE "
            "entry starts at LBA 2 instead of 1; ") in _refusal(path)


def test_a_fixed_vhd_may_hold_data_that_looks_like_an_iso(tmp_path):
    from tests.support import hostile_images
    path = _vhd(tmp_path, "fixed")
    hostile_images.patch(path, 0x8001, b"CD001")
    assert inspect_file(path).format == "vhd"


def test_a_polyglot_names_both_formats(tmp_path):
    from tests.support import hostile_images
    with pytest.raises(UnsafeImageError, match="polyglot") as caught:
        inspect_file(hostile_images.polyglot_qcow2_iso(str(tmp_path)))
    assert caught.value.details["matched_formats"] == ["qcow2", "iso"]


def test_vmdk_descriptor_files_of_types_qemu_does_not_open(tmp_path):
    from tests.support import hostile_images
    path = str(tmp_path / "custom.vmdk")
    with open(path, "w", encoding="ascii") as handle:
        handle.write(hostile_images._vmdk_descriptor("custom", ['RW 2048 FLAT "a-flat.vmdk" 0']))
    assert _refusal(path).startswith("refusing image %s: it is a VMDK descriptor file of createType 'custom', which "
                                     "qemu does not open (it opens monolithicFlat, " % path)


def test_vmdk_sparse_extent_details_and_descriptor_bounds(tmp_path):
    from tests.support import hostile_images
    details = inspect_file(hostile_images.vmdk_monolithic_sparse(str(tmp_path))).details
    assert (details["gd_at_end"], details["compressed"]) == (False, False)
    (tmp_path / "none").mkdir()
    path = hostile_images.vmdk_monolithic_sparse(str(tmp_path / "none"))
    hostile_images.patch(path, 28, struct.pack("<Q", 0))
    assert _refusal(path).startswith("refusing image %s: it is a VMDK sparse extent without an embedded descriptor, "
                                     "so its type cannot be checked; convert it to qcow2 on a trusted host" % path)
    for sectors, refused in ((2048, False), (2049, True)):
        (tmp_path / str(sectors)).mkdir()
        path = hostile_images.vmdk_monolithic_sparse(str(tmp_path / str(sectors)))
        os.truncate(path, 8 * MIB)  # room for the descriptor: only its size limit is at stake
        hostile_images.patch(path, 36, struct.pack("<Q", sectors))
        message = "embedded descriptor at sector 1 (%d sectors) lies outside the file or is too large" % sectors
        try:
            inspect_file(path)
            outcome = ""
        except UnsafeImageError as exc:
            outcome = exc.msg
        assert (message in outcome) is refused, outcome


@pytest.mark.parametrize("line,shown", [("X", "'X'"), ("RW " + "x" * 90, repr("RW " + "x" * 77))])
def test_embedded_descriptor_lines_that_cannot_be_read_are_shown_up_to_80_characters(tmp_path, line, shown):
    text = ("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n"
            "%s\n%s\n" % (SPARSE_EXTENT, line))
    message = _refusal(_sparse_vmdk_describing(tmp_path, text))
    assert ("%s; convert it to a single" % shown) in message


def test_a_cowd_extent_says_how_to_convert_it(tmp_path):
    path = _write(tmp_path, b"COWD" + b"\0" * 508, size=MIB)
    assert _refusal(path).endswith("; convert it to a monolithicSparse or streamOptimized VMDK on a trusted host")


def test_vhd_dynamic_header_rules_word_for_word(tmp_path):
    from tests.support import hostile_images
    path = _vhd(tmp_path)
    hostile_images.patch(path, 512 + 32, struct.pack(">I", 3))
    assert _refusal(path).startswith(_corrupt_prefix(path, "vhd", "block size 3)"))
    (tmp_path / "many").mkdir()
    path = _vhd(tmp_path / "many")
    hostile_images.patch(path, 512 + 28, struct.pack(">I", 0x7FFFFFFF // 4))
    assert "its VHD block table of 536870911 entries is larger than this inspector reads (16777216 bytes)" in \
        _refusal(path)
    (tmp_path / "limit").mkdir()
    path = _vhd(tmp_path / "limit")
    hostile_images.patch(path, 512 + 28, struct.pack(">I", 4 * 1024 * 1024 + 1))
    assert "its VHD block table of 4194305 entries is larger than this inspector reads (16777216 bytes)" in \
        _refusal(path)


def test_vhd_footers_at_the_start(tmp_path):
    from tests.support import hostile_images
    dynamic = _vhd(tmp_path)
    alone = _write(tmp_path, hostile_images.read_at(dynamic, 0, 512), "alone.vhd")
    assert _refusal(alone).startswith(_corrupt_prefix(alone, "vhd", "dynamic disk header missing at offset 512)"))
    fixed = _vhd(tmp_path, "fixed")
    hostile_images.patch(fixed, 0, hostile_images.read_at(fixed, os.path.getsize(fixed) - 512, 512))
    assert _refusal(fixed).startswith(_corrupt_prefix(fixed, "vhd", "a fixed disk with a footer copy at the start of "
                                                                    "the file, which qemu reads as a dynamic disk)"))


def test_vhdx_region_and_metadata_rules_word_for_word(tmp_path):
    from tests.support import hostile_images

    def unknown_required_region(block):
        count, = struct.unpack_from("<I", block, 8)
        block[16 + 32 * count:48 + 32 * count] = b"\x03" * 16 + struct.pack("<QII", 0x500000, 0x100000, 1)
        block[8:12] = struct.pack("<I", count + 1)
    (tmp_path / "r").mkdir()
    path = _vhdx(tmp_path / "r")
    _vhdx_block(path, VHDX_REGIONS, 64 * 1024, unknown_required_region)
    assert _refusal(path) == ("refusing image %s: its VHDX region table requires an unknown region; convert it to "
                              "qcow2 on a trusted host" % path)
    (tmp_path / "m").mkdir()
    path = _vhdx(tmp_path / "m")
    hostile_images.patch(path, _vhdx_metadata_table(path), b"XXXXdata")
    assert _refusal(path).startswith(_corrupt_prefix(path, "vhdx", "metadata table missing at offset %d)"
                                                     % _vhdx_metadata_table(path)))
    (tmp_path / "twice").mkdir()
    path = _vhdx(tmp_path / "twice")
    _data, entry = _vhdx_item(path, image_format.VHDX_META_LOGICAL_SECTOR)
    hostile_images.patch(path, entry, image_format.VHDX_META_VIRTUAL_SIZE)
    assert _refusal(path).startswith(_corrupt_prefix(path, "vhdx", "metadata item listed twice)"))
    for flag, refused in ((4, True), (8, False)):
        (tmp_path / str(flag)).mkdir()
        path = _vhdx(tmp_path / str(flag))
        metadata = _vhdx_metadata_table(path)
        count, = struct.unpack("<H", hostile_images.read_at(path, metadata + 10, 2))
        hostile_images.patch(path, metadata + 32 + 32 * count, b"\x04" * 16 + struct.pack("<III", 0x10000, 8, flag))
        hostile_images.patch(path, metadata + 10, struct.pack("<H", count + 1))
        _refused_or_read(path, refused, "its metadata requires an item qemu does not know")


def test_vhdx_logical_sectors_of_4096_bytes(tmp_path):
    from tests.support import hostile_images
    path = _vhdx(tmp_path)
    data, _entry = _vhdx_item(path, image_format.VHDX_META_LOGICAL_SECTOR)
    hostile_images.patch(path, data, struct.pack("<I", 4096))
    assert inspect_file(path).details["logical_sector_size"] == 4096


def test_vdi_limits_and_the_block_map_ending_where_the_data_starts(tmp_path):
    from tests.support import hostile_images
    path = _vdi(tmp_path, (0x170, struct.pack("<Q", 0x3FFFFFFF * MIB)))
    assert _refusal(path).startswith(_qemu_cannot(path, "vdi", "16 blocks of 1048576 bytes do not cover a disk of "
                                                               "%d bytes" % (0x3FFFFFFF * MIB)))
    (tmp_path / "a").mkdir()
    path = _vdi(tmp_path / "a", (0x154, struct.pack("<I", 0x201)))
    assert _refusal(path).startswith(_qemu_cannot(path, "vdi", "block map at 513 or data at %d not sector-aligned"
                                                  % struct.unpack("<I", hostile_images.read_at(path, 0x158, 4))))
    (tmp_path / "b").mkdir()
    path = _vdi(tmp_path / "b", (0x180, struct.pack("<I", 0x40000000)))
    assert _refusal(path).startswith(_qemu_cannot(path, "vdi", "1073741824 blocks, above qemu's 1073741823"))
    (tmp_path / "c").mkdir()
    path = _vdi(tmp_path / "c", (0x180, struct.pack("<I", 128)), (0x158, struct.pack("<I", 0x400)))
    assert inspect_file(path).virtual_size == 16 * MIB


@pytest.mark.parametrize("fields,what", [
    (dict(hash_spec=b"whirlpool"), "hash algorithm 'whirlpool' is not supported"),
    (dict(mode=b"cbc-essiv", key_bytes=32), "the essiv IV generator names no hash"),
])
def test_more_luks1_refusals(tmp_path, fields, what):
    path = _luks(tmp_path, **fields)
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "luks", what))


@pytest.mark.parametrize("fields", [dict(mode=b"ctr-plain64", key_bytes=32), dict(hash_spec=b"sha1"),
                                    dict(hash_spec=b"sha512"), dict(hash_spec=b"md5"), dict(hash_spec=b"sha384"),
                                    dict(hash_spec=b"sha224"), dict(mode=b"ecb-plain", key_bytes=32)])
def test_more_luks1_ciphers_qemu_reads(tmp_path, fields):
    assert inspect_file(_luks(tmp_path, **fields), allow_luks=True).details["luks_version"] == 1


def test_luks1_key_slot_iterations_and_payload(tmp_path):
    from tests.support import hostile_images
    header = hostile_images.luks1_header()
    header[208 + 4:208 + 8] = struct.pack(">I", 0)
    path = hostile_images.luks_image(str(tmp_path), header, name="zero.luks")
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "luks", "key slot 0 iteration count is "
                                                                                 "zero"))
    path = _luks(tmp_path, payload_sectors=3600)
    assert _refusal(path, allow_luks=True).startswith(_qemu_cannot(path, "luks", "key slot 7 overlaps the encrypted "
                                                                                 "payload"))
    path = _luks(tmp_path)
    os.truncate(path, 3000 * 512)
    assert _refusal(path, allow_luks=True).startswith(_corrupt_prefix(path, "luks", "payload offset 2097152 beyond "
                                                                                    "the end of the file)"))
