import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _layout as layout


def test_guest_layout_names_every_file_of_a_guest():
    g = layout.guest_layout("/srv/vf/", "web1")
    assert g.instance_dir == "/srv/vf/web1"
    assert g.disk("root") == "/srv/vf/web1/disk"
    assert g.disk("ephemeral") == "/srv/vf/web1/disk.local"
    assert g.disk("swap") == "/srv/vf/web1/disk.swap"
    assert g.disk("config_drive") == "/srv/vf/web1/disk.config"
    assert g.disk("blank", "scratch.qcow2") == "/srv/vf/web1/scratch.qcow2"
    assert g.digest_of("disk.config") == "/srv/vf/web1/disk.config.digest.json"
    assert (g.disk_info, g.domain_xml, g.console_log, g.nvram, g.resize_record) == (
        "/srv/vf/web1/disk.info.json", "/srv/vf/web1/domain.xml", "/srv/vf/web1/console.log",
        "/srv/vf/web1/nvram.fd", "/srv/vf/web1/resize.json")
    assert g.lock == "/srv/vf/locks/guest-web1.lock"
    assert g.in_tree()
    assert not layout.guest_layout("/srv/vf", "web1", "/data/web1").in_tree()


def test_cache_layout():
    c = layout.cache_layout("/srv/vf")
    assert c.paths("abc") == {"base_dir": "/srv/vf/_base", "path": "/srv/vf/_base/abc",
                              "record": "/srv/vf/_base/abc.info.json", "lock": "/srv/vf/locks/abc.lock"}
    assert c.is_base("/srv/vf/_base/abc") and not c.is_base("/srv/vf/web1/disk")


@pytest.mark.parametrize("name", ["locks", "_base", "a\n", "a/b", "..", ".", "", "x" * 65, "wéb", "a b", "<a>",
                                  None, 3])
def test_one_guest_name_rule_refuses(name):
    with pytest.raises(VirtfleetError, match="invalid guest name"):
        layout.validate_guest_name(name)


@pytest.mark.parametrize("value", ["", "relative/path", None, "/a\nb", 5])
def test_instances_path_must_be_absolute(value):
    if value is None:
        assert layout.instances_root(None) == layout.DEFAULT_INSTANCES_PATH
        return
    with pytest.raises(VirtfleetError, match="instances_path"):
        layout.instances_root(value)


def test_instances_path_is_normalised():
    assert layout.instances_root("/srv//vf/./x/..") == "/srv/vf"


@pytest.mark.parametrize("name", ["disk.info.json", "domain.xml", "resize.json", "console.log", "nvram.fd",
                                  "x.lock", "d.json", "disk\n", "../x", "disk.virtfleet-tmp-1"])
def test_disk_file_names_cannot_be_records(name):
    with pytest.raises(VirtfleetError, match="file_name"):
        layout.validate_disk_file_name(name)


def test_a_symlinked_instance_directory_is_refused_and_owns_nothing(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "disk").write_text("precious")
    root = tmp_path / "instances"
    root.mkdir()
    os.symlink(target, root / "web1")
    g = layout.guest_layout(str(root), "web1")
    with pytest.raises(VirtfleetError, match="symbolic link"):
        g.check_writable()
    assert not g.owns(str(root / "web1" / "disk"))


def test_owns_only_plain_files_directly_in_the_instance_directory(tmp_path):
    g = layout.guest_layout(str(tmp_path), "web1")
    os.makedirs(g.instance_dir)
    open(g.disk("root"), "w").close()
    os.symlink("/etc/passwd", g.file("link"))
    assert g.owns(g.disk("root"))
    assert not g.owns(g.file("link"))           # resolves elsewhere
    assert not g.owns(str(tmp_path / "other" / "disk"))
    assert not g.owns("relative/disk")
    assert not g.owns(os.path.join(g.instance_dir, "sub", "disk"))
