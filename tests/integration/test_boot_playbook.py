"""The boot role end to end: real libvirtd boots real guests, and the guests testify."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.integration.conftest import transient_network, wait_for_report
from tests.support.runner import REPO, run_playbook

PLAYBOOK = os.path.join(REPO, "playbooks", "boot.yml")
FLAVORS = {
    "t.one": {"vcpus": 1, "memory": "160M", "disk": "64M"},
    "t.two": {"vcpus": 2, "memory": "256M", "disk": "96M"},
}
MIB = 1 << 20


def write_inventory(sandbox, guests, image_url, checksum="", extra=None):
    """An inventory like playbooks/inventory/example.yml, pointed at the sandbox."""
    guest_vars = {
        "virtfleet_hypervisor": "hv",
        "virtfleet_image_url": image_url,
        "virtfleet_image_checksum": checksum,
        "virtfleet_image_format": "raw",
        "virtfleet_instances_path": sandbox.instances,
        "virtfleet_virt_type": "qemu",
        "virtfleet_flavors": FLAVORS,
        "virtfleet_fw_cfg": {"opt/org.virtfleet/mode": "stay"},
    }
    guest_vars.update(extra or {})
    inventory = {"all": {"children": {
        "hypervisors": {"hosts": {"hv": {"ansible_connection": "local",
                                         "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}},
        "guests": {"hosts": {name: {"virtfleet_flavor": flavor} for name, flavor in guests.items()},
                   "vars": guest_vars},
    }}}
    path = os.path.join(sandbox.root, "inventory-%d.yml" % len(os.listdir(sandbox.root)))
    with open(path, "w") as handle:
        json.dump(inventory, handle)
    return path


MODULE_TASKS = {"Boot the guests": "guest"}


def module_calls(run):
    """How many times each module ran on the hypervisor (one result line per call) in a playbook's output."""
    calls, current = {}, None
    for line in run.stdout.splitlines():
        if line.startswith("TASK ["):
            current = next((m for task, m in MODULE_TASKS.items() if task in line), None)
        elif current and " -> " in line and line.split(":")[0] in ("ok", "changed", "failed", "fatal"):
            calls[current] = calls.get(current, 0) + 1
    return calls


def snapshot_tree(root):
    """(path -> (size, mtime_ns)) of every file below ``root``: what a no-op run must not touch."""
    state = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name == "console.log":
                continue  # the guest writes to it
            st = os.stat(os.path.join(directory, name))
            state[os.path.join(directory, name)] = (st.st_size, st.st_mtime_ns)
    return state


def test_boot_two_flavors_then_rerun_is_a_noop(sandbox, guest_image, guest_image_url):
    small, large = sandbox.guest_name("small"), sandbox.guest_name("large")
    inventory = write_inventory(sandbox, {small: "t.one", large: "t.two"}, guest_image_url,
                                checksum="sha256:" + guest_image["sha256"])

    first = run_playbook(PLAYBOOK, inventory)
    assert first.rc == 0, first.stdout[-4000:] + first.stderr[-2000:]
    # One batch for the hypervisor: one call per module for both guests (one download of their common image),
    # made by the first guest as the batch's leader; then each guest reports its own change.
    assert module_calls(first) == {"guest": 1}, first.stdout
    assert first.changed(small) == 2 and first.changed(large) == 1, first.stdout[-4000:]
    for name in (small, large):  # whichever guest came first fetched the common image; the other found it
        assert re.search(r"%s: running, (image fetch, )?root create, domain XML written, domain define\+start"
                         % re.escape(name), first.stdout), first.stdout[-4000:]
    fetched = {name for name in (small, large) if "%s: running, image fetch" % name in first.stdout}
    assert len(fetched) == 1, first.stdout[-4000:]

    for name, flavor in ((small, FLAVORS["t.one"]), (large, FLAVORS["t.two"])):
        report = wait_for_report(os.path.join(sandbox.instances, name, "console.log"))
        memory = int(flavor["memory"][:-1]) * MIB
        assert report.cpus == flavor["vcpus"]
        # MemTotal is what the kernel can use: the flavor's memory less what firmware and kernel reserve.
        assert memory - 48 * MIB <= report.mem_kib * 1024 <= memory
        assert report.disks["vda"]["size"] == int(flavor["disk"][:-1]) * MIB

    before = snapshot_tree(sandbox.instances)
    # the re-run, followed by a play of the user's own that reads every guest's result of the run
    results_file = os.path.join(sandbox.root, "results.json")
    wrapper = os.path.join(sandbox.root, "boot-then-read.yml")
    with open(wrapper, "w") as handle:
        handle.write(RESULTS_PLAYBOOK % (PLAYBOOK, results_file))
    second = run_playbook(wrapper, inventory)
    assert second.rc == 0, second.stdout[-4000:]
    assert second.changed() == 0, second.stdout[-4000:]
    assert snapshot_tree(sandbox.instances) == before
    for name in (small, large):  # a summary line each, though no task ran per guest
        assert "%s: running, unchanged" % name in second.stdout, second.stdout[-4000:]
    with open(results_file) as handle:
        results = json.load(handle)
    assert {name: (r["changed"], r["failed"], r["domain"]["state"]) for name, r in results.items()} == {
        small: (False, False, "running"), large: (False, False, "running")}


RESULTS_PLAYBOOK = """
- ansible.builtin.import_playbook: %s

- name: A later play reads the results of the run
  hosts: guests
  gather_facts: false
  tasks:
    - name: Record every guest's result
      ansible.builtin.copy:
        content: "{{ boot_results_by_guest | to_json }}"
        dest: "%s"
        mode: "0644"
      delegate_to: hv
      run_once: true
      changed_when: false  # the test's own file, not the guests
"""


def test_check_mode_on_a_new_guest_touches_nothing(sandbox, guest_image_url):
    name = sandbox.guest_name("check")
    inventory = write_inventory(sandbox, {name: "t.one"}, guest_image_url)
    run = run_playbook(PLAYBOOK, inventory, check=True)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.changed(name) == 2, "check mode must predict the changes a real run makes"
    assert re.search(r"%s: \S+, image fetch, root create, domain XML written, domain define\+start"
                     % re.escape(name), run.stdout), run.stdout[-4000:]
    assert os.listdir(sandbox.instances) == []
    assert name not in [d.name() for d in sandbox.conn.listAllDomains()]


@pytest.mark.parametrize("case", ["unknown_flavor", "missing_image", "wrong_checksum", "impossible_size"])
def test_bad_input_fails_clearly_and_leaves_no_disk(sandbox, guest_image, guest_image_url, image_server, case):
    name = sandbox.guest_name(case.replace("_", ""))
    url, checksum, flavor, extra = guest_image_url, "", "t.one", {}
    expected = {
        "unknown_flavor": "Unknown flavor 'no.such'",
        "missing_image": "404",
        "wrong_checksum": "checksum",
        "impossible_size": "larger than the requested root disk size",
    }[case]
    if case == "unknown_flavor":
        flavor = "no.such"
    elif case == "missing_image":
        url = image_server.url("no-such-image.img")
    elif case == "wrong_checksum":
        checksum = "sha256:" + "0" * 64
    else:
        extra = {"virtfleet_flavors": {"t.one": {"vcpus": 1, "memory": "160M", "disk": "1M"}}}
    inventory = write_inventory(sandbox, {name: flavor}, url, checksum=checksum, extra=extra)
    run = run_playbook(PLAYBOOK, inventory)
    assert run.rc != 0
    assert expected in run.stdout, run.stdout[-4000:]
    assert "Traceback" not in run.stdout + run.stderr
    assert not os.path.exists(os.path.join(sandbox.instances, name, "disk"))
    assert name not in [d.name() for d in sandbox.conn.listAllDomains()]


def test_flavor_with_ephemeral_swap_and_config_drive(sandbox, guest_image_url):
    """The role builds every disk of the flavor; the guest sees each one and the config drive's files."""
    name = sandbox.guest_name("full")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly test@virtfleet"
    user_data = "#cloud-config\nhostname: full-guest\n"
    flavors = dict(FLAVORS)
    flavors["t.full"] = {"vcpus": 1, "memory": "160M", "disk": "64M", "ephemeral": "48M", "swap": "32M"}
    inventory = write_inventory(sandbox, {name: "t.full"}, guest_image_url, extra={
        "virtfleet_flavors": flavors, "virtfleet_config_drive": True, "virtfleet_hostname": "full-guest",
        "virtfleet_ssh_public_keys": [key], "virtfleet_user_data": user_data})
    first = run_playbook(PLAYBOOK, inventory)
    assert first.rc == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert user_data.splitlines()[0] not in first.stdout, "user data must never be logged"

    report = wait_for_report(os.path.join(sandbox.instances, name, "console.log"))
    by_size = {v["size"]: dev for dev, v in report.disks.items()}
    assert report.disks["vda"]["size"] == 64 * MIB
    ephemeral, swap = by_size[48 * MIB], by_size[32 * MIB]
    assert report.filesystems[ephemeral] == {"type": "ext4", "label": "ephemeral0"}
    assert swap in report.swaps
    assert report.configdrive["label"] == "config-2"
    meta = json.loads(report.cdfile_bytes("openstack/latest/meta_data.json"))
    assert meta["hostname"] == "full-guest" and key in json.dumps(meta["public_keys"])
    assert meta["uuid"] == report.uuid
    assert report.cdfile_bytes("openstack/latest/user_data").decode() == user_data

    second = run_playbook(PLAYBOOK, inventory)
    assert second.rc == 0 and second.changed() == 0, second.stdout[-4000:]


ADDRESS_PLAYBOOK = """
- name: Boot guests and keep what the role says about their addresses
  hosts: guests
  gather_facts: false
  roles:
    - role: virtfleet.libvirt.boot
  post_tasks:
    - name: Record the interfaces
      ansible.builtin.copy:
        content: "{{ virtfleet_boot_domain.interfaces | to_json }}"
        dest: "%s/{{ inventory_hostname }}.interfaces.json"
        mode: "0644"
      delegate_to: hv
"""


def test_role_waits_for_the_guests_address_and_returns_it(sandbox, guest_image_url, virt_host):
    """virtfleet_wait_for_address: the role returns once the guest holds a DHCP lease, with that address;
    virtfleet_guest_agent gives the guest the agent channel it then runs qemu-ga on."""
    name = sandbox.guest_name("addr")
    playbook = os.path.join(sandbox.root, "boot-with-address.yml")
    with open(playbook, "w") as handle:
        handle.write(ADDRESS_PLAYBOOK % sandbox.root)
    with transient_network(virt_host, "vft-bp-dhcp", dhcp=True) as network:
        inventory = write_inventory(sandbox, {name: "t.one"}, guest_image_url, extra={
            "virtfleet_nics": [{"network": network}],
            "virtfleet_fw_cfg": {"opt/org.virtfleet/mode": "stay", "opt/org.virtfleet/dhcp": "1"},
            "virtfleet_guest_agent": True, "virtfleet_wait_for_address": True, "virtfleet_address_timeout": 150})
        first = run_playbook(playbook, inventory)
        assert first.rc == 0, first.stdout[-4000:] + first.stderr[-2000:]
        with open(os.path.join(sandbox.root, "%s.interfaces.json" % name)) as handle:
            [nic] = json.load(handle)
        report = wait_for_report(os.path.join(sandbox.instances, name, "console.log"),
                                 predicate=lambda r: r.ipv4 and r.agent_port)
        [(nic_name, guest_addr)] = report.ipv4.items()
        assert nic["mac"] == report.nics[nic_name] and nic["source"] == network
        # The lease is read first; the agent (the guest runs it on the channel the role asked for) may add
        # the NIC's IPv6 link-local address, never another IPv4 one.
        ipv4 = [(a["address"], a["source"]) for a in nic["addresses"] if a["family"] == "ipv4"]
        assert ipv4 == [(guest_addr, "lease")], nic

        second = run_playbook(playbook, inventory)
        assert second.rc == 0, second.stdout[-4000:]
        assert second.changed(name) == 0, second.stdout[-4000:]
        with open(os.path.join(sandbox.root, "%s.interfaces.json" % name)) as handle:
            [again] = json.load(handle)
        assert [a for a in again["addresses"] if a["family"] == "ipv4"] == [
            a for a in nic["addresses"] if a["family"] == "ipv4"], "a re-run returns the same address"
        # The network goes before the guest does; the sandbox removes the guest.
        sandbox.conn.lookupByName(name).destroy()


def test_limit_acts_on_the_named_guests_only_and_an_unreachable_hypervisor_fails_its_guest_alone(
        sandbox, guest_image_url):
    here, other, far = sandbox.guest_name("here"), sandbox.guest_name("other"), sandbox.guest_name("far")
    path = write_inventory(sandbox, {here: "t.one", other: "t.one", far: "t.one"}, guest_image_url)
    with open(path) as handle:
        data = json.load(handle)
    # a second hypervisor nobody can reach: nothing listens on 127.0.0.1:9 (discard) here
    data["all"]["children"]["hypervisors"]["hosts"]["gone"] = {
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "nobody",
        "ansible_ssh_common_args": "-o ConnectTimeout=5 -o StrictHostKeyChecking=no -o BatchMode=yes"}
    data["all"]["children"]["guests"]["hosts"][far]["virtfleet_hypervisor"] = "gone"
    with open(path, "w") as handle:
        json.dump(data, handle)
    run = run_playbook(PLAYBOOK, path, limit="%s,%s" % (here, far))
    assert run.rc != 0, run.stdout[-4000:]
    assert run.recap[far]["unreachable"] == 1 and run.recap[here]["failed"] == 0, run.stdout[-4000:]
    assert other not in run.recap  # --limit: not planned, not touched
    defined = {d.name() for d in sandbox.conn.listAllDomains()}
    assert here in defined and other not in defined and far not in defined
    assert not os.path.exists(os.path.join(sandbox.instances, other))
    assert wait_for_report(os.path.join(sandbox.instances, here, "console.log")).cpus == 1
