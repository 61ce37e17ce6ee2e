"""domain_xml's typed spec refuses what is not what it seems (issue 10 items 9 and 12)."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec

PC = designer.HostFacts(virt_type="qemu", machine="pc-i440fx-7.2")


def design(**params):
    spec = DomainXmlSpec.from_params(dict({"name": "g1"}, **params))
    return designer.design_domain(spec, PC, spec.layout)


# Python's ``$`` also matches before a final newline: each identifier ending in one must be refused.
TRAILING_NEWLINE = {
    "name": {"name": "g1\n"},
    "mac": {"nics": [{"network": "default", "mac": "52:54:00:12:34:56\n"}]},
    "network": {"nics": [{"network": "default\n"}]},
    "bridge": {"nics": [{"bridge": "br0\n"}]},
    "direct": {"nics": [{"direct": "eth0\n"}]},
    "disk dev": {"disks": [{"path": "/a", "dev": "vda\n"}]},
    "disk serial": {"disks": [{"path": "/a", "serial": "root0\n"}]},
    "fw_cfg name": {"fw_cfg": {"opt/org.example/role\n": "web"}},
    "machine": {"machine": "pc\n"},
    "cpu model": {"cpu_mode": "custom", "cpu_model": "Nehalem\n"},
}


@pytest.mark.parametrize("label", sorted(TRAILING_NEWLINE))
def test_an_identifier_ending_in_a_newline_is_refused(label):
    params = dict({"name": "g1"}, **TRAILING_NEWLINE[label])
    with pytest.raises(VirtfleetError, match=r"invalid|must look like|1-20 letters"):
        DomainXmlSpec.from_params(params)


def test_the_nil_uuid_is_refused():
    with pytest.raises(VirtfleetError, match="uuid 00000000-0000-0000-0000-000000000000 is the nil UUID"):
        DomainXmlSpec.from_params({"name": "g1", "uuid": "00000000-0000-0000-0000-000000000000"})


def test_the_all_zero_mac_is_refused():
    with pytest.raises(VirtfleetError, match=r"nics\[0\].mac 00:00:00:00:00:00 is the all-zero address"):
        DomainXmlSpec.from_params({"name": "g1", "nics": [{"network": "default", "mac": "00:00:00:00:00:00"}]})


def test_two_nics_of_a_guest_never_share_a_mac():
    with pytest.raises(VirtfleetError, match=r"nics\[0\] and nics\[1\] both have MAC 52:54:00:aa:00:01"):
        design(nics=[{"network": "default", "mac": "52:54:00:AA:00:01"}, {"bridge": "br0", "mac": "52:54:00:aa:00:01"}])
    derived = designer.derive_mac("g1", 0)
    with pytest.raises(VirtfleetError,
                       match=r"nics\[0\] and nics\[1\] both have MAC %s \(one of them derived" % derived):
        design(nics=[{"network": "default"}, {"bridge": "br0", "mac": derived}])


@pytest.mark.parametrize("value, kib", [("536870912", 512 * 1024), (1 << 30, 1 << 20), ("2G", 2 << 20),
                                        ("1536MiB", 1536 * 1024)])
def test_a_bare_memory_number_is_bytes_like_every_size(value, kib):
    assert DomainXmlSpec.from_params({"name": "g1", "memory": value}).memory_kib == kib


@pytest.mark.parametrize("value", ["512", 512, "1000000"])
def test_a_bare_memory_number_below_a_mib_says_the_unit_rule(value):
    with pytest.raises(VirtfleetError, match="a number without a unit is bytes, as for every size here"):
        DomainXmlSpec.from_params({"name": "g1", "memory": value})


# Issue 13 item 2 (domain_xml part): user-mode networking with port forwards bound to loopback.

def test_a_user_nic_renders_the_passt_backend_and_its_port_forwards():
    dom = design(nics=[{"type": "user", "backend": "passt",
                        "port_forwards": [{"host_port": 2222, "guest_port": 22},
                                          {"host_port": 8053, "proto": "udp", "address": "::1"}]}])
    [nic] = dom.devices_of(designer.model.Interface)
    text = designer.model.etree.tostring(nic.to_element(), encoding="unicode")
    assert nic.type == "user" and nic.source == {} and nic.mac == designer.derive_mac("g1", 0)
    assert '<backend type="passt"/>' in text
    assert '<portForward proto="tcp" address="127.0.0.1"><range start="2222" to="22"/></portForward>' in text
    assert '<portForward proto="udp" address="::1"><range start="8053" to="8053"/></portForward>' in text


@pytest.mark.parametrize("nic, message", [
    ({"type": "user", "source": "default"}, "a user interface has no source"),
    ({"network": "default", "port_forwards": [{"host_port": 22}]}, "port_forwards apply to user interfaces only"),
    ({"type": "user", "port_forwards": [{"guest_port": 22}]}, "host_port is required"),
    ({"type": "user", "port_forwards": [{"host_port": 70000}]}, r"host_port must be between 1 and 65535"),
    ({"type": "user", "port_forwards": [{"host_port": 22, "address": "localhost"}]}, "must be an IP address"),
    ({"type": "user", "port_forwards": [{"host_port": 22, "proto": "sctp"}]}, "proto must be one of tcp, udp"),
    ({"type": "user", "port_forwards": [{"host_port": 22}, {"host_port": 22, "guest_port": 23}]},
     r"port_forwards\[0\] and \[1\] both forward tcp 127.0.0.1:22"),
    ({"type": "user", "mode": "vepa"}, "mode applies to direct interfaces only"),
    ({"network": "default", "backend": "qemu"}, r"nics\[0\]: backend applies to user interfaces only"),
    ({"type": "user", "backend": "slirp"}, r"nics\[0\].backend must be one of auto, qemu, passt"),
])
def test_a_user_nic_is_validated(nic, message):
    with pytest.raises(VirtfleetError, match=message):
        DomainXmlSpec.from_params({"name": "g1", "nics": [nic]})


def test_a_libvirt_that_cannot_run_passt_is_explained():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import explain_libvirt_failure

    text = explain_libvirt_failure("XML error: Invalid value for attribute 'type' in element 'backend': 'passt'.")
    assert "cannot run the passt backend" in text and "network, bridge or direct NIC" in text


Q35 = designer.HostFacts(virt_type="qemu", machine="pc-q35-7.2")


def test_a_user_nic_is_qemus_own_isolated_user_networking_by_default():
    dom = design(nics=[{"type": "user", "port_forwards": [{"host_port": 2222, "guest_port": 22},
                                                          {"host_port": 8053, "proto": "udp"}]}])
    assert dom.devices_of(designer.model.Interface) == [], "libvirt does not know this NIC"
    mac = designer.derive_mac("g1", 0)
    assert dom.qemu_commandline.args == [
        "-netdev", "user,id=vfnet0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:8053-:8053",
        "-device", "virtio-net-pci,netdev=vfnet0,mac=%s,bus=pci.0,addr=0x1f" % mac]
    assert design(nics=[{"type": "user", "backend": "qemu"}]).qemu_commandline.args[1] == "user,id=vfnet0,restrict=on"
    text = dom.to_string()
    assert text.startswith('<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" type="qemu">')
    assert text.rstrip().endswith('<qemu:arg value="virtio-net-pci,netdev=vfnet0,mac=%s,bus=pci.0,addr=0x1f"/>\n'
                                  '  </qemu:commandline>\n</domain>' % mac), "after <devices>, where libvirt has it"


def test_user_nics_take_the_slots_kept_for_them_and_the_macs_of_their_index():
    nics = [{"type": "user"}, {"network": "default"}, {"type": "user", "model": "e1000", "mac": "52:54:00:AB:00:02"}]
    for facts, bus, slots in ((PC, "pci.0", ("0x1f", "0x1e")), (Q35, "pcie.0", ("0x1c", "0x1b"))):
        spec = DomainXmlSpec.from_params({"name": "g1", "nics": nics})
        args = designer.design_domain(spec, facts, spec.layout).qemu_commandline.args
        assert args[3] == "virtio-net-pci,netdev=vfnet0,mac=%s,bus=%s,addr=%s" % (
            designer.derive_mac("g1", 0), bus, slots[0])
        assert args[5] == "user,id=vfnet2,restrict=on"
        assert args[7] == "e1000,netdev=vfnet2,mac=52:54:00:ab:00:02,bus=%s,addr=%s" % (bus, slots[1])
        assert designer.assign_macs(spec) == [designer.derive_mac("g1", 0), designer.derive_mac("g1", 1),
                                              "52:54:00:ab:00:02"]
    [network] = design(nics=nics).devices_of(designer.model.Interface)
    assert network.mac == designer.derive_mac("g1", 1)


@pytest.mark.parametrize("nics, facts, message", [
    ([{"type": "user"}] * 5, PC, r"5 user NICs with backend qemu; at most 4 fit the PCI slots kept for them"),
    ([{"type": "user", "port_forwards": [{"host_port": 22, "address": "::1"}]}], PC,
     r"nics\[0\].port_forwards\[0\].address ::1: QEMU's user networking forwards IPv4 host addresses only"),
    ([{"type": "user", "boot_order": 1}], PC, r"nics\[0\]: boot_order needs a NIC libvirt knows"),
    ([{"type": "user"}], designer.HostFacts(virt_type="qemu", machine="microvm"),
     "needs machine pc .i440fx. or q35, whose PCI root bus it is placed on; machine microvm is neither"),
])
def test_what_qemus_user_networking_cannot_do_is_refused(nics, facts, message):
    spec = DomainXmlSpec.from_params({"name": "g1", "nics": nics})
    with pytest.raises(VirtfleetError, match=message):
        designer.design_domain(spec, facts, spec.layout)
    assert design(nics=[dict(nics[0], backend="passt")]), "passt has none of these limits"


# Security review: nothing given to a user NIC may add options of its own to QEMU's command line.
@pytest.mark.parametrize("nic, message", [
    ({"port_forwards": [{"host_port": 2222, "address": "127.0.0.1,hostfwd=tcp::2223-:22"}]}, "must be an IP address"),
    ({"port_forwards": [{"host_port": 2222, "address": "127.0.0.1 -device e1000"}]}, "must be an IP address"),
    ({"port_forwards": [{"host_port": "2222,restrict=off"}]}, "host_port must be an integer"),
    ({"port_forwards": [{"host_port": 2222, "guest_port": "22-:23"}]}, "guest_port must be an integer"),
    ({"port_forwards": [{"host_port": 2222, "proto": "tcp:0.0.0.0:2224-:22,hostfwd=tcp"}]}, "proto must be one of"),
    ({"mac": "52:54:00:12:34:56,romfile=/tmp/x"}, "invalid nics.0..mac"),
    ({"mac": "52:54:00:12:34:56 -object x"}, "invalid nics.0..mac"),
    ({"model": "virtio,addr=0x3"}, "model must be one of"),
])
def test_values_that_would_extend_qemus_command_line_are_refused(nic, message):
    with pytest.raises(VirtfleetError, match=message):
        design(nics=[dict({"type": "user"}, **nic)])
