"""The typed domain model: round trips, determinism, unknown content kept."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model

FULL = """
<domain type='kvm' xmlns:other='urn:other'>
  <name>web1</name>
  <uuid>3C1A1A54-5BD1-4F0C-9D0B-33E2BBF0B6F3</uuid>
  <title>Web &amp; more</title>
  <description>line one
line two</description>
  <metadata>
    <virtfleet:instance xmlns:virtfleet='https://virtfleet.dev/xmlns/libvirt/1'>
      <virtfleet:flavor>m1.small</virtfleet:flavor>
      <virtfleet:image>debian-12</virtfleet:image>
      <virtfleet:owned-files>
        <virtfleet:file>/srv/web1/disk</virtfleet:file>
        <virtfleet:file>/srv/web1/console.log</virtfleet:file>
      </virtfleet:owned-files>
    </virtfleet:instance>
    <other:thing a='1'>kept</other:thing>
  </metadata>
  <maxMemory slots='16' unit='GiB'>4</maxMemory>
  <memory unit='MiB'>1024</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <iothreads>2</iothreads>
  <sysinfo type='fwcfg'>
    <entry name='opt/org.virtfleet/mode'>stay</entry>
    <entry name='opt/org.virtfleet/role'>web</entry>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/srv/web1/nvram.fd</nvram>
    <kernel>/boot/vmlinuz</kernel>
    <initrd>/boot/initrd</initrd>
    <cmdline>console=ttyS0 root=/dev/vda1</cmdline>
    <bootmenu enable='yes'/>
  </os>
  <features><acpi/><apic/><smm state='on'/><kvm><hidden state='on'/></kvm></features>
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>Skylake-Client</model>
    <topology sockets='1' dies='1' cores='2' threads='2'/>
    <feature policy='disable' name='hle'/>
  </cpu>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>coredump-restart</on_crash>
  <pm><suspend-to-mem enabled='no'/></pm>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>
      <source file='/srv/web1/disk'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
      <serial>root0</serial>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/iso/x.iso'/>
      <target dev='sda' bus='scsi'/>
      <readonly/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/><mtu size='9000'/></interface>
    <interface type='direct'><source dev='eth0' mode='bridge'/><model type='virtio'/></interface>
    <serial type='pty'><log file='/srv/web1/console.log' append='on'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
    <video><model type='virtio' heads='1' primary='yes'/></video>
    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>
    <watchdog model='i6300esb' action='reset'/>
    <memballoon model='virtio'><stats period='10'/></memballoon>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <frobnicator level='11'/>
  </devices>
  <other:unknown>x</other:unknown>
</domain>
"""


def _roundtrip(text: str) -> str:
    return model.Domain.from_xml(text).to_string()


def test_round_trip_is_a_fixed_point_and_deterministic():
    once = _roundtrip(FULL)
    assert _roundtrip(once) == once
    assert _roundtrip(FULL) == once


def test_typed_fields_are_parsed():
    dom = model.Domain.from_xml(FULL)
    assert dom.name == "web1" and dom.type == "kvm"
    assert dom.title == "Web & more" and dom.description == "line one\nline two"
    assert dom.memory_kib == 1024 * 1024 and dom.current_memory_kib == 1024 * 1024
    assert dom.max_memory_kib == 4 * 1024 * 1024 and dom.max_memory_slots == 16
    assert (dom.vcpus, dom.vcpu_current, dom.vcpu_placement) == (4, 2, "static")
    assert dom.metadata.flavor == "m1.small" and dom.metadata.image == "debian-12"
    assert dom.metadata.owned_files == ["/srv/web1/disk", "/srv/web1/console.log"]
    assert dom.os.machine == "pc-q35-7.2" and dom.os.loader.secure and dom.os.loader.readonly
    assert dom.os.nvram.path == "/srv/web1/nvram.fd" and dom.os.kernel == "/boot/vmlinuz"
    assert dom.features.flags == ["acpi", "apic"] and dom.features.smm is True
    assert (dom.cpu.mode, dom.cpu.model, dom.cpu.cores, dom.cpu.threads) == ("custom", "Skylake-Client", 2, 2)
    assert dom.sysinfo[0].entries == [("opt/org.virtfleet/mode", "stay"), ("opt/org.virtfleet/role", "web")]
    kinds = [type(d).__name__ for d in dom.devices]
    assert kinds == ["Disk", "Disk", "Controller", "Interface", "Interface", "Interface", "Serial", "Console",
                     "Channel", "Tpm", "Graphics", "Video", "RawDevice", "Watchdog", "MemBalloon", "Rng",
                     "RawDevice"]
    disk = dom.devices[0]
    assert (disk.source_file, disk.driver_type, disk.driver_cache, disk.target_dev, disk.boot_order,
            disk.serial) == ("/srv/web1/disk", "qcow2", "none", "vda", 1, "root0")
    nics = dom.devices_of(model.Interface)
    assert nics[0].mac == "52:54:00:aa:bb:cc" and nics[2].source == {"dev": "eth0", "mode": "bridge"}
    assert dom.devices[6].log_file == "/srv/web1/console.log" and dom.devices[6].log_append is True


def test_unknown_content_survives():
    out = _roundtrip(FULL)
    for fragment in ("<iothreads>2</iothreads>", "<bootmenu enable=\"yes\"/>", "<hidden state=\"on\"/>",
                     "<timer name=\"rtc\" tickpolicy=\"catchup\"/>", "<suspend-to-mem enabled=\"no\"/>",
                     "<frobnicator level=\"11\"/>", "<mtu size=\"9000\"/>", "<stats period=\"10\"/>",
                     "kept</other:thing>", "urn:other\">x</other:unknown>", "<hostdev mode=\"subsystem\""):
        assert fragment in out, fragment


def test_uuid_and_mac_are_settable():
    dom = model.Domain.from_xml(FULL)
    dom.uuid = "00000000-0000-0000-0000-000000000001"
    dom.devices_of(model.Interface)[1].mac = "52:54:00:00:00:01"
    again = model.Domain.from_xml(dom.to_string())
    assert again.uuid == "00000000-0000-0000-0000-000000000001"
    assert again.devices_of(model.Interface)[1].mac == "52:54:00:00:00:01"


def test_text_is_escaped_not_interpreted():
    dom = model.Domain(name="x", title="</title><devices><disk/>", description="a & <b>")
    text = dom.to_string()
    assert "&lt;/title&gt;&lt;devices&gt;" in text
    back = model.Domain.from_xml(text)
    assert back.title == "</title><devices><disk/>" and back.description == "a & <b>"
    assert back.devices == []


def test_entities_are_not_expanded():
    evil = ("<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain type='kvm'><name>&x;</name>"
            "<devices/></domain>")
    try:
        dom = model.Domain.from_xml(evil)
    except model.ModelError:
        return
    assert "root:" not in (dom.name or "")


@pytest.mark.parametrize("text,message", [
    ("<domain", "^not well-formed XML: Couldn't find end of Start Tag domain"),
    ("<notdomain/>", "^expected a <domain> element, got <notdomain>$"),
    ("<domain><memory unit='parsec'>1</memory></domain>", "^memory: unknown unit 'parsec'$"),
    ("<domain><vcpu>many</vcpu></domain>", "^vcpu: expected an integer, got 'many'$")])
def test_bad_xml_raises_model_error(text, message):
    with pytest.raises(model.ModelError, match=message):
        model.Domain.from_xml(text)


def test_memory_units():
    assert model.memory_to_kib("1", "GiB") == 1024 * 1024
    assert model.memory_to_kib("1", "GB") == 976563  # rounded up, like libvirt
    assert model.memory_to_kib("2048", None) == 2048
    assert model.memory_to_kib("1", "b") == 1


def test_device_shape_the_class_cannot_hold_is_kept_raw():
    text = ("<domain><name>x</name><devices><video foo='1'><model type='vga'/></video>"
            "<disk type='file'><source file='/a'/><source file='/b'/></disk></devices></domain>")
    dom = model.Domain.from_xml(text)
    assert isinstance(dom.devices[0], model.RawDevice)
    assert isinstance(dom.devices[1], model.Disk) and dom.devices[1].source_file == "/a"
    out = dom.to_string()
    assert "<video foo=\"1\">" in out and out.count("<source") == 2


# Issue 10 item 20: domain-level parts keep what they do not type, as devices do.
DOMAIN_LEVEL_SHAPES = {
    "cpu model without text": "<cpu mode='custom'><model fallback='forbid'/></cpu>",
    "two cpu models": "<cpu><model>Nehalem</model><model>Westmere</model></cpu>",
    "os with an untyped attribute": "<os foo='bar'><type arch='x86_64'>hvm</type><boot dev='hd'/></os>",
    "os type with an untyped attribute": "<os><type arch='x86_64' machine='pc' foo='1'>hvm</type></os>",
    "os loader with a child": "<os><type>hvm</type><loader type='pflash'>/c.fd<x/></loader></os>",
    "our metadata with attributes": "<metadata><v:instance xmlns:v='https://virtfleet.dev/xmlns/libvirt/1' a='1'>"
                                    "<v:flavor b='2'>m1</v:flavor><v:owned-files c='3'><v:file d='4'>/f</v:file>"
                                    "</v:owned-files></v:instance></metadata>",
    "smm without a state": "<features><acpi/><smm/></features>",
    "smm with a tseg": "<features><smm state='on'><tseg unit='MiB'>48</tseg></smm></features>",
    "memory in MiB": "<memory unit='MiB'>214</memory><currentMemory unit='GB'>1</currentMemory>",
    "vcpu written in hex": "<vcpu>0x2</vcpu>",
}


@pytest.mark.parametrize("label", sorted(DOMAIN_LEVEL_SHAPES))
def test_a_domain_level_part_round_trips_whatever_its_shape(label):
    text = "<domain type='kvm'><name>x</name>%s<devices/></domain>" % DOMAIN_LEVEL_SHAPES[label]
    rendered = model.Domain.from_xml(text).to_string()
    assert model.canonical(model.parse_element(rendered)) == model.canonical(model.parse_element(text)), rendered


def test_a_domain_without_os_gains_none_and_an_os_is_never_doubled():
    assert "<os" not in model.Domain.from_xml("<domain><name>x</name><devices/></domain>").to_string()
    odd = model.Domain.from_xml("<domain><name>x</name><os foo='bar'><type foo='1'>hvm</type></os></domain>")
    assert odd.to_string().count("<os") == 1 and odd.to_string().count("<type") == 1
    assert odd.os.type == "hvm" and odd.os.extra_attrs == {"foo": "bar"}, "typed, with the untyped kept"


def test_a_cpu_model_without_text_keeps_its_fallback_through_normalising():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import normalize

    def normalized(cpu):
        text = "<domain type='kvm'><name>x</name><os><type arch='x86_64'>hvm</type></os>%s<devices/></domain>" % cpu
        return normalize.normalize_for_compare(model.Domain.from_xml(text)).to_string()

    forbid = normalized("<cpu mode='custom'><model fallback='forbid'/></cpu>")
    assert "fallback=\"forbid\"" in forbid
    assert forbid != normalized("<cpu mode='custom'><model fallback='allow'/></cpu>")


def test_qemu_commandline_is_typed_and_rendered_where_libvirt_puts_it():
    text = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>g1</name>
      <qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='user,id=n0'/><qemu:env name='A' value='1'/>
      </qemu:commandline><devices/></domain>"""
    dom = model.Domain.from_xml(text)
    assert dom.qemu_commandline.args == ["-netdev", "user,id=n0"] and len(dom.qemu_commandline.extra) == 1
    rendered = dom.to_string()
    assert rendered.startswith('<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" type="qemu">')
    assert rendered.index("<devices/>") < rendered.index("<qemu:commandline>")
    assert '<qemu:env name="A" value="1"/>' in rendered and rendered.count("xmlns:qemu") == 1
    assert model.Domain.from_xml(rendered).to_string() == rendered
    assert "xmlns:qemu" not in model.Domain.from_xml("<domain><name>g1</name></domain>").to_string()


def test_a_qemu_commandline_the_model_cannot_type_is_kept_verbatim():
    text = """<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>g1</name>
      <qemu:commandline><qemu:arg value='-a'>text</qemu:arg></qemu:commandline></domain>"""
    dom = model.Domain.from_xml(text)
    assert dom.qemu_commandline.args == [] and dom.qemu_commandline.extra[0].text == "text"
    odd = model.Domain.from_xml(text.replace("<qemu:commandline>", "<qemu:commandline x='1'>"))
    assert odd.qemu_commandline is None and odd.extra[0].get("x") == "1"
