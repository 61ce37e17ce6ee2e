"""The image cache's layout and cached re-run: URLs, checksums, names, records; what a re-run loads."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import cache as cache
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

SHA256_OF_ABC = hashlib.sha256(b"abc").hexdigest()


# ---- URLs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("http://user:secret@example.com/a.img", "http://example.com/a.img"),
    ("https://user@example.com:8443/x/a.img?x=1", "https://example.com:8443/x/a.img?x=1"),
    ("https://tok%40en:p%3Ass@host/a.img", "https://host/a.img"),
    ("http://example.com/a.img", "http://example.com/a.img"),
    ("file:///srv/a.img", "file:///srv/a.img"),
    ("/srv/images/../a.img", "file:///srv/a.img"),
])
def test_public_url_strips_credentials(url, expected):
    assert cache.public_url(url) == expected


def test_url_scheme_refuses_other_schemes_without_leaking_credentials():
    with pytest.raises(VirtfleetError) as err:
        cache.url_scheme("ftp://me:hunter2@example.com/a.img")
    assert "hunter2" not in err.value.msg and "ftp://example.com/a.img" in err.value.msg
    assert cache.url_scheme("HTTPS://example.com/a") == "https"
    assert cache.url_scheme("/srv/a.img") == "file"


def test_local_path_of_file_url_and_plain_path():
    assert cache.local_path_of("file:///srv/my%20image.img") == "/srv/my image.img"
    assert cache.local_path_of("/srv/a.img") == "/srv/a.img"
    with pytest.raises(VirtfleetError, match="remote host"):
        cache.local_path_of("file://otherhost/srv/a.img")


def test_file_name_of():
    assert cache.file_name_of("https://h/x/debian-12.qcow2?sig=1") == "debian-12.qcow2"
    assert cache.file_name_of("/srv/a%20b.img") == "a%20b.img"
    assert cache.file_name_of("http://h/x/a%20b.img") == "a b.img"


# ---- checksums --------------------------------------------------------------------------------------

def test_parse_checksum_digest_forms():
    assert cache.parse_checksum(None) is None
    assert cache.parse_checksum("") is None
    assert cache.parse_checksum("sha256:" + SHA256_OF_ABC.upper()) == ("sha256", SHA256_OF_ABC)
    assert cache.parse_checksum(" SHA512 : " + "a" * 128) == ("sha512", "a" * 128)


def test_parse_checksum_sums_reference_forms():
    assert cache.parse_checksum("sha256:https://h/SHA256SUMS") == ("sha256", "https://h/SHA256SUMS")
    assert cache.parse_checksum("sha512:/srv/SHA512SUMS") == ("sha512", "/srv/SHA512SUMS")


@pytest.mark.parametrize("value, fragment", [
    ("abc", "expected '<algorithm>:<hex digest>'"),
    ("md5:" + "a" * 32, "not supported"),
    ("sha256:" + "a" * 63, "64 hex digits"),
    ("sha256:" + "g" * 64, "64 hex digits"),
    ("sha512:" + "a" * 64, "128 hex digits"),
])
def test_parse_checksum_refuses_malformed(value, fragment):
    with pytest.raises(VirtfleetError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        cache.parse_checksum(value)


def test_resolve_checksum_reads_a_local_sums_file(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("%s  image.raw\n" % SHA256_OF_ABC)
    params = {"url": "http://h/x/image.raw", "checksum": "sha256:%s" % sums}
    assert cache.resolve_checksum(params) == ("sha256", SHA256_OF_ABC)
    params["url"] = "http://h/x/other.raw"
    with pytest.raises(VirtfleetError, match="no sha256 line for 'other.raw'"):
        cache.resolve_checksum(params)


# ---- names and records ------------------------------------------------------------------------------

def test_base_name_is_sha1_of_identity_without_credentials():
    plain = cache.base_name("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    with_creds = cache.base_name("http://u:p@h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    assert plain == with_creds
    assert len(plain) == 40 and int(plain, 16) >= 0
    identity = cache.image_identity("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    assert plain == hashlib.sha1(identity.encode()).hexdigest()


def test_base_name_differs_by_checksum_and_cache_format():
    names = {
        cache.base_name("http://h/a.img", None, "raw"),
        cache.base_name("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw"),
        cache.base_name("http://h/a.img", None, "qcow2"),
        cache.base_name("http://h/b.img", None, "raw"),
    }
    assert len(names) == 4
    assert cache.base_name("/srv/a.img", None, "raw") == cache.base_name("file:///srv/a.img", None, "raw")


def test_cache_paths_layout():
    paths = cache.cache_paths("/i", "abc")
    assert paths == {"base_dir": "/i/_base", "path": "/i/_base/abc", "record": "/i/_base/abc.info.json",
                     "lock": "/i/locks/abc.lock"}


def test_cached_format_of():
    assert cache.cached_format_of("qcow2", "raw") == "raw"
    assert cache.cached_format_of("raw", "qcow2") == "qcow2"
    assert cache.cached_format_of("qcow2", "source") == "qcow2"
    assert cache.cached_format_of("vmdk", "source") == "vmdk"
    assert cache.cached_format_of("raw", "source") == "raw"


def _record(stat, **overrides):
    record = {"url": "http://h/a.img", "checksum": None, "format": "raw", "source_format": "raw",
              "virtual_size": 3, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inspector_version": 1}
    record.update(overrides)
    return record


def test_record_matches_only_the_same_file_and_request(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"abc")
    stat = os.stat(image)
    assert cache.record_matches(_record(stat), stat, "http://u:p@h/a.img", None) is None
    assert cache.record_matches(_record(stat), None, "http://h/a.img", None) == "no cached file"
    assert cache.record_matches(None, stat, "http://h/a.img", None) == "no valid record"
    assert "another url" in cache.record_matches(_record(stat), stat, "http://h/b.img", None)
    assert "another checksum" in cache.record_matches(_record(stat), stat, "http://h/a.img", "sha256:" + "0" * 64)
    assert "changed" in cache.record_matches(_record(stat, size=4), stat, "http://h/a.img", None)
    assert "changed" in cache.record_matches(_record(stat, mtime_ns=1), stat, "http://h/a.img", None)
    broken = _record(stat)
    del broken["format"]
    assert "lacks 'format'" in cache.record_matches(broken, stat, "http://h/a.img", None)


def test_read_record_tolerates_garbage(tmp_path):
    path = tmp_path / "x.info.json"
    assert cache.read_record(str(path)) is None
    path.write_bytes(b"{not json")
    assert cache.read_record(str(path)) is None
    path.write_bytes(b"[1, 2]")
    assert cache.read_record(str(path)) is None
    cache.write_record(str(path), {"format": "raw"})
    assert cache.read_record(str(path)) == {"format": "raw"}


def test_remove_stale_temps_removes_only_this_images_temps(tmp_path):
    base = tmp_path / "abc"
    mine = [str(base) + ".virtfleet-tmp-1-aa", str(base) + ".info.json.virtfleet-tmp-2-bb"]
    other = [str(tmp_path / "abd.virtfleet-tmp-1-aa"), str(base), str(base) + ".info.json"]
    for path in mine + other:
        open(path, "wb").close()
    assert sorted(cache.remove_stale_temps(str(base))) == sorted(mine)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in other)


def test_is_hex():
    assert cache.is_hex("0123456789abcdefABCDEF")
    for value in ("", "0x1f", "1_0", "a b", "g", "\u0661"):
        assert not cache.is_hex(value), value


# ---- the inspector's facts without the inspector -------------------------------------------------------

def test_the_cache_knows_the_inspector_version_without_loading_the_inspector():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format as image_format
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format_consts as consts

    # A cached verdict is trusted while its record names this version: one value, shared.
    assert consts.INSPECTOR_VERSION == image_format.INSPECTOR_VERSION
    assert consts.QEMU_FORMAT_NAMES == image_format.QEMU_FORMAT_NAMES
    assert cache.qemu_name("vhd") == "vpc" and cache.qemu_name("iso") == "raw"


# ---- what a cached re-run loads ----------------------------------------------------------------------

_MODULE_UTILS = "ansible_collections.virtfleet.libvirt.plugins.module_utils."
# What a cached re-run must not import (under AnsiballZ each is compiled from source on every run).
HEAVY = (_MODULE_UTILS + "_image.format", _MODULE_UTILS + "_host.qemu_img", _MODULE_UTILS + "_image.fetch",
         _MODULE_UTILS + "_image.prune", "ansible.module_utils.urls")
# Runs the module file as Ansible does and writes the names of the modules it imported to the last argument.
_PROBE = """
import atexit, json, runpy, sys
sys.argv = sys.argv[1:]
out = sys.argv.pop()
atexit.register(lambda: json.dump(sorted(sys.modules), open(out, "w")))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_in_fresh_python(tmp_path, args, check=False):
    """(result, names of the imported modules) of one run of the image_cache module in a new interpreter."""
    from tests.support.runner import COLLECTIONS, module_path

    payload = dict(args, _ansible_check_mode=check, _ansible_diff=False,
                   _ansible_module_name="virtfleet.libvirt.image_cache", _ansible_tmpdir=str(tmp_path),
                   _ansible_remote_tmp=str(tmp_path))
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    modules_file = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, module_path("image_cache"), str(args_file),
                           str(modules_file)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS, LC_ALL="C.UTF-8"))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = proc.stdout
    return json.loads(out[out.index("{"):]), set(json.loads(modules_file.read_text()))


def test_a_cached_rerun_loads_neither_the_fetch_path_nor_the_inspector(tmp_path):
    source = tmp_path / "source.img"
    source.write_bytes(b"virtfleet" * 1000 + b"\0" * (1 << 20))
    args = {"url": "file://" + str(source), "format": "raw", "cache_format": "raw",
            "instances_path": str(tmp_path / "instances")}

    miss, loaded = _run_in_fresh_python(tmp_path, args)
    assert miss["changed"] and miss["fetched"] and miss["actions"] == ["fetch"]
    assert miss["format"] == "raw" and miss["size"] == os.path.getsize(source)
    with open(miss["path"], "rb") as cached, open(source, "rb") as original:
        assert cached.read() == original.read()
    assert {_MODULE_UTILS + "_image.fetch", _MODULE_UTILS + "_image.format"} <= loaded  # the probe sees imports

    for check in (False, True):
        hit, loaded = _run_in_fresh_python(tmp_path, args, check=check)
        assert not hit["changed"] and not hit["fetched"] and hit["actions"] == []
        assert {key: hit[key] for key in ("path", "format", "source_format", "virtual_size", "size")} == \
            {key: miss[key] for key in ("path", "format", "source_format", "virtual_size", "size")}
        assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))
        assert _MODULE_UTILS + "_image.cache" in loaded


def test_a_record_from_an_older_inspector_still_gets_the_inspector(tmp_path):
    source = tmp_path / "source.img"
    source.write_bytes(b"\0" * (1 << 20))
    args = {"url": str(source), "instances_path": str(tmp_path / "instances")}
    first, _loaded = _run_in_fresh_python(tmp_path, args)
    record_path = first["path"] + cache.RECORD_SUFFIX
    with open(record_path) as handle:
        record = json.load(handle)
    record["inspector_version"] = cache.INSPECTOR_VERSION - 1
    cache.write_record(record_path, record)

    again, loaded = _run_in_fresh_python(tmp_path, args)
    assert again["changed"] and not again["fetched"] and again["actions"] == ["reinspect"]
    assert _MODULE_UTILS + "_image.format" in loaded
    assert cache.read_record(record_path)["inspector_version"] == cache.INSPECTOR_VERSION
    _result, loaded = _run_in_fresh_python(tmp_path, args)
    assert loaded.isdisjoint(HEAVY)
