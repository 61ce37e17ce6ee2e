"""domain_info's pure half: domain XML and libvirt's address answers -> plain data; and the libvirt half on fakes."""

from __future__ import annotations

import json

import libvirt
import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import info
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Guest, Hypervisor
from tests.support.libvirt_errors import libvirt_error


UEFI_GUEST = """
<domain type='kvm'>
  <name>web1</name>
  <uuid>3C1A1A54-5BD1-4F0C-9D0B-33E2BBF0B6F3</uuid>
  <title>Web</title>
  <metadata>
    <virtfleet:instance xmlns:virtfleet='https://virtfleet.dev/xmlns/libvirt/1'>
      <virtfleet:flavor>m1.small</virtfleet:flavor>
      <virtfleet:image>http://images.example/debian-12.qcow2</virtfleet:image>
      <virtfleet:owned-files>
        <virtfleet:file>/srv/web1/disk</virtfleet:file>
        <virtfleet:file>/srv/web1/console.log</virtfleet:file>
      </virtfleet:owned-files>
    </virtfleet:instance>
  </metadata>
  <maxMemory slots='16' unit='GiB'>4</maxMemory>
  <memory unit='MiB'>1024</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <sysinfo type='fwcfg'>
    <entry name='opt/org.virtfleet/mode'>stay</entry>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/srv/web1/nvram.fd</nvram>
  </os>
  <cpu mode='host-passthrough' check='none'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/srv/web1/disk'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/web1/config.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdb' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:AA:BB:01'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:02'/>
      <source bridge='br0'/>
      <model type='e1000'/>
    </interface>
    <interface type='direct'>
      <mac address='52:54:00:aa:bb:03'/>
      <source dev='eth1' mode='bridge'/>
    </interface>
    <serial type='pty'>
      <log file='/srv/web1/console.log' append='on'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>
"""

# What libvirt returns for a running TCG guest: ids, aliases, PCI addresses, tty paths.
LIVE_TCG_GUEST = """
<domain type='qemu' id='7'>
  <name>tiny</name>
  <uuid>2013c1ba-d880-4fc3-b102-3a440e758662</uuid>
  <memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <resource><partition>/machine</partition></resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/virtfleet/instances/tiny/disk' index='1'/>
      <backingStore type='file' index='2'>
        <format type='raw'/>
        <source file='/var/lib/virtfleet/instances/_base/abc'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'><alias name='usb'/></controller>
    <interface type='network'>
      <mac address='52:54:00:03:c9:15'/>
      <source network='vnet-test' portid='0b7a' bridge='virbr5'/>
      <target dev='vnet12'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <log file='/var/lib/virtfleet/instances/tiny/console.log' append='on'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64055</label></seclabel>
</domain>
"""


def test_uefi_guest_as_plain_data():
    data = info.describe_xml(UEFI_GUEST)
    assert data["name"] == "web1"
    assert data["uuid"] == "3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3"
    assert (data["vcpus"], data["max_vcpus"]) == (2, 4)
    assert (data["memory_kib"], data["current_memory_kib"]) == (1024 * 1024, 524288)
    assert data["model"] == {
        "virt_type": "kvm", "arch": "x86_64", "machine": "pc-q35-7.2", "firmware": "uefi", "secure_boot": True,
        "nvram": "/srv/web1/nvram.fd", "cpu_mode": "host-passthrough", "cpu_model": None, "title": "Web",
        "description": None, "max_memory_kib": 4 * 1024 * 1024, "on_poweroff": "destroy", "on_reboot": None,
        "on_crash": None, "fw_cfg": {"opt/org.virtfleet/mode": "stay"}, "guest_agent": True,
        "metadata": {"flavor": "m1.small", "image": "http://images.example/debian-12.qcow2",
                     "owned_files": ["/srv/web1/disk", "/srv/web1/console.log"]},
    }
    assert data["console_log"] == "/srv/web1/console.log"


def test_disks_report_target_bus_file_format_readonly_and_boot_order():
    disks = info.describe_xml(UEFI_GUEST)["disks"]
    assert disks == [
        {"target": "vda", "bus": "virtio", "device": "disk", "type": "file", "file": "/srv/web1/disk",
         "format": "qcow2", "readonly": False, "boot_order": 1},
        {"target": "sda", "bus": "sata", "device": "cdrom", "type": "file", "file": "/srv/web1/config.iso",
         "format": "raw", "readonly": True, "boot_order": None},
        {"target": "sdb", "bus": "sata", "device": "cdrom", "type": "file", "file": None,
         "format": None, "readonly": True, "boot_order": None},
        {"target": "vdb", "bus": "virtio", "device": "disk", "type": "block", "file": "/dev/vg0/data",
         "format": "raw", "readonly": False, "boot_order": None},
    ]


def test_interfaces_report_type_source_lowercase_mac_and_model():
    nics = info.describe_xml(UEFI_GUEST)["interfaces"]
    assert [(n["type"], n["source"], n["mac"], n["model"]) for n in nics] == [
        ("network", "default", "52:54:00:aa:bb:01", "virtio"),
        ("bridge", "br0", "52:54:00:aa:bb:02", "e1000"),
        ("direct", "eth1", "52:54:00:aa:bb:03", None),
    ]
    assert all(n["addresses"] == [] for n in nics)


def test_live_xml_of_a_tcg_guest_ignores_runtime_additions():
    data = info.describe_xml(LIVE_TCG_GUEST)
    assert data["model"]["virt_type"] == "qemu"
    assert data["model"]["firmware"] == "bios" and data["model"]["secure_boot"] is False
    assert (data["model"]["cpu_mode"], data["model"]["cpu_model"]) == ("custom", "qemu64")
    assert data["model"]["metadata"] == {"flavor": None, "image": None, "owned_files": []}
    assert data["model"]["guest_agent"] is False
    assert data["disks"] == [{"target": "vda", "bus": "virtio", "device": "disk", "type": "file",
                              "file": "/var/lib/virtfleet/instances/tiny/disk", "format": "qcow2",
                              "readonly": False, "boot_order": None}]
    assert data["interfaces"][0]["source"] == "vnet-test" and data["interfaces"][0]["target"] == "vnet12"
    assert data["console_log"] == "/var/lib/virtfleet/instances/tiny/console.log"
    json.dumps(data)  # plain data only


def test_firmware_efi_attribute_means_uefi():
    xml = "<domain type='kvm'><name>a</name><os firmware='efi'><type>hvm</type></os></domain>"
    data = info.describe_xml(xml)
    assert data["model"]["firmware"] == "uefi"
    assert data["disks"] == [] and data["interfaces"] == [] and data["console_log"] is None


def test_console_log_falls_back_to_the_console_element():
    xml = ("<domain type='kvm'><name>a</name><devices><console type='pty'><log file='/x/c.log'/>"
           "<target type='serial' port='0'/></console></devices></domain>")
    assert info.describe_xml(xml)["console_log"] == "/x/c.log"


@pytest.mark.parametrize("text", ["<domain", "<network><name>n</name></network>", ""])
def test_what_is_not_a_domain_is_a_clear_error(text):
    with pytest.raises(VirtfleetError, match="cannot parse the domain XML"):
        info.describe_xml(text)


LEASES = {
    "vnet12": {"hwaddr": "52:54:00:AA:BB:01", "addrs": [{"type": 0, "addr": "192.168.122.57", "prefix": 24}]},
}
AGENT = {
    "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"type": 0, "addr": "127.0.0.1", "prefix": 8}]},
    "eth0": {"hwaddr": "52:54:00:aa:bb:01", "addrs": [{"type": 0, "addr": "192.168.122.57", "prefix": 24},
                                                      {"type": 1, "addr": "fe80::1", "prefix": 64}]},
    "eth1": {"hwaddr": "52:54:00:aa:bb:02", "addrs": None},
    "eth9": {"hwaddr": "52:54:00:ff:ff:ff", "addrs": [{"type": 0, "addr": "10.9.9.9", "prefix": 8}]},
}


def test_addresses_are_matched_by_mac_deduplicated_and_labelled_by_source():
    nics = info.describe_xml(UEFI_GUEST)["interfaces"]
    info.merge_addresses(nics, LEASES, "lease")
    info.merge_addresses(nics, AGENT, "agent")
    assert nics[0]["addresses"] == [
        {"address": "192.168.122.57", "prefix": 24, "family": "ipv4", "source": "lease", "guest_ifname": None},
        {"address": "fe80::1", "prefix": 64, "family": "ipv6", "source": "agent", "guest_ifname": "eth0"},
    ]
    assert nics[1]["addresses"] == [] and nics[2]["addresses"] == []


def test_no_answer_changes_nothing():
    nics = info.describe_xml(UEFI_GUEST)["interfaces"]
    info.merge_addresses(nics, None, "lease")
    info.merge_addresses(nics, {}, "agent")
    assert all(n["addresses"] == [] for n in nics)


# ------------------------------------------------------------------ the libvirt half, on fake objects

class FakeDomain:
    def __init__(self, name, xml, state=libvirt.VIR_DOMAIN_RUNNING, leases=None, agent=None, vanish=False):
        self._name, self._xml, self._state = name, xml, state
        self._leases, self._agent, self._vanish = leases, agent, vanish
        self.asked = []

    def name(self):
        return self._name

    def state(self):
        if self._vanish:
            raise libvirt_error("Domain not found", libvirt.VIR_ERR_NO_DOMAIN)
        return self._state, 1

    def XMLDesc(self, flags=0):
        return self._xml

    def UUIDString(self):
        return "3C1A1A54-5BD1-4F0C-9D0B-33E2BBF0B6F3"

    def isPersistent(self):
        return 1

    def autostart(self):
        return 0

    def interfaceAddresses(self, source):
        self.asked.append(source)
        answer = self._leases if source == libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE else self._agent
        if isinstance(answer, Exception):
            raise answer
        return answer or {}


class FakeConn:
    def __init__(self, domains):
        self.domains = domains

    def listAllDomains(self, flags=0):
        return list(self.domains)

    def lookupByName(self, name):
        for dom in self.domains:
            if dom.name() == name:
                return dom
        raise libvirt_error("Domain not found: no domain with matching name '%s'" % name, libvirt.VIR_ERR_NO_DOMAIN)


def test_running_guest_with_agent_not_connected_still_reports_leases():
    agent_down = libvirt_error("Guest agent is not responding", libvirt.VIR_ERR_AGENT_UNRESPONSIVE)
    dom = FakeDomain("web1", UEFI_GUEST, leases=LEASES, agent=agent_down)
    [data] = info.gather_domains(Hypervisor(FakeConn([dom])), "web1", include_xml=True)
    assert data["state"] == "running" and data["persistent"] is True and data["autostart"] is False
    assert data["uuid"] == "3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3"
    assert [a["address"] for a in data["interfaces"][0]["addresses"]] == ["192.168.122.57"]
    assert data["xml"] == UEFI_GUEST
    assert len(dom.asked) == 2


def test_stopped_guest_is_not_asked_for_addresses_and_no_agent_channel_means_no_agent_query():
    off = FakeDomain("off", UEFI_GUEST, state=libvirt.VIR_DOMAIN_SHUTOFF)
    tiny = FakeDomain("tiny", LIVE_TCG_GUEST, leases={})
    result = info.gather_domains(Hypervisor(FakeConn([tiny, off])))
    assert [(d["name"], d["state"]) for d in result] == [("off", "shutoff"), ("tiny", "running")]
    assert "xml" not in result[0]
    assert off.asked == [] and tiny.asked == [libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE]


def test_missing_name_gives_an_empty_list_and_vanished_domains_are_skipped():
    gone = FakeDomain("gone", LIVE_TCG_GUEST, vanish=True)
    assert info.gather_domains(Hypervisor(FakeConn([gone])), "nope") == []
    assert info.gather_domains(Hypervisor(FakeConn([gone]))) == []


def test_unparsable_definition_names_the_domain():
    with pytest.raises(VirtfleetError, match="domain broken: cannot parse"):
        info.gather_domains(Hypervisor(FakeConn([FakeDomain("broken", "<domain")])))


# ------------------------------------------------------------------------------- waiting for an address

class LeaseAfter(FakeDomain):
    """A guest whose lease shows up on the ``polls``-th look; ``states`` scripts what libvirt says it is in."""

    def __init__(self, polls, states=None, agent=None):
        super().__init__("web1", UEFI_GUEST, agent=agent)
        self.polls, self.looks, self.states = polls, 0, list(states or [])

    def state(self):
        if self.states:
            return self.states.pop(0), 1
        return super().state()

    def interfaceAddresses(self, source):
        if source == libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE:
            self.looks += 1
            self._leases = LEASES if self.looks >= self.polls else {}
        return super().interfaceAddresses(source)


def test_reachable_addresses_skip_ipv6_link_local_only():
    nics = [{"addresses": [{"address": "fe80::5054:ff:fe00:1", "family": "ipv6"},
                           {"address": "FEBF::1", "family": "ipv6"}]},
            {"addresses": [{"address": "2001:db8::7", "family": "ipv6"}, {"address": "192.0.2.9", "family": "ipv4"}]},
            {"addresses": []}]
    assert info.reachable_addresses(nics) == ["2001:db8::7", "192.0.2.9"]
    assert info.reachable_addresses(nics[:1]) == [] and info.reachable_addresses([]) == []


def test_wait_for_address_polls_until_a_lease_appears():
    dom = LeaseAfter(polls=3)
    interfaces = info.wait_for_address(Guest(dom), timeout=30, poll=0.01)
    assert dom.looks == 3
    assert interfaces[0]["mac"] == "52:54:00:aa:bb:01"
    assert interfaces[0]["addresses"] == [{"address": "192.168.122.57", "prefix": 24, "family": "ipv4",
                                           "source": "lease", "guest_ifname": None}]


def test_wait_for_address_counts_only_reachable_agent_addresses():
    link_local_only = {"eth0": {"hwaddr": "52:54:00:aa:bb:01", "addrs": [{"type": 1, "addr": "fe80::1", "prefix": 64}]}}
    with pytest.raises(VirtfleetError, match="no address from the guest agent") as err:
        info.wait_for_address(Guest(LeaseAfter(polls=10 ** 6, agent=link_local_only)), timeout=0, poll=0.01)
    assert "no address from the guest agent" in err.value.msg
    interfaces = info.wait_for_address(Guest(LeaseAfter(polls=10 ** 6, agent=AGENT)), timeout=0, poll=0.01)
    assert [a["source"] for a in interfaces[0]["addresses"]] == ["agent", "agent"]


def test_wait_for_address_times_out_saying_where_it_looked():
    dom = LeaseAfter(polls=10 ** 6)
    with pytest.raises(VirtfleetError, match="^domain web1 has no IP address after 0 s: ") as err:
        info.wait_for_address(Guest(dom), timeout=0, poll=0.01)
    msg = err.value.msg
    assert msg.startswith("domain web1 has no IP address after 0 s: no DHCP lease on its libvirt network default,")
    assert "guest agent" in msg and "left running" in msg and "address_timeout" in msg
    assert dom.looks == 1, "a timeout of 0 looks exactly once"


def test_wait_for_address_stops_when_the_guest_stops_or_vanishes():
    with pytest.raises(VirtfleetError, match="domain web1 is shutoff, not running"):
        info.wait_for_address(Guest(LeaseAfter(polls=10 ** 6, states=[libvirt.VIR_DOMAIN_SHUTOFF])), timeout=30,
                              poll=0.01)
    gone = LeaseAfter(polls=10 ** 6)
    gone._vanish = True
    with pytest.raises(VirtfleetError, match="vanished"):
        info.wait_for_address(Guest(gone), timeout=30, poll=0.01)


def test_no_address_message_for_guests_without_leasing_networks_or_nics():
    base = info.describe_xml(LIVE_TCG_GUEST)
    bridged = dict(base, interfaces=[{"type": "bridge", "source": "br0", "addresses": []}])
    assert "no libvirt network that leases addresses" in info.no_address_message("tiny", 5, bridged)
    assert "no guest agent channel (domain_xml guest_agent: true adds one)" in info.no_address_message("tiny", 5, bridged)
    assert "has no network interface" in info.no_address_message("tiny", 5, dict(base, interfaces=[]))


def test_agent_ping_reports_an_answer_a_refusal_and_guests_that_cannot_answer(monkeypatch):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import guest as guest_module

    asked = []

    def agent_command(dom, command, timeout):
        asked.append((dom.name(), json.loads(command), timeout))
        if dom.name() == "hung":
            raise libvirt_error("Guest agent is not responding: timeout", libvirt.VIR_ERR_AGENT_UNRESPONSIVE)
        return '{"return": {}}'

    monkeypatch.setattr(guest_module, "agent_command", agent_command)
    up = FakeDomain("up", UEFI_GUEST, leases={})
    hung = FakeDomain("hung", UEFI_GUEST, leases={})
    off = FakeDomain("off", UEFI_GUEST, state=libvirt.VIR_DOMAIN_SHUTOFF)
    tiny = FakeDomain("tiny", LIVE_TCG_GUEST, leases={})
    found = info.gather_domains(Hypervisor(FakeConn([up, hung, off, tiny])), ping_agent=True, agent_timeout=7)
    result = {d["name"]: d["agent"] for d in found}
    assert result["up"] == {"responding": True, "error": None}
    assert result["hung"]["responding"] is False and "not responding: timeout" in result["hung"]["error"]
    assert result["off"] == {"responding": False, "error": "the domain is shutoff"}
    assert result["tiny"] == {"responding": False,
                              "error": "no guest agent channel (domain_xml guest_agent: true adds one)"}
    assert sorted(asked) == [("hung", {"execute": "guest-ping"}, 7), ("up", {"execute": "guest-ping"}, 7)]
    assert "agent" not in info.gather_domains(Hypervisor(FakeConn([up])))[0]


@pytest.mark.parametrize("timeout", [0, 301, "soon", True])
def test_agent_timeout_out_of_range_is_refused(timeout):
    with pytest.raises(VirtfleetError, match="agent_timeout must be"):
        info.report_domains({"name": "web1", "ping_agent": True, "agent_timeout": timeout},
                            hypervisor=Hypervisor(FakeConn([])))


def test_user_nics_are_reported_with_their_forwards_from_qemus_command_line_and_from_passt():
    from tests.unit.plugins.module_utils._domain.test_normalize import USER_NIC_READBACK

    passt = ("<interface type='user'><mac address='52:54:00:AA:00:09'/><model type='virtio'/><backend type='passt'/>"
             "<portForward proto='udp' address='127.0.0.1'><range start='8053' to='53'/></portForward>"
             "<portForward proto='tcp'><range start='8080'/></portForward></interface>")
    nics = info.describe_xml(USER_NIC_READBACK.replace("<devices>", "<devices>" + passt))["interfaces"]
    assert nics == [
        {"type": "user", "source": None, "mac": "52:54:00:aa:00:09", "model": "virtio", "target": None,
         "addresses": [], "port_forwards": [
             {"proto": "udp", "address": "127.0.0.1", "host_port": 8053, "guest_port": 53},
             {"proto": "tcp", "address": None, "host_port": 8080, "guest_port": 8080}]},
        {"type": "user", "source": None, "mac": "52:54:00:11:22:33", "model": "virtio", "target": None,
         "addresses": [], "port_forwards": [{"proto": "tcp", "address": "127.0.0.1", "host_port": 2222,
                                             "guest_port": 22}]},
    ]
    assert info.describe_xml(UEFI_GUEST)["interfaces"][0]["port_forwards"] == []
    message = info.no_address_message("g1", 5, info.describe_xml(USER_NIC_READBACK))
    assert "has only user-mode NICs" in message and "through their port_forwards" in message
