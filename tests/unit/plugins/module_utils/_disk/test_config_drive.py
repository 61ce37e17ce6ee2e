"""Config drive content (pure) and the ISO9660 volume written with pycdlib."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as cd
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

KEY = "ssh-ed25519 AAAAC3Nza test@host"


def params(**extra):
    base = {"guest": "web1", "hostname": "web1.example.com", "public_keys": {"admin": KEY},
            "user_data": "#cloud-config\n", "extra_files": {"virtfleet/mode": "once"}}
    base.update(extra)
    return base


def test_config2_layout_and_meta_data():
    files = cd.drive_files(params(admin_pass="pw", files=[{"path": "/etc/motd", "content": "hi"}],
                                  network_data={"links": []}, metadata={"role": "web"}))
    assert sorted(files) == ["openstack/content/0000", "openstack/latest/meta_data.json",
                             "openstack/latest/network_data.json", "openstack/latest/user_data",
                             "openstack/latest/vendor_data.json", "virtfleet/mode"]
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == cd.default_uuid("web1") and meta["name"] == "web1"
    assert meta["hostname"] == "web1.example.com" and meta["public_keys"] == {"admin": KEY}
    assert meta["keys"] == [{"name": "admin", "type": "ssh", "data": KEY}]
    assert meta["files"] == [{"path": "/etc/motd", "content_path": "/content/0000"}]
    assert meta["admin_pass"] == "pw" and meta["meta"] == {"role": "web"}
    assert files["openstack/content/0000"] == b"hi"
    assert json.loads(files["openstack/latest/network_data.json"]) == {"links": []}
    assert files["virtfleet/mode"] == b"once"


def test_nocloud_layout():
    files = cd.drive_files(params(drive_format="nocloud", public_keys=[KEY], instance_uuid="abc",
                                  network_data={"version": 2}))
    assert sorted(files) == ["meta-data", "network-config", "user-data", "virtfleet/mode"]
    meta = json.loads(files["meta-data"])
    assert meta == {"instance-id": "abc", "local-hostname": "web1.example.com", "public-keys": [KEY]}
    assert files["user-data"] == b"#cloud-config\n"


@pytest.mark.parametrize("extra,words", [
    ({"drive_format": "nocloud", "admin_pass": "x"}, "config-2 format"),
    ({"drive_format": "nocloud", "files": [{"path": "/a", "content": "b"}]}, "config-2 format"),
    ({"drive_format": "iso"}, "unknown config drive format"),
    ({"extra_files": {"openstack/latest/user_data": "x"}}, "already part"),
    ({"files": [{"path": "/a"}]}, "needs path"),
])
def test_refusals(extra, words):
    with pytest.raises(VirtfleetError, match=re.escape(words)) as err:
        cd.drive_files(params(**extra))
    assert words in err.value.msg


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../b", "a//b", "a b", "", "x" * 65, "a\\b"])
def test_drive_paths_are_confined(path):
    with pytest.raises(VirtfleetError, match="^invalid config drive path %s: " % re.escape(repr(path))):
        cd.validate_drive_path(path)


def test_digest_depends_on_content_only():
    files = cd.drive_files(params())
    assert cd.content_digest("config-2", files) == cd.content_digest("config-2", cd.drive_files(params()))
    assert cd.content_digest("config-2", files) != cd.content_digest("nocloud", files)
    other = cd.drive_files(params(user_data="#cloud-config\n# x\n"))
    assert cd.content_digest("config-2", files) != cd.content_digest("config-2", other)
    # moving bytes between path and content is a different digest
    assert cd.content_digest("config-2", {"ab": b"c"}) != cd.content_digest("config-2", {"a": b"bc"})


def test_default_uuid_is_stable_and_per_guest():
    assert cd.default_uuid("a") == cd.default_uuid("a") != cd.default_uuid("b")


@pytest.mark.parametrize("fmt,label", [("config-2", "config-2"), ("nocloud", "cidata")])
def test_iso_round_trip(tmp_path, fmt, label):
    extra = {"virtfleet/mode": "once", "deep/er/dir/file.txt": "\x00bin\xff"}
    files = cd.drive_files(params(drive_format=fmt, extra_files=extra))
    out = str(tmp_path / "disk.config")
    cd.write_iso(fmt, files, out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert cd.volume_label(out) == label
    assert cd.read_iso(out) == files
    with open(out, "rb") as handle:
        handle.seek(32769)
        assert handle.read(5) == b"CD001"


def test_iso_never_overwrites(tmp_path):
    out = tmp_path / "x.iso"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="File exists"):
        cd.write_iso("config-2", {"a": b"b"}, str(out))
    assert out.read_bytes() == b"keep"


def test_describe_shows_no_content():
    described = cd.describe({"openstack/latest/user_data": b"secret"})
    assert described == [{"path": "openstack/latest/user_data", "size": 6}]
