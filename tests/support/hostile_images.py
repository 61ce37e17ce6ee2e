"""A corpus of crafted disk images: hostile or malformed ones that must be refused, and valid ones.

Each builder takes a directory, writes one image into it and returns its path. Where a valid base
is needed the real ``qemu-img create`` makes it, and the hostile part is patched in with
``struct``, so the files look exactly like what an attacker would upload.

``CORPUS`` holds ``(name, builder, expected error substring)`` for the hostile images;
``inspect_options(name)`` gives the extra ``inspect_file`` keywords a case needs (a declared
format, a size ceiling). ``VALID`` holds ``(name, builder, detected format, qemu-img format)``.

Nothing here writes outside the given directory: names such as /etc/passwd only appear as
bytes inside the crafted images.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import uuid
import zlib
from typing import Any, Callable, Dict, List, Tuple

Builder = Callable[[str], str]

QCOW2_EXT_DATA_FILE = 0x44415441
MIB = 1024 * 1024
GIB = 1024 * MIB


# ----------------------------------------------------------------------------------------------
# Low-level helpers
# ----------------------------------------------------------------------------------------------

def qemu_img(*args: str) -> None:
    """Run the real qemu-img (with -q) and fail loudly with its stderr."""
    proc = subprocess.run(["qemu-img", args[0], "-q"] + list(args[1:]), capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"), check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("qemu-img %s failed: %s" % (" ".join(args), proc.stderr.strip()))


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def read_at(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _qcow2(directory: str, name: str, size: str = "64M", *options: str) -> str:
    path = os.path.join(directory, name)
    args = ["create", "-f", "qcow2"]
    if options:
        args += ["-o", ",".join(options)]
    qemu_img(*(args + [path, size]))
    return path


def _set_qcow2_incompatible(path: str, bits: int) -> None:
    current, = struct.unpack(">Q", read_at(path, 72, 8))
    patch(path, 72, struct.pack(">Q", current | bits))


def _qcow2_extensions(path: str) -> Tuple[int, List[Tuple[int, bytes]]]:
    header_length, = struct.unpack(">I", read_at(path, 100, 4))
    cluster = read_at(path, 0, 65536)
    offset, extensions = header_length, []
    while True:
        ext_type, ext_len = struct.unpack_from(">II", cluster, offset)
        if ext_type == 0:
            return header_length, extensions
        extensions.append((ext_type, cluster[offset + 8:offset + 8 + ext_len]))
        offset += 8 + ((ext_len + 7) & ~7)


def _write_qcow2_extensions(path: str, header_length: int, extensions: List[Tuple[int, bytes]]) -> None:
    blob = b""
    for ext_type, data in extensions:
        blob += struct.pack(">II", ext_type, len(data)) + data + b"\x00" * (-len(data) % 8)
    blob += b"\x00" * 8
    patch(path, header_length, blob)


def _vmdk(directory: str, name: str, subformat: str, size: str = "64M") -> str:
    path = os.path.join(directory, name)
    qemu_img("create", "-f", "vmdk", "-o", "subformat=%s" % subformat, path, size)
    return path


def _rewrite_vmdk_descriptor(path: str, text: str) -> None:
    """Replace the descriptor embedded in a sparse VMDK, keeping its place and size."""
    desc_offset, desc_size = struct.unpack("<QQ", read_at(path, 28, 16))
    data = text.encode("ascii")
    if len(data) > desc_size * 512:
        raise ValueError("descriptor does not fit")
    patch(path, desc_offset * 512, data + b"\x00" * (desc_size * 512 - len(data)))


def _vmdk_descriptor(create_type: str, extents: List[str], extra: str = "") -> str:
    return ("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n%screateType=\"%s\"\n\n"
            "# Extent description\n%s\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n"
            "ddb.adapterType = \"ide\"\n" % (extra, create_type, "\n".join(extents)))


def _vhd_checksum(footer: bytearray) -> None:
    footer[64:68] = b"\x00" * 4
    patch_value = ~sum(footer) & 0xFFFFFFFF
    footer[64:68] = struct.pack(">I", patch_value)


# ----------------------------------------------------------------------------------------------
# Hostile and malformed images
# ----------------------------------------------------------------------------------------------

def qcow2_backing_file(directory: str) -> str:
    """A qcow2 overlay whose backing file is a host file: reading the guest disk reads /etc/passwd."""
    path = os.path.join(directory, "backing.qcow2")
    qemu_img("create", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", path, "64M")
    return path


def qcow2_data_file(directory: str) -> str:
    """CVE-2024-32498: incompatible bit 2 plus a data-file extension naming /etc/passwd."""
    path = _qcow2(directory, "datafile.qcow2")
    header_length, extensions = _qcow2_extensions(path)
    _write_qcow2_extensions(path, header_length, [(QCOW2_EXT_DATA_FILE, b"/etc/passwd")] + extensions)
    _set_qcow2_incompatible(path, 1 << 2)
    return path


def qcow2_data_file_extension_only(directory: str) -> str:
    """A data-file extension without the feature bit: still a reference to a host file."""
    path = _qcow2(directory, "datafile-ext.qcow2")
    header_length, extensions = _qcow2_extensions(path)
    _write_qcow2_extensions(path, header_length, [(QCOW2_EXT_DATA_FILE, b"/etc/passwd")] + extensions)
    return path


def qcow2_version_1(directory: str) -> str:
    path = _qcow2(directory, "v1.qcow2")
    patch(path, 4, struct.pack(">I", 1))
    return path


def qcow2_version_4(directory: str) -> str:
    path = _qcow2(directory, "v4.qcow2")
    patch(path, 4, struct.pack(">I", 4))
    return path


def qcow2_unknown_incompatible_bit(directory: str) -> str:
    path = _qcow2(directory, "unknown-bit.qcow2")
    _set_qcow2_incompatible(path, 1 << 10)
    return path


def qcow2_corrupt_bit(directory: str) -> str:
    path = _qcow2(directory, "corrupt-bit.qcow2")
    _set_qcow2_incompatible(path, 1 << 1)
    return path


def qcow2_truncated_header(directory: str) -> str:
    """A qcow2 magic followed by less than a header."""
    path = _qcow2(directory, "truncated.qcow2")
    os.truncate(path, 64)
    return path


def qcow2_cut_before_l1(directory: str) -> str:
    """A complete header whose L1 table lies past the end of the (cut) file."""
    path = _qcow2(directory, "cut.qcow2")
    l1_offset, = struct.unpack(">Q", read_at(path, 40, 8))
    os.truncate(path, l1_offset)
    return path


def qcow2_header_length_nonsense(directory: str) -> str:
    path = _qcow2(directory, "header-length.qcow2")
    patch(path, 100, struct.pack(">I", 12345))
    return path


def qcow2_l1_too_large(directory: str) -> str:
    """An L1 table claiming 2^28 entries (2 GiB): qemu would allocate that much to open it."""
    path = _qcow2(directory, "l1-huge.qcow2")
    patch(path, 36, struct.pack(">I", 1 << 28))
    return path


def qcow2_size_without_l1(directory: str) -> str:
    """Virtual size patched to 2^60 bytes without an L1 table to match."""
    path = _qcow2(directory, "size-no-l1.qcow2")
    patch(path, 24, struct.pack(">Q", 1 << 60))
    return path


def qcow2_huge_virtual_size(directory: str) -> str:
    """A well-formed 2 TiB qcow2: fine in itself, refused against a small max_virtual_size."""
    return _qcow2(directory, "huge.qcow2", "2T")


def qcow2_legacy_aes(directory: str) -> str:
    path = _qcow2(directory, "aes.qcow2")
    patch(path, 32, struct.pack(">I", 1))
    return path


def declared_raw_but_qcow2(directory: str) -> str:
    """CVE-2024-40767: a file sold as raw that is really a qcow2 (opened with -f raw it is harmless;
    probed, it is not); inspect with declared_format='raw'."""
    return _qcow2(directory, "sold-as-raw.img")


def polyglot_qcow2_vhd(directory: str) -> str:
    """A qcow2 with a valid VHD footer appended: two tools, two readings."""
    path = _qcow2(directory, "polyglot.qcow2")
    vhd = os.path.join(directory, "polyglot-donor.vhd")
    qemu_img("create", "-f", "vpc", "-o", "subformat=fixed", vhd, "1M")
    footer = read_at(vhd, os.path.getsize(vhd) - 512, 512)
    os.unlink(vhd)
    with open(path, "ab") as handle:
        handle.write(footer)
    return path


def polyglot_qcow2_iso(directory: str) -> str:
    """A qcow2 whose header cluster also carries an ISO 9660 volume descriptor."""
    path = _qcow2(directory, "polyglot-iso.qcow2")
    patch(path, 0x8000, b"\x01CD001\x01")
    return path


def vmdk_flat_descriptor_file(directory: str) -> str:
    """CVE-2022-47951: a text descriptor whose flat extent is the host's /etc/shadow."""
    path = os.path.join(directory, "flat.vmdk")
    with open(path, "w", encoding="ascii") as handle:
        handle.write(_vmdk_descriptor("monolithicFlat", ['RW 2048 FLAT "/etc/shadow" 0']))
    return path


def vmdk_embedded_extent_file(directory: str) -> str:
    """A real monolithicSparse VMDK whose embedded descriptor adds a flat extent on /etc/shadow."""
    path = _vmdk(directory, "embedded-extent.vmdk", "monolithicSparse")
    _rewrite_vmdk_descriptor(path, _vmdk_descriptor("monolithicSparse", [
        'RW 131072 SPARSE "embedded-extent.vmdk"', 'RW 2048 FLAT "/etc/shadow" 0']))
    return path


def vmdk_zero_capacity(directory: str) -> str:
    """A sparse extent with capacity 0: qemu then opens the extents its descriptor names."""
    path = _vmdk(directory, "zero-capacity.vmdk", "monolithicSparse")
    _rewrite_vmdk_descriptor(path, _vmdk_descriptor("monolithicFlat", ['RW 2048 FLAT "/etc/shadow" 0']))
    patch(path, 12, struct.pack("<Q", 0))
    return path


def vmdk_two_gb_max_extent_sparse(directory: str) -> str:
    """A sparse VMDK claiming createType twoGbMaxExtentSparse (a multi-file type)."""
    path = _vmdk(directory, "twogb.vmdk", "monolithicSparse")
    _rewrite_vmdk_descriptor(path, _vmdk_descriptor("twoGbMaxExtentSparse", [
        'RW 131072 SPARSE "twogb-s001.vmdk"']))
    return path


def vmdk_parent_hint(directory: str) -> str:
    """A sparse VMDK that names a parent disk: qemu would open it as a backing file."""
    path = _vmdk(directory, "parent.vmdk", "monolithicSparse")
    text = _vmdk_descriptor("monolithicSparse", ['RW 131072 SPARSE "parent.vmdk"'],
                            extra='parentFileNameHint="/etc/shadow"\n').replace("parentCID=ffffffff",
                                                                                "parentCID=87654321")
    _rewrite_vmdk_descriptor(path, text)
    return path


def vhd_differencing(directory: str) -> str:
    """A dynamic VHD re-typed as differencing (type 4): it would read a parent disk."""
    path = os.path.join(directory, "diff.vhd")
    qemu_img("create", "-f", "vpc", path, "16M")
    for offset in (0, os.path.getsize(path) - 512):
        footer = bytearray(read_at(path, offset, 512))
        footer[60:64] = struct.pack(">I", 4)
        _vhd_checksum(footer)
        patch(path, offset, bytes(footer))
    return path


def vdi_differencing(directory: str) -> str:
    path = os.path.join(directory, "diff.vdi")
    qemu_img("create", "-f", "vdi", path, "16M")
    patch(path, 0x4C, struct.pack("<I", 4))
    patch(path, 0x1B8, uuid.uuid4().bytes)
    return path


def qed_image(directory: str) -> str:
    path = os.path.join(directory, "disk.qed")
    qemu_img("create", "-f", "qed", path, "16M")
    return path


def luks_image(directory: str) -> str:
    """A LUKS1 container header (16 MiB payload after a 2 MiB header area); refused unless allow_luks.

    Written by hand because qemu-img's LUKS creation benchmarks PBKDF2 and is slow (or fails) in CI.
    """
    path = os.path.join(directory, "disk.luks")
    header = struct.pack(">6sH32s32s32sII20s32sI40s", b"LUKS\xba\xbe", 1, b"aes", b"xts-plain64", b"sha256",
                         4096, 64, os.urandom(20), os.urandom(32), 1000, str(uuid.uuid4()).encode("ascii"))
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(4096 * 512 + 16 * MIB)
    return path


# (name, builder, expected substring of the UnsafeImageError message)
CORPUS: List[Tuple[str, Builder, str]] = [
    ("qcow2_backing_file", qcow2_backing_file, "backing file"),
    ("qcow2_data_file", qcow2_data_file, "external data file"),
    ("qcow2_data_file_extension_only", qcow2_data_file_extension_only, "external data file"),
    ("qcow2_version_1", qcow2_version_1, "qcow2 version 1 is not supported"),
    ("qcow2_version_4", qcow2_version_4, "qcow2 version 4 is not supported"),
    ("qcow2_unknown_incompatible_bit", qcow2_unknown_incompatible_bit, "unknown qcow2 incompatible feature"),
    ("qcow2_corrupt_bit", qcow2_corrupt_bit, "marked this qcow2 image corrupt"),
    ("qcow2_truncated_header", qcow2_truncated_header, "shorter than a qcow2 header"),
    ("qcow2_cut_before_l1", qcow2_cut_before_l1, "L1 table at offset"),
    ("qcow2_header_length_nonsense", qcow2_header_length_nonsense, "header_length 12345"),
    ("qcow2_l1_too_large", qcow2_l1_too_large, "exceeds qemu's"),
    ("qcow2_size_without_l1", qcow2_size_without_l1, "too small for a virtual size"),
    ("qcow2_huge_virtual_size", qcow2_huge_virtual_size, "exceeds the allowed maximum"),
    ("qcow2_legacy_aes", qcow2_legacy_aes, "legacy AES"),
    ("declared_raw_but_qcow2", declared_raw_but_qcow2, "declared as raw but its content is qcow2"),
    ("polyglot_qcow2_vhd", polyglot_qcow2_vhd, "matches several formats"),
    ("polyglot_qcow2_iso", polyglot_qcow2_iso, "ISO 9660"),
    ("vmdk_flat_descriptor_file", vmdk_flat_descriptor_file, "VMDK descriptor file (createType monolithicFlat)"),
    ("vmdk_embedded_extent_file", vmdk_embedded_extent_file, "names extent files other than itself"),
    ("vmdk_zero_capacity", vmdk_zero_capacity, "capacity of 0"),
    ("vmdk_two_gb_max_extent_sparse", vmdk_two_gb_max_extent_sparse, "createType is 'twoGbMaxExtentSparse'"),
    ("vmdk_parent_hint", vmdk_parent_hint, "delta disk naming a parent"),
    ("vhd_differencing", vhd_differencing, "differencing VHD"),
    ("vdi_differencing", vdi_differencing, "differencing VDI"),
    ("qed", qed_image, "QED image"),
    ("luks", luks_image, "LUKS-encrypted image"),
]

# Extra inspect_file keywords per case; cases not listed use the defaults.
_INSPECT_OPTIONS: Dict[str, Dict[str, Any]] = {
    "qcow2_huge_virtual_size": {"max_virtual_size": 100 * GIB},
    "declared_raw_but_qcow2": {"declared_format": "raw"},
}


def inspect_options(name: str) -> Dict[str, Any]:
    """The ``inspect_file`` keywords corpus case ``name`` is meant to be checked with."""
    return dict(_INSPECT_OPTIONS.get(name, {}))


# ----------------------------------------------------------------------------------------------
# Valid images
# ----------------------------------------------------------------------------------------------

def raw_image(directory: str) -> str:
    path = os.path.join(directory, "disk.raw")
    with open(path, "wb") as handle:
        handle.write(b"virtfleet raw test data\n" * 100)
        handle.truncate(16 * MIB)
    return path


def qcow2_v3(directory: str) -> str:
    return _qcow2(directory, "v3.qcow2", "256M")


def qcow2_v2(directory: str) -> str:
    return _qcow2(directory, "v2.qcow2", "100M", "compat=0.10")


def vmdk_stream_optimized(directory: str) -> str:
    return _vmdk(directory, "stream.vmdk", "streamOptimized", "100M")


def vmdk_monolithic_sparse(directory: str) -> str:
    return _vmdk(directory, "sparse.vmdk", "monolithicSparse", "100M")


def vhd_dynamic(directory: str) -> str:
    path = os.path.join(directory, "dynamic.vhd")
    qemu_img("create", "-f", "vpc", path, "100M")
    return path


def vhd_fixed(directory: str) -> str:
    path = os.path.join(directory, "fixed.vhd")
    qemu_img("create", "-f", "vpc", "-o", "subformat=fixed", path, "32M")
    return path


def vhdx_image(directory: str) -> str:
    path = os.path.join(directory, "disk.vhdx")
    qemu_img("create", "-f", "vhdx", path, "100M")
    return path


def vdi_image(directory: str) -> str:
    path = os.path.join(directory, "disk.vdi")
    qemu_img("create", "-f", "vdi", path, "100M")
    return path


def iso_image(directory: str) -> str:
    """A small ISO 9660 image (a config drive, say) made by genisoimage."""
    content = os.path.join(directory, "iso-content")
    os.makedirs(content, exist_ok=True)
    with open(os.path.join(content, "meta_data.json"), "w", encoding="utf-8") as handle:
        handle.write('{"uuid": "virtfleet"}\n')
    path = os.path.join(directory, "config.iso")
    subprocess.run(["genisoimage", "-quiet", "-o", path, "-V", "config-2", "-r", "-J", content], check=True,
                   capture_output=True, timeout=60)
    shutil.rmtree(content)
    return path


def _mbr_entry(status: int, part_type: int, first_lba: int, sectors: int) -> bytes:
    return struct.pack("<B3sB3sII", status, b"\x00\x02\x00", part_type, b"\xff\xff\xff", first_lba, sectors)


def gpt_image(directory: str) -> str:
    """A raw disk with a protective MBR and a complete GPT (primary and backup) holding one partition."""
    path = os.path.join(directory, "gpt.raw")
    size = 8 * MIB
    total = size // 512
    entries = bytearray(128 * 128)
    linux_fs = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4").bytes_le
    name = "root".encode("utf-16-le")
    entries[0:128] = (linux_fs + uuid.uuid4().bytes_le + struct.pack("<QQQ", 2048, total - 34, 0)
                      + name + b"\x00" * (72 - len(name)))
    entries_crc = zlib.crc32(bytes(entries)) & 0xFFFFFFFF
    disk_guid = uuid.uuid4().bytes_le

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = [b"EFI PART", 0x00010000, 92, 0, 0, current, backup, 34, total - 34, disk_guid, entries_lba,
                  128, 128, entries_crc]
        raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        fields[3] = zlib.crc32(raw) & 0xFFFFFFFF
        return struct.pack("<8sIIIIQQQQ16sQIII", *fields)

    mbr = bytearray(512)
    mbr[446:462] = _mbr_entry(0, 0xEE, 1, total - 1)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.write(bytes(mbr))
        handle.write(header(1, total - 1, 2).ljust(512, b"\x00"))
        handle.write(bytes(entries))
        handle.seek((total - 33) * 512)
        handle.write(bytes(entries))
        handle.write(header(total - 1, 1, total - 33).ljust(512, b"\x00"))
    return path


def mbr_image(directory: str) -> str:
    path = os.path.join(directory, "mbr.raw")
    mbr = bytearray(512)
    mbr[446:462] = _mbr_entry(0x80, 0x83, 2048, 6144)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as handle:
        handle.truncate(4 * MIB)
        handle.write(bytes(mbr))
    return path


# (name, builder, format inspect_file reports without a declaration, qemu-img driver to compare with)
VALID: List[Tuple[str, Builder, str, str]] = [
    ("raw", raw_image, "raw", "raw"),
    ("qcow2_v3", qcow2_v3, "qcow2", "qcow2"),
    ("qcow2_v2", qcow2_v2, "qcow2", "qcow2"),
    ("vmdk_stream_optimized", vmdk_stream_optimized, "vmdk", "vmdk"),
    ("vmdk_monolithic_sparse", vmdk_monolithic_sparse, "vmdk", "vmdk"),
    ("vhd_dynamic", vhd_dynamic, "vhd", "vpc"),
    ("vhd_fixed", vhd_fixed, "vhd", "vpc"),
    ("vhdx", vhdx_image, "vhdx", "vhdx"),
    ("vdi", vdi_image, "vdi", "vdi"),
    ("iso", iso_image, "iso", "raw"),
    ("gpt", gpt_image, "gpt", "raw"),
    ("mbr", mbr_image, "mbr", "raw"),
]


def build(name: str, directory: str) -> str:
    """Build corpus or valid case ``name`` in ``directory`` and return its path."""
    for case in CORPUS:
        if case[0] == name:
            return case[1](directory)
    for valid in VALID:
        if valid[0] == name:
            return valid[1](directory)
    raise KeyError(name)
