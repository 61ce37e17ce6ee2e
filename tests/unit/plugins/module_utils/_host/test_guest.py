"""The Guest wrapper against libvirt's test:///default driver (a real libvirt, in process, no daemon)."""

import os
import subprocess

import pytest

libvirt = pytest.importorskip("libvirt")  # noqa: F841 - a requirement of the test venv; never missing in CI

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError  # noqa: E402
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import guest as guest_mod  # noqa: E402

DOMAIN = """<domain type='test'>
  <name>%(name)s</name>
  <memory unit='KiB'>131072</memory>
  <vcpu current='1'>4</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>%(disks)s</devices>
</domain>"""
DISK = "<disk type='file' device='disk'><driver name='qemu' type='%s'/><source file='%s'/><target dev='%s'/></disk>"


@pytest.fixture
def hv():
    with guest_mod.open_hypervisor("test:///default") as hypervisor:
        yield hypervisor


def define(hv, name, *disks):
    xml = DOMAIN % {"name": name, "disks": "".join(DISK % (fmt, path, "vd" + "abcdef"[i])
                                                   for i, (path, fmt) in enumerate(disks))}
    return hv.define(xml)


def test_lifecycle_through_the_wrapper(hv):
    g = define(hv, "wrap1")
    assert hv.lookup("wrap1").uuid == g.uuid and hv.lookup("nope") is None
    assert g.status() == "shutoff" and g.is_persistent() and not g.autostart()
    assert g.start(timeout=5) == "running" and g.status() == "running"
    g.suspend(timeout=5)
    assert g.status() == "paused"
    g.resume(timeout=5)
    g.set_vcpus(2)
    assert g.vcpus_count() == 2
    g.set_autostart(True)
    assert g.autostart()
    g.set_metadata('<memo key="k"/>', "vfmemo", "https://virtfleet.dev/xmlns/libvirt/memo/1")
    assert 'key="k"' in g.inactive_xml()
    assert g.shutdown(timeout=5, force_off=False) == ["shutdown"] and g.status() == "shutoff"
    g.undefine()
    assert hv.lookup("wrap1") is None and g.raw_state() == ("absent", 0)


def test_a_wait_names_what_it_waited_for(hv):
    g = define(hv, "wrap2")
    with pytest.raises(VirtfleetError, match=r"timed out after 0 s waiting for domain wrap2 to be running \(it is "
                                             r"shutoff\)"):
        g.wait_for_state({"running"}, 0)
    g.undefine()


def test_disks_in_use_counts_every_guest_and_backing_chains(hv, tmp_path):
    base = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-f", "raw", str(base), "1M"], check=True, capture_output=True)
    mid = tmp_path / "mid.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(mid)], check=True,
                   capture_output=True)
    top = tmp_path / "outside" / "top.qcow2"
    top.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", str(mid), "-F", "qcow2", str(top)], check=True,
                   capture_output=True)
    raw = tmp_path / "raw-with-fake-header"
    # A raw disk whose bytes look like a qcow2 naming a backing file: its driver says raw, nothing is followed.
    raw.write_bytes(open(top, "rb").read(65536))
    one = define(hv, "use1", (str(top), "qcow2"))
    two = define(hv, "use2", (str(raw), "raw"))
    try:
        used = hv.disks_in_use()
        assert used[os.path.realpath(base)] == {"use1"} and used[os.path.realpath(mid)] == {"use1"}
        assert used[os.path.realpath(raw)] == {"use2"}
        assert hv.guests_using(str(base)) == ["use1"]
        assert hv.guests_using(str(base), except_guest="use1") == []
        assert sorted(x for x in used if x.startswith(str(tmp_path))) == sorted(
            os.path.realpath(p) for p in (base, mid, top, raw))
    finally:
        one.undefine()
        two.undefine()


def test_disk_sources_read_backing_stores_of_live_xml():
    xml = """<domain><devices><disk type='file'><driver type='qcow2'/><source file='/a/top'/>
      <backingStore type='file'><format type='raw'/><source file='/a/base'/><backingStore/></backingStore>
      </disk><disk type='block'><source dev='/dev/sdz'/></disk></devices></domain>"""
    assert guest_mod.disk_sources(xml) == [("/a/top", "qcow2"), ("/a/base", "raw"), ("/dev/sdz", None)]
    assert guest_mod.disk_sources("<not xml") == []
