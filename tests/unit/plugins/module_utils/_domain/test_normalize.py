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


# --- issue 10 item 21: the domain-level parts, as libvirt writes them back ----------------------------------------

def _domain(cpu="", os_type="<type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>", os_rest="<boot dev='hd'/>",
            devices="", top="", os_attrs="", vcpu="<vcpu placement='static'>2</vcpu>", running=False):
    return ("<domain type='qemu'%s><name>g1</name><uuid>3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3</uuid>%s"
            "<memory unit='KiB'>131072</memory>%s<os%s>%s%s</os>%s<devices>%s</devices></domain>"
            % (" id='3'" if running else "", top, vcpu, os_attrs, os_type, os_rest, cpu, devices))


def _same(one, two, runtime=False):
    norm = normalize.normalize_for_compare
    return norm(model.Domain.from_xml(one), runtime=runtime).to_string() == \
        norm(model.Domain.from_xml(two), runtime=runtime).to_string()


X86_DEFAULT_CPU = "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
NEHALEM = "<cpu mode='custom' match='exact' check='partial'><model fallback='allow'>Nehalem</model></cpu>"

# (case, what we write, what libvirt shows for it (or another definition), whether they mean the same)
DOMAIN_PARTS = [
    ("no cpu is libvirt's qemu64", _domain(), _domain(cpu=X86_DEFAULT_CPU), True),
    ("no cpu on i686 too", _domain(os_type="<type arch='i686'>hvm</type>"),
     _domain(os_type="<type arch='i686'>hvm</type>", cpu=X86_DEFAULT_CPU), True),
    ("but not on aarch64", _domain(os_type="<type arch='aarch64'>hvm</type>"),
     _domain(os_type="<type arch='aarch64'>hvm</type>", cpu=X86_DEFAULT_CPU), False),
    ("qemu64 that may fall back is not the default", _domain(),
     _domain(cpu=X86_DEFAULT_CPU.replace("forbid", "allow")), False),
    ("an explicit custom qemu64 is the default", _domain(cpu=X86_DEFAULT_CPU.replace(" check='none'", "")),
     _domain(), True),
    ("custom model with libvirt's defaults", _domain(cpu="<cpu><model>Nehalem</model></cpu>"), _domain(cpu=NEHALEM),
     True),
    ("custom model spelled out", _domain(cpu="<cpu mode='custom' match='exact'><model fallback='allow'>Nehalem"
                                         "</model></cpu>"), _domain(cpu=NEHALEM), True),
    ("another model", _domain(cpu=NEHALEM), _domain(cpu=NEHALEM.replace("Nehalem", "Westmere")), False),
    ("model fallback forbid", _domain(cpu=NEHALEM), _domain(cpu=NEHALEM.replace("allow", "forbid")), False),
    ("match minimum", _domain(cpu=NEHALEM), _domain(cpu=NEHALEM.replace("exact", "minimum")), False),
    ("a topology adds no model", _domain(cpu="<cpu><topology sockets='1' cores='2' threads='1'/></cpu>"),
     _domain(cpu="<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model>"
                 "<topology sockets='1' cores='2' threads='1'/></cpu>"), True),
    ("a topology is no default cpu", _domain(cpu="<cpu><topology sockets='1' cores='2' threads='1'/></cpu>"),
     _domain(), False),
    ("a feature is required unless said", _domain(cpu="<cpu><model>Nehalem</model><feature name='vmx'/></cpu>"),
     _domain(cpu=NEHALEM.replace("</model>", "</model><feature policy='require' name='vmx'/>")), True),
    ("a disabled feature", _domain(cpu="<cpu><model>Nehalem</model><feature name='vmx'/></cpu>"),
     _domain(cpu=NEHALEM.replace("</model>", "</model><feature policy='disable' name='vmx'/>")), False),
    ("host-model", _domain(cpu="<cpu mode='host-model'/>"), _domain(cpu="<cpu mode='host-model' check='partial'/>"),
     True),
    ("host-model is not custom", _domain(cpu="<cpu mode='host-model'/>"), _domain(), False),
    ("host-passthrough", _domain(cpu="<cpu mode='host-passthrough'/>"),
     _domain(cpu="<cpu mode='host-passthrough' check='none' migratable='on'/>"), True),
    ("host-passthrough not migratable", _domain(cpu="<cpu mode='host-passthrough' migratable='off'/>"),
     _domain(cpu="<cpu mode='host-passthrough' check='none' migratable='on'/>"), False),
    ("maximum", _domain(cpu="<cpu mode='maximum'/>"), _domain(cpu="<cpu mode='maximum' check='none' "
                                                                  "migratable='on'/>"), True),
    ("maximum is not host-passthrough", _domain(cpu="<cpu mode='maximum'/>"),
     _domain(cpu="<cpu mode='host-passthrough'/>"), False),
    ("host-model migratable stays", _domain(cpu="<cpu mode='host-model' migratable='on'/>"),
     _domain(cpu="<cpu mode='host-model' check='partial'/>"), False),
    ("os arch defaults to x86_64", _domain(os_type="<type>hvm</type>"), _domain(os_type="<type arch='x86_64'>hvm"
                                                                                "</type>"), True),
    ("os arch of another guest", _domain(os_type="<type>hvm</type>"), _domain(os_type="<type arch='i686'>hvm"
                                                                              "</type>"), False),
    ("no boot means hd", _domain(os_rest=""), _domain(), True),
    ("pflash loader is read-only", _domain(os_rest="<loader type='pflash'>/f/CODE.fd</loader><boot dev='hd'/>"),
     _domain(os_rest="<loader readonly='yes' type='pflash'>/f/CODE.fd</loader><boot dev='hd'/>"), True),
    ("a writable pflash loader", _domain(os_rest="<loader type='pflash'>/f/CODE.fd</loader><boot dev='hd'/>"),
     _domain(os_rest="<loader readonly='no' type='pflash'>/f/CODE.fd</loader><boot dev='hd'/>"), False),
    ("a rom loader is not made read-only", _domain(os_rest="<loader type='rom'>/f/bios.bin</loader>"),
     _domain(os_rest="<loader readonly='yes' type='rom'>/f/bios.bin</loader>"), False),
    ("nvram template filled in by libvirt", _domain(os_rest="<loader readonly='yes' type='pflash'>/f/C.fd</loader>"
                                                    "<nvram>/i/nvram.fd</nvram>"),
     _domain(os_rest="<loader readonly='yes' type='pflash'>/f/C.fd</loader><nvram template='/f/V.fd'>"
                     "/i/nvram.fd</nvram>"), True),
    ("firmware autoselection resolved", _domain(os_attrs=" firmware='efi'", os_rest="<loader readonly='yes' "
                                                "type='pflash'>/f/C.fd</loader>"),
     _domain(os_rest="<loader readonly='yes' type='pflash'>/f/C.fd</loader>"), True),
    ("firmware autoselection unresolved", _domain(os_attrs=" firmware='efi'"), _domain(), False),
    ("the default resource partition", _domain(), _domain(top="<resource><partition>/machine</partition>"
                                                              "</resource>"), True),
    ("another resource partition", _domain(), _domain(top="<resource><partition>/custom</partition></resource>"),
     False),
    ("the genid and seclabel libvirt adds", _domain(),
     _domain(top="<genid>43dc0cf8-809b-4adb-9bea-a9abb5f3d90e</genid>").replace(
         "</devices>", "</devices><seclabel type='dynamic' model='dac' relabel='yes'/>"), True),
    ("current vcpus equal to the maximum", _domain(), _domain(vcpu="<vcpu current='2'>2</vcpu>"), True),
    ("fewer current vcpus", _domain(), _domain(vcpu="<vcpu current='1'>2</vcpu>"), False),
    ("a bare smm is smm on", _domain(cpu="<features><acpi/><smm/></features>"),
     _domain(cpu="<features><acpi/><smm state='on'/></features>"), True),
    ("a bare smm is not smm off", _domain(cpu="<features><smm/></features>"),
     _domain(cpu="<features><smm state='off'/></features>"), False),
    ("smm with a tseg is not a bare smm", _domain(cpu="<features><smm><tseg unit='MiB'>48</tseg></smm></features>"),
     _domain(cpu="<features><smm state='on'/></features>"), False),
    ("an unknown empty feature is not smm", _domain(cpu="<features><virtfleet-x/></features>"),
     _domain(cpu="<features><smm state='on'/></features>"), False),
]


@pytest.mark.parametrize("case,ours,theirs,same", DOMAIN_PARTS, ids=[c[0] for c in DOMAIN_PARTS])
def test_domain_level_parts_compare_as_libvirt_means_them(case, ours, theirs, same):
    assert _same(ours, theirs) is same
    assert _same(theirs, ours) is same


def test_a_device_boot_order_means_no_boot_element_is_added():
    disk = ("<disk type='file' device='disk'><source file='/i/disk'/><target dev='vda' bus='virtio'/>"
            "<boot order='1'/></disk>")
    norm = normalize.normalize_for_compare(model.Domain.from_xml(_domain(os_rest="", devices=disk)))
    assert norm.os.boot_devs == []
    assert normalize.normalize_for_compare(model.Domain.from_xml(_domain(os_rest=""))).os.boot_devs == ["hd"]


def test_a_running_guest_is_compared_in_full_unless_its_cpu_was_expanded():
    """Only a live CPU libvirt expanded (check='full') is reduced to its topology; the runtime flag reduces both."""
    defined = _domain(cpu=NEHALEM)
    live_other_model = _domain(cpu=NEHALEM.replace("Nehalem", "Westmere"), running=True)
    assert not _same(defined, live_other_model)
    expanded = _domain(cpu=NEHALEM.replace("partial", "full").replace("Nehalem", "Westmere"), running=True)
    assert _same(_domain(cpu="<cpu mode='host-model'/>", running=True), expanded, runtime=True)
    norm = normalize.normalize_for_compare(model.Domain.from_xml(expanded))
    assert norm.id is None and " id=" not in norm.to_string()


def test_runtime_cpu_keeps_topology_and_numa_cells_only():
    cpu = model.Domain.from_xml(_domain(cpu="<cpu mode='custom'><model>Nehalem</model><feature name='vmx'/>"
                                            "<topology sockets='1' cores='2' threads='1'/><numa><cell id='0' "
                                            "cpus='0-1' memory='131072' unit='KiB'/></numa><cache mode='passthrough'"
                                            "/></cpu>")).cpu
    kept = normalize.runtime_cpu(cpu)
    assert (kept.mode, kept.model, kept.features) == (None, None, [])
    assert (kept.sockets, kept.cores, kept.threads) == (1, 2, 1)
    assert [e.tag for e in kept.extra] == ["numa"]
    assert normalize.runtime_cpu(model.Domain.from_xml(_domain(cpu=NEHALEM)).cpu) is None
    assert normalize.runtime_cpu(None) is None


@pytest.mark.parametrize("cpu,keeps", [
    (NEHALEM, True), ("<cpu><model>Nehalem</model></cpu>", True),
    ("<cpu mode='custom' match='strict'><model>Nehalem</model></cpu>", True),
    ("<cpu mode='custom' match='minimum'><model>Nehalem</model></cpu>", False),
    ("<cpu mode='host-model'/>", False), ("<cpu mode='host-passthrough'/>", False), ("<cpu mode='maximum'/>", False),
    ("<cpu><topology sockets='1' cores='2' threads='1'/></cpu>", False), ("", False),
])
def test_a_guest_keeps_the_model_of_a_custom_cpu_matched_exactly_or_strictly(cpu, keeps):
    assert normalize.keeps_its_model(model.Domain.from_xml(_domain(cpu=cpu)).cpu) is keeps


def test_runtime_cpu_of_a_named_custom_cpu_keeps_what_libvirt_starts_as_written():
    named = model.Domain.from_xml(_domain(cpu="<cpu><model>Westmere</model><vendor>AMD</vendor><feature "
                                              "policy='disable' name='popcnt'/><feature name='aes'/><feature "
                                              "policy='optional' name='x2apic'/><feature policy='force' name='avx'/>"
                                              "</cpu>")).cpu
    live = model.Domain.from_xml(_domain(cpu="<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>"
                                             "Westmere</model><vendor>AMD</vendor><feature policy='force' name='avx'/>"
                                             "<feature policy='disable' name='x2apic'/><feature policy='disable' "
                                             "name='popcnt'/><feature policy='require' name='hypervisor'/></cpu>",
                                         running=True)).cpu
    want = normalize.runtime_cpu(named, named)
    assert (want.mode, want.match, want.check, want.model, want.model_fallback, want.vendor) == \
        (None, None, None, "Westmere", None, "AMD")
    assert [(f.name, f.policy) for f in want.features] == [("avx", "force"), ("popcnt", "disable")]
    seen = normalize.runtime_cpu(live, named)
    assert (seen.mode, seen.match, seen.check, seen.model, seen.model_fallback, seen.vendor) == \
        ("custom", "exact", None, "Westmere", None, "AMD")
    assert seen.features == want.features
    assert normalize.runtime_cpu(live, model.Cpu(model="Westmere")).vendor is None, "compared only when named"
    assert normalize.runtime_cpu(live) is None, "without named: topology and NUMA cells only, and it has neither"


def test_metadata_of_other_programs_is_part_of_the_definition():
    meta = "<metadata><o:x xmlns:o='https://example.org/other'>%s</o:x></metadata>"
    assert not _same(_domain(top=meta % "1"), _domain(top=meta % "2"))
    assert not _same(_domain(top=meta % "1"), _domain())


# (what libvirt shows, what it compares as) for devices whose values are the user's, not libvirt's defaults
KEPT_DEVICES = {
    "audio-pulseaudio": ("<audio id='1' type='pulseaudio'/>", '<audio id="1" type="pulseaudio"/>'),
    "raw-spice-not-audio": ("<smartcard mode='passthrough' type='spice'/>",
                            '<smartcard mode="passthrough" type="spice"/>'),
    "controller-fdc": ("<controller type='fdc' index='0'/>", None),
    "controller-sata": ("<controller type='sata' index='0'/>", None),
    "controller-scsi-lsilogic-named": ("<controller type='scsi' index='0' model='lsilogic'/>", None),
    "input-usb-keyboard": ("<input type='keyboard' bus='usb'/>", '<input type="keyboard" bus="usb"/>'),
    "input-virtio-tablet": ("<input type='tablet' bus='virtio'/>", '<input type="tablet" bus="virtio"/>'),
    "disk-explicit-bus": ("<disk type='file' device='disk'><source file='/a'/><target dev='sda' bus='usb'/></disk>",
                          '<disk type="file" device="disk"><source file="/a"/><target dev="sda" bus="usb"/>'
                          '</disk>'),
    "disk-sd-scsi": ("<disk><source file='/a'/><target dev='sdb'/></disk>",
                     '<disk type="file" device="disk"><source file="/a"/><target dev="sdb" bus="scsi"/></disk>'),
    "disk-xvd-xen": ("<disk><source file='/a'/><target dev='xvda'/></disk>",
                     '<disk type="file" device="disk"><source file="/a"/><target dev="xvda" bus="xen"/></disk>'),
    "disk-fd-fdc": ("<disk device='floppy'><source file='/a'/><target dev='fda'/></disk>",
                    '<disk type="file" device="floppy"><source file="/a"/><target dev="fda" bus="fdc"/></disk>'),
    "disk-network-source": ("<disk type='network' device='disk'><source protocol='nbd' name='x'><host name='h' "
                            "port='10809'/></source><target dev='vdb' bus='virtio'/></disk>",
                            '<disk type="network" device="disk"><source protocol="nbd" name="x"><host name="h" '
                            'port="10809"/></source><target dev="vdb" bus="virtio"/></disk>'),
    "serial-16550a": ("<serial type='pty'><target type='isa-serial' port='0'><model name='16550a'/></target>"
                      "</serial>", '<serial type="pty"><target type="isa-serial" port="0"><model name="16550a"/>'
                                   '</target></serial>'),
    "serial-second-port": ("<serial type='pty'><target type='isa-serial' port='1'/></serial>",
                           '<serial type="pty"><target type="isa-serial" port="1"/></serial>'),
    "channel-file": ("<channel type='file'><source path='/var/log/x'/><target type='virtio' name='org.x.0'/>"
                     "</channel>", '<channel type="file"><source path="/var/log/x"/><target type="virtio" '
                                   'name="org.x.0"/></channel>'),
    "graphics-fixed-port": ("<graphics type='vnc' port='5901' autoport='no'/>",
                            '<graphics type="vnc" port="5901" autoport="no"/>'),
    "graphics-unset-port": ("<graphics type='vnc' port='-1'/>", '<graphics type="vnc"/>'),
    "video-all-sizes": ("<video><model type='qxl' ram='65536' vram='65536' vram64='0' vgamem='16384' heads='2'/>"
                        "</video>", '<video><model type="qxl" heads="2"/></video>'),
    "rng-egd": ("<rng model='virtio'><backend model='egd' type='tcp'><source mode='connect' host='h' "
                "service='1'/></backend></rng>", None),
    "tpm-passthrough": ("<tpm model='tpm-crb'><backend type='passthrough'><device path='/dev/tpm0'/></backend>"
                        "</tpm>", None),
}


@pytest.mark.parametrize("case", sorted(KEPT_DEVICES))
def test_devices_keep_what_is_not_libvirts_default(case):
    shown, compared = KEPT_DEVICES[case]
    normalized = _normalized(shown)
    if compared is None and case.startswith("controller"):
        assert normalized is None  # libvirt adds these by itself
        return
    if compared is None:
        compared = model.etree.tostring(_device(shown).to_element(), encoding="unicode")
    assert normalized == compared


def test_two_running_guests_whose_cpus_were_not_expanded_are_compared_in_full():
    one = _domain(cpu=NEHALEM, running=True)
    other = _domain(cpu=NEHALEM.replace("Nehalem", "Westmere"), running=True)
    assert not _same(one, other)
    expanded_one, expanded_other = (x.replace("partial", "full") for x in (one, other))
    assert _same(expanded_one, expanded_other)  # libvirt's expansion: only the topology and NUMA cells count
    assert not _same(one.replace(" id='3'", "").replace("partial", "full"),
                     other.replace(" id='3'", "").replace("partial", "full")), "a definition is compared in full"


def test_security_labels_inside_devices_are_libvirts():
    disk = ("<disk type='file' device='disk'><source file='/i/disk'/><target dev='vda' bus='virtio'/></disk>")
    labelled = disk.replace("<source file='/i/disk'/>", "<source file='/i/disk'><seclabel model='dac' "
                                                        "relabel='no'/></source>")
    assert _same(_domain(devices=disk), _domain(devices=labelled))


def test_a_disk_whose_source_is_only_its_children_keeps_its_source():
    network = ("<disk type='network' device='cdrom'><source protocol='http' name='/x.iso'><host name='h'/>"
               "</source><target dev='sda' bus='scsi'/><readonly/></disk>")
    norm = normalize.normalize_for_compare(model.Domain.from_xml(_domain(devices=network)))
    assert "<host name=\"h\"/>" in norm.to_string()
    ejected = network.replace("<source protocol='http' name='/x.iso'><host name='h'/></source>", "")
    assert not _same(_domain(devices=network), _domain(devices=ejected))


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
