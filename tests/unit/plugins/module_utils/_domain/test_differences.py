"""Classified differences: each part of a definition says whether a running guest takes a change live."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import differences
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import normalize

BASE = """<domain type='qemu'>
  <name>g1</name>
  <uuid>3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3</uuid>
  <metadata><v:instance xmlns:v='https://virtfleet.dev/xmlns/libvirt/1'><v:flavor>small</v:flavor></v:instance>
  </metadata>
  <memory unit='MiB'>1024</memory>
  <currentMemory unit='MiB'>1024</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>Nehalem</model></cpu>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i/disk'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/i/a.iso'/>
      <target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>
      <model type='virtio'/></interface>
    <serial type='pty'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>"""


def changes(old: str, new: str):
    before = normalize.normalize_for_compare(model.Domain.from_xml(old))
    after = normalize.normalize_for_compare(model.Domain.from_xml(new))
    return [(d.what, d.before, d.after, d.applies) for d in differences.compare(before, after)]


def edited(*replacements):
    text = BASE
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


CASES = [
    ("vcpus up within the maximum", [("current='2'>4", "current='3'>4")], [("vcpus", 2, 3, "live")]),
    ("vcpus down", [("current='2'>4", "current='1'>4")], [("vcpus", 2, 1, "restart")]),
    ("vcpus above the maximum", [("current='2'>4", "current='6'>8")],
     [("max_vcpus", 4, 8, "restart"), ("vcpus", 2, 6, "restart")]),
    ("maximum only", [("current='2'>4", "current='2'>8")], [("max_vcpus", 4, 8, "restart")]),
    ("balloon within memory", [("<currentMemory unit='MiB'>1024", "<currentMemory unit='MiB'>512")],
     [("current_memory", 1048576, 524288, "live")]),
    ("memory itself", [("<memory unit='MiB'>1024", "<memory unit='MiB'>2048"),
                       ("<currentMemory unit='MiB'>1024", "<currentMemory unit='MiB'>2048")],
     [("memory", 1048576, 2097152, "restart"), ("current_memory", 1048576, 2097152, "restart")]),
    ("uuid", [("33e2bbf0b6f3", "33e2bbf0b6f4")],
     [("uuid", "3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3", "3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f4", "recreate")]),
    ("machine", [("pc-i440fx-7.2", "pc-i440fx-8.0")], [("machine", "pc-i440fx-7.2", "pc-i440fx-8.0", "restart")]),
    ("virt type", [("<domain type='qemu'>", "<domain type='kvm'>")], [("type", "qemu", "kvm", "restart")]),
]


@pytest.mark.parametrize("label, replacements, expected", CASES, ids=[c[0] for c in CASES])
def test_scalar_parts_are_classified(label, replacements, expected):
    assert changes(BASE, edited(*replacements)) == expected


@pytest.mark.parametrize("label, replacements, what, applies", [
    ("cpu model", [("Nehalem", "Westmere")], "cpu", "restart"),
    ("firmware", [("<boot dev='hd'/>", "<loader readonly='yes' type='pflash'>/o/CODE.fd</loader><boot dev='hd'/>")],
     "firmware", "restart"),
    ("boot order", [("<boot dev='hd'/>", "<boot dev='cdrom'/>")], "os", "restart"),
    ("features", [("<apic/>", "<apic/><pae/>")], "features", "restart"),
    ("metadata", [("small</v:flavor>", "large</v:flavor>")], "metadata", "live"),
    ("title", [("</uuid>", "</uuid><title>web</title>")], "title", "live"),
    ("untyped top-level element", [("</devices>", "</devices><pm><suspend-to-mem enabled='no'/></pm>")], "pm",
     "restart"),
    ("disk hot-plug", [("<serial type='pty'/>", "<disk type='file' device='disk'><source file='/i/disk.local'/>"
                        "<target dev='vdb' bus='virtio'/></disk><serial type='pty'/>")], "devices.disk vdb", "live"),
    ("disk on ide is no hot-plug", [("<serial type='pty'/>", "<disk type='file' device='disk'><source "
                                     "file='/i/x'/><target dev='hdb' bus='ide'/></disk><serial type='pty'/>")],
     "devices.disk hdb", "restart"),
    ("nic hot-plug", [("<serial type='pty'/>", "<interface type='network'><mac address='52:54:00:00:00:02'/>"
                       "<source network='default'/></interface><serial type='pty'/>")],
     "devices.interface 52:54:00:00:00:02", "live"),
    ("nic model", [("<model type='virtio'/>", "<model type='e1000'/>")], "devices.interface 52:54:00:00:00:01",
     "restart"),
    ("cdrom medium", [("/i/a.iso", "/i/b.iso")], "devices.disk hdc", "live"),
    ("disk format", [("type='qcow2'", "type='raw'")], "devices.disk vda", "restart"),
    ("rng removed", [("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>", "")],
     "devices.rng 0", "restart"),
    ("user nic on qemu's command line", [("</devices>", "</devices><qemu:commandline xmlns:qemu="
                                          "'http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-netdev'/>"
                                          "<qemu:arg value='user,id=vfnet0,restrict=on'/></qemu:commandline>")],
     "qemu_commandline", "restart"),
])
def test_parts_and_devices_are_classified(label, replacements, what, applies):
    found = changes(BASE, edited(*replacements))
    assert [(w, a) for w, _b, _a, a in found] == [(what, applies)], found


def test_a_removed_nic_is_live_and_its_before_is_its_xml():
    found = changes(BASE, edited(("<interface type='network'><mac address='52:54:00:00:00:01'/><source "
                                  "network='default'/>\n      <model type='virtio'/></interface>", "")))
    [(what, before, after, applies)] = found
    assert (what, after, applies) == ("devices.interface 52:54:00:00:00:01", None, "live")
    assert before.startswith('<interface type="network"><mac address="52:54:00:00:00:01"/>')


def test_equal_definitions_have_no_differences_and_every_textual_change_has_one():
    assert changes(BASE, BASE) == []
    # whatever differs in the canonical text is reported, even a part no rule names
    odd = edited(("<vcpu placement='static'", "<vcpu placement='auto'"))
    assert [(w, a) for w, _b, _after, a in changes(BASE, odd)] == [("attributes", "restart")]


def test_differences_are_plain_data_with_a_reason():
    before = normalize.normalize_for_compare(model.Domain.from_xml(BASE))
    after = normalize.normalize_for_compare(model.Domain.from_xml(edited(("current='2'>4", "current='3'>4"))))
    [change] = differences.compare(before, after)
    assert change.as_dict() == {"what": "vcpus", "before": 2, "after": 3, "applies": "live",
                                "why": "vCPUs are plugged up to the <vcpu> maximum"}
    assert change.describe() == "vcpus: 2 -> 3 (live)"
    assert differences.needing_restart([change]) == []
