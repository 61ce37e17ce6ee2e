import re

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


# --- issue 10 item 21: each kind's rule and its words, exactly -------------------------------------------------

@pytest.mark.parametrize("identifier, good, bad, looks_like", [
    (ids.GUEST_NAME, ["a", "0", "a..b", "a.", "x" * 64], [".", "..", "_a", "x" * 65],
     "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    (ids.FILE_NAME, ["disk", "0.x"], ["-disk", "a b"],
     "use a plain file name (letters, digits, '.', '_' or '-'), not a path"),
    (ids.FS_LABEL, ["", "root", "a.b_c-d", "L" * 16, "..", "-x"], ["L" * 17, "a b", "a/b", "root\n", "é"],
     "use at most 16 letters, digits, '.', '_' or '-'"),
    (ids.FW_CFG_NAME, ["opt/a", "opt/org.example/k-1_x", "opt/" + "a" * 51], ["opt/", "opt/a b", "x/opt/a"],
     "use opt/<reverse-domain>/<key> with letters, digits, '.', '_', '-', '/' (at most 55 characters); qemu "
     "reserves names outside opt/"),
    (ids.MAC, ["00:11:22:33:44:55"], ["0:11:22:33:44:55", "00:11:22:33:44:55:66", "gg:11:22:33:44:55"],
     "use six hex pairs separated by ':', such as 52:54:00:12:34:56"),
    (ids.NETWORK_NAME, ["n", "x" * 64], ["x" * 65, "a b"],
     "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    (ids.HOST_INTERFACE, ["e", "eth0:1", "x" * 15], ["", "-eth0", "eth 0"],
     "use a host interface name of 1-15 letters, digits, '.', '_', ':' or '-'"),
    (ids.CPU_MODEL, ["Nehalem", "Skylake-Client-v4", "EPYC_x.1", "x" * 64],
     ["", "-Nehalem", "Nehalem\n", "Neha lem", "x" * 65, "<x>"], "use a CPU model name such as Skylake-Client"),
    (ids.MACHINE, ["pc", "q35", "pc-q35-7.2", "pc_i440fx", "x" * 64], ["", ".pc", "q35\n", "q 35", "x" * 65],
     "use a machine type name such as pc or q35"),
    (ids.DISK_TARGET, ["vdz", "sdaa", "hdb"], ["vdA", "vd1", "vdaaa", "fda"],
     "use a target device name such as vda, sdb or hdc"),
    (ids.DRIVE_PATH_PART, ["a", "@+=,-._", "x" * 64], [".", "", "x" * 65, "a/b"],
     "each part may hold 1-64 letters, digits and . _ @ + = , -"),
])
def test_each_kind_accepts_its_values_and_names_its_rule(identifier, good, bad, looks_like):
    for value in good:
        assert identifier.matches(value)
        assert identifier.check(value, "thing") == value
        assert identifier.check_optional(value, "thing") == value
    for value in bad:
        assert not identifier.matches(value)
        expected = "invalid the thing %r: %s" % (value, looks_like)
        with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
            identifier.check(value, "the thing")
        with pytest.raises(VirtfleetError, match="^invalid the thing"):
            identifier.check_optional(value, "the thing")


def test_forbidden_values_are_refused_even_when_the_pattern_matches():
    rule = ids.Identifier(r"[a-z.]+", "lower case", forbidden=("no", "..."))
    assert rule.matches("yes") and not rule.matches("no") and not rule.matches("...")
    with pytest.raises(VirtfleetError, match=r"^invalid word 'no': lower case$"):
        rule.check("no", "word")
    assert ids.Identifier(r"[A-Z]+", "upper", flags=re.IGNORECASE).matches("abc")
    assert not ids.Identifier(r"[A-Z]+", "upper").matches("abc")
