#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: domain
short_description: Define a libvirt domain and bring it to a state, idempotently
version_added: 0.1.0
description:
  - Defines a domain from its XML (usually written by M(virtfleet.libvirt.domain_xml)) and brings it to
    C(running), C(paused), C(shutdown), C(defined) or C(absent), waiting for the state with a timeout.
  - Idempotent by semantic comparison; the desired XML and the defined (inactive) XML are parsed into the
    same typed model and what libvirt adds (PCI addresses, aliases, default controllers) is ignored. The
    existing UUID and MAC addresses are kept when the desired XML does not name them.
  - When the definition changes while the guest runs, the new definition is stored and the result says
    that a restart is pending; the guest is restarted only with O(apply=restart).
  - A run that changed the domain and then finds nothing left to do records a re-run memo in the domain's
    libvirt metadata (see the notes); later runs with the same inputs skip the comparison.
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
  - virtfleet.libvirt.items.domain
options:
  name:
    description:
      - Name of the domain, by the one guest-name rule of this collection, the same as in
        M(virtfleet.libvirt.domain_xml). 1 to 64 letters, digits, C(.), C(_) or C(-), starting with a letter or
        digit, and not C(_base) or C(locks) (the instance tree's own directories).
      - Required, unless O(items) lists the domains.
    type: str
  state:
    description:
      - C(running) defines the domain when needed and starts or resumes it.
      - C(paused) defines it and leaves it started but paused.
      - C(shutdown) asks the guest to power off (ACPI) and waits up to O(shutdown_timeout); see O(force_off).
      - C(defined) defines or updates the definition without changing whether the guest runs.
      - C(absent) stops the domain (hard) and undefines it, with its NVRAM and TPM state.
      - The XML (when read) must define the domain called O(name).
    type: str
    default: running
    choices: [running, paused, shutdown, defined, absent]
  xml:
    description:
      - The domain XML. Mutually exclusive with O(xml_file).
      - When neither is given, C(<instances_path>/<name>/domain.xml) is read.
    type: str
  xml_file:
    description: Path of a file holding the domain XML on the hypervisor.
    type: path
  autostart:
    description: Start the domain when libvirtd starts. Unchanged when not given.
    type: bool
  apply:
    description:
      - What to do when the definition changed while the guest runs.
      - C(none) stores the new definition and reports RV(restart_pending); C(restart) shuts the guest down
        cleanly (see O(shutdown_timeout), O(force_off)) and starts it again.
    type: str
    default: none
    choices: [none, restart]
  shutdown_timeout:
    description: Seconds (0 to 86400) to wait for the guest to power off after an ACPI shutdown request.
    type: int
    default: 120
  start_timeout:
    description: Seconds (0 to 86400) to wait for the domain to reach the running (or paused) state after a start.
    type: int
    default: 60
  force_off:
    description:
      - Power the guest off hard when it did not shut down within O(shutdown_timeout).
      - Without it such a guest makes the task fail, and nothing is forced.
    type: bool
    default: false
  wait_for_address:
    description:
      - With O(state=running), wait until the guest has an IP address on one of its interfaces, and return
        its interfaces with their addresses in RV(interfaces), as M(virtfleet.libvirt.domain_info) reports them.
      - Addresses come from the DHCP leases of libvirt networks and from the guest agent (when the domain has its
        channel and the agent answers). IPv6 link-local addresses do not count.
      - Waiting changes nothing; it also happens when the guest already ran. After O(address_timeout) seconds the
        task fails and says where it looked; the guest is left running.
      - In check mode nothing is waited for, and RV(interfaces) holds the addresses known now.
    type: bool
    default: false
  address_timeout:
    description: Seconds (0 to 86400) to wait for an address with O(wait_for_address=true).
    type: int
    default: 300
  remove_storage:
    description:
      - With O(state=absent), also delete the files the collection created for this guest, and then its instance
        directory C(<instances_path>/<name>) when nothing else is left in it.
      - Only files the collection recorded making are removed. These are the disks in the guest's
        C(disk.info.json) (written by M(virtfleet.libvirt.guest_disk)) with their digest records, and the
        instance directory's own files (C(domain.xml), C(console.log), C(nvram.fd), C(disk.info.json)).
      - Each must be a regular file directly inside the guest's own instance directory, reached through no
        symbolic link below O(instances_path), and no other defined or running domain may use it as a disk or
        in a disk's backing chain. Anything else is kept with a warning, including what the domain's metadata
        lists as C(owned_files) and every other path attached to the guest.
      - Also works when the domain is gone already (a run that undefined it and then failed is finished).
    type: bool
    default: false
notes:
  - "Re-run memo: after a run that changed something (define, redefine, start, resume, restart, ...) has
    verified that libvirt's persistent definition, and for a running guest its live definition, equal the
    desired XML, the module stores
    C(<vfmemo:memo xmlns:vfmemo=\"https://virtfleet.dev/xmlns/libvirt/memo/1\" key=\"...\"/>) in the domain's
    C(<metadata>). The key is a SHA-256 over the module's comparison code, the desired XML and libvirt's
    inactive and live XML (without the memo). A later run outside diff mode whose key matches knows the
    definitions are equal without parsing them, and only decides the state and autostart."
  - The memo is only a cache and is ignored by every comparison and by M(virtfleet.libvirt.domain_info).
    Any other change to the definition (for example C(virsh edit)), another desired XML, a hot-plug, or
    another version of this collection makes the key differ, and the full comparison runs as before.
  - A run with nothing to change only reads, so it never writes a memo. Domains defined by a version
    without memos, or whose memo no longer matches, use the full comparison until their next changing run.
"""

EXAMPLES = r"""
- name: Define and start a guest from the XML written by domain_xml
  virtfleet.libvirt.domain:
    name: web1
    state: running

- name: Shut a guest down, powering it off if it ignores ACPI for 60 s
  virtfleet.libvirt.domain:
    name: web1
    state: shutdown
    shutdown_timeout: 60
    force_off: true

- name: Apply a changed definition now
  virtfleet.libvirt.domain:
    name: web1
    xml_file: /var/lib/virtfleet/instances/web1/domain.xml
    apply: restart

- name: Start a guest and wait until it has an address to reach it by
  virtfleet.libvirt.domain:
    name: web1
    wait_for_address: true
    address_timeout: 120
  register: web1

- name: Add it to the inventory
  ansible.builtin.add_host:
    name: web1
    ansible_host: "{{ web1.interfaces | map(attribute='addresses') | flatten
                      | selectattr('family', 'eq', 'ipv4') | map(attribute='address') | first }}"

- name: Remove a guest and the files created for it
  virtfleet.libvirt.domain:
    name: web1
    state: absent
    remove_storage: true
"""

RETURN = r"""
results:
  description:
    - With O(items), one result per element, in order, with the keys below plus C(item) (the element's O(name)),
      C(failed) and, for a failed element, C(msg).
  returned: with O(items)
  type: list
  elements: dict
actions:
  description: What was done (or, in check mode, would be done), in order.
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: str
  sample: [define, start]
state:
  description: State of the domain after the task (C(running), C(paused), C(shutoff) or C(absent)).
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: running
previous_state:
  description: State of the domain before the task.
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: absent
uuid:
  description: UUID of the domain.
  returned: when the domain exists after the task
  type: str
  sample: 3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3
restart_pending:
  description: The guest runs with an older definition; the new one applies at its next start.
  returned: always (with O(items), in each element of RV(results))
  type: bool
removed_files:
  description:
    - With O(state=absent) and O(remove_storage=true), the files deleted (in check mode, that would be deleted),
      and last the instance directory when it was left empty. What is kept is said in a warning.
  returned: when O(state=absent) and O(remove_storage=true)
  type: list
  elements: str
  sample: [/var/lib/virtfleet/instances/web1/disk]
interfaces:
  description:
    - With O(wait_for_address=true), the guest's interfaces once one has an address (see
      M(virtfleet.libvirt.domain_info) for the keys of each).
  returned: when O(wait_for_address=true)
  type: list
  elements: dict
  sample: [{"type": "network", "source": "default", "mac": "52:54:00:6b:3c:58", "model": "virtio",
            "target": "vnet0", "addresses": [{"address": "192.168.122.23", "prefix": 24, "family": "ipv4",
                                              "source": "lease", "guest_ifname": null}]}]
differences:
  description: The lines of the normalised XML that differ between the defined and the desired domain.
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: str
  sample: ["-  <vcpu placement=\"static\">1</vcpu>", "+  <vcpu placement=\"static\">2</vcpu>"]
changes:
  description:
    - The same differences as RV(differences), one per part of the definition, classified by how a running
      guest takes the change. When the definition is unchanged but the running guest lags behind it
      (see RV(restart_pending)), the differences between the running guest and its definition.
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: dict
  contains:
    what:
      description: The part, such as C(vcpus), C(max_vcpus), C(memory), C(current_memory), C(cpu), C(machine),
        C(firmware), C(uuid), C(qemu_commandline) (user NICs on QEMU's own user networking), or C(devices.disk vdb),
        C(devices.interface 52:54:00:12:34:56) for a device.
      type: str
    before:
      description: Its value (a number, a name, or the XML of the part) before; null when absent.
      type: raw
    after:
      description: Its value as desired; null when it is removed.
      type: raw
    applies:
      description:
        - C(live) when a running guest can take it without a restart (vCPUs up to the maximum, the balloon within
          the memory, a hot-plugged disk or NIC, a cdrom medium, metadata), C(restart) when it applies at the
          next start, C(recreate) when libvirt cannot change it on a defined domain (the UUID).
        - This module itself changes a running guest only by restarting it (O(apply=restart)).
      type: str
      choices: [live, restart, recreate]
    why:
      description: The reason for the classification.
      type: str
  sample: [{"what": "vcpus", "before": 1, "after": 2, "applies": "live",
            "why": "vCPUs are plugged up to the <vcpu> maximum"}]
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.lifecycle import domain_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_MODULE_SPEC
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import require_libvirt_and_lxml


def main():
    run_core(DOMAIN_MODULE_SPEC, domain_core, requires=[require_libvirt_and_lxml])


if __name__ == "__main__":
    main()
