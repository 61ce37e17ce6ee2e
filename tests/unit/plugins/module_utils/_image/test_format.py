"""The image inspector against real qemu-img-made images and a corpus of crafted hostile ones."""

import atexit
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format as image_format
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format import (
    INSPECTOR_VERSION, QEMU_FORMAT_NAMES, ImageInspection, UnsafeImageError, detect_format, inspect_file,
)
from tests.support import hostile_images
from tests.support.hostile_images import CORPUS, ENCRYPTED_CORPUS, VALID, inspect_options

GIB = 1024 ** 3


def qemu_info(path, fmt):
    """What the real qemu-img says, always with an explicit format."""
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", fmt, path], check=True,
                         capture_output=True, text=True, env=dict(os.environ, LC_ALL="C")).stdout
    return json.loads(out)


@pytest.fixture(scope="session", autouse=True)
def _need_qemu_img():
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is required for the image inspector tests (apt-get install qemu-utils)")


def test_public_constants():
    assert isinstance(INSPECTOR_VERSION, int) and INSPECTOR_VERSION >= 1
    assert QEMU_FORMAT_NAMES == {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx",
                                 "vdi": "vdi", "qed": "qed", "luks": "luks", "iso": "raw", "gpt": "raw",
                                 "mbr": "raw"}
    assert issubclass(UnsafeImageError, VirtfleetError)


def test_corpus_is_large_enough_and_names_are_unique():
    names = [case[0] for case in CORPUS]
    assert len(names) >= 12
    assert len(set(names)) == len(names)
    assert all(len(case) == 3 for case in CORPUS)


@pytest.mark.parametrize("name,builder,expected", CORPUS + ENCRYPTED_CORPUS,
                         ids=[case[0] for case in CORPUS + ENCRYPTED_CORPUS])
def test_hostile_image_is_refused_with_reason(tmp_path, name, builder, expected):
    path = builder(str(tmp_path))
    with pytest.raises(UnsafeImageError, match=re.escape(expected)) as caught:
        inspect_file(path, **inspect_options(name))
    message = caught.value.msg
    assert expected in message
    assert path in message  # names the file
    assert caught.value.reason and caught.value.reason in message
    assert message.count("; ") >= 1  # says what to do after the reason
    assert caught.value.details["path"] == path


@pytest.mark.parametrize("name,builder,expected", [c for c in CORPUS if c[0].startswith(("qcow2_backing",
                                                                                         "qcow2_data"))],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_references_refused_even_when_declared_as_their_own_format(tmp_path, name, builder, expected):
    path = builder(str(tmp_path))
    with pytest.raises(UnsafeImageError, match=expected):
        inspect_file(path, declared_format="qcow2")


def test_backing_file_threat_is_real_for_qemu(tmp_path):
    """qemu itself would follow the crafted reference: the corpus tests the real attack, not a strawman."""
    path = hostile_images.qcow2_backing_file(str(tmp_path))
    assert qemu_info(path, "qcow2")["backing-filename"] == "/etc/passwd"


@pytest.mark.parametrize("name,builder,fmt,qemu_fmt", VALID, ids=[case[0] for case in VALID])
def test_valid_image_detected_with_qemu_virtual_size(tmp_path, name, builder, fmt, qemu_fmt):
    path = builder(str(tmp_path))
    assert detect_format(path) == fmt
    inspection = inspect_file(path)
    assert isinstance(inspection, ImageInspection)
    assert inspection.format == fmt
    assert QEMU_FORMAT_NAMES[inspection.format] == qemu_fmt
    assert inspection.virtual_size == qemu_info(path, qemu_fmt)["virtual-size"]
    st = os.stat(path)
    assert inspection.file_size == st.st_size
    assert inspection.actual_size == st.st_blocks * 512
    # Declaring the real format is accepted too.
    assert inspect_file(path, declared_format=fmt).format == fmt


@pytest.mark.parametrize("builder,table", [(hostile_images.gpt_image, "gpt"), (hostile_images.mbr_image, "mbr"),
                                           (hostile_images.raw_image, None)])
def test_declared_raw_with_partition_table_reports_raw(tmp_path, builder, table):
    inspection = inspect_file(builder(str(tmp_path)), declared_format="raw")
    assert inspection.format == "raw"
    assert inspection.partition_table == table
    assert inspection.details["detected_format"] == (table or "raw")


def test_iso_declared_raw_or_iso_is_accepted(tmp_path):
    path = hostile_images.iso_image(str(tmp_path))
    assert inspect_file(path, declared_format="raw").format == "raw"
    assert inspect_file(path, declared_format="iso").format == "iso"


def test_declared_iso_but_plain_raw_is_refused(tmp_path):
    path = hostile_images.raw_image(str(tmp_path))
    with pytest.raises(UnsafeImageError, match="declared as iso but its content is raw"):
        inspect_file(path, declared_format="iso")


def test_declared_qcow2_but_raw_is_refused(tmp_path):
    path = hostile_images.raw_image(str(tmp_path))
    with pytest.raises(UnsafeImageError, match="declared as qcow2 but its content is raw"):
        inspect_file(path, declared_format="qcow2")


@pytest.mark.parametrize("builder,content", [(hostile_images.vmdk_monolithic_sparse, "vmdk"),
                                             (hostile_images.vhd_dynamic, "vhd"),
                                             (hostile_images.vdi_image, "vdi"),
                                             (hostile_images.vhdx_image, "vhdx")])
def test_declared_raw_but_other_container_is_refused(tmp_path, builder, content):
    with pytest.raises(UnsafeImageError, match="declared as raw but its content is %s" % content):
        inspect_file(builder(str(tmp_path)), declared_format="raw")


def test_qemu_driver_name_accepted_as_declaration(tmp_path):
    path = hostile_images.vhd_fixed(str(tmp_path))
    assert inspect_file(path, declared_format="vpc").format == "vhd"


def test_unknown_declared_format_is_an_error(tmp_path):
    path = hostile_images.raw_image(str(tmp_path))
    with pytest.raises(VirtfleetError, match="unknown image format 'floppy'"):
        inspect_file(path, declared_format="floppy")


def test_luks_accepted_only_when_allowed(tmp_path):
    path = hostile_images.luks_image(str(tmp_path))
    assert detect_format(path) == "luks"
    with pytest.raises(UnsafeImageError, match="allow_luks"):
        inspect_file(path)
    inspection = inspect_file(path, allow_luks=True)
    assert inspection.format == "luks"
    assert inspection.virtual_size == 16 * 1024 * 1024


def test_max_virtual_size_applies_to_raw(tmp_path):
    path = hostile_images.raw_image(str(tmp_path))
    assert inspect_file(path, max_virtual_size=16 * 1024 * 1024).virtual_size == 16 * 1024 * 1024
    with pytest.raises(UnsafeImageError, match="exceeds the allowed maximum of 1048576 bytes"):
        inspect_file(path, max_virtual_size=1024 * 1024)


def test_qcow2_details_are_reported(tmp_path):
    inspection = inspect_file(hostile_images.qcow2_v2(str(tmp_path)))
    assert inspection.details["qcow2_version"] == 2
    assert inspection.details["cluster_bits"] == 16
    assert inspection.partition_table is None


def test_vmdk_details_are_reported(tmp_path):
    assert inspect_file(hostile_images.vmdk_stream_optimized(str(tmp_path))).details["create_type"] == \
        "streamOptimized"


def test_large_sparse_file_inspects_fast_reading_only_headers(tmp_path, bytes_read):
    path = tmp_path / "big.raw"
    with open(path, "wb") as handle:
        handle.truncate(10 * GIB)
    read_bytes = bytes_read
    started = time.monotonic()
    inspection = inspect_file(str(path))
    elapsed = time.monotonic() - started
    assert inspection.format == "raw"
    assert inspection.virtual_size == 10 * GIB
    assert inspection.actual_size < 1024 * 1024
    assert sum(read_bytes) <= 128 * 1024
    assert elapsed < 0.5


def test_polyglot_detection_raises_in_detect_format_too(tmp_path):
    path = hostile_images.polyglot_qcow2_vhd(str(tmp_path))
    with pytest.raises(UnsafeImageError, match=r"several formats at once \(qcow2, vhd\)"):
        detect_format(path)


def test_text_vmdk_descriptor_detected_after_comments(tmp_path):
    path = tmp_path / "desc.vmdk"
    path.write_text("# Disk DescriptorFile\n\n# another comment\nversion=1\ncreateType=\"vmfs\"\n"
                    "RW 100 VMFS \"/dev/sda\"\n")
    assert detect_format(str(path)) == "vmdk"
    with pytest.raises(UnsafeImageError, match="'/dev/sda'"):
        inspect_file(str(path))


def test_text_that_merely_mentions_vmdk_is_raw(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a disk\nversion=1\n")
    assert detect_format(str(path)) == "raw"


def test_tiny_and_empty_files_are_raw(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"QF")
    assert inspect_file(str(empty)).virtual_size == 0
    assert detect_format(str(tiny)) == "raw"


def test_qcow2_magic_in_a_two_byte_short_file_is_refused(tmp_path):
    path = tmp_path / "short.qcow2"
    path.write_bytes(b"QFI\xfb")
    with pytest.raises(UnsafeImageError, match="shorter than a qcow2 header"):
        inspect_file(str(path))


def test_directory_is_refused(tmp_path):
    with pytest.raises(UnsafeImageError, match="not a regular file"):
        inspect_file(str(tmp_path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(VirtfleetError, match="cannot open image .*missing"):
        inspect_file(str(tmp_path / "missing"))


def test_qcow2_dirty_bit_is_tolerated(tmp_path):
    """A dirty (lazy refcounts) image is only in need of a refcount rebuild, not dangerous."""
    path = hostile_images.qcow2_v3(str(tmp_path))
    hostile_images.patch(path, 72, (1).to_bytes(8, "big"))
    assert inspect_file(path).details["incompatible_features"] == 1


def test_inspector_module_has_no_qemu_img_dependency():
    """Inspection happens before qemu-img may run; the module must not call it."""
    with open(image_format.__file__, encoding="utf-8") as handle:
        source = handle.read()
    assert "subprocess" not in source and "qemu_img" not in source


# --- fuzzing: any bytes after any magic give a verdict, never a crash -------------------------------

MAGICS = [b"QFI\xfb\x00\x00\x00\x03", b"QFI\xfb\x00\x00\x00\x02", b"KDMV\x01\x00\x00\x00", b"COWD", b"conectix",
          b"vhdxfile", b"LUKS\xba\xbe\x00\x01", b"LUKS\xba\xbe\x00\x02", b"QED\x00",
          b"# Disk DescriptorFile\nversion=1\n",
          b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(0x40, b"\x00") + b"\x7f\x10\xda\xbe", b""]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=2048), pad=st.integers(0, 300000),
       tail=st.binary(max_size=600))
def test_arbitrary_headers_never_crash_the_inspector(tmp_path, magic, body, pad, tail):
    path = tmp_path / "fuzz.img"
    with open(path, "wb") as handle:
        handle.write(magic + body)
        if pad:
            handle.seek(len(magic) + len(body) + pad)
            handle.write(tail)
    try:
        inspection = inspect_file(str(path), allow_luks=True)
    except UnsafeImageError:
        return
    assert inspection.virtual_size >= 0
    assert inspection.file_size == os.path.getsize(path)


_PRISTINE = {}


def _pristine(name):
    """One qemu-img-made image per format, built once per test run, to mutate."""
    if name not in _PRISTINE:
        directory = tempfile.mkdtemp(prefix="virtfleet-fuzz-")
        atexit.register(shutil.rmtree, directory, True)
        _PRISTINE[name] = hostile_images.build(name, directory)
    return _PRISTINE[name]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["qcow2_v3", "qcow2_v2", "vmdk_stream_optimized", "vmdk_monolithic_sparse",
                             "vhd_dynamic", "vhdx", "vdi", "gpt"]),
       edits=st.lists(st.tuples(st.integers(0, 300 * 1024), st.binary(min_size=1, max_size=8)), min_size=1,
                      max_size=6))
def test_mutated_real_headers_never_crash_the_inspector(tmp_path, name, edits):
    path = str(tmp_path / "mutated")
    shutil.copyfile(_pristine(name), path)
    size = os.path.getsize(path)
    for offset, data in edits:
        hostile_images.patch(path, offset % max(size, 1), data)
    try:
        inspection = inspect_file(path)
    except UnsafeImageError:
        return
    assert inspection.virtual_size >= 0
    assert inspection.format in QEMU_FORMAT_NAMES


# --- issue 10 items 16-19: what qemu reads -------------------------------------------------------------------

def test_raw_file_of_odd_length_is_sized_in_whole_sectors_as_qemu_does(tmp_path):
    path = tmp_path / "odd.raw"
    path.write_bytes(b"\x01" * 1000)
    assert inspect_file(str(path)).virtual_size == qemu_info(str(path), "raw")["virtual-size"] == 1024


def test_footer_capacity_is_the_virtual_size_and_meets_the_limit(tmp_path):
    """Item 16: the header says 5 MiB, the footer qemu uses says 10 TiB; the limit applies to 10 TiB."""
    path = hostile_images.vmdk_footer_claims_10t(str(tmp_path))
    inspection = inspect_file(path)
    assert inspection.virtual_size == 10 * 1024 ** 4 == qemu_info(path, "vmdk")["virtual-size"]
    assert inspection.details["header_capacity_sectors"] == 5 * 2048
    with pytest.raises(UnsafeImageError, match="virtual size of 10995116277760 bytes exceeds the allowed maximum"):
        inspect_file(path, max_virtual_size=GIB)


def test_vmdk_parent_named_only_in_a_comment_is_a_backing_file(tmp_path):
    path = hostile_images.vmdk_parent_hint_in_comment(str(tmp_path))
    assert qemu_info(path, "vmdk")["backing-filename"] == "/etc/shadow"  # the threat is real for qemu
    with pytest.raises(UnsafeImageError, match="comments included") as caught:
        inspect_file(path, declared_format="vmdk")
    assert caught.value.details["backing_file"] == "/etc/shadow"


def test_no_refusal_names_an_empty_list_of_extents(tmp_path):
    """Item 18: a malformed descriptor is refused for what is wrong with it, not for naming '()'."""
    for builder in (hostile_images.vmdk_descriptor_without_extents, hostile_images.vmdk_extent_of_two_gb_sparse,
                    hostile_images.vmdk_descriptor_with_binary_junk):
        with pytest.raises(UnsafeImageError, match="^refusing image ") as caught:
            inspect_file(builder(str(tmp_path)))
        assert "()" not in caught.value.msg and "other than itself" not in caught.value.msg


def test_vmdk_descriptor_file_without_create_type_says_so(tmp_path):
    path = tmp_path / "desc.vmdk"
    path.write_text("# Disk DescriptorFile\nversion=1\nCID=12345678\n")
    with pytest.raises(UnsafeImageError, match="descriptor file without a createType, which qemu refuses"):
        inspect_file(str(path))
    path.write_text('# Disk DescriptorFile\nversion=1\ncreateType="custom"\nRW 100 FLAT "x" 0\n')
    with pytest.raises(UnsafeImageError, match="createType 'custom', which qemu does not open"):
        inspect_file(str(path))
    path.write_text('# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRDONLY 100 FLAT "x" 0\n')
    with pytest.raises(UnsafeImageError, match="names no extent qemu would read"):
        inspect_file(str(path))


def test_luks2_is_refused_even_when_luks_is_allowed(tmp_path):
    """Item 18: qemu 7.2 opens LUKS1 only; a LUKS2 image passed with allow_luks would fail in qemu-img later."""
    path = hostile_images.luks2_image(str(tmp_path))
    assert detect_format(path) == "luks"
    with pytest.raises(UnsafeImageError, match="encrypted images were not allowed"):
        inspect_file(path)
    with pytest.raises(UnsafeImageError, match=r"LUKS version 2; qemu reads LUKS version 1 only.*cryptsetup convert"):
        inspect_file(path, allow_luks=True)


def _boot_sector(oem: bytes, bpb: bytes = b"", entries: bytes = b"") -> bytes:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x52\x90"
    sector[3:11] = oem
    sector[11:11 + len(bpb)] = bpb
    sector[446:446 + len(entries)] = entries
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


@pytest.mark.parametrize("filesystem,sector", [
    ("ntfs", _boot_sector(b"NTFS    ", entries=b"\x33\xc0\x8e\xd0\xbc\x00\x7c\xfb" * 8)),
    ("exfat", _boot_sector(b"EXFAT   ", entries=b"\xf4" * 64)),
    ("fat", _boot_sector(b"MSWIN4.1", struct.pack("<HBHBHHBH", 512, 8, 32, 2, 0, 0, 0xF8, 0),
                         hostile_images.mbr_entry(0x80, 0x0C, 0, 65536))),
    ("fat", _boot_sector(b"mkfs.fat", struct.pack("<HBHBHHBH", 512, 1, 1, 2, 224, 2880, 0xF0, 9))),
])
def test_whole_disk_filesystem_boot_sector_is_raw_not_a_partition_table(tmp_path, filesystem, sector):
    """Item 17: FAT, NTFS and exFAT boot sectors end with 55 AA too, and their boot code fills the MBR's table."""
    path = tmp_path / "fs.img"
    path.write_bytes(sector + b"\x00" * (4 * 1024 * 1024 - 512))
    inspection = inspect_file(str(path))
    assert (inspection.format, inspection.partition_table) == ("raw", None)
    assert inspection.details["filesystem"] == filesystem


def test_fifty_five_aa_sector_that_is_no_mbr_is_raw(tmp_path):
    """Boot code ending in 55 AA whose 'entries' are no MBR's (flags other than 0x00/0x80) and no 0xEE: raw, as
    qemu reads it (Nova's inspector refuses these; a filesystem we do not know would be among them)."""
    path = tmp_path / "bootcode.img"
    path.write_bytes(_boot_sector(b"\x00" * 8, entries=bytes(range(1, 65))) + b"\x00" * (1024 * 1024 - 512))
    inspection = inspect_file(str(path))
    assert (inspection.format, inspection.partition_table, inspection.details.get("filesystem")) == ("raw", None,
                                                                                                     None)


def test_mbr_entry_of_a_filesystem_boot_sector_made_by_mkfs_vfat_is_raw(tmp_path):
    path = tmp_path / "fat.img"
    with open(path, "wb") as handle:
        handle.truncate(33 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", "--mbr=y", str(path)], check=True, capture_output=True)
    assert path.read_bytes()[446 + 4] == 0x06  # mkfs.vfat did write a partition entry
    inspection = inspect_file(str(path))
    assert inspection.format == "raw" and inspection.partition_table is None
    assert inspection.details["filesystem"] == "fat"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["vmdk_stream_footer", "luks", "vhd_fixed", "gpt", "mbr", "qcow2_v3"]),
       edits=st.lists(st.tuples(st.integers(0, 2048), st.binary(min_size=1, max_size=8), st.booleans()),
                      min_size=1, max_size=6))
def test_mutated_footers_and_headers_never_crash_the_inspector(tmp_path, name, edits):
    """Edits near either end of real images: footers, protective MBRs and LUKS key slots give a verdict."""
    path = str(tmp_path / "mutated")
    shutil.copyfile(_pristine(name), path)
    size = os.path.getsize(path)
    for offset, data, from_end in edits:
        hostile_images.patch(path, max(0, size - 1 - offset) if from_end else offset % max(size, 1), data)
    try:
        inspection = inspect_file(path, allow_luks=True)
    except UnsafeImageError:
        return
    assert inspection.virtual_size >= 0
    assert inspection.format in QEMU_FORMAT_NAMES


# --- every refusal of the corpus, word for word ----------------------------------------------------------------

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_refusals.json"), encoding="utf-8") as _f:
    CORPUS_REFUSALS = json.load(_f)


def test_every_corpus_case_has_its_refusal_written_down():
    assert sorted(CORPUS_REFUSALS) == sorted(case[0] for case in CORPUS + ENCRYPTED_CORPUS)


@pytest.mark.parametrize("name,builder,_expected", CORPUS + ENCRYPTED_CORPUS,
                         ids=[case[0] for case in CORPUS + ENCRYPTED_CORPUS])
def test_the_refusal_says_what_and_what_to_do_word_for_word(tmp_path, name, builder, _expected):
    """corpus_refusals.json holds each message (the file's path as <path>): the reason and the advice a user reads
    are part of the behaviour, and a change to them shows up here for review."""
    path = builder(str(tmp_path))
    with pytest.raises(UnsafeImageError, match="^refusing image ") as caught:
        inspect_file(path, **inspect_options(name))
    assert caught.value.msg.replace(path, "<path>") == CORPUS_REFUSALS[name]
