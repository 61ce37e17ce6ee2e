import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils import _identifiers as ids


@pytest.mark.parametrize("identifier, good, bad", [
    (ids.GUEST_NAME, ["a", "web-1.example_x", "A" * 64], ["", "-a", ".a", "a\n", "a" * 65, "a b", "é"]),
    (ids.FILE_NAME, ["disk", "disk.local", "x" * 128], ["", ".hidden", "a/b", "disk\n", "x" * 129]),
    (ids.MAC, ["52:54:00:aa:BB:cc"], ["52:54:00:aa:bb:cc\n", "52-54-00-aa-bb-cc", "52:54:00:aa:bb"]),
    (ids.FW_CFG_NAME, ["opt/org.x/mode"], ["opt/x\n", "etc/x", "opt/" + "a" * 52]),
    (ids.DISK_TARGET, ["vda", "sdab", "hdc"], ["vda\n", "xvda", "vd"]),
    (ids.NETWORK_NAME, ["default", "br-0"], ["default\n", "", "-x"]),
    (ids.HOST_INTERFACE, ["eth0", "enp0s3.100"], ["eth0\n", "a" * 16]),
    (ids.DRIVE_PATH_PART, ["meta_data.json"], ["..", "a b", "a\n"]),
    # These go into QEMU options, which ',' '=' and blanks would extend.
    (ids.QEMU_OPTION_VALUE, ["vfnet0", "tcp:127.0.0.1:2222-:22", "52:54:00:aa:bb:cc", "0x1f"],
     ["a,b", "a=b", "a b", "", "tcp:127.0.0.1:2222-:22\n", "x" * 129]),
    (ids.QEMU_ID, ["vfnet0", "a_b-1"], ["0net", "net,restrict=off", "net 0", "net=1", "vfnet0\n", "a" * 33]),
    (ids.IPV4_ADDRESS, ["127.0.0.1", "0.0.0.0", "255.255.255.255"],
     ["127.0.0.1,hostfwd=tcp::22-:22", "127.0.0.01", "256.0.0.1", "::1", "127.0.0.1\n", "127.0.0"]),
])
def test_every_identifier_matches_the_whole_value(identifier, good, bad):
    for value in good:
        assert identifier.check(value, "thing") == value
    for value in bad:
        with pytest.raises(VirtfleetError, match="invalid thing"):
            identifier.check(value, "thing")


def test_non_strings_are_refused_and_optional_values_pass():
    with pytest.raises(VirtfleetError, match="invalid guest name 5"):
        ids.GUEST_NAME.check(5, "guest name")
    assert ids.MAC.check_optional(None, "mac") is None
