"""The image inspector against the host's own qemu-img (issue 10 item 19).

Every format and subformat qemu-img can create here, at several sizes, is detected as the format qemu-img was
asked to write and sized exactly as ``qemu-img info -f <driver>`` sizes it; the formats and subformats this
collection does not accept are refused, each with its reason. Raw layouts (ISO images from genisoimage and
pycdlib, GPT and MBR disks, whole-disk filesystems) are raw to qemu and sized as the file. Every crafted variant
of the corpus in tests/support/hostile_images.py is refused as it expects, and qemu-img's own view of the same
file is pinned: where qemu refuses it too, qemu's reason; where qemu opens it, what qemu would have done with it
(the backing file it follows, the size it reports), which is why the inspector refuses it.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format import (
    QEMU_FORMAT_NAMES, UnsafeImageError, detect_format, inspect_file,
)
from tests.support import hostile_images
from tests.support.hostile_images import CORPUS, ENCRYPTED_CORPUS, inspect_options

CRAFTED = CORPUS + ENCRYPTED_CORPUS

MIB = 1024 * 1024
SIZES = ["1M", "100000000", "10G"]  # tiny, not a multiple of any geometry, large and sparse
SECRET = ["--object", "secret,id=sec0,data=virtfleet"]


@pytest.fixture(scope="module", autouse=True)
def _need_tools():
    missing = [tool for tool in ("qemu-img", "genisoimage", "mkfs.vfat", "mkfs.ext4", "mkfs.xfs")
               if shutil.which(tool) is None]
    if missing:
        pytest.fail("the inspector's qemu-img matrix needs %s (apt-get install qemu-utils genisoimage dosfstools "
                    "e2fsprogs xfsprogs)" % ", ".join(missing))


def qemu_img(*args):
    proc = subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True, check=False, timeout=120,
                          env=dict(os.environ, LC_ALL="C"))
    return proc.returncode, proc.stdout, proc.stderr.strip()


def qemu_info(path, driver):
    """qemu-img's view of a file, with the format given: (info dict, None) or (None, error message)."""
    code, out, err = qemu_img("info", "-U", "--output=json", "-f", driver, path)
    return (json.loads(out), None) if code == 0 else (None, err)


def create(directory, driver, options, size, name=None):
    path = os.path.join(directory, name or "disk.%s" % driver)
    args = ["create", "-q", "-f", driver] + (["-o", ",".join(options)] if options else []) + [path, size]
    code, _out, err = qemu_img(*args)
    assert code == 0, "qemu-img %s failed: %s" % (" ".join(args), err)
    return path


def assert_matches_qemu(path, fmt, **inspect_kwargs):
    """The inspector's format and virtual size are qemu-img's, and its reads stay bounded."""
    info, error = qemu_info(path, QEMU_FORMAT_NAMES[fmt])
    assert error is None, error
    assert detect_format(path) == fmt
    inspection = inspect_file(path, **inspect_kwargs)
    assert inspection.format == fmt
    assert inspection.virtual_size == info["virtual-size"]
    assert inspect_file(path, declared_format=fmt, **inspect_kwargs).virtual_size == info["virtual-size"]
    return inspection


# --- every format and subformat qemu-img can create and the collection accepts ------------------------

ACCEPTED = [
    # (id, qemu-img driver, -o options, our format name)
    ("raw", "raw", [], "raw"),
    ("qcow2-v2", "qcow2", ["compat=0.10"], "qcow2"),
    ("qcow2-v3", "qcow2", ["compat=1.1"], "qcow2"),
    ("qcow2-512-byte-clusters", "qcow2", ["cluster_size=512"], "qcow2"),
    ("qcow2-2M-clusters", "qcow2", ["cluster_size=2M"], "qcow2"),
    ("qcow2-extended-l2", "qcow2", ["extended_l2=on"], "qcow2"),
    ("qcow2-extended-l2-16k-clusters", "qcow2", ["extended_l2=on", "cluster_size=16k"], "qcow2"),
    ("qcow2-zstd", "qcow2", ["compression_type=zstd"], "qcow2"),
    ("qcow2-refcount-1-bit", "qcow2", ["refcount_bits=1"], "qcow2"),
    ("qcow2-refcount-64-bits", "qcow2", ["refcount_bits=64"], "qcow2"),
    ("qcow2-lazy-refcounts", "qcow2", ["lazy_refcounts=on"], "qcow2"),
    ("qcow2-metadata-preallocated", "qcow2", ["preallocation=metadata"], "qcow2"),
    ("vmdk-monolithicSparse", "vmdk", ["subformat=monolithicSparse"], "vmdk"),
    ("vmdk-streamOptimized", "vmdk", ["subformat=streamOptimized"], "vmdk"),
    ("vmdk-compat6-lsilogic", "vmdk", ["compat6=on", "adapter_type=lsilogic"], "vmdk"),
    ("vmdk-zeroed-grain", "vmdk", ["zeroed_grain=on"], "vmdk"),
    ("vhd-dynamic", "vpc", ["subformat=dynamic"], "vhd"),
    ("vhd-fixed", "vpc", ["subformat=fixed"], "vhd"),
    ("vhd-dynamic-force-size", "vpc", ["subformat=dynamic", "force_size=on"], "vhd"),
    ("vhd-fixed-force-size", "vpc", ["subformat=fixed", "force_size=on"], "vhd"),
    ("vhdx-dynamic", "vhdx", ["subformat=dynamic"], "vhdx"),
    ("vhdx-fixed", "vhdx", ["subformat=fixed"], "vhdx"),
    ("vhdx-1M-blocks", "vhdx", ["block_size=1M"], "vhdx"),
    ("vhdx-256M-blocks", "vhdx", ["block_size=256M"], "vhdx"),
    ("vdi-dynamic", "vdi", [], "vdi"),
    ("vdi-static", "vdi", ["static=on"], "vdi"),
]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case_id,driver,options,fmt", ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_created_image_is_read_as_qemu_img_reads_it(tmp_path, case_id, driver, options, fmt, size, bytes_read):
    path = create(str(tmp_path), driver, options, size)
    read_bytes = bytes_read
    inspection = assert_matches_qemu(path, fmt)
    # Headers only, never data: each of the three inspections above reads its 64 KiB head, then at most a
    # qcow2 cluster (up to 2 MiB) or a VHDX's two 4 KiB headers and two 64 KiB tables, whatever the size.
    assert sum(read_bytes) <= 3 * (64 * 1024 + max(2 * MIB if fmt == "qcow2" else 0, 256 * 1024)), case_id
    if fmt == "qcow2":
        assert inspection.details["extended_l2"] == ("extended_l2=on" in options)
        assert inspection.details.get("compression_type", "zlib") == (
            "zstd" if "compression_type=zstd" in options else "zlib")


# qemu sizes its PBKDF by timing a first run on the thread's CPU clock and gives up when that clock shows no time
# spent (on a loaded machine); iter-time only scales the count that timing finds, so it cannot avoid it.
PBKDF_TIMING_FAILURE = "Unable to get accurate CPU usage"
PBKDF_TIMING_ATTEMPTS = 5


def create_encrypted(*args):
    """``qemu-img create`` of a LUKS image, tried again (a bounded number of times) on that timing failure only."""
    for _attempt in range(PBKDF_TIMING_ATTEMPTS):
        code, out, err = qemu_img("create", "-q", *SECRET, *args)
        if code == 0 or PBKDF_TIMING_FAILURE not in err:
            break
    return code, out, err


def test_luks_images_qemu_img_writes_are_read_as_it_reads_them(tmp_path):
    """qemu-img's LUKS (always LUKS1) and LUKS-encrypted qcow2: refused unless allowed, then sized as qemu-img."""
    luks = str(tmp_path / "disk.luks")
    # A short iter-time: the key derivation it sets runs on every create, and only the headers matter here.
    code, _out, err = create_encrypted("-f", "luks", "-o", "key-secret=sec0,iter-time=10", luks, "100000000")
    assert code == 0, err
    encrypted = str(tmp_path / "encrypted.qcow2")
    code, _out, err = create_encrypted("-f", "qcow2", "-o",
                                       "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
                                       encrypted, "3G")
    assert code == 0, err
    for path, fmt in ((luks, "luks"), (encrypted, "qcow2")):
        with pytest.raises(UnsafeImageError, match="encrypted images were not allowed"):
            inspect_file(path)
        inspection = assert_matches_qemu(path, fmt, allow_luks=True)
    assert inspection.details["encrypted"] is True


def _source_raw(directory):
    path = os.path.join(directory, "source.raw")
    with open(path, "wb") as handle:
        handle.write(os.urandom(3 * MIB) + b"\x00" * MIB + b"virtfleet" * 100000)
        handle.truncate(40 * MIB)
    return path


def _converted(directory, driver, *options):
    path = os.path.join(directory, "converted.%s" % driver)
    code, _out, err = qemu_img("convert", "-f", "raw", "-O", driver, *options, _source_raw(directory), path)
    assert code == 0, err
    return path


def _qcow2_with_bitmap_and_snapshot(directory):
    path = create(directory, "qcow2", [], "100M")
    for args in (("bitmap", "--add", path, "dirty0"), ("snapshot", "-c", "before", path)):
        code, _out, err = qemu_img(*args)
        assert code == 0, err
    return path


WRITTEN = [
    # (id, builder(directory), our format) -- images qemu-img wrote with data, not just created empty
    ("qcow2-converted", lambda d: _converted(d, "qcow2"), "qcow2"),
    ("qcow2-compressed-zlib", lambda d: _converted(d, "qcow2", "-c"), "qcow2"),
    ("qcow2-compressed-zstd", lambda d: _converted(d, "qcow2", "-c", "-o", "compression_type=zstd"), "qcow2"),
    ("qcow2-bitmap-and-snapshot", _qcow2_with_bitmap_and_snapshot, "qcow2"),
    ("vmdk-streamOptimized-converted", lambda d: _converted(d, "vmdk", "-o", "subformat=streamOptimized"), "vmdk"),
    ("vmdk-monolithicSparse-converted", lambda d: _converted(d, "vmdk"), "vmdk"),
    ("vhd-converted", lambda d: _converted(d, "vpc"), "vhd"),
    ("vhdx-converted", lambda d: _converted(d, "vhdx"), "vhdx"),
    ("vdi-converted", lambda d: _converted(d, "vdi"), "vdi"),
]


@pytest.mark.parametrize("case_id,builder,fmt", WRITTEN, ids=[case[0] for case in WRITTEN])
def test_image_written_by_qemu_img_is_read_as_qemu_img_reads_it(tmp_path, case_id, builder, fmt):
    path = builder(str(tmp_path))
    assert_matches_qemu(path, fmt)
    code, out, err = qemu_img("compare", "-f", QEMU_FORMAT_NAMES[fmt], "-F", "raw", path,
                              str(tmp_path / "source.raw")) if "converted" in path else (0, "", "")
    assert code == 0, out + err


def test_qemu_img_overlay_and_external_data_file_are_refused(tmp_path):
    base = create(str(tmp_path), "raw", [], "16M", name="base.raw")
    overlay = str(tmp_path / "overlay.qcow2")
    code, _out, err = qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay)
    assert code == 0, err
    with pytest.raises(UnsafeImageError, match=r"qcow2 overlay with a backing file \('%s'\)" % base):
        inspect_file(overlay)
    external = create(str(tmp_path), "qcow2", ["data_file=%s" % (tmp_path / "data.raw")], "16M",
                      name="external.qcow2")
    with pytest.raises(UnsafeImageError, match="external data file"):
        inspect_file(external)


REFUSED = [
    # (id, qemu-img driver, -o options, file to inspect (None: the one created), expected refusal)
    ("qed", "qed", [], None, "it is a QED image"),
    ("qcow-version-1", "qcow", [], None, "qcow2 version 1 is not supported"),
    ("parallels", "parallels", [], None, "it is a Parallels image"),
    ("vmdk-monolithicFlat", "vmdk", ["subformat=monolithicFlat"], None,
     "VMDK descriptor file (createType monolithicFlat) that makes qemu open other files: 'disk-flat.vmdk'"),
    ("vmdk-twoGbMaxExtentSparse", "vmdk", ["subformat=twoGbMaxExtentSparse"], None,
     "VMDK descriptor file (createType twoGbMaxExtentSparse) that makes qemu open other files: 'disk-s001.vmdk'"),
    ("vmdk-twoGbMaxExtentFlat", "vmdk", ["subformat=twoGbMaxExtentFlat"], None,
     "VMDK descriptor file (createType twoGbMaxExtentFlat) that makes qemu open other files: 'disk-f001.vmdk'"),
    ("vmdk-twoGbMaxExtentSparse-extent", "vmdk", ["subformat=twoGbMaxExtentSparse"], "disk-s001.vmdk",
     "its embedded VMDK descriptor is empty (it is one extent of a multi-file VMDK"),
]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case_id,driver,options,inspected,reason", REFUSED, ids=[case[0] for case in REFUSED])
def test_created_image_of_a_refused_kind_is_refused(tmp_path, case_id, driver, options, inspected, reason, size):
    path = create(str(tmp_path), driver, options, size, name="disk.vmdk" if driver == "vmdk" else None)
    if inspected:
        path = str(tmp_path / inspected)
    with pytest.raises(UnsafeImageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        inspect_file(path)
    # qemu-img opens all but the lone extent (which lacks the CID qemu reads); the refusals are ours.
    info, error = qemu_info(path, driver)
    if case_id.endswith("-extent"):
        assert info is None and "Invalid argument" in error
    else:
        assert error is None and info["virtual-size"] > 0


# --- raw layouts: ISO, GPT, MBR, whole-disk filesystems -------------------------------------------------

def _genisoimage(directory, payload):
    content = os.path.join(directory, "content")
    os.makedirs(content)
    with open(os.path.join(content, "meta_data.json"), "wb") as handle:
        handle.write(payload)
    path = os.path.join(directory, "config.iso")
    subprocess.run(["genisoimage", "-quiet", "-o", path, "-V", "config-2", "-r", "-J", content], check=True,
                   capture_output=True, timeout=60)
    return path


def _pycdlib_iso(directory, payload):
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, joliet=3, rock_ridge="1.09", vol_ident="config-2")
    iso.add_fp(io.BytesIO(payload), len(payload), "/META.JSON;1", rr_name="meta_data.json",
               joliet_path="/meta_data.json")
    path = os.path.join(directory, "pycdlib.iso")
    iso.write(path)
    iso.close()
    return path


def _mkfs(directory, size, *command):
    path = os.path.join(directory, "fs.img")
    with open(path, "wb") as handle:
        handle.truncate(size)
    subprocess.run(list(command) + [path], check=True, capture_output=True, timeout=60)
    return path


RAW_LAYOUTS = [
    # (id, builder(directory), detected format, partition table, filesystem)
    ("iso-genisoimage-small", lambda d: _genisoimage(d, b'{"uuid": "x"}'), "iso", None, None),
    ("iso-genisoimage-5M", lambda d: _genisoimage(d, os.urandom(5 * MIB)), "iso", None, None),
    ("iso-pycdlib", lambda d: _pycdlib_iso(d, b'{"uuid": "x"}'), "iso", None, None),
    ("gpt-8M", lambda d: hostile_images.write_gpt_disk(os.path.join(d, "gpt.raw")), "gpt", "gpt", None),
    ("gpt-10G", lambda d: hostile_images.write_gpt_disk(os.path.join(d, "gpt.raw"), 10 * 1024 * MIB), "gpt",
     "gpt", None),
    ("gpt-4Kn-sectors", lambda d: hostile_images.write_gpt_disk(os.path.join(d, "gpt4k.raw"), 64 * MIB, sector=4096),
     "gpt", "gpt", None),
    ("mbr", hostile_images.mbr_image, "mbr", "mbr", None),
    ("fat12-floppy", lambda d: _mkfs(d, 1440 * 1024, "mkfs.vfat"), "raw", None, "fat"),
    ("fat16", lambda d: _mkfs(d, 33 * MIB, "mkfs.vfat", "-F", "16"), "raw", None, "fat"),
    ("fat32", lambda d: _mkfs(d, 300 * MIB, "mkfs.vfat", "-F", "32"), "raw", None, "fat"),
    # mkfs.vfat --mbr=y writes a partition entry for the whole disk into the FAT boot sector.
    ("fat16-with-fake-mbr", lambda d: _mkfs(d, 33 * MIB, "mkfs.vfat", "--mbr=y"), "raw", None, "fat"),
    ("fat32-4k-sectors", lambda d: _mkfs(d, 300 * MIB, "mkfs.vfat", "-F", "32", "-S", "4096"), "raw", None, "fat"),
    ("ext4", lambda d: _mkfs(d, 64 * MIB, "mkfs.ext4", "-q"), "raw", None, None),
    ("xfs", lambda d: _mkfs(d, 300 * MIB, "mkfs.xfs", "-q"), "raw", None, None),
]


@pytest.mark.parametrize("case_id,builder,fmt,table,filesystem", RAW_LAYOUTS, ids=[case[0] for case in RAW_LAYOUTS])
def test_raw_layout_is_read_as_raw_bytes(tmp_path, case_id, builder, fmt, table, filesystem):
    path = builder(str(tmp_path))
    inspection = assert_matches_qemu(path, fmt)
    assert inspection.virtual_size == os.path.getsize(path)
    assert inspection.partition_table == table
    assert inspection.details.get("filesystem") == filesystem
    declared_raw = inspect_file(path, declared_format="raw")
    assert declared_raw.format == "raw" and declared_raw.partition_table == table


# --- crafted variants: our verdict, and qemu-img's own view of the same file --------------------------------

# name -> (qemu-img driver, what qemu-img does with it): ("refuses", part of qemu's error) or ("opens", the
# info fields qemu reports). Every name of the corpus is here, so a new crafted case must say qemu's view.
QEMU_VIEW = {
    "qcow2_backing_file": ("qcow2", "opens", {"backing-filename": "/etc/passwd"}),
    "qcow2_data_file": ("qcow2", "opens", {}),
    "qcow2_data_file_bit_only": ("qcow2", "opens", {}),
    "qcow2_data_file_extension_only": ("qcow2", "opens", {}),
    "qcow2_version_1": ("qcow2", "refuses", "Unsupported qcow2 version 1"),
    "qcow2_version_4": ("qcow2", "refuses", "Unsupported qcow2 version 4"),
    "qcow2_unknown_incompatible_bit": ("qcow2", "refuses", "Unknown incompatible feature: 400"),
    "qcow2_corrupt_bit": ("qcow2", "opens", {}),
    "qcow2_truncated_header": ("qcow2", "refuses", "qcow2 header too short"),
    "qcow2_cut_before_l1": ("qcow2", "opens", {}),
    "qcow2_header_length_nonsense": ("qcow2", "opens", {}),
    "qcow2_l1_too_large": ("qcow2", "refuses", "Active L1 table too large"),
    "qcow2_size_without_l1": ("qcow2", "refuses", "Image is too big"),
    "qcow2_huge_virtual_size": ("qcow2", "opens", {"virtual-size": 2 * 1024 ** 4}),
    "qcow2_legacy_aes": ("qcow2", "opens", {"encrypted": True}),
    "declared_raw_but_qcow2": ("qcow2", "opens", {}),
    "polyglot_qcow2_vhd": ("vpc", "opens", {}),
    "polyglot_qcow2_iso": ("qcow2", "opens", {}),
    "vmdk_flat_descriptor_file": ("vmdk", "opens", {"virtual-size": 2048 * 512}),
    "vmdk_embedded_extent_file": ("vmdk", "opens", {}),
    "vmdk_zero_capacity": ("vmdk", "opens", {"virtual-size": 2048 * 512}),
    "vmdk_two_gb_max_extent_sparse": ("vmdk", "opens", {}),
    "vmdk_parent_hint": ("vmdk", "opens", {"backing-filename": "/etc/shadow"}),
    "vhd_differencing": ("vpc", "opens", {}),
    "vdi_differencing": ("vdi", "refuses", "non-NULL parent UUID"),
    "qed": ("qed", "opens", {}),
    "luks": ("luks", "opens", {"virtual-size": 16 * MIB}),
    "vmdk_footer_claims_10t": ("vmdk", "opens", {"virtual-size": 10 * 1024 ** 4}),
    "vmdk_footer_bad_marker": ("vmdk", "refuses", "Invalid footer"),
    "vmdk_footer_bad_magic": ("vmdk", "refuses", "Invalid footer"),
    "vmdk_footer_without_end_of_stream": ("vmdk", "refuses", "Invalid footer"),
    "vmdk_footer_version_4": ("vmdk", "refuses", "Unsupported VMDK version 4"),
    "vmdk_footer_moves_descriptor": ("vmdk", "opens", {"virtual-size": 5 * MIB}),
    "vmdk_footer_in_short_file": ("vmdk", "refuses", "Failed to read footer"),
    "vmdk_parent_hint_in_comment": ("vmdk", "opens", {"backing-filename": "/etc/shadow"}),
    "vmdk_descriptor_without_extents": ("vmdk", "opens", {}),
    "vmdk_descriptor_with_binary_junk": ("vmdk", "opens", {}),
    "vmdk_extent_of_two_gb_sparse": ("vmdk", "refuses", "Invalid argument"),
    "vmdk_unknown_compression": ("vmdk", "opens", {}),
    "vmdk_truncated_before_grains": ("vmdk", "refuses", "File truncated"),
    "qcow2_zstd_without_feature_bit": ("qcow2", "refuses", "Compression type incompatible feature bit must be set"),
    "qcow2_extended_l2_small_clusters": ("qcow2", "refuses", "Unsupported subcluster size: 256"),
    "qcow2_long_backing_format": ("qcow2", "refuses", "ext_backing_format: len=20 too large"),
    "qcow2_crypto_extension_without_luks": ("qcow2", "refuses", "CRYPTO header extension only expected with LUKS"),
    "qcow2_l1_one_entry_short": ("qcow2", "refuses", "L1 table is too small"),
    "qcow2_misaligned_snapshot_table": ("qcow2", "refuses", "Snapshot table offset invalid"),
    "qcow2_v2_with_data_file_extension": ("qcow2", "opens", {}),
    "qcow_version_1": ("qcow", "opens", {"virtual-size": 16 * MIB}),
    "parallels": ("parallels", "opens", {"virtual-size": 16 * MIB}),
    "vhd_over_2040g": ("vpc", "refuses", "File too large"),
    "vhd_footer_off_sector": ("vpc", "refuses", "invalid VPC image"),
    "vhd_block_past_the_end": ("vpc", "refuses", "The image has been truncated"),
    "vdi_link_uuid": ("vdi", "refuses", "non-NULL link UUID"),
    "vdi_block_size": ("vdi", "refuses", "block size 2097152 is not 1048576"),
    "vdi_version": ("vdi", "refuses", "unsupported VDI image (version 1.0)"),
    # qemu opens a header naming a log when it finds no valid log entries; we refuse any log to replay.
    "vhdx_dirty_log": ("vhdx", "opens", {}),
    "vhdx_region_table_checksum": ("vhdx", "refuses", "Invalid argument"),
    "vhdx_block_size_too_small": ("vhdx", "refuses", "Invalid argument"),
    "luks2": ("luks", "refuses", "LUKS version 2 is not supported"),
    "luks1_corrupt_key_slot": ("luks", "refuses", "Keyslot 0 is corrupted (stripes 0 != 4000)"),
    "luks1_unsupported_cipher": ("luks", "refuses", "Algorithm 'blowfish' with key size 32 bytes not supported"),
    "luks1_payload_in_header": ("luks", "refuses", "LUKS payload is overlapping with the header"),
    # qemu reads any partition table as raw bytes; the refusals are Nova's and Glance's rules.
    "gpt_hybrid_mbr": ("raw", "opens", {}),
    "gpt_protective_start_chs": ("raw", "opens", {}),
    "gpt_protective_start_lba": ("raw", "opens", {}),
    "gpt_protective_boot_flag": ("raw", "opens", {}),
    "gpt_protective_in_second_entry": ("raw", "opens", {}),
    "protective_mbr_without_gpt": ("raw", "opens", {}),
}


def test_every_crafted_case_records_qemus_view():
    assert sorted(QEMU_VIEW) == sorted(case[0] for case in CRAFTED)


@pytest.mark.parametrize("name,builder,expected", CRAFTED, ids=[case[0] for case in CRAFTED])
def test_crafted_variant_is_refused_and_qemus_view_is_pinned(tmp_path, name, builder, expected):
    path = builder(str(tmp_path))
    with pytest.raises(UnsafeImageError, match=re.escape(expected)) as caught:
        inspect_file(path, **inspect_options(name))
    assert expected in caught.value.msg
    driver, verdict, detail = QEMU_VIEW[name]
    info, error = qemu_info(path, driver)
    if verdict == "refuses":
        assert info is None and detail in error, error
        return
    assert error is None, error
    for key, value in detail.items():
        assert info.get(key) == value, (key, info.get(key))
    if name == "vmdk_footer_claims_10t":
        # Without a size ceiling the image is accepted, at the size qemu reads from the footer.
        assert inspect_file(path).virtual_size == info["virtual-size"]


@pytest.mark.parametrize("name,builder,fmt,driver", hostile_images.VALID,
                         ids=[case[0] for case in hostile_images.VALID])
def test_valid_corpus_image_is_sized_as_qemu_sizes_it(tmp_path, name, builder, fmt, driver):
    path = builder(str(tmp_path))
    info, error = qemu_info(path, driver)
    assert error is None, error
    assert inspect_file(path).virtual_size == info["virtual-size"]


def test_crafted_stream_optimized_vmdk_holds_what_qemu_reads(tmp_path):
    """The footer-bearing streamOptimized writer of the corpus is a real VMDK: qemu reads back its data."""
    path = hostile_images.vmdk_stream_footer(str(tmp_path))
    raw = tmp_path / "expected.raw"
    raw.write_bytes(hostile_images.STREAM_TEST_DATA.ljust(5 * MIB, b"\x00"))
    code, out, err = qemu_img("compare", "-f", "vmdk", "-F", "raw", path, str(raw))
    assert code == 0, out + err
    assert inspect_file(path).details["gd_at_end"] is True


def test_crafted_luks1_header_is_one_qemu_reads(tmp_path):
    """The corpus's hand-written LUKS1 header (fast to make) is one qemu-img info accepts and sizes alike."""
    for fields in ({}, {"cipher": b"serpent", "mode": b"cbc-essiv:sha256", "key_bytes": 32},
                   {"cipher": b"twofish", "mode": b"ctr-plain64", "hash_spec": b"sha512", "key_bytes": 16},
                   {"cipher": b"cast5", "mode": b"cbc-plain", "hash_spec": b"ripemd160", "key_bytes": 16}):
        path = hostile_images.luks1_with(str(tmp_path), "variant.luks", **fields)
        assert_matches_qemu(path, "luks", allow_luks=True)


# --- issue 10 item 21: VHD sizes by creator, as block/vpc.c takes them ------------------------------------------

VHD_CREATORS = [
    # (creator_app, sized by) -- vpc_open: 'win ', 'qem2', 'd2v ', 'CTXS' and 'tap\0' by current_size, others by CHS
    (b"win ", "current_size"), (b"qem2", "current_size"), (b"d2v ", "current_size"), (b"CTXS", "current_size"),
    (b"tap\x00", "current_size"), (b"vpc ", "chs"), (b"qemu", "chs"), (b"tap ", "chs"), (b"WIN ", "chs"),
    (b"\x00\x00\x00\x00", "chs"),
]


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize("creator,sized_by", VHD_CREATORS, ids=[c[0].decode("latin-1").strip("\0 ") or "none"
                                                                for c in VHD_CREATORS])
def test_vhd_is_sized_by_current_size_or_geometry_as_its_creator_says(tmp_path, creator, sized_by, subformat):
    geometry = (1000, 4, 16)  # 64000 sectors: 31.25 MiB, where current_size says 60 MiB
    path = hostile_images._vhd_refooted(str(tmp_path), "creator.vhd", creator, current_size=60 * MIB,
                                        geometry=geometry, subformat=subformat)
    expected = 60 * MIB if sized_by == "current_size" else 1000 * 4 * 16 * 512
    info, error = qemu_info(path, "vpc")
    assert error is None, error
    assert info["virtual-size"] == expected
    inspection = inspect_file(path)
    assert inspection.virtual_size == expected
    assert inspection.details["creator_app"] == creator.decode("latin-1")
    assert inspection.details["vhd_type"] == subformat


def test_vhd_at_maximum_geometry_is_sized_by_current_size_whoever_made_it(tmp_path):
    for creator in (b"vpc ", b"win "):
        path = hostile_images._vhd_refooted(str(tmp_path), "max.vhd", creator, current_size=40 * MIB,
                                            geometry=(65535, 16, 255), subformat="fixed")
        assert inspect_file(path).virtual_size == 40 * MIB == qemu_info(path, "vpc")[0]["virtual-size"]
        os.unlink(path)
    path = hostile_images._vhd_refooted(str(tmp_path), "nearly.vhd", b"vpc ", current_size=40 * MIB,
                                        geometry=(65535, 16, 254), subformat="dynamic")
    # one sector-per-track short of the maximum: CHS, which is larger than the 64 MiB block table covers
    with pytest.raises(UnsafeImageError, match="block table of 33 entries does not cover the disk"):
        inspect_file(path)
