"""domain_info on real libvirtd with the real test guest: what it reports must match what the guest sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.integration.conftest import transient_network, wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20


@pytest.fixture(scope="module")
def isolated_network(virt_host):
    """No DHCP: the lease lookup runs for real and finds nothing; guests reach nothing."""
    with transient_network(virt_host, "vft-di-net") as name:
        yield name


@pytest.fixture
def dhcp_network(virt_host):
    """libvirt's dnsmasq leases addresses; a guest reaches only the host's bridge address."""
    with transient_network(virt_host, "vft-di-dhcp", dhcp=True) as name:
        yield name


def info(check=False, **args):
    result = run_module("domain_info", args, check=check)
    assert result["_rc"] == 0, result
    assert result["changed"] is False
    return result["domains"]


@pytest.fixture
def started_guest(sandbox, guest_image, isolated_network):
    """A TCG guest in 'stay' mode: raw root disk, empty qcow2 data disk, two NICs; defined and started."""
    name = sandbox.guest_name("info")
    instance_dir = os.path.join(sandbox.instances, name)
    os.makedirs(instance_dir)
    root = os.path.join(instance_dir, "disk")
    data = os.path.join(instance_dir, "data.qcow2")
    shutil.copyfile(guest_image["path"], root)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", data, "16M"], check=True)
    xml_args = {"name": name, "vcpus": 1, "memory": "128M", "virt_type": "qemu",
                "instances_path": sandbox.instances, "fw_cfg": {"opt/org.virtfleet/mode": "stay"},
                "disks": [{"path": root, "format": "raw", "boot_order": 1},
                          {"path": data, "format": "qcow2"}],
                # Both virtio: the test guest's initramfs has no e1000 driver, so it would not see such a NIC.
                "nics": [{"network": isolated_network}, {"network": isolated_network}],
                "metadata": {"flavor": "t.info", "owned_files": [root, data]}}
    written = run_module("domain_xml", xml_args)
    assert written["_rc"] == 0, written
    started = run_module("domain", {"name": name, "instances_path": sandbox.instances})
    assert started["_rc"] == 0 and started["state"] == "running", started
    return {"name": name, "dir": instance_dir, "root": root, "data": data, "network": isolated_network,
            "console": os.path.join(instance_dir, "console.log"), "instances": sandbox.instances}


def test_running_guest_is_reported_as_the_guest_sees_itself(started_guest):
    g = started_guest
    report = wait_for_report(g["console"])
    [dom] = info(name=g["name"])

    assert dom["name"] == g["name"] and dom["state"] == "running"
    assert dom["persistent"] is True and dom["autostart"] is False
    assert dom["uuid"] == report.uuid.lower(), "libvirt's UUID is the guest's SMBIOS UUID"
    assert dom["vcpus"] == report.cpus == 1
    assert dom["memory_kib"] == 128 * 1024
    assert 128 * MIB - 48 * MIB <= report.mem_kib * 1024 <= 128 * MIB

    disks = {d["target"]: d for d in dom["disks"]}
    assert {(t, d["bus"], d["file"], d["format"]) for t, d in disks.items()} == {
        ("vda", "virtio", g["root"], "raw"), ("vdb", "virtio", g["data"], "qcow2")}
    assert disks["vda"]["boot_order"] == 1
    # The guest sees those two files: the image's size and the qcow2's virtual size.
    assert report.disks["vda"]["size"] == os.path.getsize(g["root"])
    assert report.disks["vdb"]["size"] == 16 * MIB

    assert sorted(n["mac"] for n in dom["interfaces"]) == report.macs()
    assert [(n["type"], n["source"], n["model"]) for n in dom["interfaces"]] == [
        ("network", g["network"], "virtio")] * 2
    # No DHCP flag and no agent channel: the guest has no addresses, and asking is no error.
    assert all(n["addresses"] == [] for n in dom["interfaces"])

    assert dom["console_log"] == g["console"] and os.path.exists(dom["console_log"])
    assert dom["model"]["virt_type"] == "qemu" and dom["model"]["firmware"] == "bios"
    assert dom["model"]["machine"].startswith("pc-i440fx")
    assert dom["model"]["fw_cfg"] == {"opt/org.virtfleet/mode": "stay"}
    assert dom["model"]["metadata"] == {"flavor": "t.info", "image": None, "owned_files": [g["root"], g["data"]]}
    assert "xml" not in dom


def test_addresses_come_from_the_networks_dhcp_leases(sandbox, guest_image, dhcp_network):
    """The guest asks dnsmasq for an address (fw_cfg dhcp flag) and reports it; domain_info finds that lease."""
    name = sandbox.guest_name("lease")
    instance_dir = os.path.join(sandbox.instances, name)
    os.makedirs(instance_dir)
    root = os.path.join(instance_dir, "disk")
    shutil.copyfile(guest_image["path"], root)
    written = run_module("domain_xml", {
        "name": name, "vcpus": 1, "memory": "128M", "virt_type": "qemu", "instances_path": sandbox.instances,
        "fw_cfg": {"opt/org.virtfleet/mode": "stay", "opt/org.virtfleet/dhcp": "1"},
        "disks": [{"path": root, "format": "raw", "boot_order": 1}], "nics": [{"network": dhcp_network}]})
    assert written["_rc"] == 0, written
    # domain itself waits for the lease and returns the interfaces as domain_info reports them.
    started = run_module("domain", {"name": name, "instances_path": sandbox.instances, "wait_for_address": True,
                                    "address_timeout": 150})
    assert started["_rc"] == 0 and started["actions"] == ["define", "start"], started

    report = wait_for_report(os.path.join(instance_dir, "console.log"), predicate=lambda r: r.ipv4)
    [(nic_name, guest_addr)] = report.ipv4.items()
    assert guest_addr.startswith("10.213.")
    [dom] = info(name=name)
    [nic] = dom["interfaces"]
    assert nic["mac"] == report.nics[nic_name] and nic["source"] == dhcp_network
    assert nic["addresses"] == [{"address": guest_addr, "prefix": 24, "family": "ipv4", "source": "lease",
                                 "guest_ifname": None}]
    assert started["interfaces"] == dom["interfaces"]
    # Check mode reads the same.
    assert info(check=True, name=name)[0]["interfaces"][0]["addresses"] == nic["addresses"]


def test_addresses_come_from_the_guest_agent_where_no_lease_exists(sandbox, guest_image, isolated_network, probed):
    """No DHCP on the network: the guest sets a static address and runs qemu-ga on the guest_agent channel;
    domain_info reads the address through the agent, and re-runs stay unchanged while the agent is connected."""
    name = sandbox.guest_name("agent")
    instance_dir = os.path.join(sandbox.instances, name)
    os.makedirs(instance_dir)
    root = os.path.join(instance_dir, "disk")
    shutil.copyfile(guest_image["path"], root)
    xml_args = {"name": name, "vcpus": 1, "memory": "128M", "virt_type": "qemu", "guest_agent": True,
                "instances_path": sandbox.instances,
                # 192.0.2.0/24 is TEST-NET-1: documentation only, never routed.
                "fw_cfg": {"opt/org.virtfleet/mode": "stay", "opt/org.virtfleet/ipv4": "192.0.2.17/24"},
                "disks": [{"path": root, "format": "raw", "boot_order": 1}], "nics": [{"network": isolated_network}]}
    written = run_module("domain_xml", xml_args)
    assert written["_rc"] == 0, written
    started = run_module("domain", {"name": name, "instances_path": sandbox.instances})
    assert started["_rc"] == 0 and started["state"] == "running", started

    report = wait_for_report(os.path.join(instance_dir, "console.log"),
                             predicate=lambda r: r.ipv4 and r.agent_port)
    [(nic_name, guest_addr)] = report.ipv4.items()
    assert guest_addr == "192.0.2.17"

    # The agent answers once libvirt sees its channel connected; domain waits for that (a re-run: nothing changes).
    waited = run_module("domain", {"name": name, "instances_path": sandbox.instances, "wait_for_address": True,
                                   "address_timeout": 60})
    assert waited["_rc"] == 0 and waited["changed"] is False and waited["actions"] == [], waited
    [dom] = info(name=name)
    [nic] = dom["interfaces"]
    assert waited["interfaces"] == dom["interfaces"]
    assert dom["model"]["guest_agent"] is True
    assert nic["mac"] == report.nics[nic_name]
    assert {"address": "192.0.2.17", "prefix": 24, "family": "ipv4", "source": "agent",
            "guest_ifname": nic_name} in nic["addresses"], nic
    # Nothing from a lease (there is none), nothing invented: only the agent's view of this NIC
    # (its IPv6 link-local address besides the static one).
    assert all(a["source"] == "agent" and a["guest_ifname"] == nic_name for a in nic["addresses"]), nic
    assert all(a["address"].startswith("fe80:") for a in nic["addresses"] if a["family"] == "ipv6"), nic
    assert info(check=True, name=name)[0]["interfaces"][0]["addresses"] == nic["addresses"]

    # The agent answers a ping (the resize role's health check); without ping_agent nothing is asked.
    [pinged] = info(name=name, ping_agent=True, agent_timeout=10)
    assert pinged["agent"] == {"responding": True, "error": None}, pinged["agent"]
    assert "agent" not in dom
    # The channel now reads state='connected' in the live XML; neither module sees a change in that.
    assert "state='connected'" in sandbox.conn.lookupByName(name).XMLDesc(0)
    again = run_module("domain_xml", xml_args)
    assert again["_rc"] == 0 and again["changed"] is False, again
    # The memo recorded at start, while the channel was disconnected, still matches: the fast path.
    rerun, path = probed(name, sandbox)
    assert rerun["_rc"] == 0 and rerun["changed"] is False, rerun
    assert path == {"model": False, "lxml": False}, "the agent connecting sent the re-run down the full path"


def test_waiting_for_an_address_that_never_comes_fails_clearly_and_leaves_the_guest_running(started_guest):
    """No DHCP on the network and no agent channel: the wait ends after address_timeout with where it looked."""
    g = started_guest
    args = {"name": g["name"], "instances_path": g["instances"], "wait_for_address": True, "address_timeout": 2}
    checked = run_module("domain", args, check=True)
    assert checked["_rc"] == 0 and checked["changed"] is False, checked
    assert [n["addresses"] for n in checked["interfaces"]] == [[], []], "check mode reports, never waits"

    started = time.monotonic()
    failed = run_module("domain", args)
    assert failed["_rc"] == 1 and failed["failed"], failed
    assert time.monotonic() - started >= 2
    assert failed["msg"] == (
        "domain %s has no IP address after 2 s: no DHCP lease on its libvirt network %s, and no guest agent "
        "channel (domain_xml guest_agent: true adds one). The guest is left running. Check that it runs a DHCP "
        "client on that network or the agent, or raise address_timeout." % (g["name"], g["network"]))
    assert failed["changed"] is False and failed["state"] == "running" and failed["actions"] == []
    assert info(name=g["name"])[0]["state"] == "running"

    wrong = run_module("domain", dict(args, state="shutdown"))
    assert wrong["_rc"] == 1 and "wait_for_address needs state=running" in wrong["msg"], wrong
    assert info(name=g["name"])[0]["state"] == "running", "a refused task does nothing"


def test_agent_ping_of_a_guest_without_an_agent_channel_says_so(started_guest):
    [dom] = info(name=started_guest["name"], ping_agent=True)
    assert dom["agent"] == {"responding": False,
                            "error": "no guest agent channel (domain_xml guest_agent: true adds one)"}, dom["agent"]


def test_check_mode_listing_and_include_xml(started_guest):
    g = started_guest
    [checked] = info(check=True, name=g["name"], include_xml=True)
    assert checked["state"] == "running"
    assert "<name>%s</name>" % g["name"] in checked["xml"]
    listed = info()
    assert g["name"] in [d["name"] for d in listed]
    assert [d["name"] for d in listed] == sorted(d["name"] for d in listed)
    assert info(name=g["name"] + "-missing") == []
    assert info(check=True, name=g["name"] + "-missing") == []


def test_paused_and_shut_off_states(started_guest):
    g = started_guest
    wait_for_report(g["console"])
    paused = run_module("domain", {"name": g["name"], "instances_path": g["instances"], "state": "paused"})
    assert paused["_rc"] == 0, paused
    assert info(name=g["name"])[0]["state"] == "paused"

    stopped = run_module("domain", {"name": g["name"], "instances_path": g["instances"], "state": "shutdown",
                                    "shutdown_timeout": 60, "force_off": True})
    assert stopped["_rc"] == 0, stopped
    [dom] = info(name=g["name"])
    assert dom["state"] == "shutoff"
    assert all(n["addresses"] == [] for n in dom["interfaces"])
    assert {d["file"] for d in dom["disks"]} == {g["root"], g["data"]}


def test_libvirt_errors_are_clear_messages():
    result = run_module("domain_info", {"uri": "qemu+unix:///system?socket=/nonexistent/sock"})
    assert result["_rc"] != 0 and result.get("failed")
    assert "cannot connect to libvirt" in result["msg"]
    assert "Traceback" not in result["msg"] + result["_stderr"]
