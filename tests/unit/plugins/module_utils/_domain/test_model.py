"""The typed domain model: round trips, determinism, unknown content kept, normalisation."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model as model

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


@pytest.mark.parametrize("text", ["<domain", "<notdomain/>", "<domain><memory unit='parsec'>1</memory></domain>",
                                  "<domain><vcpu>many</vcpu></domain>"])
def test_bad_xml_raises_model_error(text):
    with pytest.raises(model.ModelError):
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


DESIRED = """
<domain type='qemu'>
  <name>g1</name>
  <uuid>3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3</uuid>
  <memory unit='MiB'>160</memory>
  <vcpu>1</vcpu>
  <os><type machine='pc-i440fx-7.2'>hvm</type></os>
  <features><acpi/><apic/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/i/disk'/><target dev='vda'/></disk>
    <interface type='network'><mac address='52:54:00:AA:BB:CC'/><source network='isolated'/><model type='virtio'/></interface>
    <serial type='pty'><log file='/i/console.log' append='on'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>
    <video><model type='vga'/></video>
  </devices>
</domain>
"""

# What libvirt 9 shows for DESIRED once the guest runs (inactive extras + live ones).
READBACK = """
<domain type='qemu' id='4'>
  <name>g1</name>
  <uuid>3C1A1A54-5BD1-4F0C-9D0B-33E2BBF0B6F3</uuid>
  <memory unit='KiB'>163840</memory>
  <currentMemory unit='KiB'>163840</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <resource><partition>/machine</partition></resource>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
    <feature policy='require' name='hypervisor'/>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/i/disk' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'><alias name='usb'/></controller>
    <controller type='pci' index='0' model='pci-root'><alias name='pci.0'/></controller>
    <controller type='ide' index='0'/>
    <controller type='virtio-serial' index='0'/>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='isolated' portid='0a8b3b2e-4c2f-4d5f-9e23-1b3c5d7e9f01' bridge='virbr9'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <log file='/i/console.log' append='on'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <log file='/i/console.log' append='on'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <input type='mouse' bus='ps2'><alias name='input0'/></input>
    <input type='keyboard' bus='ps2'><alias name='input1'/></input>
    <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <audio id='1' type='none'/>
    <video><model type='vga' vram='16384' heads='1' primary='yes'/><alias name='video0'/></video>
    <memballoon model='virtio'><alias name='balloon0'/></memballoon>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64055</label></seclabel>
</domain>
"""


def test_normalize_makes_desired_equal_libvirt_readback():
    desired = model.normalize_for_compare(model.Domain.from_xml(DESIRED)).to_string()
    readback = model.normalize_for_compare(model.Domain.from_xml(READBACK)).to_string()
    assert desired == readback


def test_normalize_is_idempotent_and_keeps_real_differences():
    once = model.normalize_for_compare(model.Domain.from_xml(DESIRED))
    assert model.normalize_for_compare(once).to_string() == once.to_string()
    changed = model.Domain.from_xml(DESIRED)
    changed.vcpus = 2
    assert model.normalize_for_compare(changed).to_string() != once.to_string()
    diff = [a for a, b in zip(model.normalize_for_compare(changed).to_string().splitlines(),
                              once.to_string().splitlines()) if a != b]
    assert len(diff) == 1 and "vcpu" in diff[0]


def test_normalize_does_not_modify_its_argument():
    dom = model.Domain.from_xml(READBACK)
    before = dom.to_string()
    model.normalize_for_compare(dom)
    assert dom.to_string() == before


def test_normalize_keeps_user_chosen_controllers_and_non_default_values():
    text = DESIRED.replace("<devices>", "<devices><controller type='scsi' model='virtio-scsi'/>"
                           "<controller type='usb' model='none'/>")
    norm = model.normalize_for_compare(model.Domain.from_xml(text))
    controllers = [(c.type, c.model) for c in norm.devices_of(model.Controller)]
    assert ("scsi", "virtio-scsi") in controllers and ("usb", "none") in controllers
    crash = model.Domain.from_xml(DESIRED.replace("<devices>", "<on_crash>preserve</on_crash><devices>"))
    assert model.normalize_for_compare(crash).on_crash == "preserve"


def test_normalize_direct_interface_default_mode_and_cdrom_bus_from_name():
    text = ("<domain type='qemu'><name>x</name><devices>"
            "<interface type='direct'><source dev='eth0'/></interface>"
            "<disk type='file' device='cdrom'><target dev='hdc'/><readonly/></disk></devices></domain>")
    norm = model.normalize_for_compare(model.Domain.from_xml(text))
    assert norm.devices_of(model.Interface)[0].source == {"dev": "eth0", "mode": "vepa"}
    assert norm.devices_of(model.Disk)[0].target_bus == "ide"


def test_metadata_without_our_namespace_is_kept_and_ours_is_optional():
    text = ("<domain><name>x</name><metadata><app:x xmlns:app='urn:app'>1</app:x></metadata>"
            "<devices/></domain>")
    dom = model.Domain.from_xml(text)
    assert dom.metadata.owned_files == [] and dom.metadata.flavor is None
    assert "urn:app" in dom.to_string() and "virtfleet" not in dom.to_string()


def test_live_cpu_is_compared_by_topology_and_numa_only():
    desired = model.Domain.from_xml(DESIRED.replace(
        "<devices>", "<cpu mode='host-model'><topology sockets='1' cores='2' threads='1'/></cpu><devices>"))
    live = model.Domain.from_xml(READBACK.replace(
        "<model fallback='forbid'>qemu64</model>",
        "<model fallback='forbid'>EPYC</model><topology sockets='1' cores='2' threads='1'/>"))
    assert model.normalize_for_compare(desired).to_string() != model.normalize_for_compare(live).to_string()
    assert (model.normalize_for_compare(desired, runtime=True).to_string()
            == model.normalize_for_compare(live).to_string())
    other = model.Domain.from_xml(READBACK.replace(
        "<model fallback='forbid'>qemu64</model>",
        "<model fallback='forbid'>EPYC</model><topology sockets='2' cores='1' threads='1'/>"))
    assert (model.normalize_for_compare(desired, runtime=True).to_string()
            != model.normalize_for_compare(other).to_string())


MEMO_LINE = ('    <vfmemo:memo xmlns:vfmemo="https://virtfleet.dev/xmlns/libvirt/memo/1" key="%s"/>\n' % ("ab" * 32))


def test_the_domain_modules_memo_is_invisible_to_comparison_but_kept_verbatim():
    """The memo is the domain module's cache about a definition: never a difference, never dropped by a round trip."""
    with_wrapper = READBACK.replace("<memory unit='KiB'>", "<metadata>\n%s  </metadata>\n  <memory unit='KiB'>"
                                    % MEMO_LINE, 1)
    plain = model.normalize_for_compare(model.Domain.from_xml(READBACK)).to_string()
    assert model.normalize_for_compare(model.Domain.from_xml(with_wrapper)).to_string() == plain
    assert model.normalize_for_compare(model.Domain.from_xml(with_wrapper), runtime=True).to_string() == \
        model.normalize_for_compare(model.Domain.from_xml(READBACK), runtime=True).to_string()
    # next to our own metadata and another application's: both still compared, the memo not
    beside = FULL.replace("<other:thing a='1'>kept</other:thing>", "<other:thing a='1'>kept</other:thing>\n"
                          + MEMO_LINE, 1)
    assert model.normalize_for_compare(model.Domain.from_xml(beside)).to_string() == \
        model.normalize_for_compare(model.Domain.from_xml(FULL)).to_string()
    assert "urn:other" in model.normalize_for_compare(model.Domain.from_xml(beside)).to_string()
    assert "memo/1" in model.Domain.from_xml(beside).to_string(), "a parse and render keeps what it read"
    edited = with_wrapper.replace("<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>")
    assert model.normalize_for_compare(model.Domain.from_xml(edited)).to_string() != plain


def test_memo_namespace_is_the_one_the_domain_module_writes():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo as memo
    assert model.MEMO_NS == memo.MEMO_NS


def test_normalize_tpm_watchdog_and_no_balloon_against_libvirt_readback():
    """What the designer writes for tpm/watchdog/memballoon=false equals what libvirt 9 shows (define and run)."""
    desired = DESIRED.replace("<video>", "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
                              "<watchdog model='i6300esb' action='poweroff'/><memballoon model='none'/><video>")
    readback = READBACK.replace(
        "<memballoon model='virtio'><alias name='balloon0'/></memballoon>",
        "<watchdog model='i6300esb' action='poweroff'><alias name='watchdog0'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></watchdog>"
        "<memballoon model='none'/>").replace(
        "<input type='mouse'",
        "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/><alias name='tpm0'/></tpm><input type='mouse'")
    want = model.normalize_for_compare(model.Domain.from_xml(desired))
    assert want.to_string() == model.normalize_for_compare(model.Domain.from_xml(readback)).to_string()
    tpm = want.devices_of(model.Tpm)[0]
    assert (tpm.model, tpm.backend_type, tpm.backend_version) == ("tpm-crb", "emulator", "2.0")
    assert [m.model for m in want.devices_of(model.MemBalloon)] == ["none"]
    # Real differences stay visible: no balloon is not libvirt's default balloon, actions and models count.
    for old, new in (("<memballoon model='none'/>", ""), ("action='poweroff'", "action='pause'"),
                     ("tpm-crb", "tpm-tis")):
        other = model.normalize_for_compare(model.Domain.from_xml(desired.replace(old, new)))
        assert other.to_string() != want.to_string(), (old, new)


def test_q35_implicit_itco_watchdog_of_libvirt_9_1_compares_as_none():
    q35 = DESIRED.replace("pc-i440fx-7.2", "pc-q35-7.2")
    implicit = q35.replace("<video>", "<watchdog model='itco' action='reset'/><video>")
    norm = model.normalize_for_compare
    assert norm(model.Domain.from_xml(implicit)).to_string() == norm(model.Domain.from_xml(q35)).to_string()
    acting = q35.replace("<video>", "<watchdog model='itco' action='poweroff'/><video>")
    assert norm(model.Domain.from_xml(acting)).to_string() != norm(model.Domain.from_xml(q35)).to_string()
    on_pc = DESIRED.replace("<video>", "<watchdog model='itco' action='reset'/><video>")
    assert norm(model.Domain.from_xml(on_pc)).devices_of(model.Watchdog), "only q35 has the implicit one"
