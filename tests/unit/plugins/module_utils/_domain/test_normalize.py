"""Normalisation: what libvirt adds on define and start compares equal; real differences stay visible."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import normalize
from tests.unit.plugins.module_utils._domain.test_model import FULL

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
    desired = normalize.normalize_for_compare(model.Domain.from_xml(DESIRED)).to_string()
    readback = normalize.normalize_for_compare(model.Domain.from_xml(READBACK)).to_string()
    assert desired == readback


def test_normalize_is_idempotent_and_keeps_real_differences():
    once = normalize.normalize_for_compare(model.Domain.from_xml(DESIRED))
    assert normalize.normalize_for_compare(once).to_string() == once.to_string()
    changed = model.Domain.from_xml(DESIRED)
    changed.vcpus = 2
    assert normalize.normalize_for_compare(changed).to_string() != once.to_string()
    diff = [a for a, b in zip(normalize.normalize_for_compare(changed).to_string().splitlines(),
                              once.to_string().splitlines()) if a != b]
    assert len(diff) == 1 and "vcpu" in diff[0]


def test_normalize_does_not_modify_its_argument():
    dom = model.Domain.from_xml(READBACK)
    before = dom.to_string()
    normalize.normalize_for_compare(dom)
    assert dom.to_string() == before


def test_normalize_keeps_user_chosen_controllers_and_non_default_values():
    text = DESIRED.replace("<devices>", "<devices><controller type='scsi' model='virtio-scsi'/>"
                           "<controller type='usb' model='none'/>")
    norm = normalize.normalize_for_compare(model.Domain.from_xml(text))
    controllers = [(c.type, c.model) for c in norm.devices_of(model.Controller)]
    assert ("scsi", "virtio-scsi") in controllers and ("usb", "none") in controllers
    crash = model.Domain.from_xml(DESIRED.replace("<devices>", "<on_crash>preserve</on_crash><devices>"))
    assert normalize.normalize_for_compare(crash).on_crash == "preserve"


def test_normalize_direct_interface_default_mode_and_cdrom_bus_from_name():
    text = ("<domain type='qemu'><name>x</name><devices>"
            "<interface type='direct'><source dev='eth0'/></interface>"
            "<disk type='file' device='cdrom'><target dev='hdc'/><readonly/></disk></devices></domain>")
    norm = normalize.normalize_for_compare(model.Domain.from_xml(text))
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
    assert normalize.normalize_for_compare(desired).to_string() != normalize.normalize_for_compare(live).to_string()
    assert (normalize.normalize_for_compare(desired, runtime=True).to_string()
            == normalize.normalize_for_compare(live).to_string())
    other = model.Domain.from_xml(READBACK.replace(
        "<model fallback='forbid'>qemu64</model>",
        "<model fallback='forbid'>EPYC</model><topology sockets='2' cores='1' threads='1'/>"))
    assert (normalize.normalize_for_compare(desired, runtime=True).to_string()
            != normalize.normalize_for_compare(other).to_string())


MEMO_LINE = ('    <vfmemo:memo xmlns:vfmemo="https://virtfleet.dev/xmlns/libvirt/memo/1" key="%s"/>\n' % ("ab" * 32))


def test_the_domain_modules_memo_is_invisible_to_comparison_but_kept_verbatim():
    """The memo is the domain module's cache about a definition: never a difference, never dropped by a round trip."""
    with_wrapper = READBACK.replace("<memory unit='KiB'>", "<metadata>\n%s  </metadata>\n  <memory unit='KiB'>"
                                    % MEMO_LINE, 1)
    plain = normalize.normalize_for_compare(model.Domain.from_xml(READBACK)).to_string()
    assert normalize.normalize_for_compare(model.Domain.from_xml(with_wrapper)).to_string() == plain
    assert normalize.normalize_for_compare(model.Domain.from_xml(with_wrapper), runtime=True).to_string() == \
        normalize.normalize_for_compare(model.Domain.from_xml(READBACK), runtime=True).to_string()
    # next to our own metadata and another application's: both still compared, the memo not
    beside = FULL.replace("<other:thing a='1'>kept</other:thing>", "<other:thing a='1'>kept</other:thing>\n"
                          + MEMO_LINE, 1)
    assert normalize.normalize_for_compare(model.Domain.from_xml(beside)).to_string() == \
        normalize.normalize_for_compare(model.Domain.from_xml(FULL)).to_string()
    assert "urn:other" in normalize.normalize_for_compare(model.Domain.from_xml(beside)).to_string()
    assert "memo/1" in model.Domain.from_xml(beside).to_string(), "a parse and render keeps what it read"
    edited = with_wrapper.replace("<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>")
    assert normalize.normalize_for_compare(model.Domain.from_xml(edited)).to_string() != plain


def test_memo_namespace_is_the_one_the_domain_module_writes():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo
    assert normalize.MEMO_NS == memo.MEMO_NS


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
    want = normalize.normalize_for_compare(model.Domain.from_xml(desired))
    assert want.to_string() == normalize.normalize_for_compare(model.Domain.from_xml(readback)).to_string()
    tpm = want.devices_of(model.Tpm)[0]
    assert (tpm.model, tpm.backend_type, tpm.backend_version) == ("tpm-crb", "emulator", "2.0")
    assert [m.model for m in want.devices_of(model.MemBalloon)] == ["none"]
    # Real differences stay visible: no balloon is not libvirt's default balloon, actions and models count.
    for old, new in (("<memballoon model='none'/>", ""), ("action='poweroff'", "action='pause'"),
                     ("tpm-crb", "tpm-tis")):
        other = normalize.normalize_for_compare(model.Domain.from_xml(desired.replace(old, new)))
        assert other.to_string() != want.to_string(), (old, new)


def test_q35_implicit_itco_watchdog_of_libvirt_9_1_compares_as_none():
    q35 = DESIRED.replace("pc-i440fx-7.2", "pc-q35-7.2")
    implicit = q35.replace("<video>", "<watchdog model='itco' action='reset'/><video>")
    norm = normalize.normalize_for_compare
    assert norm(model.Domain.from_xml(implicit)).to_string() == norm(model.Domain.from_xml(q35)).to_string()
    acting = q35.replace("<video>", "<watchdog model='itco' action='poweroff'/><video>")
    assert norm(model.Domain.from_xml(acting)).to_string() != norm(model.Domain.from_xml(q35)).to_string()
    on_pc = DESIRED.replace("<video>", "<watchdog model='itco' action='reset'/><video>")
    assert norm(model.Domain.from_xml(on_pc)).devices_of(model.Watchdog), "only q35 has the implicit one"


# ------------------------------------------------------------------------------ one normaliser per device type

def _device(xml):
    return model.parse_device(model.parse_element(xml))


def _normalized(xml):
    dev = normalize.normalize_device(_device(xml))
    return None if dev is None else model.etree.tostring(dev.to_element(), encoding="unicode")


# (what libvirt shows, what it compares as; None: a device libvirt adds by itself)
PER_DEVICE = {
    "raw-emulator": ("<emulator>/usr/bin/qemu-system-x86_64</emulator>", None),
    "raw-audio-none": ("<audio id='1' type='none'/>", None),
    "raw-hostdev-kept": ("<hostdev mode='subsystem' type='pci'/>", '<hostdev mode="subsystem" type="pci"/>'),
    "controller-pci-implicit": ("<controller type='pci' index='0' model='pci-root'/>", None),
    "controller-usb-default": ("<controller type='usb' index='0' model='piix3-uhci'/>", None),
    "controller-usb-none-kept": ("<controller type='usb' model='none'/>", '<controller type="usb" model="none"/>'),
    "controller-scsi-lsilogic": ("<controller type='scsi' index='0'/>", None),
    "controller-virtio-scsi-index": ("<controller type='scsi' model='virtio-scsi'/>",
                                     '<controller type="scsi" index="0" model="virtio-scsi"/>'),
    "input-ps2": ("<input type='mouse' bus='ps2'/>", None),
    "input-tablet-bus": ("<input type='tablet'/>", '<input type="tablet" bus="usb"/>'),
    "memballoon-default": ("<memballoon model='virtio'/>", None),
    "memballoon-none-kept": ("<memballoon model='none'/>", '<memballoon model="none"/>'),
    "disk-defaults": ("<disk><source file='/a'/><target dev='hdc'/></disk>",
                      '<disk type="file" device="disk"><source file="/a"/><target dev="hdc" bus="ide"/></disk>'),
    "disk-empty-cdrom": ("<disk type='file' device='cdrom'><target dev='sda' bus='scsi'/><readonly/></disk>",
                         '<disk type="file" device="cdrom"><target dev="sda" bus="scsi"/><readonly/></disk>'),
    "interface-network": ("<interface type='network'><mac address='52:54:00:AA:BB:CC'/><source network='n' "
                          "portid='x' bridge='virbr1'/><target dev='vnet3'/></interface>",
                          '<interface type="network"><mac address="52:54:00:aa:bb:cc"/><source network="n"/>'
                          '</interface>'),
    "interface-direct-mode": ("<interface type='direct'><source dev='eth0'/><target dev='macvtap0'/></interface>",
                              '<interface type="direct"><source dev="eth0" mode="vepa"/></interface>'),
    "serial-isa-target": ("<serial type='pty'><source path='/dev/pts/3'/><target type='isa-serial' port='0'>"
                          "<model name='isa-serial'/></target></serial>", '<serial type="pty"/>'),
    "console-tty": ("<console type='pty' tty='/dev/pts/3'><source path='/dev/pts/3'/>"
                    "<target type='serial' port='0'/></console>",
                    '<console type="pty"><target type="serial" port="0"/></console>'),
    "channel-socket-and-state": ("<channel type='unix'><source mode='bind' path='/run/x.sock'/>"
                                 "<target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>",
                                 '<channel type="unix"><target type="virtio" name="org.qemu.guest_agent.0"/>'
                                 '</channel>'),
    "graphics-port": ("<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'/>",
                      '<graphics type="vnc" listen="127.0.0.1"><listen type="address" address="127.0.0.1"/>'
                      '</graphics>'),
    "video-sizes": ("<video><model type='vga' vram='16384' heads='1' primary='yes'/></video>",
                    '<video><model type="vga"/></video>'),
    "rng-default-path": ("<rng model='virtio'><backend model='random'/></rng>",
                         '<rng model="virtio"><backend model="random">/dev/urandom</backend></rng>'),
    "tpm-defaults": ("<tpm><backend type='emulator'/></tpm>",
                     '<tpm model="tpm-tis"><backend type="emulator" version="2.0"/></tpm>'),
    "watchdog-action": ("<watchdog model='i6300esb'/>", '<watchdog model="i6300esb" action="reset"/>'),
}


@pytest.mark.parametrize("case", sorted(PER_DEVICE))
def test_each_device_type_normalises_what_libvirt_adds(case):
    shown, compared = PER_DEVICE[case]
    assert _normalized(shown) == compared
    if compared is not None:
        assert _normalized(compared) == compared, "a normalised device stays as it is"


def test_every_typed_device_class_has_its_own_normaliser():
    assert set(normalize.DEVICE_NORMALIZERS) == set(model.DEVICE_CLASSES.values()) | {model.RawDevice}


def test_a_subclass_without_its_own_normaliser_takes_its_parents():
    class Special(model.Watchdog):
        TAG = "watchdog"

    assert normalize.normalize_device(Special(model="i6300esb")).action == "reset"


# A user NIC on QEMU's command line (domain_xml's default for type user), as domain_xml writes it and as libvirt
# 9.0.0 prints it back: the namespace on the root, the arguments after <devices>, libvirt's own additions.
USER_NIC_ARGS = ("-netdev", "user,id=vfnet0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22", "-device",
                 "virtio-net-pci,netdev=vfnet0,mac=52:54:00:11:22:33,bus=pci.0,addr=0x1f")
USER_NIC_DESIRED = """<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" type="qemu">
  <name>g1</name><uuid>3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3</uuid><memory unit="KiB">65536</memory>
  <currentMemory unit="KiB">65536</currentMemory><vcpu placement="static">1</vcpu>
  <os><type arch="x86_64" machine="pc-i440fx-7.2">hvm</type><boot dev="hd"/></os>
  <devices/>
  <qemu:commandline>%s</qemu:commandline>
</domain>""" % "".join('<qemu:arg value="%s"/>' % arg for arg in USER_NIC_ARGS)
USER_NIC_READBACK = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>g1</name>
  <uuid>3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3</uuid>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </memballoon>
  </devices>
  <qemu:commandline>
%s
  </qemu:commandline>
</domain>""" % "\n".join("    <qemu:arg value='%s'/>" % arg for arg in USER_NIC_ARGS)


def test_a_user_nic_on_qemus_command_line_compares_equal_to_libvirts_copy():
    desired = model.Domain.from_xml(USER_NIC_DESIRED)
    readback = model.Domain.from_xml(USER_NIC_READBACK)
    assert desired.qemu_commandline.args == readback.qemu_commandline.args == list(USER_NIC_ARGS)
    assert not desired.extra and not readback.extra, "typed, not kept as an unknown element"
    assert normalize.normalize_for_compare(desired).to_string() == normalize.normalize_for_compare(readback).to_string()
    moved = model.Domain.from_xml(USER_NIC_DESIRED.replace("127.0.0.1:2222-:22", "127.0.0.1:2223-:22"))
    assert normalize.normalize_for_compare(moved).to_string() != normalize.normalize_for_compare(readback).to_string()
