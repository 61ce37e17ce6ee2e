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
