"""Removing images from the cache: backing file names read without qemu, and what counts as a use."""

from __future__ import annotations

import os

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _qcow2 as qcow2
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import prune


# ---- backing file names without qemu ------------------------------------------------------------------

def _fake_qcow2(path, backing=b""):
    header = bytearray(512)
    header[0:4] = b"QFI\xfb"
    header[4:8] = (3).to_bytes(4, "big")
    header[20:24] = (16).to_bytes(4, "big")  # cluster_bits
    header[100:104] = (104).to_bytes(4, "big")  # header_length (v3); no extensions follow
    if backing:
        header[8:16] = (200).to_bytes(8, "big")
        header[16:20] = len(backing).to_bytes(4, "big")
        header[200:200 + len(backing)] = backing
    with open(path, "wb") as handle:
        handle.write(bytes(header))
    return str(path)


def test_qcow2_backing_name_reads_only_the_header(tmp_path):
    # the one qcow2 header reader (_qcow2) is what prune reads backing names with
    assert qcow2.backing_file_of(_fake_qcow2(tmp_path / "a", b"/i/_base/abc")) == "/i/_base/abc"
    assert qcow2.backing_file_of(_fake_qcow2(tmp_path / "b")) is None
    raw = tmp_path / "raw"
    raw.write_bytes(b"\0" * 1024)
    assert qcow2.backing_file_of(str(raw)) is None
    assert qcow2.backing_file_of(str(tmp_path / "missing")) is None


def test_unrecorded_disks_are_never_handed_to_qemu_img(tmp_path, monkeypatch):
    def no_qemu(*args, **kwargs):
        raise AssertionError("qemu-img must not run on an unrecorded disk")

    monkeypatch.setattr(qemu_img, "info", no_qemu)
    disk = _fake_qcow2(tmp_path / "disk", b"../_base/abc")
    assert [os.path.realpath(p) for p in prune._backing_chain(disk, None)] == [
        os.path.realpath(str(tmp_path / "../_base/abc"))]
    assert prune._backing_chain(disk, "raw") == []


# ---- what counts as a use -------------------------------------------------------------------------------

def test_bases_in_use_counts_libvirt_domains_wherever_their_disks_live_and_the_tree(tmp_path):
    """libvirt's test:///default driver stands in for the host's domains (a real libvirt, no daemon)."""
    import subprocess

    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import open_hypervisor
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import cache_layout

    layout = cache_layout(str(tmp_path / "instances"))
    os.makedirs(layout.base_dir)
    bases = {}
    for name in ("by-domain", "by-tree", "unused"):
        bases[name] = layout.base(name)
        subprocess.run(["qemu-img", "create", "-f", "raw", bases[name], "1M"], check=True, capture_output=True)
    outside = tmp_path / "elsewhere" / "disk.qcow2"
    outside.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", bases["by-domain"], "-F", "raw", str(outside)],
                   check=True, capture_output=True)
    guest_dir = tmp_path / "instances" / "web1"
    guest_dir.mkdir()
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", bases["by-tree"], "-F", "raw",
                    str(guest_dir / "disk")], check=True, capture_output=True)
    xml = ("<domain type='test'><name>prune-user</name><memory unit='KiB'>65536</memory><os><type>hvm</type></os>"
           "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/>"
           "<target dev='vda'/></disk></devices></domain>" % outside)
    with open_hypervisor("test:///default") as hypervisor:
        domain = hypervisor.define(xml)
        try:
            used = prune.bases_in_use(layout, hypervisor)
        finally:
            domain.undefine()
    assert used == {os.path.realpath(bases["by-domain"]): ["domain prune-user"],
                    os.path.realpath(bases["by-tree"]): [str(guest_dir / "disk")]}
    assert prune.bases_in_use(layout) == {os.path.realpath(bases["by-tree"]): [str(guest_dir / "disk")]}


# ---- state absent and pruned, on real files (issue 10 item 21: prune was defended by integration tests only) ----

import re  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError  # noqa: E402
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import record  # noqa: E402
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import ImageSpec  # noqa: E402

URL = "https://example.com/debian.qcow2"
DAY = 86400.0


class Domains:
    """What libvirt says its domains use (the one Hypervisor call prune makes): real disks_in_use is tested in
    test_bases_in_use_counts_libvirt_domains_wherever_their_disks_live_and_the_tree."""

    def __init__(self, used=None):
        self.used = used or {}

    def disks_in_use(self):
        return self.used


def _spec(instances, **params):
    return ImageSpec.from_params(dict({"instances_path": str(instances), "url": URL, "uri": "test:///default",
                                       "lock_timeout": 5}, **params))


def _qemu_img(*args):
    subprocess.run(["qemu-img", "create"] + list(args), check=True, capture_output=True)


def _cached(spec, name=None, age=None):
    """A file in the cache (raw, 1 MiB); ``age`` seconds since it was last read or written."""
    os.makedirs(spec.layout.base_dir, exist_ok=True)
    path = spec.layout.base(name) if name else record.target_of(spec, None).path
    with open(path, "wb") as handle:
        handle.truncate(1 << 20)
    if age is not None:
        then = os.stat(path).st_mtime - age
        os.utime(path, (then, then))
    return path


def test_absent_of_an_image_not_cached_changes_nothing(tmp_path):
    spec = _spec(tmp_path / "i", state="absent")
    target = record.target_of(spec, None)
    state = {"path": target.path, "state": "absent"}
    assert prune.ensure_absent(spec, target, False, Domains()) == {
        "changed": False, "path": target.path, "fetched": False, "actions": [], "users": [],
        "diff": {"before": state, "after": state}}


@pytest.mark.parametrize("check_mode", [True, False])
def test_absent_removes_the_file_its_record_and_stale_temps(tmp_path, check_mode):
    spec = _spec(tmp_path / "i", state="absent")
    target = record.target_of(spec, None)
    path = _cached(spec)
    with open(target.record_path, "w") as handle:
        handle.write("{}")
    stale = path + ".virtfleet-tmp-123"
    open(stale, "w").close()
    result = prune.ensure_absent(spec, target, check_mode, Domains())
    assert result == {"changed": True, "path": path, "fetched": False, "actions": ["remove"], "users": [],
                      "diff": {"before": {"path": path, "state": "unusable",
                                          "reason": "the record lacks 'format'"},
                               "after": {"path": path, "state": "absent"}}}
    assert [os.path.exists(p) for p in (path, target.record_path, stale)] == [check_mode] * 3


def test_absent_of_a_record_without_its_file_removes_the_record(tmp_path):
    spec = _spec(tmp_path / "i", state="absent")
    target = record.target_of(spec, None)
    os.makedirs(spec.layout.base_dir)
    with open(target.record_path, "w") as handle:
        handle.write("{}")
    assert prune.ensure_absent(spec, target, False, Domains())["changed"] is True
    assert not os.path.exists(target.record_path)


def test_absent_refuses_an_image_in_use_and_names_every_user_unless_forced(tmp_path):
    spec = _spec(tmp_path / "i", state="absent")
    target = record.target_of(spec, None)
    path = _cached(spec)
    os.makedirs(tmp_path / "i" / "web1")
    disk = str(tmp_path / "i" / "web1" / "disk")
    _qemu_img("-f", "qcow2", "-b", path, "-F", "raw", disk)
    domains = Domains({path: {"db2", "app1"}})
    expected = ("the cached image %s (%s) is still used by domain app1, domain db2, %s; remove those disks first or "
                "pass force: true" % (path, URL, disk))
    for check_mode in (True, False):
        with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)) as refused:
            prune.ensure_absent(spec, target, check_mode, domains)
        assert refused.value.details == {"users": ["domain app1", "domain db2", disk]}
    assert os.path.exists(path)
    forced = _spec(tmp_path / "i", state="absent", force=True)
    result = prune.ensure_absent(forced, target, False, domains)
    assert (result["changed"], result["users"], os.path.exists(path)) == (
        True, ["domain app1", "domain db2", disk], False)


def test_absent_without_a_hypervisor_asks_the_one_of_its_uri(tmp_path):
    """No batch hypervisor given: the run opens spec.uri itself (libvirt's test driver here: no domain uses it)."""
    spec = _spec(tmp_path / "i", state="absent")
    target = record.target_of(spec, None)
    _cached(spec)
    assert prune.ensure_absent(spec, target, False)["changed"] is True
    elsewhere = _spec(tmp_path / "j", state="absent", uri="test:///missing-virtfleet.xml")
    _cached(elsewhere)
    with pytest.raises(VirtfleetError, match="^cannot connect to libvirt at test:///missing-virtfleet.xml: "):
        prune.ensure_absent(elsewhere, record.target_of(elsewhere, None), False)
    assert os.path.exists(record.target_of(elsewhere, None).path)


def test_pruned_of_an_empty_or_missing_cache_changes_nothing(tmp_path):
    for instances in (tmp_path / "missing", tmp_path):
        spec = _spec(instances, state="pruned")
        assert prune.ensure_pruned(spec, False, Domains()) == {
            "changed": False, "removed": [], "kept": [], "actions": [], "fetched": False,
            "diff": {"before": {"bases": []}, "after": {"bases": []}}}


@pytest.mark.parametrize("check_mode", [True, False])
def test_pruned_removes_what_nothing_used_for_min_unused_age_and_keeps_the_rest(tmp_path, check_mode):
    spec = _spec(tmp_path / "i", state="pruned", min_unused_age="1d")
    old = _cached(spec, "a-old", age=2 * DAY)
    old_record = spec.layout.record("a-old")
    with open(old_record, "w") as handle:
        handle.write("{}")
    os.utime(old_record, (os.stat(old).st_atime, os.stat(old).st_mtime))
    recent = _cached(spec, "b-recent", age=DAY / 2)
    by_domain = _cached(spec, "c-domain", age=2 * DAY)
    by_tree = _cached(spec, "d-tree", age=2 * DAY)
    also_old = _cached(spec, "e-old", age=3 * DAY)
    open(spec.layout.base("f.virtfleet-tmp-1"), "w").close()  # a download in progress: not a cached image
    os.makedirs(spec.layout.base("g-dir"))
    os.makedirs(tmp_path / "i" / "web1")
    _qemu_img("-f", "qcow2", "-b", by_tree, "-F", "raw", str(tmp_path / "i" / "web1" / "disk"))
    bases = [old, recent, by_domain, by_tree, also_old]
    result = prune.ensure_pruned(spec, check_mode, Domains({by_domain: {"web2"}}))
    assert result == {"changed": True, "removed": [old, also_old], "kept": [recent, by_domain, by_tree],
                      "actions": ["remove", "remove"], "fetched": False,
                      "diff": {"before": {"bases": bases}, "after": {"bases": [recent, by_domain, by_tree]}}}
    assert [os.path.exists(p) for p in (old, old_record, also_old)] == [check_mode] * 3
    assert all(os.path.exists(p) for p in (recent, by_domain, by_tree))


def test_pruned_with_nothing_old_enough_changes_nothing(tmp_path):
    spec = _spec(tmp_path / "i", state="pruned", min_unused_age="1d")
    recent = _cached(spec, "recent", age=60)
    assert prune.ensure_pruned(spec, False, Domains()) == {
        "changed": False, "removed": [], "kept": [recent], "actions": [], "fetched": False,
        "diff": {"before": {"bases": [recent]}, "after": {"bases": [recent]}}}


def test_the_unused_age_is_counted_from_the_last_read_write_or_record_and_its_end_is_inclusive(tmp_path):
    spec = _spec(tmp_path / "i", state="pruned", min_unused_age=100)
    path = _cached(spec, "base")
    os.utime(path, (1000.0, 900.0))
    last = os.stat(path)
    assert prune._last_use(last, spec.layout.record("base")) == 1000.0
    os.utime(path, (0, 0))
    assert prune._last_use(os.stat(path), spec.layout.record("base")) == 0.0
    with open(spec.layout.record("base"), "w") as handle:
        handle.write("{}")
    os.utime(spec.layout.record("base"), (5.0, 2000.0))
    assert prune._last_use(os.stat(path), spec.layout.record("base")) == 2000.0
    assert prune.plan_pruned(spec, ["base"], {}, 2100.0).removals == ["base"]  # exactly min_unused_age: old enough
    kept = prune.plan_pruned(spec, ["base"], {}, 2099.0)
    assert (kept.removals, kept.kept, kept.steps, kept.state) == ([], [path], [], "pruned")
    gone = prune.plan_pruned(spec, ["missing", "base"], {}, 3000.0)
    assert (gone.removals, gone.steps) == (["base"], ["remove"])
    assert prune.plan_pruned(spec, ["base"], {os.path.realpath(path): ["x"]}, 3000.0).kept == [path]


def test_what_the_tree_uses_records_chains_and_headers(tmp_path):
    """The tree walk: the base a disk's record names, the chain of a disk recorded as qcow2 (several levels),
    the header of an unrecorded disk (one level); never records, logs, temps, or the cache's own directories."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import cache_layout

    layout = cache_layout(str(tmp_path / "i"))
    os.makedirs(layout.base_dir)
    os.makedirs(layout.lock_dir)
    names = ("by-record", "by-chain", "by-direct", "by-header", "by-locks", "by-raw", "by-temp")
    base = {}
    for name in names:
        base[name] = layout.base(name)
        _qemu_img("-f", "raw", base[name], "1M")
    web = tmp_path / "i" / "web1"
    web.mkdir()
    middle = str(tmp_path / "elsewhere.qcow2")  # outside the tree: reached only by following the chain
    _qemu_img("-f", "qcow2", "-b", base["by-chain"], "-F", "raw", middle)
    _qemu_img("-f", "qcow2", "-b", middle, "-F", "qcow2", str(web / "disk"))
    _qemu_img("-f", "raw", str(web / "disk.local"), "1M")
    _qemu_img("-f", "qcow2", "-b", base["by-direct"], "-F", "raw", str(web / "disk.swap"))
    _qemu_img("-f", "qcow2", "-b", base["by-header"], "-F", "raw", str(web / "scratch"))
    _fake_qcow2(web / "fake-raw", base["by-raw"].encode())  # recorded raw: its "header" is guest data
    _fake_qcow2(web / "a.virtfleet-tmp-1", base["by-temp"].encode())
    for skipped in ("a.json", "a.xml"):
        _fake_qcow2(web / skipped, base["by-temp"].encode())
    (web / "subdir").mkdir()
    _fake_qcow2(tmp_path / "i" / "locks" / "x", base["by-locks"].encode())  # the cache's own directory
    (tmp_path / "i" / "stray-file").write_bytes(b"")
    with open(web / "disk.info.json", "w") as handle:
        handle.write('{"disk": {"format": "qcow2"}, "disk.swap": {"format": "qcow2"}, '
                     '"disk.local": {"base": "%s", "format": "raw"}, "fake-raw": {"format": "raw"}, '
                     '"scratch": "not a dict"}' % base["by-record"])
    assert prune.bases_in_use(layout) == {
        os.path.realpath(base["by-chain"]): [str(web / "disk")],
        os.path.realpath(base["by-direct"]): [str(web / "disk.swap")],
        os.path.realpath(base["by-record"]): [str(web / "disk.local")],
        os.path.realpath(base["by-header"]): [str(web / "scratch")]}
    # a disk that names one base twice (record and header) is listed once; domains come first
    _qemu_img("-f", "qcow2", "-b", base["by-record"], "-F", "raw", str(web / "disk.local"))
    assert prune.bases_in_use(layout, Domains({base["by-record"]: {"db1"}, middle: {"db2"}}))[
        os.path.realpath(base["by-record"])] == ["domain db1", str(web / "disk.local")]
