"""remove_storage on real libvirtd (issue 10 item 1): only files the collection recorded making, inside the
guest's own instance directory, that no other domain's disk or backing chain uses, are ever removed.

Domains are defined only (a definition is all remove_storage needs); disks are made by guest_disk, as the
boot role makes them.
"""

from __future__ import annotations

import os
import shutil

from tests.support.runner import run_module


def _domain(sandbox, name, **args):
    args.setdefault("instances_path", sandbox.instances)
    result = run_module("domain", dict(name=name, **args))
    assert "Traceback" not in result["_stderr"], result["_stderr"]
    return result


def _disk(sandbox, name, **args):
    made = run_module("guest_disk", dict({"guest": name, "instances_path": sandbox.instances}, **args))
    assert made["_rc"] == 0, made
    return made["path"]


def _warnings(result):
    """The text of a module result's warnings (ansible-core 2.19 returns them as structured events)."""
    return " ".join(w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", []))


def _define(sandbox, name, disks, owned):
    written = run_module("domain_xml", {"name": name, "virt_type": "qemu", "memory": "64M",
                                        "instances_path": sandbox.instances, "disks": disks,
                                        "metadata": {"owned_files": owned}})
    assert written["_rc"] == 0, written
    defined = _domain(sandbox, name, state="defined")
    assert defined["_rc"] == 0 and defined["actions"] == ["define"], defined
    return written["path"]


def test_remove_storage_never_removes_what_metadata_lists_or_another_guest_uses(sandbox, guest_image):
    victim = os.path.join(sandbox.root, "victim")
    with open(victim, "w", encoding="utf-8") as handle:
        handle.write("not the collection's")
    first, second = sandbox.guest_name("a"), sandbox.guest_name("b")
    # the first guest's root is a flat copy; the second guest's root is an overlay backed by it
    root = _disk(sandbox, first, kind="root", base=guest_image["path"], base_format="raw", backing="flat",
                 format="raw")
    scratch = _disk(sandbox, first, kind="blank", size="1M", format="raw", file_name="scratch.raw")
    overlay = _disk(sandbox, second, kind="root", base=root, base_format="raw", backing="overlay", format="qcow2")
    # anyone who can define a domain can write its metadata: it must not decide what is removed
    xml_file = _define(sandbox, first, [{"path": root, "format": "raw"}, {"path": scratch, "format": "raw"}],
                       [victim, overlay, root, scratch])
    _define(sandbox, second, [{"path": overlay, "format": "qcow2"}], [])

    predicted = run_module("domain", {"name": first, "state": "absent", "remove_storage": True,
                                      "instances_path": sandbox.instances}, check=True)
    gone = _domain(sandbox, first, state="absent", remove_storage=True)
    assert gone["_rc"] == 0 and gone["actions"] == predicted["actions"] == ["undefine", "remove_storage"], gone
    instance_dir = os.path.dirname(root)
    assert gone["removed_files"] == predicted["removed_files"] == [
        scratch, xml_file, os.path.join(instance_dir, "disk.info.json")], gone
    assert os.path.exists(victim), "a file the metadata names is not the collection's to remove"
    assert os.path.exists(overlay), "another guest's disk"
    assert os.path.exists(root), "the backing file of another guest's overlay"
    warnings = _warnings(gone)
    assert "%s is kept: domain %s uses it" % (root, second) in warnings
    assert "%s is kept: the domain's metadata lists it" % victim in warnings
    # the second guest still starts from its overlay on the kept root
    started = _domain(sandbox, second, state="paused")
    assert started["_rc"] == 0 and started["state"] == "paused", started


def test_remove_storage_does_not_work_through_a_planted_symlink(sandbox, guest_image):
    name = sandbox.guest_name("s")
    root = _disk(sandbox, name, kind="root", base=guest_image["path"], base_format="raw", backing="flat",
                 format="raw")
    _define(sandbox, name, [{"path": root, "format": "raw"}], [root])
    instance_dir = os.path.dirname(root)
    # someone moves the guest's directory away and plants a link to another tree in its place
    elsewhere = os.path.join(sandbox.root, "elsewhere")
    shutil.move(instance_dir, elsewhere)
    os.symlink(elsewhere, instance_dir)
    kept = _domain(sandbox, name, state="absent", remove_storage=True)
    assert kept["_rc"] == 0 and kept["actions"] == ["undefine"] and kept["removed_files"] == [], kept
    assert "%s is a symbolic link" % instance_dir in _warnings(kept)
    assert sorted(os.listdir(elsewhere)) == ["disk", "disk.info.json", "domain.xml"]
