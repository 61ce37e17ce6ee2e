"""The designer: validation, policy (MACs, disk names, console, firmware) and escaping, without libvirt."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import spec as spec_mod
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import guest_layout

PC = designer.HostFacts(virt_type="qemu", machine="pc-i440fx-7.2")
Q35 = designer.HostFacts(virt_type="qemu", machine="pc-q35-7.2")
INSTANCE = "/srv/instances/g1"
LAYOUT = guest_layout("/srv/instances", "g1")


def design(facts=PC, **params):
    params.setdefault("name", "g1")
    spec = DomainXmlSpec.from_params(params)
    return designer.design_domain(spec, facts, LAYOUT)


def test_consumer_example_shape():
    dom = design(vcpus=1, memory="160M", virt_type="qemu", fw_cfg={"opt/org.virtfleet/mode": "stay"},
                 disks=[{"path": "/srv/instances/g1/disk", "format": "raw"}],
                 metadata={"owned_files": ["/srv/instances/g1/disk", "/srv/instances/g1/console.log"]})
    assert dom.type == "qemu" and dom.memory_kib == 160 * 1024 and dom.vcpus == 1
    assert dom.os.machine == "pc-i440fx-7.2" and dom.os.boot_devs == ["hd"]
    assert dom.sysinfo[0].entries == [("opt/org.virtfleet/mode", "stay")]
    assert dom.cpu is None, "TCG keeps libvirt's default CPU"
    disk = dom.devices_of(model.Disk)[0]
    assert (disk.target_dev, disk.target_bus, disk.driver_type) == ("vda", "virtio", "raw")
    serial = dom.devices_of(model.Serial)[0]
    assert serial.log_file == os.path.join(INSTANCE, "console.log") and serial.log_append
    assert dom.devices_of(model.Console)
    assert dom.metadata.owned_files[1].endswith("console.log")
    assert "acpi" in dom.features.flags


def test_output_is_deterministic():
    args = dict(vcpus=2, memory="256M", nics=[{"network": "default"}, {"bridge": "br0"}],
                disks=[{"path": "/a"}, {"path": "/b", "format": "qcow2"}], fw_cfg={"opt/b": "2", "opt/a": "1"})
    assert design(**args).to_string() == design(**args).to_string()
    assert design(**args).sysinfo[0].entries == [("opt/a", "1"), ("opt/b", "2")]


def test_memory_forms():
    # issue 10 item 12: a bare number is bytes, as every other size here (it was MiB, so "536870912" meant 512 TiB)
    assert design(memory=512 << 20).memory_kib == 512 * 1024
    assert design(memory="536870912").memory_kib == 512 * 1024
    for bare in (512, "512"):
        with pytest.raises(VirtfleetError, match="which is 512 bytes .a number without a unit is bytes.*write 512M"):
            design(memory=bare)
    assert design(memory="1G").memory_kib == 1024 * 1024
    assert design(memory="1536MiB").memory_kib == 1536 * 1024
    for bad, message in (("lots", "memory: cannot parse 'lots'"), ("1X", "memory: unknown unit 'X' in '1X'"),
                         ("-5M", "memory: cannot parse '-5M'"), (0, "memory must be at least 1 MiB, got 0"),
                         (True, "memory: expected a size such as 512M or 2G, got True"),
                         (None, "memory: expected a size such as 512M or 2G, got None"),
                         ([1], "memory: expected a size such as 512M or 2G, got [1]"),
                         ("1536K", "memory must be a whole number of MiB, got '1536K'"),
                         ("1.5M", "memory must be a whole number of MiB, got '1.5M'")):
        with pytest.raises(VirtfleetError, match="^" + re.escape(message)):
            design(memory=bad)


def test_macs_are_deterministic_distinct_and_local():
    macs = [designer.derive_mac("g1", i) for i in range(50)]
    assert len(set(macs)) == 50
    assert macs == [designer.derive_mac("g1", i) for i in range(50)]
    assert designer.derive_mac("g2", 0) != macs[0]
    assert all(m.startswith("52:54:00:") and len(m) == 17 for m in macs)
    dom = design(nics=[{"network": "default"}, {"network": "default", "mac": "52:54:00:AA:00:01"}])
    got = [n.mac for n in dom.devices_of(model.Interface)]
    assert got == [designer.derive_mac("g1", 0), "52:54:00:aa:00:01"]


def test_nic_kinds():
    dom = design(nics=[{"network": "isolated"}, {"bridge": "br0"}, {"direct": "eth0", "mode": "vepa"},
                       {"type": "bridge", "source": "br1", "model": "e1000"}])
    nics = dom.devices_of(model.Interface)
    assert [(n.type, n.source) for n in nics] == [
        ("network", {"network": "isolated"}), ("bridge", {"bridge": "br0"}),
        ("direct", {"dev": "eth0", "mode": "vepa"}), ("bridge", {"bridge": "br1"})]
    assert [n.model for n in nics] == ["virtio", "virtio", "virtio", "e1000"]
    for bad, message in (
            ({"network": "a", "bridge": "b"},
             "nics[0]: give either type and source, or exactly one of network, bridge, direct"),
            ({"bridge": "bad name"}, "nics[0]: invalid bridge name 'bad name'"),
            ({"mac": "01:00:00:00:00:00"}, "nics[0].mac 01:00:00:00:00:00 is a multicast address"),
            ({"network": "x", "mode": "vepa"}, "nics[0]: mode applies to direct interfaces only"),
            ({"type": "bridge"}, "nics[0]: a bridge interface needs a source (the bridge)"),
            ({"flavour": 1}, "nics[0]: unknown key(s) flavour; known: ")):
        with pytest.raises(VirtfleetError, match="^" + re.escape(message)):
            design(nics=[bad])


def test_disk_names_per_bus():
    dom = design(disks=[{"path": "/a"}, {"path": "/b"}, {"path": "/c", "bus": "scsi"}, {"path": "/d", "bus": "sata"},
                        {"path": "/iso", "device": "cdrom"}, {"path": "/e", "bus": "ide"}])
    got = [(d.target_bus, d.target_dev) for d in dom.devices_of(model.Disk)]
    assert got == [("virtio", "vda"), ("virtio", "vdb"), ("scsi", "sda"), ("sata", "sdb"), ("ide", "hdc"),
                   ("ide", "hda")]
    assert dom.devices_of(model.Disk)[4].readonly is True
    assert [c.model for c in dom.devices_of(model.Controller)] == ["virtio-scsi"]


def test_cdrom_on_q35_goes_to_scsi_and_ide_is_refused():
    dom = design(Q35, disks=[{"path": "/a"}, {"path": "/iso", "device": "cdrom"}])
    cd = dom.devices_of(model.Disk)[1]
    assert (cd.target_bus, cd.target_dev) == ("scsi", "sda")
    assert dom.devices_of(model.Controller)[0].model == "virtio-scsi"
    with pytest.raises(VirtfleetError, match="no IDE"):
        design(Q35, disks=[{"path": "/a", "bus": "ide"}])


def test_explicit_dev_names_are_kept_and_checked():
    dom = design(disks=[{"path": "/a", "dev": "vdb"}, {"path": "/b"}])
    assert [d.target_dev for d in dom.devices_of(model.Disk)] == ["vdb", "vda"]
    with pytest.raises(VirtfleetError, match=r"^disks\[1\]: dev vda is used twice$"):
        design(disks=[{"path": "/a", "dev": "vda"}, {"path": "/b", "dev": "vda"}])
    with pytest.raises(VirtfleetError, match=r"^disks\[0\]: dev sda does not fit bus virtio \(use vd\*\)$"):
        design(disks=[{"path": "/a", "dev": "sda", "bus": "virtio"}])


def test_boot_order_replaces_os_boot():
    dom = design(disks=[{"path": "/a", "boot_order": 2}, {"path": "/iso", "device": "cdrom", "boot_order": 1}])
    assert dom.os.boot_devs == []
    assert [d.boot_order for d in dom.devices_of(model.Disk)] == [2, 1]


@pytest.mark.parametrize("bad, message", [
    ({"name": "../etc"}, "invalid guest name"),
    ({"name": "a b"}, "invalid guest name"),
    ({"name": "-x"}, "invalid guest name"),
    ({"name": "x" * 65}, "invalid guest name"),
    ({"name": "x<y>"}, "invalid guest name"),
    ({"vcpus": 0}, "vcpus"),
    ({"vcpus": "two"}, "vcpus"),
    ({"vcpus": 2, "max_vcpus": 1}, "max_vcpus"),
    ({"memory": "many"}, "memory"),
    ({"disks": [{"format": "raw"}]}, "missing 'path'"),
    ({"disks": [{"path": "relative/disk"}]}, "absolute"),
    ({"disks": [{"path": "/a", "format": "vmdk"}]}, "format"),
    ({"disks": "/a"}, "must be a list"),
    ({"fw_cfg": {"etc/boot": "x"}}, "opt/"),
    ({"fw_cfg": {"opt/a": ["x"]}}, "string"),
    ({"title": "two\nlines"}, "single line"),
    ({"title": "bell\x07"}, "control"),
    ({"uuid": "not-a-uuid"}, "UUID"),
    ({"firmware": "coreboot"}, "firmware"),
    ({"secure_boot": True}, "uefi"),
    ({"cpu_mode": "custom"}, "cpu_model"),
    ({"extra_devices": ["<rng"]}, "not a device XML"),
    ({"extra_devices": ["<domain/>"]}, "one device element"),
    ({"metadata": {"owner": "me"}}, "unknown key"),
    ({"cmdline": "quiet"}, "need kernel"),
    ({"tpm": "yes"}, "tpm must be a boolean"),
    ({"tpm": True, "tpm_model": "tpm-spapr"}, "tpm_model must be one of tpm-tis, tpm-crb"),
    ({"watchdog": "ib700"}, "watchdog must be one of none, i6300esb, itco"),
    ({"watchdog": "i6300esb", "watchdog_action": "explode"}, "watchdog_action must be one of reset"),
    ({"memballoon": "none"}, "memballoon must be a boolean"),
    ({"tpm": True, "extra_devices": ["<tpm model='tpm-tis'/>"]}, r"extra_devices\[0\] is a <tpm> and tpm"),
    ({"watchdog": "i6300esb", "extra_devices": ["<watchdog model='ib700'/>"]}, "<watchdog> and watchdog"),
    ({"memballoon": False, "extra_devices": ["<memballoon model='virtio'/>"]}, "memballoon: false"),
])
def test_bad_input_is_a_clear_error(bad, message):
    params = {"name": "g1"}
    params.update(bad)
    with pytest.raises(VirtfleetError, match=message):
        DomainXmlSpec.from_params(params)


def test_hostile_strings_stay_text():
    dom = design(title="</title><devices><disk/>", description="]]><x/> & <!-- -->",
                 fw_cfg={"opt/x": "</entry><entry name='opt/y'>1"},
                 metadata={"flavor": "<flavor/>", "image": "&amp;", "owned_files": ["/a</file>"]})
    text = dom.to_string()
    back = model.Domain.from_xml(text)
    assert back.title == "</title><devices><disk/>"
    assert back.description == "]]><x/> & <!-- -->"
    assert back.sysinfo[0].entries == [("opt/x", "</entry><entry name='opt/y'>1")]
    assert back.metadata.flavor == "<flavor/>" and back.metadata.image == "&amp;"
    assert back.metadata.owned_files == ["/a</file>"]
    assert [type(d).__name__ for d in back.devices] == [type(d).__name__ for d in dom.devices]


def test_uefi_and_secure_boot():
    facts = designer.HostFacts(virt_type="qemu", machine="pc-q35-7.2", loader="/usr/share/OVMF/CODE.secboot.fd",
                               nvram_template="/usr/share/OVMF/VARS.fd", secure_boot=True)
    dom = design(facts, firmware="uefi", secure_boot=True)
    assert dom.os.loader.path == "/usr/share/OVMF/CODE.secboot.fd" and dom.os.loader.secure
    assert dom.os.loader.readonly and dom.os.loader.type == "pflash"
    assert dom.os.nvram.path == os.path.join(INSTANCE, "nvram.fd")
    assert dom.os.nvram.template == "/usr/share/OVMF/VARS.fd"
    assert dom.features.smm is True
    with pytest.raises(VirtfleetError, match="OVMF"):
        design(Q35, firmware="uefi")


def test_choose_ovmf_prefers_descriptor_pairing():
    descriptors = [
        {"interface-types": ["uefi"], "features": ["secure-boot", "requires-smm", "enrolled-keys"],
         "mapping": {"device": "flash", "executable": {"filename": "/o/CODE.ms.fd"},
                     "nvram-template": {"filename": "/o/VARS.ms.fd"}}},
        {"interface-types": ["uefi"], "features": ["secure-boot", "requires-smm"],
         "mapping": {"device": "flash", "executable": {"filename": "/o/CODE.secboot.fd"},
                     "nvram-template": {"filename": "/o/VARS.fd"}}},
        {"interface-types": ["uefi"], "features": [],
         "mapping": {"device": "flash", "executable": {"filename": "/o/CODE.fd"},
                     "nvram-template": {"filename": "/o/VARS.fd"}}},
    ]
    loaders = ["/o/CODE.ms.fd", "/o/CODE.secboot.fd", "/o/CODE.fd"]
    assert designer.choose_ovmf(loaders, False, True, descriptors) == ("/o/CODE.fd", "/o/VARS.fd")
    assert designer.choose_ovmf(loaders, True, True, descriptors) == ("/o/CODE.secboot.fd", "/o/VARS.fd")
    assert designer.choose_ovmf(loaders, True, False, descriptors)[0] is None


def test_kvm_gets_host_model_and_options_are_honoured():
    kvm = designer.HostFacts(virt_type="kvm", machine="pc-i440fx-7.2")
    assert design(kvm).cpu.mode == "host-model"
    assert design(kvm, cpu_mode="host-passthrough").cpu.mode == "host-passthrough"
    custom = design(cpu_mode="custom", cpu_model="Nehalem").cpu
    assert (custom.mode, custom.model) == ("custom", "Nehalem")
    dom = design(vcpus=2, max_vcpus=4, memory="1G", max_memory="4G", graphics="vnc", guest_agent=True,
                 kernel="/boot/vmlinuz", initrd="/boot/initrd", cmdline="console=ttyS0",
                 extra_devices=["<watchdog model='i6300esb' action='poweroff'/>"], uuid="3C1A1A54-5BD1-4F0C-9D0B-"
                 "33E2BBF0B6F3", title="Web", description="d")
    assert (dom.vcpus, dom.vcpu_current) == (4, 2)
    assert dom.max_memory_kib == 4 * 1024 * 1024 and dom.cpu.extra[0].tag == "numa"
    assert dom.uuid == "3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3"
    assert dom.os.kernel == "/boot/vmlinuz" and dom.os.boot_devs == []
    assert dom.devices_of(model.Graphics)[0].listen == "127.0.0.1"
    assert dom.devices_of(model.Channel)[0].target_name == "org.qemu.guest_agent.0"
    assert dom.devices_of(model.Watchdog)[0].action == "poweroff"


def _devices_xml(dom):
    return [model.etree.tostring(d.to_element()).decode() for d in dom.devices]


def test_tpm_watchdog_and_memballoon_render():
    dom = design(Q35, tpm=True, watchdog="itco", watchdog_action="poweroff", memballoon=False)
    got = _devices_xml(dom)
    tpm = '<tpm model="tpm-tis"><backend type="emulator" version="2.0"/></tpm>'
    assert tpm in got
    assert '<watchdog model="itco" action="poweroff"/>' in got
    assert '<memballoon model="none"/>' in got
    # libvirt's device order: tpm before graphics/video, watchdog and memballoon before rng.
    tags = [model.device_tag(d) for d in dom.devices]
    assert tags[tags.index("tpm"):] == ["tpm", "watchdog", "memballoon", "rng"]
    crb = _devices_xml(design(tpm=True, tpm_model="tpm-crb", watchdog="i6300esb", graphics="vnc"))
    assert '<tpm model="tpm-crb"><backend type="emulator" version="2.0"/></tpm>' in crb
    assert '<watchdog model="i6300esb" action="reset"/>' in crb
    assert not any(x.startswith("<memballoon") for x in crb)
    assert [x[:6] for x in crb[-5:]] == ["<tpm m", "<graph", "<video", "<watch", "<rng m"]
    assert design(Q35, tpm=True, watchdog="itco").to_string() == design(Q35, tpm=True, watchdog="itco").to_string()


@pytest.mark.parametrize("facts", [PC, Q35])
def test_defaults_of_the_new_options_leave_the_xml_byte_identical(facts):
    args = dict(vcpus=2, memory="256M", nics=[{"network": "default"}], disks=[{"path": "/a"}], graphics="vnc",
                extra_devices=["<memballoon model='virtio'><stats period='10'/></memballoon>"])
    before = design(facts, **args).to_string()
    after = design(facts, tpm=False, tpm_model="tpm-tis", watchdog="none", watchdog_action="reset",
                   memballoon=True, **args).to_string()
    assert after == before
    # Options that add nothing ignore their companions (the module always passes the defaults).
    assert design(facts, tpm_model="tpm-crb", watchdog_action="pause", **args).to_string() == before
    plain = design(facts).to_string()
    for tag in ("<tpm", "<watchdog", "<memballoon"):
        assert tag not in plain, "libvirt adds its own virtio balloon; the designer writes none"


def test_itco_watchdog_needs_q35():
    with pytest.raises(VirtfleetError, match="watchdog itco .* machine pc-i440fx-7.2 has none"):
        design(PC, watchdog="itco")
    assert design(Q35, watchdog="itco").devices_of(model.Watchdog)[0].model == "itco"
    assert design(PC, watchdog="i6300esb").devices_of(model.Watchdog)[0].action == "reset"
    old = designer.HostFacts(virt_type="qemu", machine="pc-q35-7.2", libvirt_version=9000000)
    with pytest.raises(VirtfleetError, match=r"itco needs libvirt 9.1 or later; this host runs libvirt 9.0.0"):
        design(old, watchdog="itco")
    assert design(old, watchdog="i6300esb").devices_of(model.Watchdog)
    new = designer.HostFacts(virt_type="qemu", machine="pc-q35-8.1", libvirt_version=9001000)
    assert design(new, watchdog="itco").devices_of(model.Watchdog)[0].model == "itco"


# ------------------------------------------------------------------------------ property: only VirtfleetError

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                     st.sampled_from(["/a", "160M", "pc", "q35", "uefi", "bios", "virtio", "scsi", "cdrom",
                                      "network", "vda", "hdc", "qemu", "opt/a", "52:54:00:00:00:01"]))
_dicts = st.dictionaries(st.sampled_from(spec_mod.DISK_KEYS + spec_mod.NIC_KEYS), _scalars, max_size=5)
_values = st.one_of(_scalars, st.lists(st.one_of(_dicts, _scalars), max_size=3),
                    st.dictionaries(st.text(max_size=8), _scalars, max_size=3))
_params = st.fixed_dictionaries(
    {"name": st.one_of(st.just("g1"), _scalars)},
    optional={key: _values for key in ("vcpus", "max_vcpus", "memory", "max_memory", "machine", "virt_type",
                                       "cpu_mode", "cpu_model", "firmware", "secure_boot", "graphics", "uuid",
                                       "title", "description", "kernel", "initrd", "cmdline", "fw_cfg", "disks",
                                       "nics", "metadata", "extra_devices", "guest_agent", "rng",
                                       "instance_dir", "tpm", "tpm_model", "watchdog", "watchdog_action",
                                       "memballoon", "max_memory_slots")})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_params, st.sampled_from([PC, Q35]))
def test_any_arguments_give_xml_or_virtfleet_error(params, facts):
    try:
        spec = DomainXmlSpec.from_params(params)
        text = designer.design_domain(spec, facts, guest_layout("/srv/instances", spec.name)).to_string()
    except VirtfleetError as exc:
        assert exc.msg
        return
    assert model.Domain.from_xml(text).name == params["name"]
