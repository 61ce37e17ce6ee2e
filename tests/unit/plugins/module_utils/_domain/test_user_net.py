"""A user NIC on QEMU's command line: the arguments written, each value checked, and read back."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import user_net

NIC = user_net.UserNic(netdev_id="vfnet1", mac="52:54:00:AA:BB:CC", model="virtio", bus="pcie.0", slot=0x1c,
                       forwards=(user_net.Forward("tcp", "127.0.0.1", 2222, 22),
                                 user_net.Forward("udp", "0.0.0.0", 5353, 53)))


def test_the_arguments_of_an_isolated_user_nic():
    assert user_net.nic_arguments(NIC, "nics[1]") == [
        "-netdev", "user,id=vfnet1,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53",
        "-device", "virtio-net-pci,netdev=vfnet1,mac=52:54:00:aa:bb:cc,bus=pcie.0,addr=0x1c"]


def test_what_is_written_reads_back():
    args = ["-smbios", "type=1"] + user_net.nic_arguments(NIC, "nics[1]")
    assert user_net.read_user_nics(args) == [dataclasses.replace(NIC, mac="52:54:00:aa:bb:cc")]


def test_only_devices_on_a_user_netdev_are_user_nics():
    args = ["-netdev", "tap,id=t0", "-device", "virtio-net-pci,netdev=t0,mac=52:54:00:00:00:01",
            "-device", "virtio-net-pci,netdev=gone,mac=52:54:00:00:00:02",
            "-netdev", "user,id=u0,hostfwd=bogus", "-device", "e1000,mac=52:54:00:00:00:03,netdev=u0",
            "-netdev", "user,id=u1,,x", "-device", "rtl8139,netdev=u1"]
    [nic] = user_net.read_user_nics(args)
    assert (nic.netdev_id, nic.mac, nic.model, nic.forwards, nic.slot) == ("u0", "52:54:00:00:00:03", "e1000", (), 0)
    assert user_net.read_user_nics(["-netdev"]) == []


# Security review: called past the spec (a later caller, a bug upstream), every value is still checked, so none
# can add QEMU options of its own (',' and '=' split options, a blank starts another argument in a shell log).
@pytest.mark.parametrize("change, message", [
    ({"netdev_id": "vfnet1,restrict=off"}, "invalid nics.1. netdev id"),
    ({"netdev_id": "vfnet1 "}, "invalid nics.1. netdev id"),
    ({"mac": "52:54:00:aa:bb:cc,romfile=/tmp/rom"}, r"invalid nics\[1\].mac"),
    ({"model": "virtio-net-pci,addr=0x2"}, r"nics\[1\].model must be one of"),
    ({"bus": "pci.0,addr=0x3"}, "is not a root bus"),
    ({"slot": 0x20}, "PCI slot 32 is not one of 0x01-0x1f"),
    ({"slot": True}, "PCI slot True is not one of"),
    ({"forwards": (user_net.Forward("tcp", "127.0.0.1,hostfwd=tcp::2223-:22", 2222, 22),)},
     r"invalid nics\[1\].port_forwards\[0\].address"),
    ({"forwards": (user_net.Forward("tcp,restrict=off", "127.0.0.1", 2222, 22),)},
     r"nics\[1\].port_forwards\[0\].proto must be one of tcp, udp"),
    ({"forwards": (user_net.Forward("tcp", "127.0.0.1", "2222,restrict=off", 22),)},
     r"nics\[1\].port_forwards\[0\].host_port must be a port number"),
    ({"forwards": (user_net.Forward("tcp", "127.0.0.1", 2222, 0),)},
     r"nics\[1\].port_forwards\[0\].guest_port must be a port number from 1 to 65535, got 0"),
])
def test_no_value_can_add_qemu_options(change, message):
    with pytest.raises(VirtfleetError, match=message):
        user_net.nic_arguments(dataclasses.replace(NIC, **change), "nics[1]")


def test_an_option_value_is_one_value_whatever_its_source():
    with pytest.raises(VirtfleetError, match="the QEMU option hostfwd='a,b' would not be one option value"):
        user_net._options("user", [("hostfwd", "a,b")])
