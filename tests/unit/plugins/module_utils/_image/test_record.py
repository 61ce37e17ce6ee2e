"""The image cache's names and records: what a cached re-run trusts, and what it keeps apart."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import record as image_record
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import cache_layout

SHA256_OF_ABC = hashlib.sha256(b"abc").hexdigest()


# ---- names and records ------------------------------------------------------------------------------

def test_base_name_is_sha1_of_identity_without_credentials():
    plain = image_record.base_name("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    with_creds = image_record.base_name("http://u:p@h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    assert plain == with_creds
    assert len(plain) == 40 and int(plain, 16) >= 0
    identity = image_record.image_identity("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    assert plain == hashlib.sha1(identity.encode()).hexdigest()


def test_base_name_differs_by_checksum_and_cache_format():
    names = {
        image_record.base_name("http://h/a.img", None, "raw"),
        image_record.base_name("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw"),
        image_record.base_name("http://h/a.img", None, "qcow2"),
        image_record.base_name("http://h/b.img", None, "raw"),
    }
    assert len(names) == 4
    assert image_record.base_name("/srv/a.img", None, "raw") == image_record.base_name("file:///srv/a.img", None, "raw")


def test_cache_paths_layout():
    paths = cache_layout("/i").paths("abc")
    assert paths == {"base_dir": "/i/_base", "path": "/i/_base/abc", "record": "/i/_base/abc.info.json",
                     "lock": "/i/locks/abc.lock"}


def test_cached_format_of():
    assert image_record.cached_format_of("qcow2", "raw") == "raw"
    assert image_record.cached_format_of("raw", "qcow2") == "qcow2"
    assert image_record.cached_format_of("qcow2", "source") == "qcow2"
    assert image_record.cached_format_of("vmdk", "source") == "vmdk"
    assert image_record.cached_format_of("raw", "source") == "raw"


def _record(stat, **overrides):
    record = {"url": "http://h/a.img", "checksum": None, "format": "raw", "source_format": "raw",
              "virtual_size": 3, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inspector_version": 1}
    record.update(overrides)
    return record


def test_record_matches_only_the_same_file_and_request(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"abc")
    stat = os.stat(image)
    assert image_record.record_matches(_record(stat), stat, "http://u:p@h/a.img", None) is None
    assert image_record.record_matches(_record(stat), None, "http://h/a.img", None) == "no cached file"
    assert image_record.record_matches(None, stat, "http://h/a.img", None) == "no valid record"
    assert "another url" in image_record.record_matches(_record(stat), stat, "http://h/b.img", None)
    assert "another checksum" in image_record.record_matches(_record(stat), stat, "http://h/a.img",
                                                             "sha256:" + "0" * 64)
    assert "changed" in image_record.record_matches(_record(stat, size=4), stat, "http://h/a.img", None)
    assert "changed" in image_record.record_matches(_record(stat, mtime_ns=1), stat, "http://h/a.img", None)
    broken = _record(stat)
    del broken["format"]
    assert "lacks 'format'" in image_record.record_matches(broken, stat, "http://h/a.img", None)


def test_read_record_tolerates_garbage(tmp_path):
    path = tmp_path / "x.info.json"
    assert image_record.read_record(str(path)) is None
    path.write_bytes(b"{not json")
    assert image_record.read_record(str(path)) is None
    path.write_bytes(b"[1, 2]")
    assert image_record.read_record(str(path)) is None
    image_record.write_record(str(path), {"format": "raw"})
    assert image_record.read_record(str(path)) == {"format": "raw"}


def test_remove_stale_temps_removes_only_this_images_temps(tmp_path):
    base = tmp_path / "abc"
    mine = [str(base) + ".virtfleet-tmp-1-aa", str(base) + ".info.json.virtfleet-tmp-2-bb"]
    other = [str(tmp_path / "abd.virtfleet-tmp-1-aa"), str(base), str(base) + ".info.json"]
    for path in mine + other:
        open(path, "wb").close()
    assert sorted(image_record.remove_stale_temps(str(base))) == sorted(mine)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in other)


# ---- the present plan ------------------------------------------------------------------------------------

def test_plan_present_fetches_reinspects_or_verifies(tmp_path):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format_consts import INSPECTOR_VERSION
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import ImageSpec

    request = ImageSpec.from_params({"url": "http://h/a.img", "instances_path": str(tmp_path)})
    target = image_record.target_of(request, None)
    assert target.path == os.path.join(str(tmp_path), "_base", target.name)
    missing = image_record.plan_present(request, target)
    assert missing.steps == ["fetch"] and missing.cached.mismatch == "no cached file"

    os.makedirs(os.path.dirname(target.path))
    with open(target.path, "wb") as handle:
        handle.write(b"abc")
    stat = os.stat(target.path)
    image_record.write_record(target.record_path, _record(stat, inspector_version=INSPECTOR_VERSION))
    cached = image_record.plan_present(request, target)
    assert cached.steps == [] and cached.cached.usable and cached.actions == []
    full_request = ImageSpec.from_params({"url": "http://h/a.img", "verify": "full", "instances_path": str(tmp_path)})
    full = image_record.plan_present(full_request, target)
    assert full.steps == ["verify"] and full.actions == []  # a verification is not a change
    image_record.write_record(target.record_path, _record(stat, inspector_version=INSPECTOR_VERSION - 1))
    stale = image_record.plan_present(request, target)
    assert stale.steps == ["reinspect"] and stale.actions == ["reinspect"]
