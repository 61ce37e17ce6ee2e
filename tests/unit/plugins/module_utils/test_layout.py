import os
import re

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


def test_a_cache_whose_tree_or_base_directory_is_a_file_is_refused(tmp_path):
    """Issue 10 item 11: image_cache with instances_path naming a file ended in 'internal error' NotADirectoryError."""
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    with pytest.raises(VirtfleetError, match="^instances_path %s exists and is not a directory: the image cache "
                                             "lives in a directory _base inside the instances tree$"
                                             % re.escape(str(a_file))):
        layout.cache_layout(str(a_file))
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "_base").symlink_to(tmp_path / "missing")
    with pytest.raises(VirtfleetError, match="^the image cache directory %s exists and is not a directory: "
                                             % re.escape(str(tmp_path / "tree" / "_base"))):
        layout.cache_layout(str(tmp_path / "tree"))
    (tmp_path / "tree" / "_base").unlink()
    (tmp_path / "tree" / "_base").mkdir()
    assert layout.cache_layout(str(tmp_path / "tree")).base_dir == str(tmp_path / "tree" / "_base")
    assert layout.cache_layout(str(tmp_path / "not-yet")).instances_path == str(tmp_path / "not-yet")


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


# --- issue 10 item 21: the layout's rules and their messages, exactly -------------------------------------------

@pytest.mark.parametrize("name", ["locks"])  # "_base" already breaks the name rule
def test_reserved_guest_names_say_why(name):
    expected = ("invalid guest name %r: it is reserved for the instances tree's own %s directory; "
                "choose another name" % (name, name))
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.validate_guest_name(name)


def test_a_guest_name_that_breaks_the_rule_names_the_rule():
    expected = ("invalid guest name 'a b': use 1-64 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit")
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.validate_guest_name("a b")
    assert layout.validate_guest_name("web-1.x_y") == "web-1.x_y"


@pytest.mark.parametrize("name", ["disk.info.json", "x.xml", "x.lock", "x.json", "console.log", "nvram.fd",
                                  "resize.json", "domain.xml", "a.virtfleet-tmp-1"])
def test_record_like_file_names_say_why(name):
    expected = ("invalid file_name %r: it is one of the instance directory's own records or logs; "
                "choose another name" % name)
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.validate_disk_file_name(name)


def test_bad_file_names_are_named_as_file_name():
    with pytest.raises(VirtfleetError, match=r"^invalid file_name 'a/b': use a plain file name"):
        layout.validate_disk_file_name("a/b")
    for good in ("scratch.qcow2", "disk.data", "xml", "json.disk", "console.log.1", "nvram"):
        assert layout.validate_disk_file_name(good) == good


@pytest.mark.parametrize("value", ["", "relative", None, 5, "/a\0b"])
def test_absolute_path_refusals_name_the_option(value):
    expected = "instance_dir must be an absolute path, got %r" % (value,)
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.absolute_path(value, "instance_dir")


@pytest.mark.parametrize("value", ["/a\nb", "/a\rb", "/a\r"])
def test_absolute_paths_with_line_breaks_are_refused(value):
    expected = "instance_dir must not contain line breaks"
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.absolute_path(value, "instance_dir")


def test_instances_root_messages_name_instances_path():
    expected = "instances_path must be an absolute path, got 'x'"
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.instances_root("x")


def test_instance_dir_override_is_checked_and_normalised_and_empty_means_default():
    assert layout.guest_layout("/srv/vf", "web1", "").instance_dir == "/srv/vf/web1"
    assert layout.guest_layout("/srv/vf", "web1", None).instance_dir == "/srv/vf/web1"
    assert layout.guest_layout("/srv/vf", "web1", "/data//web1/").instance_dir == "/data/web1"
    expected = "instance_dir must be an absolute path, got 'data/web1'"
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.guest_layout("/srv/vf", "web1", "data/web1")


def test_default_disk_names_and_the_cache_of_a_guest():
    g = layout.guest_layout("/srv/vf", "web1")
    assert g.disk("blank") == "/srv/vf/web1/disk.blank"
    assert g.cache == layout.cache_layout("/srv/vf")
    assert g.cache.base("abc") == "/srv/vf/_base/abc"
    assert layout.DIR_MODE == 0o755  # the qemu user traverses every directory; only root writes them


def test_layouts_are_values_that_cannot_be_changed():
    g = layout.guest_layout("/srv/vf", "web1")
    with pytest.raises(AttributeError, match="cannot assign to field 'instance_dir'"):
        g.instance_dir = "/elsewhere"
    with pytest.raises(AttributeError, match="cannot assign to field 'instances_path'"):
        layout.cache_layout("/srv/vf").instances_path = "/elsewhere"


def test_check_writable_messages(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, tmp_path / "web1")
    g = layout.guest_layout(str(tmp_path), "web1")
    expected = ("the instance directory of guest web1 %s is a symbolic link (to %s); refusing to "
                "work through it. Replace it with a real directory." % (tmp_path / "web1", target))
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)) as caught:
        g.check_writable()
    (tmp_path / "web2").write_text("a file")
    expected = "the instance directory of guest web2 %s exists and is not a directory" % (
        tmp_path / "web2")
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.guest_layout(str(tmp_path), "web2").check_writable()
    layout.guest_layout(str(tmp_path), "web3").check_writable()  # not there yet: fine
    (tmp_path / "web4").mkdir()
    layout.guest_layout(str(tmp_path), "web4").check_writable()


def test_a_directory_that_cannot_be_inspected_says_why(tmp_path):
    (tmp_path / "file").write_text("x")
    expected = "cannot inspect the instance directory %s: Not a directory" % (
        tmp_path / "file" / "web1")
    with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
        layout.refuse_symlinked_dir(str(tmp_path / "file" / "web1"), "the instance directory")


@pytest.mark.parametrize("path", [None, 5, b"/srv/vf/web1/disk"])
def test_owns_nothing_that_is_not_a_path(path):
    assert not layout.guest_layout("/srv/vf", "web1").owns(path)


def test_owns_nothing_in_a_directory_that_does_not_exist(tmp_path):
    g = layout.guest_layout(str(tmp_path), "web1")
    assert not g.owns(g.disk("root"))
    os.makedirs(g.instance_dir)
    assert g.owns(g.disk("root"))  # a file not made yet is still the guest's to make
    assert g.owns(os.path.join(g.instance_dir, ".", "disk"))
