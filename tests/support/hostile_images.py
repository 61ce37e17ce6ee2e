"""A corpus of crafted disk images: hostile or malformed ones that must be refused, and valid ones.

Each builder takes a directory, writes one image into it and returns its path. Where a valid base
is needed the real ``qemu-img create`` makes it, and the hostile part is patched in with
``struct``, so the files look exactly like what an attacker would upload.

``CORPUS`` holds ``(name, builder, expected error substring)`` for the hostile images (and
``ENCRYPTED_CORPUS`` those refused even with ``allow_luks``);
``inspect_options(name)`` gives the extra ``inspect_file`` keywords a case needs (a declared
format, a size ceiling). ``VALID`` holds ``(name, builder, detected format, qemu-img format)``.

Nothing here writes outside the given directory: names such as /etc/passwd only appear as
bytes inside the crafted images.
"""

from __future__ import annotations

import os
import hashlib
import json
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


def created(directory: str, name: str, driver: str, size: str = "16M") -> str:
    """``name`` in ``directory``, made by ``qemu-img create -f driver``."""
    path = os.path.join(directory, name)
    qemu_img("create", "-f", driver, path, size)
    return path


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


def qcow2_data_file_bit_only(directory: str) -> str:
    """Incompatible bit 2 alone, without the extension that names the file: qemu would read the data from
    whatever data file it is given (or refuse); either way the image is not self-contained."""
    path = _qcow2(directory, "datafile-bit.qcow2")
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
        handle.write(b"\x00" * (-handle.tell() % 512))  # qemu reads a footer only from a whole last sector
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


VMDK_GD_AT_END = 0xFFFFFFFFFFFFFFFF


def _vmdk4_sector(capacity: int, gd_offset: int, desc_size: int, grain_offset: int, version: int = 3,
                  flags: int = 0x30001, compress: int = 1) -> bytearray:
    """A VMDK4 sparse header sector (magic, fields, check bytes, compression algorithm)."""
    fields = struct.pack("<IIQQQQIQQQ", version, flags, capacity, 128, 1, desc_size, 512, 0, gd_offset, grain_offset)
    return bytearray((b"KDMV" + fields + b"\x00\n \r\n" + struct.pack("<H", compress)).ljust(512, b"\x00"))


def _vmdk_marker(value: int, size: int, marker_type: int) -> bytes:
    return struct.pack("<QII", value, size, marker_type).ljust(512, b"\x00")


def write_stream_optimized_vmdk(path: str, data: bytes, capacity: int, footer_capacity: int = 0,
                                descriptor: str = "") -> bytearray:
    """A streamOptimized VMDK as VMware's tools stream it: the header's grain directory offset says "at the end",
    deflated grains behind markers, grain tables, the grain directory, then the footer (the header again, with
    the real directory offset) and the end-of-stream marker. ``footer_capacity`` makes the footer claim another
    size than the header. Returns the bytes written, for callers that patch them."""
    grain_bytes = 128 * 512
    text = descriptor or _vmdk_descriptor("streamOptimized", ['RW %d SPARSE "%s"' % (capacity, os.path.basename(path))])
    desc_size = -(-len(text) // 512)
    out = _vmdk4_sector(capacity, VMDK_GD_AT_END, desc_size, 128)
    out += text.encode("ascii").ljust(desc_size * 512, b"\x00")
    out = out.ljust(128 * 512, b"\x00")
    grains = -(-capacity // 128)
    tables = [[0] * 512 for _table in range(-(-grains // 512))]
    for grain in range(grains):
        chunk = data[grain * grain_bytes:(grain + 1) * grain_bytes]
        if not chunk.strip(b"\x00"):
            continue
        compressed = zlib.compress(chunk.ljust(grain_bytes, b"\x00"))
        tables[grain // 512][grain % 512] = len(out) // 512
        out += struct.pack("<QI", grain * 128, len(compressed)) + compressed
        out += b"\x00" * (-len(out) % 512)
    directory = []
    for table in tables:
        out += _vmdk_marker(4, 0, 1)
        directory.append(len(out) // 512)
        out += struct.pack("<512I", *table)
    gd_bytes = struct.pack("<%dI" % len(directory), *directory)
    gd_bytes += b"\x00" * (-len(gd_bytes) % 512)
    out += _vmdk_marker(len(gd_bytes) // 512, 0, 2)
    gd_offset = len(out) // 512
    out += gd_bytes + _vmdk_marker(1, 0, 3) + _vmdk4_sector(footer_capacity or capacity, gd_offset, desc_size, 128)
    out += _vmdk_marker(0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(out)
    return out


STREAM_TEST_DATA = b"virtfleet stream-optimized grain\n" * 2000 + b"\x00" * 300000 + os.urandom(4096)


def vmdk_stream_footer(directory: str) -> str:
    """A valid 5 MiB streamOptimized VMDK whose header leaves the grain directory to the footer."""
    path = os.path.join(directory, "stream-footer.vmdk")
    write_stream_optimized_vmdk(path, STREAM_TEST_DATA, 5 * 2048)
    return path


def vmdk_footer_claims_10t(directory: str) -> str:
    """Issue 10 item 16: the header says 5 MiB, the footer qemu reads says 10 TiB."""
    path = os.path.join(directory, "footer-10t.vmdk")
    write_stream_optimized_vmdk(path, STREAM_TEST_DATA, 5 * 2048, footer_capacity=10 * 1024 ** 4 // 512)
    return path


def _vmdk_footer_variant(directory: str, name: str, offset_from_end: int, value: bytes) -> str:
    path = os.path.join(directory, name)
    out = write_stream_optimized_vmdk(path, STREAM_TEST_DATA, 5 * 2048)
    patch(path, len(out) - offset_from_end, value)
    return path


def vmdk_footer_bad_marker(directory: str) -> str:
    """The sector before the footer is not a footer marker (type 3)."""
    return _vmdk_footer_variant(directory, "footer-marker.vmdk", 1536 - 12, struct.pack("<I", 2))


def vmdk_footer_bad_magic(directory: str) -> str:
    return _vmdk_footer_variant(directory, "footer-magic.vmdk", 1024, b"KDMW")


def vmdk_footer_without_end_of_stream(directory: str) -> str:
    return _vmdk_footer_variant(directory, "footer-eos.vmdk", 512 - 12, struct.pack("<I", 3))


def vmdk_footer_version_4(directory: str) -> str:
    """A good footer marker around a footer header of version 4 (qemu: 'Unsupported VMDK version 4')."""
    return _vmdk_footer_variant(directory, "footer-version.vmdk", 1024 - 4, struct.pack("<I", 4))


def vmdk_footer_moves_descriptor(directory: str) -> str:
    """The footer puts the descriptor elsewhere than the header does."""
    return _vmdk_footer_variant(directory, "footer-descriptor.vmdk", 1024 - 28, struct.pack("<Q", 7))


def vmdk_footer_in_short_file(directory: str) -> str:
    """A header announcing a footer in a file too short to hold one."""
    path = os.path.join(directory, "footer-short.vmdk")
    with open(path, "wb") as handle:
        handle.write(bytes(_vmdk4_sector(2048, VMDK_GD_AT_END, 1, 1)))
    return path


def vmdk_parent_hint_in_comment(directory: str) -> str:
    """qemu finds parentFileNameHint with strstr, so a comment is enough to give the disk a backing file."""
    path = _vmdk(directory, "hint-comment.vmdk", "monolithicSparse")
    text = _vmdk_descriptor("monolithicSparse", ['RW 131072 SPARSE "hint-comment.vmdk"'],
                            extra='# parentFileNameHint="/etc/shadow"\n')
    _rewrite_vmdk_descriptor(path, text)
    return path


def vmdk_descriptor_without_extents(directory: str) -> str:
    """Issue 10 item 18: an embedded descriptor with no extent line at all."""
    path = _vmdk(directory, "no-extents.vmdk", "monolithicSparse")
    _rewrite_vmdk_descriptor(path, _vmdk_descriptor("monolithicSparse", []))
    return path


def vmdk_descriptor_with_binary_junk(directory: str) -> str:
    path = _vmdk(directory, "junk-descriptor.vmdk", "monolithicSparse")
    _rewrite_vmdk_descriptor(path, _vmdk_descriptor("monolithicSparse", ['RW 131072 SPARSE "junk-descriptor.vmdk"'],
                                                    extra="\x7fELF garbage here\n"))
    return path


def vmdk_extent_of_two_gb_sparse(directory: str) -> str:
    """The first extent file qemu-img writes for twoGbMaxExtentSparse: a KDMV extent with an empty descriptor."""
    qemu_img("create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", os.path.join(directory, "split.vmdk"),
             "16M")
    return os.path.join(directory, "split-s001.vmdk")


def vmdk_unknown_compression(directory: str) -> str:
    path = _vmdk(directory, "compression.vmdk", "streamOptimized")
    patch(path, 77, struct.pack("<H", 7))
    return path


def vmdk_truncated_before_grains(directory: str) -> str:
    """A header whose grains start past the end of the (cut) file: qemu says 'File truncated'."""
    path = _vmdk(directory, "cut.vmdk", "monolithicSparse")
    os.truncate(path, 40 * 512)
    return path


def _qcow2_patched(directory: str, name: str, offset: int, value: bytes, size: str = "64M", *options: str) -> str:
    path = _qcow2(directory, name, size, *options)
    patch(path, offset, value)
    return path


def qcow2_zstd_without_feature_bit(directory: str) -> str:
    """zstd compression type with incompatible bit 3 cleared: qemu refuses to open it."""
    path = _qcow2(directory, "zstd-bit.qcow2", "64M", "compression_type=zstd")
    current, = struct.unpack(">Q", read_at(path, 72, 8))
    patch(path, 72, struct.pack(">Q", current & ~(1 << 3)))
    return path


def qcow2_extended_l2_small_clusters(directory: str) -> str:
    """Extended L2 entries with 8 KiB clusters (sub-clusters of 256 bytes), which qemu refuses."""
    path = _qcow2(directory, "extl2-8k.qcow2", "64M", "extended_l2=on", "cluster_size=16k")
    patch(path, 20, struct.pack(">I", 13))
    return path


def qcow2_odd_virtual_size(directory: str) -> str:
    """A size field that is not a multiple of 512: qemu reports it rounded down to whole sectors."""
    return _qcow2_patched(directory, "odd-size.qcow2", 24, struct.pack(">Q", 64 * MIB - 100))


def qcow2_long_backing_format(directory: str) -> str:
    """A backing-format extension of 20 bytes (qemu's field holds 15 and refuses the image)."""
    path = _qcow2(directory, "backing-format.qcow2")
    header_length, extensions = _qcow2_extensions(path)
    _write_qcow2_extensions(path, header_length, [(0xE2792ACA, b"r" * 20)] + extensions)
    return path


def qcow2_crypto_extension_without_luks(directory: str) -> str:
    path = _qcow2(directory, "crypto-ext.qcow2")
    header_length, extensions = _qcow2_extensions(path)
    _write_qcow2_extensions(path, header_length, [(0x0537BE77, struct.pack(">QQ", 65536 * 4, 4096))] + extensions)
    return path


def qcow2_misaligned_snapshot_table(directory: str) -> str:
    """No snapshots, but a snapshot table offset inside a cluster: qemu's table check refuses it anyway."""
    return _qcow2_patched(directory, "snapshots.qcow2", 64, struct.pack(">Q", 1000))


def qcow2_v2_with_data_file_extension(directory: str) -> str:
    """A version 2 image still carries header extensions qemu reads."""
    path = _qcow2(directory, "v2-ext.qcow2", "64M", "compat=0.10")
    _write_qcow2_extensions(path, 72, [(QCOW2_EXT_DATA_FILE, b"/etc/passwd")])
    return path


def qcow_version_1_image(directory: str) -> str:
    """The old qcow format, as qemu-img still writes it."""
    return created(directory, "old.qcow", "qcow")


def parallels_image(directory: str) -> str:
    return created(directory, "disk.hds", "parallels")


def vhd_over_2040g(directory: str) -> str:
    """A dynamic VHD whose size field says 3 TiB (creator 'qem2' sizes by that field): past VHD's limit."""
    path = os.path.join(directory, "huge.vhd")
    qemu_img("create", "-f", "vpc", "-o", "force_size=on", path, "16M")
    for offset in (0, os.path.getsize(path) - 512):
        footer = bytearray(read_at(path, offset, 512))
        footer[48:56] = struct.pack(">Q", 3 * 1024 ** 4)
        _vhd_checksum(footer)
        patch(path, offset, bytes(footer))
    return path


def _vhd_refooted(directory: str, name: str, creator: bytes, current_size: int = 0, geometry: Any = None,
                  subformat: str = "dynamic") -> str:
    """A qemu-img VHD whose footers (both copies) claim another creator, size field or CHS geometry."""
    path = os.path.join(directory, name)
    qemu_img("create", "-f", "vpc", "-o", "subformat=%s" % subformat, path, "64M")
    offsets = [os.path.getsize(path) - 512] + ([0] if subformat == "dynamic" else [])
    for offset in offsets:
        footer = bytearray(read_at(path, offset, 512))
        footer[28:32] = creator
        if current_size:
            footer[48:56] = struct.pack(">Q", current_size)
        if geometry:
            footer[56:60] = struct.pack(">HBB", *geometry)
        _vhd_checksum(footer)
        patch(path, offset, bytes(footer))
    return path


def vhd_made_by_hyperv(directory: str) -> str:
    """Creator 'win ' (Hyper-V): qemu sizes the disk by the footer's current_size, not by its geometry."""
    return _vhd_refooted(directory, "hyperv.vhd", b"win ", current_size=60 * MIB)


def vhd_made_by_virtual_pc(directory: str) -> str:
    """Creator 'vpc ' (Virtual PC): qemu sizes the disk by CHS geometry, whatever current_size says."""
    return _vhd_refooted(directory, "virtualpc.vhd", b"vpc ", current_size=64 * MIB, geometry=(1000, 4, 16))


def vhd_at_maximum_geometry(directory: str) -> str:
    """A CHS geometry at its maximum (65535/16/255): qemu then takes current_size, to avoid truncating."""
    return _vhd_refooted(directory, "maxchs.vhd", b"vpc ", current_size=40 * MIB, geometry=(65535, 16, 255),
                         subformat="fixed")


def qcow2_l1_one_entry_short(directory: str) -> str:
    """1 GiB in 64 KiB clusters needs 2 L1 entries (512 MiB each); the header says 1."""
    return _qcow2_patched(directory, "l1-short.qcow2", 36, struct.pack(">I", 1), "1G")


def vhd_footer_off_sector(directory: str) -> str:
    """A fixed VHD with 100 bytes of padding before its footer: qemu looks for the footer in the last whole
    sector and does not find it."""
    path = os.path.join(directory, "off-sector.vhd")
    qemu_img("create", "-f", "vpc", "-o", "subformat=fixed", path, "16M")
    footer = read_at(path, os.path.getsize(path) - 512, 512)
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) - 512)
        handle.write(b"\x00" * 100 + footer)
    return path


def vhd_block_past_the_end(directory: str) -> str:
    """A dynamic VHD whose block table lists a block past the end of the file (truncated image)."""
    path = created(directory, "truncated.vhd", "vpc")
    data_offset, = struct.unpack(">Q", read_at(path, 16, 8))
    table_offset, = struct.unpack(">Q", read_at(path, data_offset + 16, 8))
    patch(path, table_offset, struct.pack(">I", 0x100000))
    return path


def _vdi_patched(directory: str, name: str, offset: int, value: bytes) -> str:
    path = os.path.join(directory, name)
    qemu_img("create", "-f", "vdi", path, "16M")
    patch(path, offset, value)
    return path


def vdi_link_uuid(directory: str) -> str:
    return _vdi_patched(directory, "link.vdi", 0x1A8, uuid.uuid4().bytes)


def vdi_block_size(directory: str) -> str:
    return _vdi_patched(directory, "block.vdi", 0x178, struct.pack("<I", 2 * MIB))


def vdi_version(directory: str) -> str:
    return _vdi_patched(directory, "version.vdi", 0x44, struct.pack("<I", 0x00010000))


def vdi_odd_disk_size(directory: str) -> str:
    """VBoxManage convertfromraw writes odd sizes; qemu rounds them up to whole sectors."""
    return _vdi_patched(directory, "odd.vdi", 0x170, struct.pack("<Q", 16 * MIB - 1000))


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: slow, independent of the inspector's table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def vhdx_dirty_log(directory: str) -> str:
    """Both headers name a log (not closed cleanly): qemu-img would have to replay it, i.e. write."""
    path = created(directory, "log.vhdx", "vhdx")
    for block in (64 * 1024, 128 * 1024):
        data = bytearray(read_at(path, block, 4096))
        data[48:64] = uuid.uuid4().bytes_le
        data[4:8] = b"\x00" * 4
        data[4:8] = struct.pack("<I", crc32c(bytes(data)))
        patch(path, block, bytes(data))
    return path


def vhdx_region_table_checksum(directory: str) -> str:
    """A region table whose checksum is wrong: qemu refuses the image."""
    path = created(directory, "regions.vhdx", "vhdx")
    patch(path, 192 * 1024 + 4, b"\x00\x00\x00\x00")
    return path


def vhdx_block_size_too_small(directory: str) -> str:
    """File parameters with a 512 KiB block (VHDX blocks are 1 MiB to 256 MiB)."""
    path = created(directory, "block.vhdx", "vhdx")
    regions = read_at(path, 192 * 1024, 64 * 1024)
    metadata_offset = None
    for index in range(struct.unpack_from("<I", regions, 8)[0]):
        if regions[16 + 32 * index:32 + 32 * index] == uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le:
            metadata_offset, = struct.unpack_from("<Q", regions, 32 + 32 * index)
    table = read_at(path, metadata_offset, 64 * 1024)
    for index in range(struct.unpack_from("<H", table, 10)[0]):
        base = 32 + 32 * index
        if table[base:base + 16] == uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le:
            item_offset, = struct.unpack_from("<I", table, base + 16)
            patch(path, metadata_offset + item_offset, struct.pack("<I", 512 * 1024))
    return path


def luks1_with(directory: str, name: str, **fields: Any) -> str:
    """A LUKS1 image whose header takes ``fields`` (cipher, mode, hash_spec, key_bytes, payload_sectors)."""
    return luks_image(directory, luks1_header(**fields), name=name)


def luks1_corrupt_key_slot(directory: str) -> str:
    header = luks1_header()
    header[208 + 44:208 + 48] = struct.pack(">I", 0)
    return luks_image(directory, header, name="slot.luks")


def luks1_unsupported_cipher(directory: str) -> str:
    return luks1_with(directory, "cipher.luks", cipher=b"blowfish")


def luks1_payload_in_header(directory: str) -> str:
    return luks1_with(directory, "payload.luks", payload_sectors=4)


def gpt_hybrid_mbr(directory: str) -> str:
    """A hybrid MBR: the protective 0xEE entry plus a Linux partition that MBR readers see instead of the GPT's."""
    return write_gpt_disk(os.path.join(directory, "hybrid.raw"), mbr_entries=[
        mbr_entry(0, 0xEE, 1, 2047), mbr_entry(0x80, 0x83, 2048, 8192)])


def gpt_protective_start_chs(directory: str) -> str:
    return write_gpt_disk(os.path.join(directory, "pmbr-chs.raw"), mbr_entries=[
        mbr_entry(0, 0xEE, 1, 16383, start_chs=b"\x00\x01\x00")])


def gpt_protective_start_lba(directory: str) -> str:
    return write_gpt_disk(os.path.join(directory, "pmbr-lba.raw"), mbr_entries=[mbr_entry(0, 0xEE, 2, 16382)])


def gpt_protective_boot_flag(directory: str) -> str:
    return write_gpt_disk(os.path.join(directory, "pmbr-flag.raw"), mbr_entries=[mbr_entry(0x7F, 0xEE, 1, 16383)])


def gpt_protective_in_second_entry(directory: str) -> str:
    return write_gpt_disk(os.path.join(directory, "pmbr-second.raw"), mbr_entries=[
        bytes(16), mbr_entry(0, 0xEE, 1, 16383)])


def protective_mbr_without_gpt(directory: str) -> str:
    """A protective MBR on a disk with no GPT header behind it."""
    path = write_gpt_disk(os.path.join(directory, "pmbr-only.raw"))
    patch(path, 512, b"\x00" * 8)
    return path


def vhd_differencing(directory: str) -> str:
    """A dynamic VHD re-typed as differencing (type 4): it would read a parent disk."""
    path = created(directory, "diff.vhd", "vpc")
    for offset in (0, os.path.getsize(path) - 512):
        footer = bytearray(read_at(path, offset, 512))
        footer[60:64] = struct.pack(">I", 4)
        _vhd_checksum(footer)
        patch(path, offset, bytes(footer))
    return path


def vdi_differencing(directory: str) -> str:
    path = created(directory, "diff.vdi", "vdi")
    patch(path, 0x4C, struct.pack("<I", 4))
    patch(path, 0x1B8, uuid.uuid4().bytes)
    return path


def qed_image(directory: str) -> str:
    return created(directory, "disk.qed", "qed")


LUKS_SLOT_ENABLED = 0x00AC71F3
LUKS_SLOT_DISABLED = 0x0000DEAD


def luks1_header(cipher: bytes = b"aes", mode: bytes = b"xts-plain64", hash_spec: bytes = b"sha256",
                 key_bytes: int = 64, payload_sectors: int = 4096) -> bytearray:
    """A LUKS1 header as qemu writes one: slot 0 active, eight slots of 4000 stripes 8-sector aligned from
    sector 8 (the key material itself is left out: qemu-img info never reads it)."""
    header = bytearray(struct.pack(">6sH32s32s32sII20s32sI40s", b"LUKS\xba\xbe", 1, cipher, mode, hash_spec,
                                   payload_sectors, key_bytes, os.urandom(20), os.urandom(32), 1000,
                                   str(uuid.uuid4()).encode("ascii")))
    slot_sectors = (-(-key_bytes * 4000 // 512) + 7) // 8 * 8
    for slot in range(8):
        active = LUKS_SLOT_ENABLED if slot == 0 else LUKS_SLOT_DISABLED
        header += struct.pack(">II32sII", active, 1000 if slot == 0 else 0, os.urandom(32), 8 + slot * slot_sectors,
                              4000)
    return header


def luks_image(directory: str, header: bytes = b"", payload: int = 16 * MIB, name: str = "disk.luks") -> str:
    """A LUKS1 container (16 MiB payload after a 2 MiB header area); refused unless allow_luks.

    Written by hand because qemu-img's LUKS creation benchmarks PBKDF2 for seconds; qemu-img info reads it
    as qemu-img's own (the inspector tests check that).
    """
    header = header or luks1_header()
    payload_sectors, = struct.unpack_from(">I", header, 104)
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(payload_sectors * 512 + payload)
    return path


def luks2_image(directory: str) -> str:
    """A LUKS2 container as cryptsetup (its default since 2.1) writes one: binary header, JSON metadata, and a
    second copy; qemu 7.2 reads LUKS1 only."""
    hdr_size = 16384
    metadata = {"keyslots": {}, "tokens": {}, "digests": {},
                "config": {"json_size": "12288", "keyslots_size": "16744448"},
                "segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
                                   "encryption": "aes-xts-plain64", "sector_size": 512}}}
    path = os.path.join(directory, "disk-luks2.luks")
    with open(path, "wb") as handle:
        for copy, offset in enumerate((0, hdr_size)):
            binary = bytearray(struct.pack(">6sHQQ48s32s64s40s48sQ", b"LUKS\xba\xbe" if copy == 0 else b"SKUL\xba\xbe",
                                           2, hdr_size, 1, b"", b"sha256", os.urandom(64),
                                           str(uuid.uuid4()).encode("ascii"), b"", offset)).ljust(4096, b"\x00")
            area = binary + json.dumps(metadata).encode("ascii").ljust(hdr_size - 4096, b"\x00")
            area[0x1C0:0x1C0 + 32] = hashlib.sha256(bytes(area)).digest()
            handle.write(area)
        handle.truncate(16 * MIB + 16 * MIB)
    return path


# (name, builder, expected substring of the UnsafeImageError message)
CORPUS: List[Tuple[str, Builder, str]] = [
    ("qcow2_backing_file", qcow2_backing_file, "backing file"),
    ("qcow2_data_file", qcow2_data_file, "external data file"),
    ("qcow2_data_file_bit_only", qcow2_data_file_bit_only, "whose data lives in an external data file"),
    ("qcow2_data_file_extension_only", qcow2_data_file_extension_only, "names an external data file '/etc/passwd'"),
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
    ("vmdk_footer_claims_10t", vmdk_footer_claims_10t, "virtual size of 10995116277760 bytes exceeds"),
    ("vmdk_footer_bad_marker", vmdk_footer_bad_marker, "streamOptimized footer is invalid (no footer marker"),
    ("vmdk_footer_bad_magic", vmdk_footer_bad_magic, "footer does not start with the KDMV magic"),
    ("vmdk_footer_without_end_of_stream", vmdk_footer_without_end_of_stream, "no end-of-stream marker"),
    ("vmdk_footer_version_4", vmdk_footer_version_4, "sparse extent version 4"),
    ("vmdk_footer_moves_descriptor", vmdk_footer_moves_descriptor, "the footer puts the descriptor at sector 7"),
    ("vmdk_footer_in_short_file", vmdk_footer_in_short_file, "too short to hold one"),
    ("vmdk_parent_hint_in_comment", vmdk_parent_hint_in_comment, "naming a parent ('/etc/shadow')"),
    ("vmdk_descriptor_without_extents", vmdk_descriptor_without_extents, "descriptor lists no extent"),
    ("vmdk_descriptor_with_binary_junk", vmdk_descriptor_with_binary_junk, "not a VMDK descriptor line"),
    ("vmdk_extent_of_two_gb_sparse", vmdk_extent_of_two_gb_sparse, "embedded VMDK descriptor is empty"),
    ("vmdk_unknown_compression", vmdk_unknown_compression, "unknown compression algorithm 7"),
    ("vmdk_truncated_before_grains", vmdk_truncated_before_grains, "the file is truncated"),
    ("qcow2_zstd_without_feature_bit", qcow2_zstd_without_feature_bit, "compression-type feature bit"),
    ("qcow2_extended_l2_small_clusters", qcow2_extended_l2_small_clusters, "extended L2 entries need clusters"),
    ("qcow2_long_backing_format", qcow2_long_backing_format, "backing-format header extension is 20 bytes"),
    ("qcow2_crypto_extension_without_luks", qcow2_crypto_extension_without_luks, "crypto header extension but"),
    ("qcow2_l1_one_entry_short", qcow2_l1_one_entry_short, "L1 table of 1 entries is too small"),
    ("qcow2_misaligned_snapshot_table", qcow2_misaligned_snapshot_table, "snapshot table at offset 1000"),
    ("qcow2_v2_with_data_file_extension", qcow2_v2_with_data_file_extension, "external data file '/etc/passwd'"),
    ("qcow_version_1", qcow_version_1_image, "version 1 is the old qcow format"),
    ("parallels", parallels_image, "Parallels image"),
    ("vhd_over_2040g", vhd_over_2040g, "exceeds VHD's limit"),
    ("vhd_footer_off_sector", vhd_footer_off_sector, "qemu reads the footer from the last whole sector"),
    ("vhd_block_past_the_end", vhd_block_past_the_end, "the image has been truncated"),
    ("vdi_link_uuid", vdi_link_uuid, "non-null link UUID"),
    ("vdi_block_size", vdi_block_size, "block size 2097152"),
    ("vdi_version", vdi_version, "version 1.0"),
    ("vhdx_dirty_log", vhdx_dirty_log, "log must be replayed"),
    ("vhdx_region_table_checksum", vhdx_region_table_checksum, "fails its checksum"),
    ("vhdx_block_size_too_small", vhdx_block_size_too_small, "block size 524288"),
    ("gpt_hybrid_mbr", gpt_hybrid_mbr, "a hybrid MBR"),
    ("gpt_protective_start_chs", gpt_protective_start_chs, "starts at CHS 00 01 00"),
    ("gpt_protective_start_lba", gpt_protective_start_lba, "starts at LBA 2 instead of 1"),
    ("gpt_protective_boot_flag", gpt_protective_boot_flag, "boot flag 0x7f"),
    ("gpt_protective_in_second_entry", gpt_protective_in_second_entry, "partition entries 1 are in use"),
    ("protective_mbr_without_gpt", protective_mbr_without_gpt, "no GPT header"),
]

# Encrypted images that are refused even with allow_luks (the image_cache module never allows LUKS, so these
# are checked by the inspector's tests, not through the module).
ENCRYPTED_CORPUS: List[Tuple[str, Builder, str]] = [
    ("luks2", luks2_image, "LUKS version 2; qemu reads LUKS version 1 only"),
    ("luks1_corrupt_key_slot", luks1_corrupt_key_slot, "key slot 0 is corrupted (stripes 0 != 4000)"),
    ("luks1_unsupported_cipher", luks1_unsupported_cipher, "cipher 'blowfish' with a 32-byte key"),
    ("luks1_payload_in_header", luks1_payload_in_header, "payload (sector 4) overlaps the header"),
]

# Extra inspect_file keywords per case; cases not listed use the defaults.
_INSPECT_OPTIONS: Dict[str, Dict[str, Any]] = {
    "qcow2_huge_virtual_size": {"max_virtual_size": 100 * GIB},
    "declared_raw_but_qcow2": {"declared_format": "raw"},
    "vmdk_footer_claims_10t": {"max_virtual_size": GIB},
    "luks2": {"allow_luks": True},
    "luks1_corrupt_key_slot": {"allow_luks": True},
    "luks1_unsupported_cipher": {"allow_luks": True},
    "luks1_payload_in_header": {"allow_luks": True},
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
    return created(directory, "dynamic.vhd", "vpc", "100M")


def vhd_fixed(directory: str) -> str:
    path = os.path.join(directory, "fixed.vhd")
    qemu_img("create", "-f", "vpc", "-o", "subformat=fixed", path, "32M")
    return path


def vhdx_image(directory: str) -> str:
    return created(directory, "disk.vhdx", "vhdx", "100M")


def vdi_image(directory: str) -> str:
    return created(directory, "disk.vdi", "vdi", "100M")


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


def mbr_entry(status: int, part_type: int, first_lba: int, sectors: int, start_chs: bytes = b"\x00\x02\x00") -> bytes:
    """One 16-byte MBR partition entry."""
    return struct.pack("<B3sB3sII", status, start_chs, part_type, b"\xff\xff\xff", first_lba, sectors)


def write_gpt_disk(path: str, size: int = 8 * MIB, mbr_entries: Any = None, sector: int = 512) -> str:
    """A raw disk with a protective MBR and a complete GPT (primary and backup) holding one partition.

    ``mbr_entries`` replaces the protective MBR's four entries (hybrid or malformed variants); ``sector`` 4096
    writes a 4Kn disk (GPT header at byte 4096).
    """
    total = size // sector
    entries = bytearray(128 * 128)
    linux_fs = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4").bytes_le
    name = "root".encode("utf-16-le")
    entry_sectors = len(entries) // sector
    first, last = 2 + entry_sectors, total - 2 - entry_sectors
    entries[0:128] = (linux_fs + uuid.uuid4().bytes_le + struct.pack("<QQQ", first, last, 0)
                      + name + b"\x00" * (72 - len(name)))
    entries_crc = zlib.crc32(bytes(entries)) & 0xFFFFFFFF
    disk_guid = uuid.uuid4().bytes_le

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = [b"EFI PART", 0x00010000, 92, 0, 0, current, backup, first, last, disk_guid, entries_lba,
                  128, 128, entries_crc]
        raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        fields[3] = zlib.crc32(raw) & 0xFFFFFFFF
        return struct.pack("<8sIIIIQQQQ16sQIII", *fields)

    mbr = bytearray(512)
    for index, entry in enumerate(mbr_entries or [mbr_entry(0, 0xEE, 1, min(total - 1, 0xFFFFFFFF))]):
        mbr[446 + 16 * index:462 + 16 * index] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.write(bytes(mbr).ljust(sector, b"\x00"))
        handle.write(header(1, total - 1, 2).ljust(sector, b"\x00"))
        handle.write(bytes(entries))
        handle.seek((total - 1 - entry_sectors) * sector)
        handle.write(bytes(entries))
        handle.write(header(total - 1, 1, total - 1 - entry_sectors).ljust(sector, b"\x00"))
    return path


def gpt_image(directory: str) -> str:
    """A raw disk with a protective MBR and a complete GPT (primary and backup) holding one partition."""
    return write_gpt_disk(os.path.join(directory, "gpt.raw"))


def mbr_image(directory: str) -> str:
    path = os.path.join(directory, "mbr.raw")
    mbr = bytearray(512)
    mbr[446:462] = mbr_entry(0x80, 0x83, 2048, 6144)
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
    ("vmdk_stream_footer", vmdk_stream_footer, "vmdk", "vmdk"),
    ("qcow2_odd_virtual_size", qcow2_odd_virtual_size, "qcow2", "qcow2"),
    ("vdi_odd_disk_size", vdi_odd_disk_size, "vdi", "vdi"),
    ("vhd_made_by_hyperv", vhd_made_by_hyperv, "vhd", "vpc"),
    ("vhd_made_by_virtual_pc", vhd_made_by_virtual_pc, "vhd", "vpc"),
    ("vhd_at_maximum_geometry", vhd_at_maximum_geometry, "vhd", "vpc"),
]


def build(name: str, directory: str) -> str:
    """Build corpus or valid case ``name`` in ``directory`` and return its path."""
    for case in CORPUS + ENCRYPTED_CORPUS:
        if case[0] == name:
            return case[1](directory)
    for valid in VALID:
        if valid[0] == name:
            return valid[1](directory)
    raise KeyError(name)
