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


# --- issue 10 item 21: each rule's edge, and the words it reports ------------------------------------------------

def _d(what="x", before=None, after=None, applies="restart"):
    return differences.Difference(what, before, after, applies)


def test_describe_shortens_long_values_and_names_absence():
    assert _d("memory", 1, 2).describe() == "memory: 1 -> 2 (restart)"
    assert _d("title", None, "web").describe() == "title: none -> web (restart)"
    long = "<a>" + "x" * 80 + "</a>"
    assert _d("cpu", long, "a\n   b").describe() == "cpu: %s... -> a b (restart)" % long[:57]
    assert len(long[:57] + "...") == 60
    assert _d("cpu", "y" * 60, None).describe() == "cpu: %s -> none (restart)" % ("y" * 60)


def test_needing_restart_keeps_restart_and_recreate():
    found = [_d("a", applies="live"), _d("b", applies="restart"), _d("c", applies="recreate")]
    assert [d.what for d in differences.needing_restart(found)] == ["b", "c"]
    assert differences.APPLIES == ("live", "restart", "recreate")


def test_vcpus_within_the_running_maximum_are_live_up_to_it():
    cases = [
        ("current='2'>4", "current='4'>4", [("vcpus", 2, 4, "live")]),           # up to the maximum itself
        ("current='2'>4", "current='2'>4", []),
        ("<vcpu placement='static' current='2'>4", "<vcpu placement='static'>4", [("vcpus", 2, 4, "live")]),
        ("<vcpu placement='static' current='2'>4", "<vcpu placement='static'>2",
         [("max_vcpus", 4, 2, "restart")]),
    ]
    for old, new, expected in cases:
        assert changes(BASE, edited((old, new))) == expected, (old, new)


def test_maximum_memory_and_its_slots():
    with_max = edited(("<memory unit='MiB'>1024", "<maxMemory slots='16' unit='KiB'>4194304</maxMemory>"
                                                  "<memory unit='MiB'>1024"))
    assert changes(BASE, with_max) == [("max_memory", None, "4194304 KiB, 16 slots", "restart")]
    more_slots = with_max.replace("slots='16'", "slots='8'")
    assert changes(with_max, more_slots) == [("max_memory", "4194304 KiB, 16 slots", "4194304 KiB, 8 slots",
                                              "restart")]


def test_the_balloon_is_live_up_to_the_boot_memory_only():
    up_to = edited(("<currentMemory unit='MiB'>1024", "<currentMemory unit='MiB'>1024"))
    assert changes(BASE, up_to) == []
    lower = edited(("<memory unit='MiB'>1024", "<memory unit='MiB'>2048"),
                   ("<currentMemory unit='MiB'>1024", "<currentMemory unit='MiB'>512"))
    assert changes(lower, BASE) == [("memory", 2097152, 1048576, "restart"),
                                    ("current_memory", 524288, 1048576, "live")]
    [why] = [d.why for d in differences.compare(*(normalize.normalize_for_compare(model.Domain.from_xml(x))
                                                  for x in (lower, BASE))) if d.what == "current_memory"]
    assert why == "the balloon sets it within <memory>"


def test_os_values_are_plain_text():
    assert changes(BASE, edited(("arch='x86_64'", "arch='i686'"))) == [("arch", "hvm/x86_64", "hvm/i686",
                                                                        "restart")]


def test_firmware_is_named_by_its_loader_and_secure_boot():
    loader = "<loader readonly='yes' secure='yes' type='pflash'>/o/CODE.secboot.fd</loader>"
    secure = edited(("<boot dev='hd'/>", loader + "<boot dev='hd'/>"))
    assert changes(BASE, secure) == [("firmware", None, "/o/CODE.secboot.fd (secure boot)", "restart")]
    plain = secure.replace(" secure='yes'", "")
    assert changes(secure, plain) == [("firmware", "/o/CODE.secboot.fd (secure boot)", "/o/CODE.secboot.fd",
                                       "restart")]
    nvram = plain.replace("<boot dev='hd'/>", "<nvram>/i/nvram.fd</nvram><boot dev='hd'/>")
    assert changes(plain, nvram) == [("firmware", "/o/CODE.secboot.fd", "/o/CODE.secboot.fd", "restart")]


def test_untyped_top_level_elements_are_compared_by_tag():
    pm = edited(("</devices>", "</devices><pm><suspend-to-mem enabled='no'/></pm>"))
    both = pm.replace("</pm>", "</pm><iothreads>2</iothreads>")
    found = changes(pm, both)
    assert found == [("iothreads", None, "<iothreads>2</iothreads>", "restart")]
    assert changes(both, pm) == [("iothreads", "<iothreads>2</iothreads>", None, "restart")]
    changed = both.replace("enabled='no'", "enabled='yes'")
    assert [w for w, _b, _a, _ap in changes(both, changed)] == ["pm"]


def test_several_sysinfo_blocks_are_one_part():
    one = edited(("</devices>", "</devices><sysinfo type='fwcfg'><entry name='opt/a'>1</entry></sysinfo>"))
    two = one.replace("</sysinfo>", "</sysinfo><sysinfo type='smbios'><system><entry name='serial'>s</entry>"
                                    "</system></sysinfo>")
    [(what, before, after, applies)] = changes(one, two)
    assert (what, applies) == ("sysinfo", "restart")
    assert after.startswith("<parts>") and after.count("<sysinfo") == 2 and before.startswith("<sysinfo")
    assert changes(two, two) == []


def test_metadata_that_becomes_empty_is_absent():
    bare = BASE.replace(BASE[BASE.index("<metadata>"):BASE.index("</metadata>") + len("</metadata>")], "")
    found = changes(BASE, bare)
    assert [(w, a) for w, _b, after, a in found] == [("metadata", "live")] and found[0][2] is None


def test_devices_are_recognised_by_their_key():
    dev = model.parse_device(model.parse_element("<controller type='usb' index='1'/>"))
    assert differences.device_key(dev, 5) == "controller usb 1"
    dev = model.parse_device(model.parse_element("<controller type='scsi'/>"))
    assert differences.device_key(dev, 0) == "controller scsi 0"
    dev = model.parse_device(model.parse_element("<interface type='network'><mac address='52:54:00:AA:00:01'/>"
                                                 "</interface>"))
    assert differences.device_key(dev, 3) == "interface 52:54:00:aa:00:01"
    dev = model.parse_device(model.parse_element("<interface type='network'/>"))
    assert differences.device_key(dev, 3) == "interface 3"
    dev = model.parse_device(model.parse_element("<disk device='cdrom'/>"))
    assert differences.device_key(dev, 2) == "disk 2"
    dev = model.parse_device(model.parse_element("<rng model='virtio'/>"))
    assert differences.device_key(dev, 1) == "rng 1"


def test_two_devices_of_a_kind_are_told_apart_by_position():
    second = edited(("/dev/urandom</backend></rng>", "/dev/urandom</backend></rng><rng model='virtio'><backend "
                                                     "model='random'>/dev/hwrng</backend></rng>"))
    assert [(w, a) for w, _b, _af, a in changes(BASE, second)] == [("devices.rng 1", "restart")]


@pytest.mark.parametrize("device,applies,why", [
    ("<disk type='file' device='disk'><source file='/x'/><target dev='sdb' bus='scsi'/></disk>", "live",
     "scsi disks are hot-plugged"),
    ("<disk type='file' device='disk'><source file='/x'/><target dev='sdb' bus='usb'/></disk>", "live",
     "usb disks are hot-plugged"),
    ("<disk type='file' device='disk'><source file='/x'/><target dev='sdb' bus='sata'/></disk>", "restart",
     "sata disks cannot be hot-plugged"),
    ("<watchdog model='i6300esb' action='reset'/>", "restart", "a watchdog is added or removed at the next start"),
])
def test_added_devices_say_how_they_are_added(device, applies, why):
    added = edited(("<serial type='pty'/>", device + "<serial type='pty'/>"))
    before = normalize.normalize_for_compare(model.Domain.from_xml(BASE))
    after = normalize.normalize_for_compare(model.Domain.from_xml(added))
    [change] = differences.compare(before, after)
    assert (change.applies, change.why) == (applies, why)


def test_only_a_cdrom_or_floppy_medium_is_swapped_live():
    ejected = edited(("<source file='/i/a.iso'/>", ""))
    [change] = differences.compare(*(normalize.normalize_for_compare(model.Domain.from_xml(x))
                                     for x in (BASE, ejected)))
    assert (change.what, change.applies, change.why) == ("devices.disk hdc", "live",
                                                         "the medium is changed in the running guest")
    other_too = edited(("/i/a.iso'/>\n      <target dev='hdc' bus='ide'/><readonly/>",
                        "/i/b.iso'/>\n      <target dev='hdc' bus='ide'/>"))
    [change] = differences.compare(*(normalize.normalize_for_compare(model.Domain.from_xml(x))
                                     for x in (BASE, other_too)))
    assert (change.applies, change.why) == ("restart", "a changed disk applies at the next start")
    moved = edited(("<source file='/i/disk'/>", "<source file='/i/other'/>"))
    assert [(w, a) for w, _b, _af, a in changes(BASE, moved)] == [("devices.disk vda", "restart")]


def test_a_difference_no_rule_names_is_still_reported():
    before = normalize.normalize_for_compare(model.Domain.from_xml(BASE))
    after = normalize.normalize_for_compare(model.Domain.from_xml(BASE))
    after.extra_attrs["foo"] = "x"
    rules = differences.DOMAIN_PARTS
    try:
        differences.DOMAIN_PARTS = []
        found = differences.compare(before, after)
    finally:
        differences.DOMAIN_PARTS = rules
    assert [(d.what, d.applies, d.why) for d in found] == [("definition", "restart", "applies at the next start")]
    assert found[0].before == before.to_string() and found[0].after == after.to_string()


@pytest.mark.parametrize("replacements,what,why", [
    ([("pc-i440fx-7.2", "pc-i440fx-8.0")], "machine", "the machine type is chosen at start"),
    ([("arch='x86_64'", "arch='i686'")], "arch", "the guest architecture is chosen at start"),
    ([("<apic/>", "<apic/><pae/>")], "features", "hypervisor features are chosen at start"),
    ([("</features>", "</features><clock offset='localtime'/>")], "clock", "the clock is set up at start"),
    ([("<vcpu placement='static'", "<vcpu placement='auto'")], "attributes", "applies at the next start"),
    ([("<serial type='pty'/>", "<interface type='network'><mac address='52:54:00:00:00:02'/><source "
                               "network='default'/></interface><serial type='pty'/>")],
     "devices.interface 52:54:00:00:00:02", "NICs are hot-plugged"),
    ([("<serial type='pty'/>", "<disk type='file' device='disk'><source file='/x'/><target dev='ubda'/></disk>"
                               "<serial type='pty'/>")], "devices.disk ubda", "these disks cannot be hot-plugged"),
])
def test_each_difference_says_why_it_applies_as_it_does(replacements, what, why):
    before = normalize.normalize_for_compare(model.Domain.from_xml(BASE))
    after = normalize.normalize_for_compare(model.Domain.from_xml(edited(*replacements)))
    assert [(d.what, d.why) for d in differences.compare(before, after)] == [(what, why)]


def test_several_untyped_elements_of_one_tag_are_reported_together():
    two = edited(("</devices>", "</devices><pm><suspend-to-mem enabled='no'/></pm><pm><suspend-to-disk "
                                "enabled='no'/></pm>"))
    [(what, before, after, applies)] = changes(BASE, two)
    assert (what, before, applies) == ("pm", None, "restart")
    assert after.split("\n") == ['<pm><suspend-to-mem enabled="no"/></pm>', '<pm><suspend-to-disk enabled="no"/></pm>']
    assert changes(two, BASE)[0][1] == after


def test_a_difference_made_without_a_reason_has_an_empty_one():
    assert differences.Difference("x", 1, 2, "live").as_dict()["why"] == ""
