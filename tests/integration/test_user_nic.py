"""A user-mode NIC (domain_xml's default backend: QEMU's own user networking, isolated).

The busybox test guest says on its serial console which NIC (MAC) it sees and the address QEMU's DHCP server
gave it. Then one Debian guest is booted for the module (tests/guest-debian, its image cached): it is reached over SSH through the
port forwarded on 127.0.0.1 only, and the guest itself says, over that SSH session, that it reaches nothing on
the host (QEMU's gateway 10.0.2.2, the host's own addresses) while a listener there counts no connection. Then
a re-run of domain_xml and domain changes nothing (the domain module on its memo's fast path), and a changed
forward is pending until ``apply: restart``, after which the guest answers on the new port only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time

import pytest

from tests.integration.conftest import SCRATCH, TEST_PREFIX, destroy_domains, new_run_root, wait_for_report
from tests.support.debian_guest import build_debian_guest
from tests.support.runner import run_module

SSH_TIMEOUT = 360
# Run inside the guest: try each (host, port) and say what happened, one JSON line per target.
GUEST_PROBE = r"""
import json, socket, sys
for host, port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect((host, port))
        print(json.dumps([host, port, "open"]))
    except OSError as exc:
        print(json.dumps([host, port, type(exc).__name__]))
    finally:
        sock.close()
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect(("10.0.2.2", 9))  # sends nothing: picks the source address of the route
print(json.dumps(["address", probe.getsockname()[0]]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _host_addresses():
    """The host's own IPv4 addresses outside loopback."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)


def _listening(port: int):
    """The local addresses a TCP socket listens on for ``port`` (from /proc/net/tcp: state 0A)."""
    found = []
    with open("/proc/net/tcp") as handle:
        for line in handle.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


class Guest:
    def __init__(self, root: str, name: str, key: str, xml_args: dict):
        self.root, self.name, self.key, self.xml_args = root, name, key, xml_args
        self.instances = xml_args["instances_path"]

    @property
    def port(self) -> int:
        return self.xml_args["nics"][0]["port_forwards"][0]["host_port"]

    def ssh(self, command, port=None, timeout=60, stdin=None):
        """``command`` (words the remote shell joins and reads again) as the debian user, through the forward."""
        return subprocess.run(
            ["ssh", "-i", self.key, "-p", str(port or self.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
             "-o", "LogLevel=ERROR", "debian@127.0.0.1"] + command, capture_output=True, text=True, timeout=timeout,
            check=False, input=stdin)

    def wait_for_ssh(self, port=None):
        deadline, last = time.monotonic() + SSH_TIMEOUT, None
        while time.monotonic() < deadline:
            last = self.ssh(["true"], port=port, timeout=30)
            if last.returncode == 0:
                return
            time.sleep(2)
        console = os.path.join(self.instances, self.name, "console.log")
        with open(console, errors="replace") as handle:
            tail = handle.read()[-3000:]
        pytest.fail("no SSH to %s on 127.0.0.1:%s within %d s: %s\nconsole:\n%s"
                    % (self.name, port or self.port, SSH_TIMEOUT, last and last.stderr, tail), pytrace=False)

    def module(self, name, args):
        result = run_module(name, args)
        assert result["_rc"] == 0, result
        return result


def _busybox_guest(sandbox, guest_image, host_port: int) -> dict:
    """A busybox test guest with one user NIC forwarding ``host_port``, written by domain_xml (not started)."""
    name = sandbox.guest_name("unic")
    disk = run_module("guest_disk", {"guest": name, "kind": "root", "base": guest_image["path"], "base_format": "raw",
                                     "backing": "flat", "format": "raw", "instances_path": sandbox.instances})
    assert disk["_rc"] == 0, disk
    written = run_module("domain_xml", {
        "name": name, "vcpus": 1, "memory": "160M", "virt_type": "qemu", "instances_path": sandbox.instances,
        "fw_cfg": {"opt/org.virtfleet/mode": "stay", "opt/org.virtfleet/dhcp": "1"},
        "disks": [{"path": disk["path"], "format": "raw"}],
        "nics": [{"type": "user", "port_forwards": [{"host_port": host_port, "guest_port": 22}]}]})
    assert written["_rc"] == 0, written
    return dict(written, name=name, console=os.path.join(sandbox.instances, name, "console.log"))


def test_the_guest_sees_the_nic_with_its_mac_and_takes_qemus_dhcp_address(sandbox, guest_image):
    written = _busybox_guest(sandbox, guest_image, _free_port())
    started = run_module("domain", {"name": written["name"], "instances_path": sandbox.instances})
    assert started["_rc"] == 0 and started["state"] == "running", started
    report = wait_for_report(written["console"], predicate=lambda r: r.ipv4)
    assert list(report.nics.values()) == [written["macs"][0]], report.nics
    assert list(report.ipv4.values()) == ["10.0.2.15"], "QEMU's user networking leases 10.0.2.15: %s" % report.ipv4


def test_a_forwarded_port_in_use_fails_the_start_saying_what_to_do(sandbox, guest_image):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        written = _busybox_guest(sandbox, guest_image, taken.getsockname()[1])
        started = run_module("domain", {"name": written["name"], "instances_path": sandbox.instances})
    assert started.get("failed") and started["actions"] == ["define"], started
    assert "Could not set up host forwarding rule" in started["msg"], started["msg"]
    assert "give nics[].port_forwards[].host_port a free port" in started["msg"], started["msg"]
    assert sandbox.conn.lookupByName(written["name"]).isActive() == 0


@pytest.fixture(scope="module")
def guest(virt_host):
    image = build_debian_guest(os.path.join(SCRATCH, "debian-image"))
    token, root, instances = new_run_root()
    name = "%s%s-unic" % (TEST_PREFIX, token)
    key = os.path.join(root, "ssh_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vft", "-f", key], check=True)
    with open(key + ".pub") as handle:
        public_key = handle.read().strip()
    try:
        common = {"guest": name, "instances_path": instances}
        root_disk = run_module("guest_disk", dict(common, kind="root", base=image, base_format="qcow2", size="2G"))
        drive = run_module("guest_disk", dict(common, kind="config_drive", hostname=name, public_keys=[public_key]))
        assert root_disk["_rc"] == 0 and drive["_rc"] == 0, (root_disk, drive)
        xml_args = {"name": name, "vcpus": 1, "memory": "512M", "virt_type": "qemu", "instances_path": instances,
                    "disks": [dict(root_disk["xml_disk"], boot_order=1), drive["xml_disk"]],
                    "nics": [{"type": "user", "port_forwards": [{"host_port": _free_port(), "guest_port": 22}]}]}
        box = Guest(root, name, key, xml_args)
        box.module("domain_xml", xml_args)
        box.module("domain", {"name": name, "instances_path": instances})
        box.wait_for_ssh()
        yield box
    finally:
        destroy_domains(virt_host, [name])
        shutil.rmtree(root, ignore_errors=True)


def test_ssh_reaches_the_guest_through_the_port_forwarded_on_loopback_only(guest):
    answer = guest.ssh(["hostname"])
    assert answer.returncode == 0 and answer.stdout.strip() == guest.name, answer
    assert _listening(guest.port) == ["127.0.0.1"], "QEMU listens on loopback only"
    for address in _host_addresses():
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="Connection refused"):
            sock.settimeout(5)
            sock.connect((address, guest.port))


def test_the_guest_reaches_nothing_on_the_host(guest):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    port, accepted = listener.getsockname()[1], []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[1])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the listener answers the host itself...
        time.sleep(0.5)
        assert len(accepted) == 1
        targets = [["127.0.0.1", 22], ["10.0.2.2", port], ["10.0.2.2", guest.port], ["10.0.2.3", 53]]
        targets += [[address, port] for address in _host_addresses()]
        answer = guest.ssh(["python3", "-", shlex.quote(json.dumps(targets))], timeout=120, stdin=GUEST_PROBE)
        assert answer.returncode == 0, answer
        lines = [json.loads(line) for line in answer.stdout.splitlines()]
        said = {(host, target_port): what for host, target_port, what in lines[:-1]}
        assert lines[-1] == ["address", "10.0.2.15"], "the guest took QEMU's DHCP address: %s" % lines
        assert said.pop(("127.0.0.1", 22)) == "open", "the probe connects where something listens"
        assert len(said) == len(targets) - 1 and "open" not in said.values(), said
        assert len(accepted) == 1, "...but nothing from the guest reached it: %s" % accepted[1:]
    finally:
        listener.close()


def test_a_rerun_changes_nothing_and_domain_info_reports_the_nic(guest, probed):
    written = guest.module("domain_xml", guest.xml_args)
    assert written["changed"] is False, written
    again, path = probed(guest.name, guest)
    assert again["changed"] is False and again["actions"] == [] and again["restart_pending"] is False, again
    assert path == {"model": False, "lxml": False}, "the domain module's memo fast path"
    info = guest.module("domain_info", {"name": guest.name})
    [nic] = info["domains"][0]["interfaces"]
    assert nic["type"] == "user" and nic["mac"] == written["macs"][0], nic
    assert nic["port_forwards"] == [{"proto": "tcp", "address": "127.0.0.1", "host_port": guest.port,
                                     "guest_port": 22}]


def test_a_changed_forward_waits_for_a_restart_and_then_works(guest):
    old_port = guest.port
    guest.xml_args["nics"][0]["port_forwards"][0]["host_port"] = new_port = _free_port()
    instances = guest.instances
    assert guest.module("domain_xml", guest.xml_args)["changed"] is True
    pending = guest.module("domain", {"name": guest.name, "instances_path": instances})
    assert pending["restart_pending"] is True, pending
    assert [d["what"] for d in pending["changes"]] == ["qemu_commandline"], pending["changes"]
    assert guest.ssh(["true"], port=old_port).returncode == 0, "the running guest keeps its forward until restarted"
    restarted = guest.module("domain", {"name": guest.name, "instances_path": instances, "apply": "restart",
                                        "shutdown_timeout": 120, "force_off": True})
    assert restarted["restart_pending"] is False and restarted["changed"] is True, restarted
    guest.wait_for_ssh(port=new_port)
    assert guest.ssh(["hostname"], port=new_port).stdout.strip() == guest.name
    assert _listening(new_port) == ["127.0.0.1"] and _listening(old_port) == []
    settled = guest.module("domain", {"name": guest.name, "instances_path": instances})
    assert settled["changed"] is False and settled["restart_pending"] is False, settled
